"""Warnings: suspicious-but-legal specs (a value never used, a layer whose output is dropped, a
conv/pool window that never reads the last rows or columns of its input).

Warnings never stop compilation; ``archc check --strict`` (or ``-W error``) turns them into errors.
They are computed after a network expanded without errors, from the AST (names) and the graph
(dead layers, window coverage), so each rule sees the whole picture and says nothing on a clean spec.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

from ..lang import ast as A
from ..errors import Diagnostic
from ..ir import Graph, Loc, Node
from ..lang.loader import Program
from ..source import Span

__all__ = ["lint_graph", "unused_names", "dropped_pixels", "span_resolver"]


def _walk(obj: Any) -> Iterator[Any]:
    """Every AST node below ``obj`` (dataclass fields, lists and tuples), ``obj`` included."""
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, (list, tuple)):
            stack.extend(o)
        elif dataclasses.is_dataclass(o) and not isinstance(o, (type, Span)):
            yield o
            stack.extend(getattr(o, f.name) for f in dataclasses.fields(o))


def unused_names(d: A.BlockDef) -> list[tuple[str, Span, A.LetStmt]]:
    """Names bound by ``name = ...`` in ``d`` that nothing in ``d`` refers to (``_``-prefixed ones exempt).

    The check is syntactic on purpose: a name read only under a condition that is false for one
    instance is still used by the block, so it must not be reported.
    """
    cached = d.__dict__.get("_unused_names")
    if cached is not None:  # a library checks many networks over the same blocks
        return cached
    used: set[str] = set()
    lets: list[A.LetStmt] = []
    for n in _walk(d.body):
        if isinstance(n, A.Name):
            used.add(n.id)
        elif isinstance(n, A.OutputStmt):
            used.update(name for name, _ in n.names)
        elif isinstance(n, A.LetStmt):
            lets.append(n)
    out = []
    for st in lets:
        for name, span in st.names:
            if name not in used and not name.startswith("_"):
                out.append((name, span, st))
    result = sorted(out, key=lambda t: (t[1].line, t[1].col))
    d.__dict__["_unused_names"] = result
    return result


# ops that change the layout: a linear after one of them on a rank-3 tensor is deliberate
_LAYOUT_OPS = frozenset({"permute", "transpose", "reshape", "view"})


def _channels_last(g: Graph, nid: int) -> bool:
    """Whether the tensor ``nid`` comes from a layout change through single-input ops only
    (ConvNeXt: permute -> layernorm -> linear -> gelu -> linear)."""
    for _ in range(64):
        n = g.node(nid)
        if n.op in _LAYOUT_OPS:
            return True
        if len(n.inputs) != 1:
            return False
        nid = n.inputs[0]
    return False


def _window_args(node: Node) -> tuple[tuple[int, int], ...] | None:
    """(kernel, stride, padding, dilation) pairs of a sliding-window op, or None for other ops."""
    a = node.args
    if "kernel_size" not in a or "stride" not in a or "padding" not in a:
        return None
    vals = [a["kernel_size"], a["stride"], a["padding"], a.get("dilation", (1, 1))]
    pairs = []
    for v in vals:
        if isinstance(v, (list, tuple)) and len(v) == 2 and all(type(x) is int for x in v):
            pairs.append((v[0], v[1]))
        else:
            return None
    return tuple(pairs)


def dropped_pixels(node: Node) -> list[tuple[str, int, int]]:
    """For a conv/pool node: [(axis, size, rows never read)] where the windows stop short of the input.

    PyTorch floors the output size, so when ``(H + 2p - k) % s != 0`` the last rows may be skipped.
    That only loses data when real input rows (not padding) are skipped, and only matters when the
    windows otherwise touch every row (kernel >= stride); a 1x1 stride-2 conv skips rows by design.
    """
    pairs = _window_args(node)
    if pairs is None or not node.in_shapes or len(node.in_shapes[0]) != 3 or len(node.shape) != 3:
        return []
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = pairs
    out = []
    for axis, size, k, s, p, d, o in (("rows", node.in_shapes[0][1], kh, sh, ph, dh, node.shape[1]),
                                      ("columns", node.in_shapes[0][2], kw, sw, pw, dw, node.shape[2])):
        eff = d * (k - 1) + 1
        if eff < s or o <= 0:
            continue
        covered = (o - 1) * s + eff      # padded positions [0, covered) are read by some window
        real_end = p + size              # real input occupies padded positions [p, p + size)
        if covered < real_end:
            out.append((axis, size, real_end - covered))
    return out


def lint_graph(program: Program, net: A.NetworkDef, g: Graph) -> list[Diagnostic]:
    """Every warning for the expanded network ``g`` (sorted by location)."""
    spans = _SpanResolver(program)
    warnings: list[Diagnostic] = []

    # 1. named values never used, in the network and in every block it instantiates
    defs: list[A.BlockDef] = [net]
    seen_blocks = {id(net)}
    # creation order is a topological order; sorting the networkx graph again per rule is costly
    nodes = g.records()
    block_names = {f.name for n in nodes for f in n.scope if f.kind == "block"}
    for spec in program.files.values():
        for name, bd in spec.blocks.items():
            if name in block_names and id(bd) not in seen_blocks:
                seen_blocks.add(id(bd))
                defs.append(bd)
    unused_lines: set[tuple[str, int]] = set()
    for d in defs:
        found = unused_names(d)
        for name, span, _ in found:
            warnings.append(Diagnostic(f"'{name}' is assigned but never used", span, "warning",
                                       hint="remove it, or start its name with '_' to keep it on purpose"))
        for st in {id(st): st for _, _, st in found}.values():
            if all(any(n == u and s is st for u, _, s in found) for n, _ in st.names):
                # the statement's layers are dead too: one warning (the name) is enough
                unused_lines.update((st.span.path, line)
                                    for line in range(st.span.line, (st.span.end_line or st.span.line) + 1))

    # 2. layers whose output goes nowhere (not consumed, not a network output)
    outputs = {nid for _, nid in g.outputs}
    for n in nodes:
        if n.op == "input" or n.id in outputs or g.out_degree(n.id):
            continue
        if n.loc is not None and (n.loc.file, n.loc.line) in unused_lines:
            continue  # already reported as an unused name
        warnings.append(Diagnostic(f"the output of {n.op} '{n.name}' is never used", spans(n.loc), "warning",
                                   hint="name it and list it in 'output', or remove it"))

    # 3. linear on a feature map: legal (it acts on the last dim, for channels-last blocks) but a
    #    classifier head that forgot 'flatten' looks exactly like this
    for n in nodes:
        if n.op == "linear" and n.in_shapes and len(n.in_shapes[0]) == 3 and n.inputs and \
                not _channels_last(g, n.inputs[0]):
            warnings.append(Diagnostic(
                f"linear on the feature map {list(n.in_shapes[0])} acts on its last dimension (width)", spans(n.loc),
                "warning", hint="for a classifier add 'flatten' (or adaptive_avgpool(1) -> flatten) before it"))

    # 4. conv/pool windows that never read the last rows/columns of real input
    for n in nodes:
        lost = dropped_pixels(n)
        if not lost:
            continue
        c, h, w = n.in_shapes[0]
        parts, sums = [], []
        for axis, size, count in lost:
            i = 0 if axis == "rows" else 1
            k, s, p = n.args["kernel_size"][i], n.args["stride"][i], n.args["padding"][i]
            eff = n.args.get("dilation", (1, 1))[i] * (k - 1) + 1
            parts.append((axis if count != 1 else axis[:-1], count))
            sums.append(f"({size} + 2*{p} - {eff}) % {s} = {(size + 2 * p - eff) % s}")
        if len(parts) == 2 and parts[0][1] == parts[1][1]:  # "the last 1 row and column"
            what = f"{parts[0][1]} {parts[0][0]} and {parts[1][0]}"
            many = True
        else:
            what = " and ".join(f"{cnt} {unit}" for unit, cnt in parts)
            many = len(parts) > 1 or parts[0][1] != 1
        warnings.append(Diagnostic(
            f"{n.op}: the last {what} of the {h}x{w} input {'are' if many else 'is'} never read "
            f"({'; '.join(dict.fromkeys(sums))})", spans(n.loc), "warning",
            hint=f"the output is {list(n.shape)}; change the padding or the input size"
                 + (", or use ceil_mode=true" if "ceil_mode" in n.args else "")))
    # one warning per rule and place: a block instantiated many times would repeat it with other shapes
    unique: dict[tuple[str, str | None, int | None, int | None], Diagnostic] = {}
    for wd in warnings:
        rule = wd.message.split(" ", 2)[:2]
        key = (" ".join(rule), wd.span.path if wd.span else None, wd.span.line if wd.span else None,
               wd.span.col if wd.span else None)
        unique.setdefault(key, wd)
    warnings = [d for d in unique.values() if not _silenced(d)]
    warnings.sort(key=lambda d: (d.span.path, d.span.line, d.span.col) if d.span else ("", 0, 0))
    return warnings


def _silenced(d: Diagnostic) -> bool:
    """A warning whose line carries the comment ``# archc: ignore`` is dropped (a deliberate choice)."""
    return d.span is not None and "# archc: ignore" in d.span.source.line(d.span.line)


def span_resolver(program: Program) -> Callable[[Loc | None], Span | None]:
    """Loc (file, line, col) -> Span with its Source (for diagnostics that show the line)."""
    return _SpanResolver(program)


class _SpanResolver:
    """Loc (file, line, col) -> Span with its Source, so a warning can show the line."""

    def __init__(self, program: Program) -> None:
        self.sources: dict[str, Any] = {}
        for spec in program.files.values():
            for d in [*spec.blocks.values(), *spec.networks.values()]:
                self.sources.setdefault(d.span.source.path, d.span.source)

    def __call__(self, loc: Loc | None) -> Span | None:
        if loc is None or loc.file not in self.sources:
            return None
        return Span(self.sources[loc.file], loc.line, loc.col)
