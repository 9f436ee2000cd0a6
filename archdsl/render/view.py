"""The view model: what a diagram shows (boxes, frames, shape-labelled edges), independent of the format.

:func:`build_view` turns a graph into a :class:`View`. The IR's ``scope`` frames (network / block /
group / combinator / reparam) become nested clusters; ``depth`` collapses everything below that many
levels into one node per block; runs of identical consecutive blocks are folded (:mod:`.fold`) unless
``expand`` is set; ``deploy`` draws the deploy form (:mod:`.form`).

Ids come from the IR's deterministic node order (``n12`` is IR node 12, ``c3`` the third frame,
``e5`` the fifth edge), never from memory addresses. No torch, no Graphviz here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import ArchError
from ..ir import Graph, ScopeFrame
from ..limits import Limits
from ..ops import size_only_input
from ..passes.summary import format_count
from .fold import FrameTree, contents, fold
from .form import deploy_graph
from .style import fmt_shape, frame_title, is_wire, node_tooltip, op_family, op_label, path_range, wrap

__all__ = ["View", "ViewNode", "ViewCluster", "ViewEdge", "build_view"]

# A computed rate in a block's arguments (Swin's drop-path 0.018181818181818184) is drawn with 6 significant
# digits, as op labels draw theirs; the tooltip keeps the exact value.
_LONG_FLOAT = re.compile(r"(?<![\w.])-?\d+\.\d{7,}(?:e-?\d+)?")


def _short_args(args: str) -> str:
    return _LONG_FLOAT.sub(lambda m: f"{float(m.group(0)):.6g}", args)


@dataclass
class ViewNode:
    """One box in the diagram: an op, a collapsed block, the input or an output."""

    id: str
    kind: str                     # 'op', 'block', 'input', 'output'
    label: str
    family: str
    cluster: str | None           # id of the enclosing cluster (None: top level)
    tooltip: str
    params: int = 0
    ir: list[int] = field(default_factory=list)   # IR node ids it stands for (first instance of a fold)
    fused: bool = False           # a reparam group drawn as its fused deploy conv


@dataclass
class ViewCluster:
    """A block, group or combinator frame; ``count > 1`` is a folded run of identical blocks."""

    id: str
    frame: ScopeFrame
    level: int                    # 1 for the network's direct children
    parent: str | None
    count: int = 1
    period: int = 1               # a folded run of a cycle of ``period`` different blocks
    last_path: str = ""           # module path of a folded run's last instance
    params: int = 0               # parameters of every instance of the run together
    collapsed: bool = False       # drawn as one node (``ViewNode`` of kind 'block') instead of a cluster
    title: str = ""


@dataclass
class ViewEdge:
    """A tensor flowing from ``src`` to ``dst``; ``shape`` is the IR shape of the producing node.
    ``size_only``: ``dst`` reads only the tensor's size (a reshape's run-time sizes, resize_as's reference)."""

    id: str
    src: str
    dst: str
    shape: tuple[int, ...]
    size_only: bool = False


@dataclass
class View:
    """Everything a diagram shows, independent of the output format.

    ``notes`` are lines the diagram prints under its title (e.g. reparam groups the deploy pass left
    unfused), so nothing about the drawn form is left unsaid.
    """

    name: str
    title: str
    nodes: dict[str, ViewNode]
    clusters: dict[str, ViewCluster]
    edges: list[ViewEdge]
    depth: int | None
    max_level: int
    notes: list[str] = field(default_factory=list)

    def visible_clusters(self) -> list[ViewCluster]:
        """Clusters drawn as frames (not collapsed), in a deterministic order."""
        return [c for c in self.clusters.values() if not c.collapsed]

    def ancestors(self, cid: str | None) -> list[str]:
        """Cluster ids from ``cid`` up to the top level (``cid`` first)."""
        out: list[str] = []
        while cid is not None:
            out.append(cid)
            cid = self.clusters[cid].parent
        return out


def _heading(c: ViewCluster, short: bool) -> str:
    """``layer1.0: Bottleneck``, ``layer3.1-5: Bottleneck \u00d75``, ``layer1``, ``lk: reparam add``.

    ``short`` (for collapsed nodes, which sit inside their parent's cluster) keeps only the last
    segment of the module path.
    """
    f = c.frame
    path = path_range(f.path, c.last_path) if c.count > 1 else f.path
    if short and "." in f.path:
        path = path[len(f.path.rpartition(".")[0]) + 1:]
    what = frame_title(f) + (f" \u00d7{c.count}" if c.count > 1 else "")
    if c.count > 1 and c.period == 2:
        what += ", alternating"
    elif c.count > 1 and c.period > 2:
        what += f", in a cycle of {c.period}"
    if f.kind == "group" and f.name == f.path.rsplit(".", 1)[-1]:
        return path + (f" \u00d7{c.count}" if c.count > 1 else "")
    return f"{path}: {what}" if path else what


def _cluster_label(c: ViewCluster) -> str:
    lines = [_heading(c, short=False)]
    if c.frame.args:
        lines.extend(wrap(_short_args(c.frame.args)))
    if c.params:
        lines.append(f"{format_count(c.params)} params")
    return "\n".join(lines)


def _block_node(vid: str, c: ViewCluster, tree: FrameTree, key: str) -> ViewNode:
    """A frame at the ``depth`` limit drawn as one 3-D box: name, arguments, contents, parameters."""
    f = c.frame
    lines = [_heading(c, short=True)]
    if f.args:
        lines.extend(wrap(_short_args(f.args), 36))
    inside = contents(tree, key)
    if inside and f.kind != "block":
        lines.extend(wrap(inside, 36))
    if c.params:
        lines.append(f"{format_count(c.params)} params")
    tip = _heading(c, short=False) + (f" ({f.args})" if f.args else "")
    tip += f"\nparams: {c.params:,}" + (f"\nspec: {f.loc}" if f.loc else "")
    return ViewNode(id=vid, kind="block", label="\n".join(lines), family="block", cluster=c.parent, tooltip=tip,
                    params=c.params)


def build_view(graph: Graph, *, depth: int | None = None, expand: bool = False, deploy: bool = False,
               limits: Limits | None = None) -> View:
    """Lay out what the diagram shows: clusters, (collapsed) nodes and shape-labelled edges.

    ``depth`` (>= 1) keeps that many block levels and collapses the rest into one node per block;
    ``None`` shows every layer. ``expand`` turns off folding of identical consecutive blocks.
    ``deploy`` draws the deploy form (reparam groups fused by the exact planner, see :mod:`.form`);
    ``limits`` bound that form's size as in ``archc deploy``.
    """
    if depth is not None and depth < 1:
        raise ArchError(f"--depth must be at least 1, got {depth}", None,
                        hint="depth 1 shows the network's top-level stages; leave it out for every layer")
    notes: list[str] = []
    g = deploy_graph(graph, notes, limits=limits) if deploy else graph
    fused_ids = set(g.fused_nodes)
    tree = FrameTree(g)
    folds = fold(tree, expand)
    counts, last_path, hidden, rep, inst = folds.counts, folds.last_path, folds.hidden, folds.rep, folds.inst

    # identity-family ops are drawn as plain edges: resolve each to the tensor it passes on
    alias: dict[int, int] = {}
    for n in tree.order:
        if is_wire(n):
            src = n.inputs[0]
            alias[n.id] = alias.get(src, src)   # inputs precede their consumers: ``src`` is resolved already

    max_level = max(tree.level.values(), default=0)
    cids: dict[str, str] = {}
    for k in tree.keys:
        if k not in hidden:
            cids[k] = f"c{len(cids) + 1}"
    clusters: dict[str, ViewCluster] = {}
    for k, cid in cids.items():
        lvl = tree.level[k]
        if depth is not None and lvl > depth:
            continue
        parent = tree.parent[k]
        count = counts.get(k, 1)
        params = sum(tree.byid[m].params for m in tree.members[k]) * count
        c = ViewCluster(id=cid, frame=tree.keys[k], level=lvl, parent=cids.get(parent) if parent else None,
                        count=count, period=folds.period.get(k, 1), last_path=last_path.get(k, ""),
                        params=params, collapsed=depth is not None and lvl == depth)
        c.title = _cluster_label(c)
        clusters[cid] = c

    nodes: dict[str, ViewNode] = {}
    item_of: dict[int, str] = {}
    for n in tree.order:
        if n.id in rep or is_wire(n):
            continue
        chain = tree.chain[n.id]
        if depth is not None and len(chain) >= depth:
            ck = chain[depth - 1]
            vid = "b" + cids[ck][1:]
            if vid not in nodes:
                nodes[vid] = _block_node(vid, clusters[cids[ck]], tree, ck)
            nodes[vid].ir.append(n.id)
            item_of[n.id] = vid
            continue
        vid = f"n{n.id}"
        parent = cids[chain[-1]] if chain else None
        if n.op == "input":
            label, kind, family = "input\n" + fmt_shape(n.shape), "input", "input"
        else:
            label, kind, family = op_label(n, n.id in fused_ids), "op", op_family(n.op)
        nodes[vid] = ViewNode(id=vid, kind=kind, label=label, family=family, cluster=parent,
                              tooltip=node_tooltip(n), params=n.params, ir=[n.id], fused=n.id in fused_ids)
        item_of[n.id] = vid

    def item(nid: int) -> str:
        nid = alias.get(nid, nid)
        return item_of[rep.get(nid, nid)]

    edges: list[ViewEdge] = []
    seen: set[tuple[str, str, tuple[int, ...], bool]] = set()

    def add_edge(src_ir: int, dst: str, size_only: bool = False) -> None:
        src = item(src_ir)
        if src == dst:
            return
        shape = tuple(tree.byid[src_ir].shape)
        key = (src, dst, shape, size_only)
        if key in seen or (size_only and (src, dst, shape, False) in seen):
            return   # a tensor that is also read as data needs no size edge beside it
        seen.add(key)
        edges.append(ViewEdge(id=f"e{len(edges) + 1}", src=src, dst=dst, shape=shape, size_only=size_only))

    for n in tree.order:
        # identities are edges; the wires of hidden fold instances repeat those of the run's head
        if is_wire(n) or n.id in rep:
            continue
        for ki, u in sorted(enumerate(n.inputs), key=lambda ku: size_only_input(n.op, ku[0])):   # data first
            ru = alias.get(u, u)
            a, b = inst.get(ru), inst.get(n.id)
            if a and b and a[0] == b[0] and a[1] != b[1]:
                continue  # the wire from one folded instance into the next
            # a consumer of the run's last instance is wired to the head's corresponding node
            add_edge(ru, item(n.id), size_only_input(n.op, ki))
    for idx, (name, nid) in enumerate(g.outputs):
        vid = f"o{idx + 1}"
        shape = tree.byid[nid].shape
        nodes[vid] = ViewNode(id=vid, kind="output", label=f"{name}\n{fmt_shape(shape)}", family="output",
                              cluster=None, tooltip=f"output '{name}': {list(shape)}")
        add_edge(alias.get(nid, nid), vid)

    total = sum(n.params for n in tree.order)
    title = f"{g.name}  ({format_count(total)} params" + (", deploy form)" if deploy else ")")
    return View(name=g.name, title=title, nodes=nodes, clusters=clusters, edges=edges, depth=depth,
                max_level=max_level, notes=notes)
