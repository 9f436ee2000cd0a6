"""The module hierarchy of a graph: which containers become modules with a ``forward`` (torch-free).

Every block instantiation, labelled group and labelled combinator of the spec (the IR's ``scope`` frames) is
a *unit*: the nodes expanded inside it form a region of the graph. A unit gets a ``forward`` of its own when
its region is *convex* (no path leaves the region and comes back into it, so the region can run as one call)
and reads and produces at least one tensor; the network itself is the root unit. Any other container is a
*holder* (``nn.ModuleList``/``nn.ModuleDict`` without a forward): its modules keep their state_dict paths and
its nodes run in the forward of the nearest unit above it. RepLKNet's ``stages``, reopened between the
``transitions``, is such a holder; so is the prefix of a dotted label.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from ..ir import Graph, Node, ScopeFrame

__all__ = ["Unit", "Hierarchy", "analyze"]


@dataclass
class Unit:
    """One container of the module tree (``path`` '' is the network)."""

    path: str
    kind: str                       # 'root', 'block', 'group', 'combinator', 'reparam', 'prefix'
    name: str                       # block name, label or combinator kind
    args: str = ""                  # the block's arguments as the spec bound them (ScopeFrame.args)
    parent: str | None = None
    children: list[str] = field(default_factory=list)   # direct child containers, in order of appearance
    region: list[int] = field(default_factory=list)     # node ids inside (topological order)
    forward: bool = False           # False: a holder without forward
    inputs: list[int] = field(default_factory=list)     # producers outside the region it reads
    outputs: list[int] = field(default_factory=list)    # region nodes read outside (or graph outputs)
    items: list[tuple[str, object]] = field(default_factory=list)  # ('unit', path) / ('node', id), run order

    def rel(self, path: str) -> str:
        """``path`` relative to this unit."""
        return path[len(self.path) + 1:] if self.path else path


@dataclass
class Hierarchy:
    """The units of a graph and the facts codegen needs about its nodes."""

    graph: Graph
    order: list[Node]                       # topological
    pos: dict[int, int]
    consumers: dict[int, list[int]]         # node id -> consumer ids (identities not resolved)
    units: dict[str, Unit]
    owner: dict[int, str]                   # node id -> path of the unit whose forward runs it
    outputs: set[int]
    inputs_of: dict[int, list[int]]

    def by_id(self, nid: int) -> Node:
        return self.graph.node(nid)

    @property
    def module_roots(self) -> set[str]:
        """The network's top-level module names (first part of every module and unit path)."""
        roots = self.__dict__.get("_roots")
        if roots is None:
            paths = [n.module for n in self.order if n.module] + [p for p in self.units if p]
            roots = self.__dict__["_roots"] = {p.split(".")[0] for p in paths}
        return roots


def _order(graph: Graph) -> list[Node]:
    recs = graph.records()
    ok = all(i < n.id for n in recs for i in n.inputs)
    return recs if ok else list(graph.nodes())


def _is_level(f: ScopeFrame, prefixes: set[str]) -> bool:
    if f.kind in ("block", "group"):
        return bool(f.path)
    # a combinator is a module level only when it was labelled: its nodes are then named under its path
    return f.kind in ("combinator", "reparam") and f.path in prefixes


def analyze(graph: Graph) -> Hierarchy:
    """Find the units of ``graph``, their regions, interfaces, forward-ability and the order of their items."""
    order = _order(graph)
    pos = {n.id: k for k, n in enumerate(order)}
    consumers: dict[int, list[int]] = {n.id: [] for n in order}
    inputs_of = {n.id: n.inputs for n in order}
    for n in order:
        for i in n.inputs:
            consumers[i].append(n.id)
    outputs = {nid for _, nid in graph.outputs}

    prefixes: set[str] = set()
    for n in order:
        for s in (n.name, n.module or ""):
            k = s.find(".")
            while k >= 0:
                prefixes.add(s[:k])
                k = s.find(".", k + 1)

    units: dict[str, Unit] = {"": Unit("", "root", graph.name, forward=True)}
    chains: dict[int, list[str]] = {}
    for n in order:
        if n.op == "input":
            continue
        chain: list[str] = []
        for f in n.scope:
            if f.kind != "network" and _is_level(f, prefixes):
                if f.path not in units:
                    units[f.path] = Unit(f.path, f.kind, f.name, f.args)
                if not chain or chain[-1] != f.path:
                    chain.append(f.path)
        chains[n.id] = chain
        for p in chain:
            units[p].region.append(n.id)
        units[""].region.append(n.id)
        if n.module:   # containers implied by module paths (normally levels already; dotted labels are not)
            parts = n.module.split(".")
            for k in range(1, len(parts)):
                p = ".".join(parts[:k])
                if p not in units:
                    units[p] = Unit(p, "prefix", parts[k - 1])
    # the tree: the parent of a container is its longest proper prefix that is a container
    for p in sorted(units, key=lambda s: (s.count("."), s)):
        if not p:
            continue
        parts = p.split(".")
        parent = ""
        for k in range(len(parts) - 1, 0, -1):
            q = ".".join(parts[:k])
            if q in units:
                parent = q
                break
        units[p].parent = parent
    first: dict[str, int] = {}
    for p, u in units.items():
        first[p] = pos[u.region[0]] if u.region else 1 << 30
    for n in order:   # prefix containers appear where their first module does
        if n.module:
            parts = n.module.split(".")
            for k in range(1, len(parts)):
                q = ".".join(parts[:k])
                first[q] = min(first.get(q, 1 << 30), pos[n.id])
    for p in sorted((p for p in units if p), key=lambda p: (first[p], p.count("."))):
        units[units[p].parent or ""].children.append(p)

    for p, u in units.items():
        if p and u.kind != "prefix" and u.region:
            _interface(u, inputs_of, consumers, outputs, pos)
    hier = Hierarchy(graph, order, pos, consumers, units, {}, outputs, inputs_of)
    _assign_items(hier, chains)
    return hier


def _interface(u: Unit, inputs_of: dict[int, list[int]], consumers: dict[int, list[int]], outputs: set[int],
               pos: dict[int, int]) -> None:
    inside = set(u.region)
    ins: dict[int, None] = {}
    outs: list[int] = []
    lo, hi = pos[u.region[0]], pos[u.region[-1]]
    for nid in u.region:
        for i in inputs_of[nid]:
            if i not in inside:
                ins.setdefault(i, None)
    for nid in u.region:
        if nid in outputs or any(c not in inside for c in consumers[nid]):
            outs.append(nid)
    u.inputs = sorted(ins, key=lambda i: pos[i])
    u.outputs = outs
    convex = hi - lo + 1 == len(u.region) or _convex(inside, lo, hi, consumers, pos)
    u.forward = convex and bool(u.inputs) and bool(u.outputs)


def _convex(inside: set[int], lo: int, hi: int, consumers: dict[int, list[int]],
            pos: dict[int, int]) -> bool:
    """No node outside the region both depends on it and feeds it (checked between its first and last node)."""
    tainted: set[int] = set()
    for nid in inside:
        for c in consumers[nid]:
            if c not in inside and pos[c] < hi:
                tainted.add(c)
    if not tainted:
        return True
    frontier = sorted(tainted, key=lambda i: pos[i])
    while frontier:
        nid = frontier.pop()
        for c in consumers[nid]:
            if c in inside:
                return False
            if c not in tainted and pos[c] < hi:
                tainted.add(c)
                frontier.append(c)
    return True


def _assign_items(h: Hierarchy, chains: dict[int, list[str]]) -> None:
    """Each node runs in the forward of its deepest unit with a forward; each unit gets its items in order.

    Items are ordered topologically (ties by first node); a child unit caught in a cycle with its siblings
    loses its forward and its contents join the parent's items.
    """
    units = h.units
    while True:
        for u in units.values():
            u.items = []
        for n in h.order:
            if n.op == "input":
                continue
            chain = chains[n.id]
            owner = ""
            for p in reversed(chain):
                if units[p].forward:
                    owner = p
                    break
            h.owner[n.id] = owner
        # a unit with forward is an item of the nearest unit with forward above it
        item_of: dict[str, str] = {}
        for p, u in units.items():
            if p and u.forward:
                q = u.parent or ""
                while q and not units[q].forward:
                    q = units[q].parent or ""
                item_of[p] = q
        demoted = False
        for p, u in units.items():
            if not u.forward:
                continue
            if not _order_items(h, u, item_of):
                demoted = True
                break
        if not demoted:
            return


def _order_items(h: Hierarchy, u: Unit, item_of: dict[str, str]) -> bool:
    units = h.units
    child_units = [q for q, par in item_of.items() if par == u.path]
    nodes = [nid for nid in u.region if h.owner.get(nid) == u.path]
    # which item produces each node
    item_key: dict[int, tuple[str, object]] = {nid: ("node", nid) for nid in nodes}
    for q in child_units:
        for nid in units[q].region:
            item_key[nid] = ("unit", q)
    keys: list[tuple[str, object]] = [("node", nid) for nid in nodes] + [("unit", q) for q in child_units]

    def members(k: tuple[str, object]) -> list[int]:
        # an item is one node ("node", id) or a child unit's region ("unit", path)
        return [cast(int, k[1])] if k[0] == "node" else units[cast(str, k[1])].region

    first = {k: h.pos[members(k)[0]] for k in keys}
    deps: dict[tuple[str, object], set[tuple[str, object]]] = {k: set() for k in keys}
    for k in keys:
        for nid in members(k):
            for i in h.inputs_of[nid]:
                src = item_key.get(i)
                if src is not None and src != k:
                    deps[k].add(src)
    keys.sort(key=lambda k: first[k])
    done: set[tuple[str, object]] = set()
    out: list[tuple[str, object]] = []
    pending = list(keys)
    while pending:
        for idx, k in enumerate(pending):
            if deps[k] <= done:
                out.append(k)
                done.add(k)
                pending.pop(idx)
                break
        else:   # a cycle between siblings: the first child unit stuck in it runs inline instead
            stuck = next((k for k in pending if k[0] == "unit"), None)
            if stuck is None:
                raise ValueError("internal: the graph has a cycle")
            units[cast(str, stuck[1])].forward = False
            return False
    u.items = out
    return True
