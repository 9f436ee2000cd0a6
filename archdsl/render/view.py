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

from ..errors import ArchError
from ..ir import Graph
from ..limits import Limits
from ..ops import size_only_input
from ..passes.summary import format_count
from .fold import FrameTree, contents, fold
from .form import deploy_graph
from .model import View, ViewCluster, ViewEdge, ViewNode
from .paper import STYLES, paper_view
from .style import fmt_shape, frame_title, is_wire, node_tooltip, op_family, op_label, path_range, wrap

__all__ = ["View", "ViewNode", "ViewCluster", "ViewEdge", "build_view", "STYLES"]

# A computed rate in a block's arguments (Swin's drop-path 0.018181818181818184) is drawn with 6 significant
# digits, as op labels draw theirs; the tooltip keeps the exact value.
_LONG_FLOAT = re.compile(r"(?<![\w.])-?\d+\.\d{7,}(?:e-?\d+)?")


def _short_args(args: str) -> str:
    return _LONG_FLOAT.sub(lambda m: f"{float(m.group(0)):.6g}", args)


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
                    params=c.params, spec=str(f.loc) if f.loc else "")


def _plan(tree: FrameTree, depth: int | None, style: str, detail: str | None,
          hidden: set[str]) -> tuple[set[str], set[str]]:
    """Which frames are drawn as one box (collapsed) and which are not drawn at all (flat: their contents
    sit in the enclosing frame). Depth counts architectural levels (``FrameTree.alevel``): containers that
    only hold stages are never a level, and those whose frames do not feed each other (RepLKNet's
    ``stages`` / ``transitions`` lists, interleaved in the data flow) are never drawn either."""
    flat = {k for k in tree.keys if tree.container[k] and (style == "paper" or not tree.chained(k))}
    collapsed: set[str] = set()
    if style == "paper":
        d = depth or 1
        for k in tree.keys:
            if tree.container[k]:
                continue
            lvl = tree.alevel[k]
            if lvl == d and not tree.is_sequence(k):
                collapsed.add(k)
            elif lvl == d + 1:
                collapsed.add(k)
    elif depth is not None:
        collapsed = {k for k in tree.keys if not tree.container[k] and tree.alevel[k] == depth}
    if detail is not None:
        key = _detail_key(tree, detail, hidden)
        keep: set[str] = set()
        up: str | None = key
        while up is not None:
            keep.add(up)
            up = tree.parent[up]
        collapsed = {c for c in collapsed if c not in keep and not _below(tree, c, key)}
    return collapsed, flat


def _below(tree: FrameTree, k: str, anc: str) -> bool:
    p = tree.parent[k]
    while p is not None:
        if p == anc:
            return True
        p = tree.parent[p]
    return False


def _detail_key(tree: FrameTree, path: str, hidden: set[str]) -> str:
    """The frame ``--detail PATH`` names; a located-free ArchError with the paths there are if none does."""
    found = [k for k, f in tree.keys.items() if f.path == path and f.kind != "combinator"]
    shown = [k for k in found if k not in hidden]
    if shown:
        return shown[0]
    if found:
        order = list(tree.keys)
        k = found[0]
        head = next((h for h in reversed(order[:order.index(k)]) if h not in hidden and
                     tree.parent[h] == tree.parent[k] and tree.keys[h].name == tree.keys[k].name), None)
        first = f"'{tree.keys[head].path}'" if head else "the run's first block"
        raise ArchError(f"--detail '{path}' is one of a run of identical blocks drawn once", None,
                        hint=f"name the run's first block, {first}, or add --expand to draw every block")
    from difflib import get_close_matches
    paths = sorted({f.path for f in tree.keys.values() if f.kind == "block" and f.path})
    near = get_close_matches(path, paths, n=3)
    raise ArchError(f"--detail '{path}': the network has no block at that module path", None,
                    hint=("did you mean " + ", ".join(f"'{p}'" for p in near) + "?") if near else
                    "block paths: " + ", ".join(paths[:12]) + (" ..." if len(paths) > 12 else ""))


def build_view(graph: Graph, *, depth: int | None = None, expand: bool = False, deploy: bool = False,
               limits: Limits | None = None, style: str = "default", detail: str | None = None,
               show_args: list[str] | None = None) -> View:
    """Lay out what the diagram shows: clusters, (collapsed) nodes and shape-labelled edges.

    ``depth`` (>= 1) keeps that many block levels and collapses the rest into one node per block;
    ``None`` shows every layer. Levels follow the architecture, not the nesting: a container that only
    holds stages (torchvision's ``features``) is not a level, so depth 1 shows Swin's stages.
    ``expand`` turns off folding of identical consecutive blocks.
    ``deploy`` draws the deploy form (reparam groups fused by the exact planner, see :mod:`.form`);
    ``limits`` bound that form's size as in ``archc deploy``. ``style="paper"`` is the figure style of
    :mod:`.paper` (stages as frames, blocks as boxes, a legend); ``detail`` (a block's module path)
    draws that block in full and the rest as context; ``show_args`` names block arguments the paper
    style shows although they look like schedule arguments (``["all"]``: every argument).
    """
    if depth is not None and depth < 1:
        raise ArchError(f"--depth must be at least 1, got {depth}", None,
                        hint="depth 1 shows the network's top-level stages; leave it out for every layer")
    if style not in STYLES:
        raise ArchError(f"--style must be one of {', '.join(STYLES)}, got '{style}'", None,
                        hint="'paper' draws a figure for a paper; 'default' every layer with its shapes")
    notes: list[str] = []
    g = deploy_graph(graph, notes, limits=limits) if deploy else graph
    fused_ids = set(g.fused_nodes)
    tree = FrameTree(g)
    folds = fold(tree, expand)
    counts, last_path, hidden, rep, inst = folds.counts, folds.last_path, folds.hidden, folds.rep, folds.inst
    collapsed, flat = _plan(tree, depth, style, detail, hidden)

    # identity-family ops are drawn as plain edges: resolve each to the tensor it passes on
    alias: dict[int, int] = {}
    for n in tree.order:
        if is_wire(n):
            src = n.inputs[0]
            alias[n.id] = alias.get(src, src)   # inputs precede their consumers: ``src`` is resolved already

    max_level = max(tree.alevel.values(), default=0)
    cids: dict[str, str] = {}
    for k in tree.keys:
        if k not in hidden:
            cids[k] = f"c{len(cids) + 1}"

    def drawn_parent(k: str | None) -> str | None:
        while k is not None and k in flat:
            k = tree.parent[k]
        return cids.get(k) if k else None

    clusters: dict[str, ViewCluster] = {}
    for k, cid in cids.items():
        if k in flat or any(a in collapsed for a in _ancestors(tree, k)):
            continue
        count = counts.get(k, 1)
        params = sum(tree.byid[m].params for m in tree.members[k]) * count
        c = ViewCluster(id=cid, frame=tree.keys[k], level=tree.alevel[k], parent=drawn_parent(tree.parent[k]),
                        count=count, period=folds.period.get(k, 1), last_path=last_path.get(k, ""),
                        params=params, collapsed=k in collapsed, container=tree.container[k], key=k)
        c.title = _cluster_label(c)
        clusters[cid] = c

    nodes: dict[str, ViewNode] = {}
    item_of: dict[int, str] = {}
    for n in tree.order:
        if n.id in rep or is_wire(n):
            continue
        chain = tree.chain[n.id]
        ck = next((k for k in chain if k in collapsed), None)
        if ck is not None:
            vid = "b" + cids[ck][1:]
            if vid not in nodes:
                nodes[vid] = _block_node(vid, clusters[cids[ck]], tree, ck)
            nodes[vid].ir.append(n.id)
            item_of[n.id] = vid
            continue
        vid = f"n{n.id}"
        parent = drawn_parent(chain[-1]) if chain else None
        if n.op == "input":
            label, kind, family = "input\n" + fmt_shape(n.shape), "input", "input"
        else:
            label, kind, family = op_label(n, n.id in fused_ids), "op", op_family(n.op)
        nodes[vid] = ViewNode(id=vid, kind=kind, label=label, family=family, cluster=parent,
                              tooltip=node_tooltip(n), params=n.params, ir=[n.id], fused=n.id in fused_ids,
                              spec=str(n.loc) if n.loc else "")
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
        for pos, u in sorted(enumerate(n.inputs), key=lambda ku: size_only_input(n.op, ku[0])):   # data first
            ru = alias.get(u, u)
            a, b = inst.get(ru), inst.get(n.id)
            if a and b and a[0] == b[0] and a[1] != b[1]:
                continue  # the wire from one folded instance into the next
            # a consumer of the run's last instance is wired to the head's corresponding node
            add_edge(ru, item(n.id), size_only_input(n.op, pos))
    for idx, (name, nid) in enumerate(g.outputs):
        vid = f"o{idx + 1}"
        shape = tree.byid[nid].shape
        nodes[vid] = ViewNode(id=vid, kind="output", label=f"{name}\n{fmt_shape(shape)}", family="output",
                              cluster=None, tooltip=f"output '{name}': {list(shape)}")
        add_edge(alias.get(nid, nid), vid)

    total = sum(n.params for n in tree.order)
    title = f"{g.name}  ({format_count(total)} params" + (", deploy form)" if deploy else ")")
    view = View(name=g.name, title=title, nodes=nodes, clusters=clusters, edges=edges, depth=depth,
                max_level=max_level, notes=notes, style=style, graph=g)
    if style == "paper":
        paper_view(view, tree, show_args or [], detail=_detail_key(tree, detail, hidden) if detail else None)
    return view


def _ancestors(tree: FrameTree, k: str) -> list[str]:
    out = []
    p = tree.parent[k]
    while p is not None:
        out.append(p)
        p = tree.parent[p]
    return out
