"""The paper style (``archc render --style paper``): a figure as the papers draw their networks.

:func:`paper_view` rewrites a :class:`~.view.View` built with the paper plan (stages as frames, the blocks
inside them as one box each, runs of identical blocks drawn once with ``×N``) into the figure's text:

* frames say what the stage is and the size of its output (``layer2 · 512×28×28``);
* a block box says its type, its count and only the arguments that describe the architecture: the
  block's signature minus the parameters left at their default and minus schedule / implementation
  arguments (stochastic-depth rates and the indices used to compute them: ``first=``, ``total=``,
  ``sd=``, drop-path rates), unless asked for by name (``show_args``; ``["all"]`` keeps every one);
* every block type gets a fill colour of its own, and the legend lists the block types and op families
  drawn;
* edges carry a tensor size only where the size changes; edges that read only a tensor's size (dashed
  in the default style) are not drawn.

No Graphviz and no torch here: :mod:`.dot` turns the view into DOT.
"""
from __future__ import annotations

import re

from ..ir import ScopeFrame
from .fold import FrameTree
from .model import View, ViewCluster, ViewEdge
from .style import family_color, fmt_shape, frame_title, wrap, _top_level_parts

__all__ = ["STYLES", "paper_view", "shown_args", "BLOCK_COLORS", "is_schedule_arg"]

#: Accepted ``--style`` values.
STYLES = ("default", "paper")

#: Fills of block types in the paper style, in order of first appearance (ColorBrewer Set3, which prints
#: well in colour and stays distinct in greyscale better than the op family colours).
BLOCK_COLORS = ("#8dd3c7", "#bebada", "#fdb462", "#80b1d3", "#b3de69", "#fccde5", "#ffffb3", "#bc80bd",
                "#ccebc5", "#fb8072", "#ffed6f", "#d9d9d9")

# Schedule and implementation arguments: stochastic-depth / dropout rates and the block indices used to
# compute them. They change no layer's shape or count, and papers never print them.
_SCHEDULE_NAMES = {"first", "total", "sd", "dp", "dpr", "index", "idx", "block_id", "block_idx", "layer_id",
                   "stochastic_depth_prob", "layer_scale", "layer_scale_init_value", "ls_init", "init_values"}
_SCHEDULE_PATTERN = re.compile(r"(^|_)(drop|dropout|droppath|prob|rate|sd|dp)(_|$)|drop_path|dropout")


def is_schedule_arg(name: str) -> bool:
    """Whether a block argument is a schedule / implementation argument the paper style leaves out."""
    return name in _SCHEDULE_NAMES or bool(_SCHEDULE_PATTERN.search(name))


def shown_args(args: str, defaults: tuple[str, ...], show: list[str]) -> str:
    """The arguments of a block call the paper style prints: ``heads=3, shift=3`` of
    ``heads=3, shift=3, dp=0.018``. ``show`` names arguments kept anyway; ``["all"]`` keeps every one."""
    if not args:
        return ""
    keep = []
    for part in _top_level_parts(args):
        name = part.split("=", 1)[0].strip()
        if "all" in show or name in show:
            keep.append(part)
        elif name not in defaults and not is_schedule_arg(name):
            keep.append(part)
    return ", ".join(keep)


def _output_shape(tree: FrameTree, key: str) -> tuple[int, ...] | None:
    """The shape a frame hands on: its last node read from outside it (or a network output)."""
    members = tree.members[key]
    inside = set(members)
    outs = {nid for _, nid in tree.graph.outputs}
    for nid in reversed(members):
        if nid in outs or any(c not in inside for c in tree.graph.consumers(nid)):
            return tuple(tree.byid[nid].shape)
    return None


def _group_contents(tree: FrameTree, key: str) -> str:
    """What an unnamed kind of frame (a labelled group) holds: ``maxpool, DoubleConv``."""
    from .style import is_wire
    names: list[str] = []
    for kind, item in tree.children[key]:
        if kind == "cluster":
            names.append(frame_title(tree.keys[item]))
        else:
            n = tree.byid[item]
            if not is_wire(n):
                names.append(n.op)
    runs: list[list[object]] = []
    for name in names:
        if runs and runs[-1][0] == name:
            runs[-1][1] = int(str(runs[-1][1])) + 1
        else:
            runs.append([name, 1])
    parts = [f"{n} \u00d7{k}" if k != 1 else str(n) for n, k in runs]
    return ", ".join(parts[:4]) + (", ..." if len(parts) > 4 else "")


def _what(c: ViewCluster, tree: FrameTree) -> tuple[str, str]:
    """(name shown, block type for the legend) of a frame."""
    f = c.frame
    if f.kind == "block":
        return f.name, f.name
    if f.kind == "reparam":
        return frame_title(f), frame_title(f)
    inside = _group_contents(tree, c.key)
    return (f.name, inside or f.name)


def paper_view(view: View, tree: FrameTree, show: list[str], *, detail: str | None = None) -> None:
    """Rewrite ``view`` (built with the paper plan) in place into the paper figure's labels and legend."""
    view.title = ""
    view.notes = []
    view.edges = [e for e in view.edges if not e.size_only]
    colors: dict[str, str] = {}
    legend: list[tuple[str, str, str]] = []

    def color_of(kind: str) -> str:
        if kind not in colors:
            colors[kind] = BLOCK_COLORS[len(colors) % len(BLOCK_COLORS)]
            legend.append(("block", kind, colors[kind]))
        return colors[kind]

    for c in view.clusters.values():
        f = c.frame
        name, kind = _what(c, tree)
        count = f" \u00d7{c.count}" if c.count > 1 else ""
        args = shown_args(f.args, f.defaults, show)
        shape = _output_shape(tree, c.key)
        if c.collapsed:
            node = view.nodes.get("b" + c.id[1:])
            if node is None:
                continue
            lines = [name + count]
            if f.kind == "group" and kind != name:
                lines += wrap(kind, 30)
            lines += wrap(args, 30) if args else []
            node.label = "\n".join(lines)
            node.color = color_of(kind)
            # the hover text says no more than the figure: no schedule arguments there either
            node.tooltip = "\n".join([f"{f.path}: {name}{count}"] + ([args] if args else []) +
                                     [f"params: {c.params:,}"] + ([f"spec: {f.loc}"] if f.loc else []))
        else:
            head = name + count + (f"  \u00b7  {fmt_shape(shape)}" if shape and c.key != detail else "")
            c.title = "\n".join([head] + (wrap(args, 48) if args else []))
    for n in view.nodes.values():
        if n.kind == "op":
            # the op and its key arguments: module names and parameter counts belong in a table
            lines = n.label.split("\n")
            name, _, op = lines[0].rpartition(": ")
            # a parameter or buffer is known by its name (cls_token, relative_position_index); any other op by
            # what it computes
            e = _out_edge(view, n.id) if op in ("parameter", "buffer") else None
            lines = [name or op, fmt_shape(e.shape)] if e is not None else [op] + lines[1:]
            n.label = "\n".join(line for line in lines if not line.endswith(" params"))
    _simplify(view)
    if detail is None:
        _grid_stages(view)
    families: list[str] = []
    for n in view.nodes.values():
        if n.kind == "op" and n.family not in families:
            families.append(n.family)
    legend += [("op", fam, family_color(fam)) for fam in families]
    view.legend = legend

    # a size on an edge only where it changes: after the input, a stride, a pooling, a projection
    into: dict[str, set[tuple[int, ...]]] = {}
    for e in view.edges:
        into.setdefault(e.dst, set()).add(e.shape)
    for e in view.edges:
        src = view.nodes[e.src]
        e.labelled = src.kind == "input" or e.shape not in into.get(e.src, set())


# Ops a figure leaves out (drawn as a plain edge): reshapes and eval-mode identities. Their sizes still show
# on the edge where the size changes.
_SILENT_FAMILIES = {"shape", "dropout"}
# An activation or normalisation right after a conv / linear joins its box: ``conv2d 3×3 + batchnorm + relu``.
_JOINS = {"norm", "act"}
_JOIN_TARGETS = {"conv", "linear", "norm"}


def _out_edge(view: View, nid: str) -> ViewEdge | None:
    return next((e for e in view.edges if e.src == nid), None)


def _simplify(view: View) -> None:
    """Drop silent ops, ops whose result nothing reads, and join conv-norm-act chains (in place)."""
    used = {e.src for e in view.edges}
    for nid in [k for k, n in view.nodes.items() if n.kind == "op" and k not in used]:
        del view.nodes[nid]
        view.edges = [e for e in view.edges if e.dst != nid]
    def edges_in(nid: str) -> list[int]:
        return [i for i, e in enumerate(view.edges) if e.dst == nid]

    def edges_out(nid: str) -> list[int]:
        return [i for i, e in enumerate(view.edges) if e.src == nid]

    def splice(nid: str, into: str) -> None:
        """Remove node ``nid`` (one input, from ``into``): its consumers read ``into`` instead."""
        drop = set(edges_in(nid))
        for i in edges_out(nid):
            view.edges[i].src = into
        view.edges = [e for i, e in enumerate(view.edges) if i not in drop]
        del view.nodes[nid]

    for nid in list(view.nodes):
        n = view.nodes[nid]
        if n.kind != "op":
            continue
        ins = edges_in(nid)
        if len(ins) != 1:
            continue
        src = view.nodes[view.edges[ins[0]].src]
        if n.family in _SILENT_FAMILIES and edges_out(nid):
            splice(nid, src.id)
        elif (n.family in _JOINS and src.kind == "op" and src.family in _JOIN_TARGETS
              and src.cluster == n.cluster and len(edges_out(src.id)) == 1):
            src.label = src.label + "\n+ " + n.label.replace("\n", " ")
            src.tooltip += "\n" + n.tooltip
            src.ir += n.ir
            src.params += n.params
            splice(nid, src.id)
    # one edge per (src, dst, shape) after the rewiring
    seen: set[tuple[str, str, tuple[int, ...]]] = set()
    kept = []
    for e in view.edges:
        k = (e.src, e.dst, e.shape)
        if k not in seen and e.src != e.dst:
            seen.add(k)
            kept.append(e)
    view.edges = kept


def _grid_stages(view: View) -> None:
    """A chain of blocks with no stage frames of its own (Inception-v3) gets its stages from the
    resolution, as the papers draw them: a run of two or more top-level boxes whose output has the same
    spatial size becomes a frame titled with that grid (``35×35``), stacked like any stage."""
    if any(c.parent is None and not c.collapsed for c in view.clusters.values()):
        return
    # only a chain: stacking the boxes of a network with skips across stages (a U-Net) would tangle them
    fan_in: dict[str, int] = {}
    fan_out: dict[str, int] = {}
    for e in view.edges:
        fan_in[e.dst] = fan_in.get(e.dst, 0) + 1
        fan_out[e.src] = fan_out.get(e.src, 0) + 1
    if max(fan_in.values(), default=0) > 1 or max(fan_out.values(), default=0) > 1:
        return
    out: dict[str, tuple[int, ...]] = {}
    for e in view.edges:
        out.setdefault(e.src, e.shape)
    runs: list[list[str]] = []
    prev: tuple[int, ...] | None = None
    for nid, n in view.nodes.items():
        shape = out.get(nid)
        if n.cluster is not None or n.kind in ("input", "output") or shape is None or len(shape) != 3:
            prev = None
            continue
        if prev is not None and shape[1:] == prev and runs:
            runs[-1].append(nid)
        else:
            runs.append([nid])
        prev = shape[1:]
    for k, run in enumerate(r for r in runs if len(r) >= 2):
        shape = out[run[-1]]
        cid = f"g{k + 1}"
        grid = f"{shape[1]}\u00d7{shape[2]}"
        frame = ScopeFrame(path="", kind="group", name=grid)
        view.clusters[cid] = ViewCluster(id=cid, frame=frame, level=1, parent=None,
                                         title=f"{grid}  \u00b7  {fmt_shape(shape)}", key="")
        for nid in run:
            view.nodes[nid].cluster = cid
