"""Folding: runs of repeated sibling blocks drawn once (``Bottleneck ×5``).

:class:`FrameTree` is the frame hierarchy of a graph (which block, group or combinator frame holds
which nodes, in graph order); :func:`fold` finds runs of consecutive sibling frames with identical
structure, each taking the previous one's single output, and says which copies to hide and which node
of the first copy each hidden node stands for.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..ir import Graph, Node, ScopeFrame
from ..ops import has_trait

__all__ = ["FrameTree", "Folds", "fold", "contents"]

_MAX_PERIOD = 4   # longest cycle of different blocks recognised (RepLKNet alternates two)


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


class FrameTree:
    """The frame hierarchy of a graph: clusters keyed by frame, with ordered children and members."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.order: list[Node] = graph.records()   # ids are a topological order (no networkx sort)
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
        self.container: dict[str, bool] = {}
        for k in reversed(list(self.keys)):   # children before their parents
            self.container[k] = self._is_container(k)
        # the architectural level: containers (below) do not count, so depth 1 is a network's stages
        self.alevel: dict[str, int] = {}
        for k in self.keys:   # parents are created before their children
            p = self.parent[k]
            self.alevel[k] = (self.alevel[p] if p else 0) + (0 if self.container[k] else 1)

    def child_frames(self, key: str | None) -> list[str]:
        """The frames directly inside ``key`` (``None``: the network), in graph order."""
        return [k for kind, k in self.children[key] if kind == "cluster"]

    def chained(self, key: str | None) -> bool:
        """Whether each child frame of ``key`` reads from the one before it, directly or through the ops
        between them (a sequence, as ``[conv, gelu, conv]``; not branches)."""
        items = self.children[key]
        kids = [k for kind, k in items if kind == "cluster"]
        for a, b in zip(kids, kids[1:]):
            reach = set(self.members[a])
            for kind, item in items[items.index(("cluster", a)) + 1:items.index(("cluster", b))]:
                if kind == "node" and any(i in reach for i in self.byid[item].inputs):
                    reach.add(item)
            if not any(i in reach for nid in self.members[b] for i in self.byid[nid].inputs):
                return False
        return True

    def is_sequence(self, key: str) -> bool:
        """A stage: two or more frames (containers looked through), each reading from the one before."""
        kids: list[str] = []
        todo = self.child_frames(key)
        while todo:
            k = todo.pop(0)
            if self.container.get(k):
                todo = self.child_frames(k) + todo
            else:
                kids.append(k)
        if len(kids) < 2:
            return False
        for a, b in zip(kids, kids[1:]):
            reach = set(self.members[a])    # what ``a`` computes, and the ops of ``key`` that follow from it
            mb = set(self.members[b])
            for nid in self.members[key]:
                if nid not in mb and nid not in reach and any(i in reach for i in self.byid[nid].inputs):
                    reach.add(nid)
            if not any(i in reach for nid in mb for i in self.byid[nid].inputs):
                return False
        return True

    def _is_container(self, key: str) -> bool:
        """A frame that only holds a network's stages, as torchvision's ``features`` list holds Swin's patch
        embedding, stages and patch mergings, or RepLKNet's ``stages`` and ``transitions`` lists: a group
        (or the network's only top-level block) of several frames, at least one with frames of its own,
        that are of different kinds or do not feed each other; or a block's only frame, a list of blocks;
        or a block holding a sequence of different frames, a stage among them (ConvNeXt's ``Features``).
        A group of one block repeated (ResNet's ``layer1``, ViT's ``blocks``) is a stage, not a container."""
        f = self.keys[key]
        parent = self.parent[key]
        kids = self.child_frames(key)
        if f.kind == "block":
            # a block that holds a sequence of different frames of which one at least is a stage: ConvNeXt's
            # Features (Stem, Stage, Downsample, ...), or a backbone wrapped in one block
            return (len({self.keys[k].name for k in kids}) > 1 and self.chained(key)
                    and any(self.is_sequence(k) for k in kids))
        if f.kind != "group":
            return False
        if len(kids) < 2:
            return False
        if f.kind == "group" and parent is not None and self.child_frames(parent) == [key]:
            return True   # a block's one list of blocks (RepLKNet's Stage -> blocks): the block is the stage
        if not any(self.child_frames(k) for k in kids):
            return False
        return len({self.keys[k].name for k in kids}) > 1 or not self.chained(key)

    def signature(self, key: str) -> tuple[Any, ...]:
        """Structure of a frame's contents: ops, arguments, shapes and wiring, without names."""
        mem = self.members[key]
        index = {nid: i for i, nid in enumerate(mem)}
        sig = []
        for nid in mem:
            n = self.byid[nid]
            # dropout / drop-path rates vary per block (stochastic depth schedules) without changing the
            # structure: the arguments of ops that are the identity in eval mode do not count
            args = "" if has_trait(n.op, "eval-identity") else repr(sorted(n.args.items()))
            wires = tuple(index.get(i, -1) for i in n.inputs)
            rel = [self.level[k] - self.level[key] for k in self.chain[nid] if self.level[k] > self.level[key]]
            sig.append((n.op, args, n.shape, tuple(n.in_shapes), wires, n.label, tuple(rel)))
        f = self.keys[key]
        return (f.kind, f.name, tuple(sig))


@dataclass
class Folds:
    """Runs of repeated sibling blocks found by :func:`fold`."""

    counts: dict[str, int] = field(default_factory=dict)       # head cluster key -> repetitions
    period: dict[str, int] = field(default_factory=dict)       # head cluster key -> blocks per repetition
    last_path: dict[str, str] = field(default_factory=dict)    # head key -> module path of its last copy
    hidden: set[str] = field(default_factory=set)              # cluster keys of the copies not drawn
    rep: dict[int, int] = field(default_factory=dict)          # node of a copy -> same node in the head
    inst: dict[int, tuple[str, int]] = field(default_factory=dict)   # node -> (run, repetition index)


def fold(tree: FrameTree, expand: bool) -> Folds:
    """Find runs of consecutive sibling blocks that repeat with identical structure.

    A run is ``m >= 2`` repetitions of a unit of ``p`` consecutive sibling blocks (``p = 1``: the
    same block again, as ResNet stages; ``p = 2``: RepLKNet's RepLK block / ConvFFN pairs), chained
    so that each repetition takes exactly the previous one's single output. The first unit is drawn
    with ``xm``; the other copies are hidden and their nodes stand for the head's.
    """
    folds = Folds()
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


def _hide_below(tree: FrameTree, key: str, hidden: set[str]) -> None:
    for kind, k in tree.children[key]:
        if kind == "cluster":
            hidden.add(k)
            _hide_below(tree, k, hidden)


def contents(tree: FrameTree, key: str) -> str:
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


