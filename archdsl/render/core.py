"""Architecture diagrams: graph IR -> Graphviz DOT -> SVG/PNG/PDF, and a self-contained HTML viewer.

The IR's ``scope`` frames (network / block / group / combinator / reparam) become nested clusters.
``depth`` collapses everything below that many levels into one node per block; runs of consecutive
blocks with identical structure are folded into one (``Bottleneck x5``) unless ``expand`` is set.
Edges carry the tensor shape that flows along them, nodes show the op, its key arguments and its
parameter count, and each op family has one fixed colour, so diagrams of different networks agree.

Output is deterministic: node, edge and cluster ids come from the IR's (deterministic) node order,
never from memory addresses, so the same spec always gives byte-identical DOT and SVG.

This module never imports torch; only the ``graphviz`` Python package and the ``dot`` program.
"""
from __future__ import annotations

import hashlib
import html
import json
import math
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..errors import ArchError
from ..ir import Graph, Node, ScopeFrame
from ..ops import OPS, REQUIRED
from ..passes.summary import format_count

__all__ = [
    "FAMILY_COLORS", "View", "ViewNode", "ViewCluster", "ViewEdge", "build_view", "to_dot", "render_bytes",
    "render_svg", "render_html", "write_diagram", "deploy_graph", "fuse_reparam_groups", "family_color",
    "require_dot", "DIAGRAM_FORMATS",
]

#: Output formats ``write_diagram`` understands (by file extension).
DIAGRAM_FORMATS = ("svg", "png", "pdf", "dot", "html")

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
_BLOCK_FILL = "#f4f1ea"          # a collapsed block
_CLUSTER_STYLE: dict[str, tuple[str, str, str]] = {
    # kind -> (style, border colour, fill colour)
    "block": ("rounded,filled", "#7f8fa6", "#f7f9fc"),
    "group": ("rounded,filled", "#a0a0a0", "#fcfcfc"),
    "combinator": ("rounded,dotted,filled", "#909090", "#fbfbfb"),
    "reparam": ("rounded,dashed,filled,bold", "#b15928", "#fff8f0"),
}
_FONT = "Helvetica"
_SHORT_ARG = {"kernel_size": "k", "stride": "s", "groups": "g", "out_features": "out", "output_size": "out",
              "dilation": "d", "padding": "p"}


def family_color(family: str) -> str:
    """The fill colour of an op family: fixed for the built-in families, hashed for the others."""
    if family in FAMILY_COLORS:
        return FAMILY_COLORS[family]
    digest = hashlib.sha1(family.encode("utf-8")).digest()
    return _EXTRA_COLORS[digest[0] % len(_EXTRA_COLORS)]


# ------------------------------------------------------------------------------------------- view model
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
    """A tensor flowing from ``src`` to ``dst``; ``shape`` is the IR shape of the producing node."""

    id: str
    src: str
    dst: str
    shape: tuple[int, ...]


@dataclass
class View:
    """Everything a diagram shows, independent of the output format."""

    name: str
    title: str
    nodes: dict[str, ViewNode]
    clusters: dict[str, ViewCluster]
    edges: list[ViewEdge]
    depth: int | None
    max_level: int

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


def _frame_key(f: ScopeFrame) -> str:
    return f"{f.kind}|{f.path}|{f.name}|{f.loc}"


def _is_transparent(f: ScopeFrame) -> bool:
    """Unlabelled ``add:``/``concat:`` frames only wrap their block's body: no cluster, no level."""
    if f.kind != "combinator":
        return False
    last = f.path.rsplit(".", 1)[-1]
    return last == f.name


def _frames_of(n: Node) -> list[ScopeFrame]:
    return [f for f in n.scope if f.kind != "network" and not _is_transparent(f)]


def _fmt_shape(shape: Iterable[int]) -> str:
    return "\u00d7".join(str(d) for d in shape)


def _fmt_value(v: Any) -> str:
    if isinstance(v, (tuple, list)):
        if v and len(set(v)) == 1:
            return str(v[0])
        return "\u00d7".join(str(x) for x in v)
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _key_args(n: Node) -> str:
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
            parts.append(f"{v[0]}\u00d7{v[0]}")
            continue
        parts.append(f"{_SHORT_ARG.get(name, name)}={_fmt_value(v)}")
    return " ".join(parts)


def _same_value(v: Any, d: Any) -> bool:
    if isinstance(v, (tuple, list)) and not isinstance(d, (tuple, list)):
        return all(x == d for x in v)
    if isinstance(v, (tuple, list)) and isinstance(d, (tuple, list)):
        return tuple(v) == tuple(d)
    return bool(v == d)


def _short_name(n: Node) -> str | None:
    """The label to print before the op: the spec's label (numbered positions are not shown)."""
    if n.label:
        return n.label
    last = n.name.rsplit(".", 1)[-1] if n.name else ""
    if not last or last.isdigit() or last == n.op or "[" in last:
        return None
    return last


def _wrap(text: str, width: int = 44) -> list[str]:
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


def _frame_title(f: ScopeFrame) -> str:
    if f.kind == "block":
        return f.name
    if f.kind == "reparam":
        return f"reparam {f.name}"
    return f.name


def _path_range(first: str, last: str) -> str:
    """``layer3.1`` .. ``layer3.5`` -> ``layer3.1-5``."""
    if not last or last == first:
        return first
    head, _, tail = first.rpartition(".")
    lhead, _, ltail = last.rpartition(".")
    if head == lhead:
        return f"{first}\u2013{ltail}"
    return f"{first}\u2013{last}"


def _heading(c: ViewCluster, short: bool) -> str:
    """``layer1.0: Bottleneck``, ``layer3.1-5: Bottleneck \u00d75``, ``layer1``, ``lk: reparam add``.

    ``short`` (for collapsed nodes, which sit inside their parent's cluster) keeps only the last
    segment of the module path.
    """
    f = c.frame
    path = _path_range(f.path, c.last_path) if c.count > 1 else f.path
    if short and "." in f.path:
        path = path[len(f.path.rpartition(".")[0]) + 1:]
    what = _frame_title(f) + (f" \u00d7{c.count}" if c.count > 1 else "")
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
        lines.extend(_wrap(c.frame.args))
    if c.params:
        lines.append(f"{format_count(c.params)} params")
    return "\n".join(lines)


def _left(text: str) -> str:
    """A multi-line Graphviz label with every line left-justified (``\\l`` line ends)."""
    return "".join(line.replace("\\", "\\\\") + "\\l" for line in text.split("\n"))


# ------------------------------------------------------------------------------------------- deploy form
def deploy_graph(graph: Graph) -> Graph:
    """The deploy form of ``graph`` for drawing.

    Uses the deploy compiler's torch-free graph pass (``archdsl.deployer.deploy_graph``: reparam groups
    fused, BatchNorms folded, identities dropped) when it is available; otherwise fuses every
    re-parameterization group into one conv here (:func:`fuse_reparam_groups`).
    """
    try:
        from ..codegen import deploy as _deploy
    except ImportError:
        return fuse_reparam_groups(graph)
    # deploy_plan also says which groups it fused; deploy_graph gives the graph alone
    pass_fn = getattr(_deploy, "deploy_plan", None) or getattr(_deploy, "deploy_graph", None)
    if not callable(pass_fn):
        return fuse_reparam_groups(graph)
    try:
        plan = pass_fn(graph)
    except ArchError:
        raise
    except Exception:  # a pass that cannot handle this graph: the structural fusion below needs nothing
        return fuse_reparam_groups(graph)
    g: Graph = getattr(plan, "graph", plan)
    if not isinstance(g, Graph):
        return fuse_reparam_groups(graph)
    fused_paths = set(getattr(plan, "fused_groups", None) or graph.reparam_groups)
    fused: set[int] = set()
    for n in g.nodes():
        # the fused conv keeps the group's output scope; it is drawn in place of the group, not inside it
        if any(f.kind == "reparam" and f.path in fused_paths for f in n.scope):
            n.scope = [f for f in n.scope if not (f.kind == "reparam" and f.path in fused_paths)]
            fused.add(n.id)
            info = graph.reparam_groups.get(n.name) or {}
            n.label = n.label or info.get("label")
    g.fused_nodes = fused  # type: ignore[attr-defined]
    g.name = graph.name
    return g


_LINEAR_OPS = {"conv2d", "batchnorm", "identity", "add", "avgpool"}


def _group_members(graph: Graph) -> dict[str, list[Node]]:
    """Nodes of every reparam group (nested groups count for their enclosing ones), in graph order."""
    out: dict[str, list[Node]] = {p: [] for p in graph.reparam_groups}
    for n in graph.nodes():
        paths = {f.path for f in n.scope if f.kind == "reparam"}
        if n.reparam:
            paths.add(n.reparam)
        for p in sorted(paths):
            if p in out:
                out[p].append(n)
    return out


def fuse_reparam_groups(graph: Graph) -> Graph:
    """A copy of ``graph`` where each fusable reparam group is one conv node (bias on, largest kernel).

    The fused node keeps the group's output shape and node id; its parameter count is that of the
    fused conv (``out * in/groups * k * k + out``). Groups that are not linear (e.g. hold a ReLU) or do
    not have exactly one input and one output are left as they are.
    """
    nodes = {n.id: n for n in graph.nodes()}
    groups_of = _group_members(graph)
    graph_outs = {nid for _, nid in graph.outputs}
    replace: dict[int, Node] = {}        # output node id -> fused node
    removed: set[int] = set()
    fused_ids: set[int] = set()
    for path in sorted(graph.reparam_groups):
        members = groups_of[path]
        ids = {n.id for n in members}
        if not members or ids & removed:
            continue
        if any(n.op not in _LINEAR_OPS for n in members):
            continue
        ext_in = sorted({i for n in members for i in n.inputs if i not in ids})
        outs = sorted({n.id for n in members
                       if any(c not in ids for c in graph.consumers(n.id))
                       or n.id in graph_outs})
        if len(ext_in) != 1 or len(outs) != 1:
            continue
        src, out = nodes[ext_in[0]], nodes[outs[0]]
        kernels = [max(n.args["kernel_size"]) for n in members if n.op in ("conv2d", "avgpool")]
        if not kernels or len(src.shape) != 3:
            continue
        k = max(kernels)
        strides = [max(n.args["stride"]) for n in members if n.op in ("conv2d", "avgpool")]
        groups = 0
        for n in members:
            if n.op == "conv2d":
                groups = math.gcd(groups, int(n.args["groups"]))
        groups = groups or 1
        cin, cout = src.shape[0], out.shape[0]
        params = cout * (cin // groups) * k * k + cout
        info = graph.reparam_groups[path]
        frames: list[ScopeFrame] = []
        for f in out.scope:
            if f.kind == "reparam" and f.path == path:
                break
            frames.append(f)
        label = info.get("label")
        fused = Node(id=out.id, op="conv2d", inputs=[src.id], in_shapes=[src.shape], shape=out.shape,
                     args={"out_channels": cout, "kernel_size": (k, k), "stride": (max(strides),) * 2,
                           "padding": (k // 2, k // 2), "dilation": (1, 1), "groups": groups, "bias": True,
                           "padding_mode": "zeros"},
                     name=path, module=path, scope=frames, loc=info.get("loc") or out.loc, params=params,
                     macs=math.prod(out.shape) * (cin // groups) * k * k, label=label)
        replace[out.id] = fused
        removed |= ids
        fused_ids.add(out.id)
    g = graph.derive()
    for n in graph.nodes():
        if n.id in replace:
            g.add(replace[n.id])
        elif n.id not in removed:
            g.add(n.model_copy())
    g.fused_nodes = fused_ids  # type: ignore[attr-defined]
    return g


# ------------------------------------------------------------------------------------------- building the view
class _Tree:
    """The frame hierarchy of a graph: clusters keyed by frame, with ordered children and members."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.order: list[Node] = list(graph.nodes())
        self.byid = {n.id: n for n in self.order}
        self.keys: dict[str, ScopeFrame] = {}
        self.parent: dict[str, str | None] = {}
        self.level: dict[str, int] = {}
        self.children: dict[str | None, list[tuple[str, Any]]] = {None: []}
        self.members: dict[str, list[int]] = {}
        self.chain: dict[int, list[str]] = {}
        for n in self.order:
            chain: list[str] = []
            parent: str | None = None
            for f in _frames_of(n):
                k = _frame_key(f)
                if k not in self.keys:
                    self.keys[k] = f
                    self.parent[k] = parent
                    self.level[k] = len(chain) + 1
                    self.children[k] = []
                    self.members[k] = []
                    self.children[parent].append(("cluster", k))
                self.members[k].append(n.id)
                chain.append(k)
                parent = k
            self.chain[n.id] = chain
            self.children[parent].append(("node", n.id))

    def signature(self, key: str) -> tuple[Any, ...]:
        """Structure of a frame's contents: ops, arguments, shapes and wiring, without names."""
        mem = self.members[key]
        index = {nid: i for i, nid in enumerate(mem)}
        sig = []
        for nid in mem:
            n = self.byid[nid]
            opdef = OPS.get(n.op)
            family = opdef.family if opdef else n.op
            # dropout rates vary per block (stochastic depth schedules) without changing the structure
            args = "" if family == "dropout" or n.op == "drop_path" else repr(sorted(n.args.items()))
            wires = tuple(index.get(i, -1) for i in n.inputs)
            rel = [self.level[k] - self.level[key] for k in self.chain[nid] if self.level[k] > self.level[key]]
            sig.append((n.op, args, n.shape, tuple(n.in_shapes), wires, n.label, tuple(rel)))
        f = self.keys[key]
        return (f.kind, f.name, tuple(sig))

    def ext_inputs(self, key: str) -> set[int]:
        mem = set(self.members[key])
        return {i for nid in mem for i in self.byid[nid].inputs if i not in mem}

    def outputs(self, key: str) -> set[int]:
        mem = set(self.members[key])
        graph_outs = {nid for _, nid in self.graph.outputs}
        return {nid for nid in mem
                if nid in graph_outs or any(c not in mem for c in self.graph.consumers(nid))}


@dataclass
class _Folds:
    """Runs of repeated sibling blocks found by :func:`_fold`."""

    counts: dict[str, int] = field(default_factory=dict)       # head cluster key -> repetitions
    period: dict[str, int] = field(default_factory=dict)       # head cluster key -> blocks per repetition
    last_path: dict[str, str] = field(default_factory=dict)    # head key -> module path of its last copy
    hidden: set[str] = field(default_factory=set)              # cluster keys of the copies not drawn
    rep: dict[int, int] = field(default_factory=dict)          # node of a copy -> same node in the head
    inst: dict[int, tuple[str, int]] = field(default_factory=dict)   # node -> (run, repetition index)


_MAX_PERIOD = 4   # longest cycle of different blocks recognised (RepLKNet alternates two)


def _fold(tree: _Tree, expand: bool) -> _Folds:
    """Find runs of consecutive sibling blocks that repeat with identical structure.

    A run is ``m >= 2`` repetitions of a unit of ``p`` consecutive sibling blocks (``p = 1``: the
    same block again, as ResNet stages; ``p = 2``: RepLKNet's RepLK block / ConvFFN pairs), chained
    so that each repetition takes exactly the previous one's single output. The first unit is drawn
    with ``xm``; the other copies are hidden and their nodes stand for the head's.
    """
    folds = _Folds()
    if expand:
        return folds
    sigs: dict[str, tuple[object, ...]] = {}

    def sig(key: str) -> tuple[object, ...]:
        if key not in sigs:
            sigs[key] = tree.signature(key)
        return sigs[key]

    def chained(prev: list[str], nxt: list[str]) -> bool:
        outs: set[int] = set()
        mem_prev: set[int] = set()
        for k in prev:
            mem_prev |= set(tree.members[k])
        graph_outs = {nid for _, nid in tree.graph.outputs}
        for nid in mem_prev:
            if nid in graph_outs or any(c not in mem_prev for c in tree.graph.consumers(nid)):
                outs.add(nid)
        mem_next: set[int] = set()
        for k in nxt:
            mem_next |= set(tree.members[k])
        ext = {i for nid in mem_next for i in tree.byid[nid].inputs if i not in mem_next}
        if len(outs) != 1 or ext != outs:
            return False
        return all(c in mem_next for o in outs for c in tree.graph.consumers(o))

    def visit(parent: str | None) -> None:
        items = tree.children[parent]
        i = 0
        while i < len(items):
            if items[i][0] != "cluster":
                i += 1
                continue
            best: tuple[int, int] = (1, 1)     # (repetitions, period)
            for p in range(1, _MAX_PERIOD + 1):
                unit = items[i:i + p]
                if len(unit) < p or any(kind != "cluster" for kind, _ in unit):
                    break
                m = 1
                while True:
                    nxt = items[i + m * p:i + (m + 1) * p]
                    if len(nxt) < p or any(kind != "cluster" for kind, _ in nxt):
                        break
                    if any(sig(a[1]) != sig(b[1]) for a, b in zip(unit, nxt)):
                        break
                    prev = [k for _, k in items[i + (m - 1) * p:i + m * p]]
                    if not chained(prev, [k for _, k in nxt]):
                        break
                    m += 1
                if m >= 2 and m * p > best[0] * best[1]:
                    best = (m, p)
            m, p = best
            if m >= 2:
                heads = [k for _, k in items[i:i + p]]
                for q, head in enumerate(heads):
                    folds.counts[head] = m
                    folds.period[head] = p
                    folds.last_path[head] = tree.keys[items[i + (m - 1) * p + q][1]].path
                for r in range(m):
                    for q, head in enumerate(heads):
                        key = items[i + r * p + q][1]
                        for pos, nid in enumerate(tree.members[key]):
                            folds.inst[nid] = (heads[0], r)
                            if r:
                                folds.rep[nid] = tree.members[head][pos]
                        if r:
                            folds.hidden.add(key)
                            _hide_below(tree, key, folds.hidden)
                for head in heads:
                    visit(head)
                i += m * p
            else:
                visit(items[i][1])
                i += 1
    visit(None)
    return folds


def _hide_below(tree: _Tree, key: str, hidden: set[str]) -> None:
    for kind, k in tree.children[key]:
        if kind == "cluster":
            hidden.add(k)
            _hide_below(tree, k, hidden)


def _contents(tree: _Tree, key: str) -> str:
    """The blocks directly inside a frame, run-length encoded: ``Bottleneck \u00d73, Transition``."""
    names = [tree.keys[k].name for kind, k in tree.children[key] if kind == "cluster" and tree.keys[k].kind == "block"]
    runs: list[list[Any]] = []
    for name in names:
        if runs and runs[-1][0] == name:
            runs[-1][1] += 1
        else:
            runs.append([name, 1])
    parts = [f"{name} \u00d7{k}" if k > 1 else name for name, k in runs]
    if len(parts) > 4:
        parts = parts[:4] + [f"... ({len(names)} blocks)"]
    return ", ".join(parts)


def _tooltip(n: Node) -> str:
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


def _op_label(n: Node, fused: bool) -> str:
    # an unlabelled fused group has only its combinator's name ('add'); the op says enough then
    short = n.label or _short_name(n)
    if fused and short in ("add", "concat", "mul", "stack"):
        short = None
    op = "fused conv2d" if fused else n.op
    lines = [f"{short}: {op}" if short else op]
    ka = _key_args(n)
    if ka:
        lines.append(ka)
    if n.params:
        lines.append(f"{format_count(n.params)} params")
    return "\n".join(lines)


def build_view(graph: Graph, *, depth: int | None = None, expand: bool = False, deploy: bool = False) -> View:
    """Lay out what the diagram shows: clusters, (collapsed) nodes and shape-labelled edges.

    ``depth`` (>= 1) keeps that many block levels and collapses the rest into one node per block;
    ``None`` shows every layer. ``expand`` turns off folding of identical consecutive blocks.
    ``deploy`` draws the deploy form (reparam groups fused).
    """
    if depth is not None and depth < 1:
        raise ArchError(f"--depth must be at least 1, got {depth}", None,
                        hint="depth 1 shows the network's top-level stages; leave it out for every layer")
    g = deploy_graph(graph) if deploy else graph
    fused_ids: set[int] = set(getattr(g, "fused_nodes", set()))
    tree = _Tree(g)
    folds = _fold(tree, expand)
    counts, last_path, hidden, rep, inst = folds.counts, folds.last_path, folds.hidden, folds.rep, folds.inst

    # identities are drawn as plain edges: resolve each to the tensor it passes on
    alias: dict[int, int] = {}

    def resolve(nid: int) -> int:
        seen = 0
        while tree.byid[nid].op == "identity" and tree.byid[nid].inputs and seen < 10_000:
            nid = tree.byid[nid].inputs[0]
            seen += 1
        return nid

    for n in tree.order:
        if n.op == "identity":
            alias[n.id] = resolve(n.id)

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
                        params=params,
                        collapsed=depth is not None and lvl == depth)
        c.title = _cluster_label(c)
        clusters[cid] = c

    nodes: dict[str, ViewNode] = {}
    item_of: dict[int, str] = {}
    for n in tree.order:
        if n.id in rep or n.op == "identity":
            continue
        chain = tree.chain[n.id]
        if depth is not None and len(chain) >= depth:
            ck = chain[depth - 1]
            cid = cids[ck]
            vid = "b" + cid[1:]
            if vid not in nodes:
                c = clusters[cid]
                f = c.frame
                lines = [_heading(c, short=True)]
                if f.args:
                    lines.extend(_wrap(f.args, 36))
                contents = _contents(tree, ck)
                if contents and f.kind != "block":
                    lines.extend(_wrap(contents, 36))
                if c.params:
                    lines.append(f"{format_count(c.params)} params")
                tip = _heading(c, short=False) + (f" ({f.args})" if f.args else "")
                tip += f"\nparams: {c.params:,}" + (f"\nspec: {f.loc}" if f.loc else "")
                nodes[vid] = ViewNode(id=vid, kind="block", label="\n".join(lines), family="block",
                                      cluster=c.parent, tooltip=tip, params=c.params)
            nodes[vid].ir.append(n.id)
            item_of[n.id] = vid
            continue
        vid = f"n{n.id}"
        parent = cids[chain[-1]] if chain else None
        if n.op == "input":
            label = "input\n" + _fmt_shape(n.shape)
            kind, family = "input", "input"
        else:
            label = _op_label(n, n.id in fused_ids)
            kind = "op"
            opdef = OPS.get(n.op)
            family = opdef.family if opdef else n.op
        nodes[vid] = ViewNode(id=vid, kind=kind, label=label, family=family, cluster=parent,
                              tooltip=_tooltip(n), params=n.params, ir=[n.id], fused=n.id in fused_ids)
        item_of[n.id] = vid

    def item(nid: int) -> str:
        nid = alias.get(nid, nid)
        return item_of[rep.get(nid, nid)]

    edges: list[ViewEdge] = []
    seen: set[tuple[str, str, tuple[int, ...]]] = set()

    def add_edge(src_ir: int, dst: str) -> None:
        src = item(src_ir)
        if src == dst:
            return
        shape = tuple(tree.byid[src_ir].shape)
        key = (src, dst, shape)
        if key in seen:
            return
        seen.add(key)
        edges.append(ViewEdge(id=f"e{len(edges) + 1}", src=src, dst=dst, shape=shape))

    for n in tree.order:
        # identities are edges; the wires of hidden fold instances repeat those of the run's head
        if n.op == "identity" or n.id in rep:
            continue
        for u in n.inputs:
            ru = alias.get(u, u)
            a, b = inst.get(ru), inst.get(n.id)
            if a and b and a[0] == b[0] and a[1] != b[1]:
                continue  # the wire from one folded instance into the next
            # a consumer of the run's last instance is wired to the head's corresponding node
            add_edge(ru, item(n.id))
    for idx, (name, nid) in enumerate(g.outputs):
        vid = f"o{idx + 1}"
        shape = tree.byid[nid].shape
        nodes[vid] = ViewNode(id=vid, kind="output", label=f"{name}\n{_fmt_shape(shape)}", family="output",
                              cluster=None, tooltip=f"output '{name}': {list(shape)}")
        add_edge(alias.get(nid, nid), vid)

    total = g.total_params
    title = f"{g.name}  ({format_count(total)} params" + (", deploy form)" if deploy else ")")
    return View(name=g.name, title=title, nodes=nodes, clusters=clusters, edges=edges, depth=depth,
                max_level=max_level)


# ------------------------------------------------------------------------------------------- DOT
def to_dot(view: View, *, rankdir: str = "TB", tooltips: bool = True, classes: bool = False) -> str:
    """The view as Graphviz DOT source (deterministic).

    ``tooltips`` adds hover text (shapes, params, spec line) to SVG output; ``classes`` tags every
    element with the clusters it sits in (``in-c3``), for the HTML viewer.
    """
    import graphviz

    if rankdir not in ("TB", "LR", "BT", "RL"):
        raise ArchError(f"--rankdir must be TB or LR, got '{rankdir}'", None,
                        hint="TB draws top to bottom, LR left to right")
    dot = graphviz.Digraph(name=_dot_id(view.name), engine="dot")
    dot.attr(rankdir=rankdir, fontname=_FONT, fontsize="11", nodesep="0.25",
             ranksep="0.32", label=view.title, labelloc="t", labeljust="l", bgcolor="white")
    if tooltips:
        dot.attr(tooltip=" ")  # no generic tooltip over the background in SVG viewers
    dot.attr("node", shape="box", style="rounded,filled", fontname=_FONT, fontsize="10", margin="0.12,0.05",
             penwidth="0.8", color="#555555")
    dot.attr("edge", fontname=_FONT, fontsize="8", color="#555555", fontcolor="#333333", arrowsize="0.6",
             penwidth="0.8")

    kids: dict[str | None, list[str]] = {}
    for c in view.visible_clusters():
        kids.setdefault(c.parent, []).append(c.id)
    members: dict[str | None, list[ViewNode]] = {}
    for n in view.nodes.values():
        members.setdefault(n.cluster, []).append(n)

    def node_attrs(n: ViewNode) -> dict[str, str]:
        attrs: dict[str, str] = {"id": n.id, "label": n.label}
        if n.kind == "block":
            attrs.update(shape="box3d", style="filled", fillcolor=_BLOCK_FILL, color="#6f6f6f")
        elif n.kind in ("input", "output"):
            attrs.update(shape="oval", style="filled", fillcolor=family_color(n.family))
        else:
            attrs["fillcolor"] = family_color(n.family)
            if n.fused:
                attrs.update(style="rounded,filled,bold", color="#b15928", penwidth="1.6")
        if tooltips:
            attrs["tooltip"] = n.tooltip
        if classes:
            attrs["class"] = " ".join(["arch-" + n.kind] + [f"in-{c}" for c in view.ancestors(n.cluster)])
        return attrs

    def emit(sub: Any, parent: str | None) -> None:
        for cid in kids.get(parent, []):
            c = view.clusters[cid]
            with sub.subgraph(name=f"cluster_{cid}") as s:
                style, border, fill = _CLUSTER_STYLE.get(c.frame.kind, _CLUSTER_STYLE["group"])
                s.attr(label=_left(c.title), id=cid, style=style, color=border, fillcolor=fill, fontname=_FONT,
                       fontsize="10", labeljust="l", penwidth="1.0" if c.frame.kind != "reparam" else "1.6",
                       # a wider margin keeps Graphviz from drawing a cluster's last node on its border
                       margin="14")
                if c.count > 1:
                    s.attr(peripheries="1", style=style + ",bold")
                if tooltips:
                    s.attr(tooltip=c.title)
                if classes:
                    s.attr("graph", **{"class": " ".join(["arch-cluster"] + [f"in-{a}" for a in
                                                                             view.ancestors(c.parent)])})
                emit(s, cid)
        for n in members.get(parent, []):
            sub.node(n.id, **node_attrs(n))

    emit(dot, None)
    for e in view.edges:
        attrs = {"id": e.id, "label": _fmt_shape(e.shape)}
        if tooltips:
            attrs["tooltip"] = f"{list(e.shape)}"
        if classes:
            shared = set(view.ancestors(view.nodes[e.src].cluster)) & set(view.ancestors(view.nodes[e.dst].cluster))
            attrs["class"] = " ".join(f"in-{c}" for c in sorted(shared, key=lambda x: int(x[1:])))
        dot.edge(e.src, e.dst, **attrs)
    return dot.source


def _dot_id(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name) or "network"


# ------------------------------------------------------------------------------------------- rendering
def require_dot() -> str:
    """Path of Graphviz's ``dot``, or an ArchError saying how to install it."""
    path = shutil.which("dot")
    if path is None:
        raise ArchError("cannot render: Graphviz's 'dot' program was not found on PATH", None,
                        hint="install Graphviz with 'apt-get install graphviz' (or run the set-up script "
                             "'bash scripts/setup.sh'); '-o FILE.dot' writes the DOT source without it")
    return path


def render_bytes(dot_source: str, fmt: str) -> bytes:
    """Run ``dot -T<fmt>`` on DOT source; ArchError if dot is missing or fails."""
    exe = require_dot()
    try:
        proc = subprocess.run([exe, f"-T{fmt}"], input=dot_source.encode("utf-8"), capture_output=True,
                              timeout=300, check=False)
    except subprocess.TimeoutExpired:
        raise ArchError("Graphviz 'dot' took more than 300 s", None,
                        hint="draw less: use --depth 1 or 2, or leave out --expand") from None
    if proc.returncode != 0:
        msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ArchError(f"Graphviz 'dot' failed: {msg[0] if msg else 'exit code ' + str(proc.returncode)}", None,
                        hint="rerun with '-o FILE.dot' to inspect the generated DOT")
    return proc.stdout


def render_svg(graph: Graph, *, depth: int | None = None, expand: bool = False, deploy: bool = False,
               rankdir: str = "TB") -> str:
    """The diagram of ``graph`` as SVG text."""
    view = build_view(graph, depth=depth, expand=expand, deploy=deploy)
    return render_bytes(to_dot(view, rankdir=rankdir), "svg").decode("utf-8")


def write_diagram(graph: Graph, output: str | Path, *, fmt: str | None = None, depth: int | None = None,
                  expand: bool = False, deploy: bool = False, rankdir: str = "TB") -> str:
    """Write the diagram of ``graph`` to ``output``; the format comes from ``fmt`` or the extension.

    Returns the format written. Writes atomically (never a partial file).
    """
    from ..fsutil import atomic_write

    out = Path(output)
    kind = (fmt or out.suffix.lstrip(".")).lower()
    if kind not in DIAGRAM_FORMATS:
        raise ArchError(f"cannot tell the diagram format from '{out.name}'", None,
                        hint="use an output ending in " + ", ".join("." + f for f in DIAGRAM_FORMATS))
    if kind == "html":
        atomic_write(out, render_html(graph, depth=depth, expand=expand, deploy=deploy, rankdir=rankdir))
        return kind
    view = build_view(graph, depth=depth, expand=expand, deploy=deploy)
    src = to_dot(view, rankdir=rankdir)
    if kind == "dot":
        atomic_write(out, src)
    else:
        atomic_write(out, render_bytes(src, kind))
    return kind


# ------------------------------------------------------------------------------------------- HTML viewer
_HTML_CSS = """
body{margin:0;font:13px Helvetica,Arial,sans-serif;background:#fafafa;color:#222}
#bar{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid #ddd;padding:6px 10px}
#bar button{margin-right:4px;font:12px Helvetica,Arial,sans-serif}
#bar .info{color:#666;margin-left:10px}
#canvas{padding:10px;overflow:auto}
#canvas svg{display:block}
g.arch-cluster>polygon,g.arch-cluster>path{cursor:zoom-out}
.arch-overlay{cursor:zoom-in}
.arch-overlay rect{fill:#f4f1ea;stroke:#6f6f6f;stroke-width:1.2}
.arch-overlay text{font:10px Helvetica,Arial,sans-serif;fill:#222}
.arch-hidden{display:none}
#tip{position:fixed;display:none;pointer-events:none;background:#fffff0;border:1px solid #999;padding:5px 7px;
white-space:pre;font:12px Menlo,Consolas,monospace;box-shadow:1px 1px 4px rgba(0,0,0,.2);z-index:3}
"""

_HTML_JS = r"""
(function(){
'use strict';
const META = JSON.parse(document.getElementById('arch-meta').textContent);
const svg = document.querySelector('#canvas svg');
const root = svg.querySelector('g.graph');
const AX = META.axis;                 // the axis along which the layers flow: 'y' (TB) or 'x' (LR)
const GAP = 22;                       // empty space left where a collapsed block's contents were
const NS = 'http://www.w3.org/2000/svg';
const tip = document.getElementById('tip');
const collapsed = new Set();
const lo = b => AX === 'y' ? b.y : b.x;
const hi = b => AX === 'y' ? b.y + b.height : b.x + b.width;
const tagged = Array.from(svg.querySelectorAll('g.node, g.edge, g.cluster'));
const info = new Map();
for (const el of tagged) {
  const anc = (el.getAttribute('class') || '').split(/\s+/).filter(c => c.startsWith('in-')).map(c => c.slice(3));
  info.set(el, {anc: anc, box: el.getBBox(), texts: Array.from(el.querySelectorAll('text')).map(t => t.getBBox())});
}
// original geometry of everything that is not moved rigidly (edges, cluster frames, the background)
const geo = [];
const remember = (el, attr) => { if (el && el.hasAttribute(attr)) geo.push({el: el, attr: attr, orig: el.getAttribute(attr)}); };
for (const g of tagged) {
  if (g.classList.contains('node')) continue;
  g.querySelectorAll('path').forEach(e => remember(e, 'd'));
  g.querySelectorAll('polygon, polyline').forEach(e => remember(e, 'points'));
  g.querySelectorAll('text').forEach(e => remember(e, AX));
}
remember(root.querySelector(':scope > polygon'), 'points');
const W0 = svg.viewBox.baseVal.width, H0 = svg.viewBox.baseVal.height;

function overlayLines(cid) { return META.clusters[cid].label.split('\n').concat(['(click to expand)']); }

function render() {
  svg.querySelectorAll('.arch-overlay').forEach(o => o.remove());
  const occ = [], overlays = [];
  for (const el of tagged) {
    const i = info.get(el);
    const hidden = i.anc.some(c => collapsed.has(c));
    const self = el.classList.contains('cluster') && collapsed.has(el.id);
    el.classList.toggle('arch-hidden', hidden || self);
    if (hidden) continue;
    if (self) {
      const lines = overlayLines(el.id);
      const need = AX === 'y' ? 10 + 12 * lines.length : 12 + 6 * Math.max(...lines.map(l => l.length));
      occ.push([lo(i.box), Math.min(hi(i.box), lo(i.box) + need)]);
      overlays.push(el);
    } else if (el.classList.contains('node')) {
      occ.push([lo(i.box), hi(i.box)]);
    } else if (el.classList.contains('cluster')) {
      const end = i.texts.length ? Math.max(...i.texts.map(hi)) + 4 : lo(i.box) + 8;
      occ.push([lo(i.box), end]);
      occ.push([hi(i.box) - 8, hi(i.box)]);
    } else {
      i.texts.forEach(t => occ.push([lo(t), hi(t)]));
    }
  }
  // squeeze every empty stretch along the flow axis down to GAP: a monotone piecewise-linear map
  occ.sort((a, b) => a[0] - b[0]);
  const cuts = [];
  let end = null;
  for (const [a, b] of occ) {
    if (end !== null && a - end > GAP) cuts.push([end, a]);
    end = end === null ? b : Math.max(end, b);
  }
  const f = v => {
    let d = 0;
    for (const [s, e] of cuts) {
      const len = e - s;
      if (v >= e) d += len - GAP; else if (v > s) d += (v - s) * (1 - GAP / len);
    }
    return v - d;
  };
  const pair = /(-?[0-9]*\.?[0-9]+(?:e-?[0-9]+)?),(-?[0-9]*\.?[0-9]+(?:e-?[0-9]+)?)/g;
  const mapPairs = s => s.replace(pair, (m, x, y) => AX === 'y' ? x + ',' + f(+y).toFixed(2) : f(+x).toFixed(2) + ',' + y);
  for (const g of geo) {
    g.el.setAttribute(g.attr, g.attr === 'x' || g.attr === 'y' ? f(+g.orig).toFixed(2) : mapPairs(g.orig));
  }
  for (const el of tagged) {
    if (!el.classList.contains('node')) continue;
    const b = info.get(el).box, d = (f(lo(b)) - lo(b)).toFixed(2);
    el.setAttribute('transform', AX === 'y' ? 'translate(0,' + d + ')' : 'translate(' + d + ',0)');
  }
  for (const el of overlays) {
    const cid = el.id, b = info.get(el).box, a0 = f(lo(b)), a1 = f(hi(b));
    const g = document.createElementNS(NS, 'g');
    g.setAttribute('class', 'arch-overlay');
    g.setAttribute('data-cluster', cid);
    const r = document.createElementNS(NS, 'rect');
    const x = AX === 'y' ? b.x : a0, y = AX === 'y' ? a0 : b.y;
    r.setAttribute('x', x); r.setAttribute('y', y); r.setAttribute('rx', 4);
    r.setAttribute('width', AX === 'y' ? b.width : a1 - a0);
    r.setAttribute('height', AX === 'y' ? a1 - a0 : b.height);
    g.appendChild(r);
    overlayLines(cid).forEach((line, k) => {
      const t = document.createElementNS(NS, 'text');
      t.setAttribute('x', x + 6); t.setAttribute('y', y + 13 + 12 * k);
      t.textContent = line;
      g.appendChild(t);
    });
    g.addEventListener('click', ev => { ev.stopPropagation(); collapsed.delete(cid); hideTip(); render(); });
    g.addEventListener('mousemove', ev => showTip(ev, META.clusters[cid].tip));
    g.addEventListener('mouseleave', hideTip);
    root.appendChild(g);
  }
  const removed = cuts.reduce((acc, [s, e]) => acc + (e - s - GAP), 0);
  const W = AX === 'x' ? W0 - removed : W0, H = AX === 'y' ? H0 - removed : H0;
  svg.setAttribute('viewBox', '0 0 ' + W.toFixed(2) + ' ' + H.toFixed(2));
  svg.setAttribute('width', W.toFixed(2) + 'pt');
  svg.setAttribute('height', H.toFixed(2) + 'pt');
  if (AX === 'x') root.setAttribute('transform', 'scale(1 1) rotate(0) translate(4 ' + (H0 - 4) + ')');
  const shown = tagged.filter(el => el.classList.contains('node') && !el.classList.contains('arch-hidden')).length;
  document.getElementById('count').textContent =
    shown + ' layers shown, ' + overlays.length + ' collapsed blocks';
}
function showTip(ev, text) {
  tip.textContent = text; tip.style.display = 'block';
  tip.style.left = (ev.clientX + 14) + 'px'; tip.style.top = (ev.clientY + 14) + 'px';
}
function hideTip() { tip.style.display = 'none'; }
for (const el of svg.querySelectorAll('g.node')) {
  const text = META.nodes[el.id];
  if (!text) continue;
  el.addEventListener('mousemove', ev => showTip(ev, text));
  el.addEventListener('mouseleave', hideTip);
}
for (const el of svg.querySelectorAll('g.cluster')) {
  el.addEventListener('click', ev => { ev.stopPropagation(); collapsed.add(el.id); hideTip(); render(); });
}
function setDepth(d) {
  collapsed.clear();
  if (d !== null) for (const [cid, c] of Object.entries(META.clusters)) if (c.level >= d) collapsed.add(cid);
  render();
}
document.querySelectorAll('[data-depth]').forEach(b => b.addEventListener('click', () => {
  const v = b.getAttribute('data-depth');
  setDepth(v === 'all' ? null : parseInt(v, 10));
}));
window.archView = {setDepth: setDepth, collapsed: collapsed, render: render};
setDepth(META.depth);
})();
"""


def render_html(graph: Graph, *, depth: int | None = None, expand: bool = False, deploy: bool = False,
                rankdir: str = "TB") -> str:
    """One self-contained HTML page (inline SVG, CSS and JS; no network): click a block to collapse
    or expand it, hover a node for its shapes, parameters and spec line.

    The layout is the full-depth diagram; ``depth`` (default 1) sets which blocks start collapsed.
    """
    view = build_view(graph, depth=None, expand=expand, deploy=deploy)
    svg = render_bytes(to_dot(view, rankdir=rankdir, tooltips=False, classes=True), "svg").decode("utf-8")
    svg = svg[svg.index("<svg"):]
    # graphviz puts each element's DOT id in a <title>; browsers would show it as a tooltip
    svg = _strip_titles(svg)
    start = 1 if depth is None else depth
    meta = {
        "axis": "y" if rankdir in ("TB", "BT") else "x",
        "depth": start if view.max_level else None,
        "clusters": {c.id: {"level": c.level, "label": c.title,
                            "tip": c.title + (f"\nspec: {c.frame.loc}" if c.frame.loc else "")}
                     for c in view.clusters.values()},
        "nodes": {n.id: n.tooltip for n in view.nodes.values()},
    }
    buttons = "".join(f'<button data-depth="{d}">depth {d}</button>' for d in range(1, view.max_level + 1))
    buttons += '<button data-depth="all">all layers</button>'
    meta_json = json.dumps(meta, sort_keys=True).replace("</", "<\\/")
    title = html.escape(view.title)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{title}</title>\n<style>{_HTML_CSS}</style>\n</head>\n<body>\n"
        f"<div id=\"bar\"><b>{title}</b> {buttons}<span class=\"info\" id=\"count\"></span>"
        "<span class=\"info\">click a block to collapse it, a grey box to expand it; hover for details</span></div>\n"
        f"<div id=\"canvas\">{svg}</div>\n<div id=\"tip\"></div>\n"
        f"<script type=\"application/json\" id=\"arch-meta\">{meta_json}</script>\n"
        f"<script>{_HTML_JS}</script>\n</body>\n</html>\n"
    )


def _strip_titles(svg: str) -> str:
    out = []
    pos = 0
    while True:
        i = svg.find("<title>", pos)
        if i < 0:
            out.append(svg[pos:])
            break
        j = svg.find("</title>", i)
        if j < 0:
            out.append(svg[pos:])
            break
        out.append(svg[pos:i])
        pos = j + len("</title>")
    return "".join(out)
