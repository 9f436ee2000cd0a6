"""How diagrams look: the fixed colour of each op family, fonts, and the text of node and frame labels.

Everything here is a pure function of IR records (no layout, no Graphviz), so the same spec always gives
the same labels and colours.
"""
from __future__ import annotations

import hashlib
from typing import Any, Iterable

from ..ir import Node, ScopeFrame
from ..ops import OPS, REQUIRED
from ..passes.summary import format_count

__all__ = ["FAMILY_COLORS", "BLOCK_FILL", "CLUSTER_STYLE", "FUSED_COLOR", "FONT", "family_color", "op_family",
           "is_wire", "fmt_shape", "key_args", "wrap", "frame_title", "path_range", "left_justified", "node_tooltip",
           "op_label"]

#: One fill colour per op family (ops.OP_FAMILIES). Families added later get a stable colour from
#: ``family_color`` (a hash of the name), so a family looks the same in every diagram.
FAMILY_COLORS: dict[str, str] = {
    "input": "#e3e3e3",
    "conv": "#9ecae1",
    "linear": "#cbb4e6",
    "norm": "#b7e0a5",
    "pool": "#fdd0a2",
    "act": "#fff3a3",
    "dropout": "#eeeeee",
    "merge": "#f9b9a7",
    "shape": "#d9d9d9",
    "identity": "#ffffff",
    "output": "#e3e3e3",
}
_EXTRA_COLORS = ("#a6dbd3", "#f4c2e0", "#d6c9a8", "#c7d8f2", "#e8d3b9", "#cfe8b0", "#f2d0d0", "#bcd6d6")
BLOCK_FILL = "#f4f1ea"          # a collapsed block
CLUSTER_STYLE: dict[str, tuple[str, str, str]] = {
    # kind -> (style, border colour, fill colour)
    "block": ("rounded,filled", "#7f8fa6", "#f7f9fc"),
    "group": ("rounded,filled", "#a0a0a0", "#fcfcfc"),
    "combinator": ("rounded,dotted,filled", "#909090", "#fbfbfb"),
    "reparam": ("rounded,dashed,filled,bold", "#b15928", "#fff8f0"),
}
FUSED_COLOR = "#b15928"         # outline of a fused deploy conv: the colour of its reparam frame
FONT = "Helvetica"
_SHORT_ARG = {"kernel_size": "k", "stride": "s", "groups": "g", "out_features": "out", "output_size": "out",
              "dilation": "d", "padding": "p"}


def family_color(family: str) -> str:
    """The fill colour of an op family: fixed for the built-in families, hashed for the others."""
    if family in FAMILY_COLORS:
        return FAMILY_COLORS[family]
    digest = hashlib.sha1(family.encode("utf-8")).digest()
    return _EXTRA_COLORS[digest[0] % len(_EXTRA_COLORS)]


def op_family(op: str) -> str:
    """The registry family of ``op`` (``OpDef.family``); an op the registry does not know is its own family."""
    opdef = OPS.get(op)
    return opdef.family if opdef else op


def is_wire(n: Node) -> bool:
    """An op of the ``identity`` family passes its input on unchanged: it is drawn as a plain edge."""
    return n.op != "input" and op_family(n.op) == "identity" and bool(n.inputs)


# ------------------------------------------------------------------------------------------- label text
def fmt_shape(shape: Iterable[int]) -> str:
    """``(64, 56, 56)`` -> ``64×56×56`` (per sample; the batch is left out)."""
    return "\u00d7".join(str(d) for d in shape)


def _fmt_value(v: Any) -> str:
    if isinstance(v, (tuple, list)):
        if v and len(set(v)) == 1:
            return str(v[0])
        return "\u00d7".join(str(x) for x in v)
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _same_value(v: Any, d: Any) -> bool:
    if isinstance(v, (tuple, list)) and not isinstance(d, (tuple, list)):
        return all(x == d for x in v)
    if isinstance(v, (tuple, list)) and isinstance(d, (tuple, list)):
        return tuple(v) == tuple(d)
    return bool(v == d)


def key_args(n: Node) -> str:
    """Key arguments of the op (OpDef.key_args), leaving out values equal to the default."""
    opdef = OPS.get(n.op)
    if opdef is None:
        return ""
    defaults = {a.name: a.default for a in opdef.args}
    parts = []
    for name in opdef.key_args:
        if name not in n.args:
            continue
        v = n.args[name]
        d = defaults.get(name, REQUIRED)
        if d is not REQUIRED and d is not None and _same_value(v, d):
            continue
        if d is None and name == "stride" and _same_value(v, n.args.get("kernel_size")):
            continue  # pooling stride defaults to the kernel size
        if name == "kernel_size" and isinstance(v, (tuple, list)) and len(set(v)) == 1:
            parts.append("\u00d7".join([str(v[0])] * len(v)))   # 3x3, or 3x3x3 for a 3-D op
            continue
        parts.append(f"{_SHORT_ARG.get(name, name)}={_fmt_value(v)}")
    return " ".join(parts)


def _short_name(n: Node) -> str | None:
    """The label to print before the op: the spec's label (numbered positions are not shown)."""
    if n.label:
        return n.label
    last = n.name.rsplit(".", 1)[-1] if n.name else ""
    if not last or last.isdigit() or last == n.op or "[" in last:
        return None
    return last


def wrap(text: str, width: int = 44) -> list[str]:
    """Split a comma-separated argument list into lines of at most ``width`` characters."""
    lines: list[str] = []
    cur = ""
    for part in _top_level_parts(text):
        cand = part if not cur else cur + ", " + part
        if cur and len(cand) > width:
            lines.append(cur + ",")
            cur = part
        else:
            cur = cand
    if cur:
        lines.append(cur)
    return lines


def _top_level_parts(text: str) -> list[str]:
    """Split ``a=1, b=[2, 3]`` at the commas outside brackets: ``['a=1', 'b=[2, 3]']``."""
    parts: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0 and text[i + 1:i + 2] == " ":
            parts.append(text[start:i])
            start = i + 2
    parts.append(text[start:])
    return parts


def frame_title(f: ScopeFrame) -> str:
    """What a frame is: the block's name, ``reparam add`` for a reparam group, else the frame's name."""
    if f.kind == "reparam":
        return f"reparam {f.name}"
    return f.name


def path_range(first: str, last: str) -> str:
    """``layer3.1`` .. ``layer3.5`` -> ``layer3.1-5``."""
    if not last or last == first:
        return first
    head, _, tail = first.rpartition(".")
    lhead, _, ltail = last.rpartition(".")
    if head == lhead:
        return f"{first}\u2013{ltail}"
    return f"{first}\u2013{last}"


def left_justified(text: str) -> str:
    """A multi-line Graphviz label with every line left-justified (``\\l`` line ends)."""
    return "".join(line.replace("\\", "\\\\") + "\\l" for line in text.split("\n"))


def node_tooltip(n: Node) -> str:
    """Hover text of a layer: full name, op, shapes, parameters, MACs and spec line."""
    lines = [f"{n.name or n.op} ({n.op})"]
    if n.in_shapes:
        lines.append("in: " + ", ".join(str(list(s)) for s in n.in_shapes))
    lines.append(f"out: {list(n.shape)}")
    if n.params:
        lines.append(f"params: {n.params:,}")
    if n.macs:
        lines.append(f"MACs: {n.macs:,}")
    if n.loc:
        lines.append(f"spec: {n.loc}")
    return "\n".join(lines)


def op_label(n: Node, fused: bool) -> str:
    """The text of a layer's box: ``label: op`` (``fused conv2d`` for a fused group), key args, params."""
    short = _short_name(n)
    op = f"fused {n.op}" if fused else n.op
    lines = [f"{short}: {op}" if short else op]
    ka = key_args(n)
    if ka:
        lines.append(ka)
    if n.params:
        lines.append(f"{format_count(n.params)} params")
    return "\n".join(lines)
