"""The graph IR: a networkx DiGraph whose nodes carry pydantic-typed records.

The records and their edges are also kept in plain dicts, and the networkx view (``Graph.g``) is built
on first use: importing networkx costs a quarter of a second, and ``archc check`` needs no graph
algorithm, only the records.

Every node is one operation applied to the outputs of its input nodes. Shapes are per sample
(the batch dimension is symbolic and left out): ``[C, H, W]`` for feature maps, ``[F]`` after flatten.

**Node ids are both identity and order.** An id names one node for its whole life (passes that replace
a node keep its id, so consumers need no rewiring), and ids increase along every edge: a node's inputs
always have smaller ids, so sorting by id is a topological order (:meth:`Graph.records`).
:meth:`Graph.verify` checks this and the rest of well-formedness; the pass runner
(:mod:`archdsl.passes.manager`) calls it between passes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Loc", "ScopeFrame", "Node", "ReparamGroup", "Graph", "IRError", "DEFAULT_FUSED_NAME"]

# The module name of the one conv a reparam group becomes in the deploy form (timm's name), unless the group
# says fused="..."; lowering claims the path, the deploy passes build the conv there.
DEFAULT_FUSED_NAME = "reparam_conv"


class IRError(ValueError):
    """The graph is not well-formed (a bug in the pass that produced it, never a user mistake)."""


class Loc(BaseModel):
    """A source location that survives serialisation (the Span without its Source)."""

    model_config = ConfigDict(frozen=True)
    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class ScopeFrame(BaseModel):
    """One level of the block hierarchy a node was expanded from (for summaries and diagrams)."""

    model_config = ConfigDict(frozen=True)
    path: str            # module path of the container ('' for the network itself)
    kind: str            # 'network', 'block', 'group', 'combinator', 'reparam'
    name: str            # block name, label, or combinator kind
    args: str = ""       # e.g. "c=64, stride=2"
    loc: Loc | None = None
    defaults: tuple[str, ...] = ()   # a block's parameters left at their default (the paper diagram omits them)


class Node(BaseModel):
    """One operation. ``module`` is set when the op owns parameters or buffers."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    id: int
    op: str
    args: dict[str, Any] = Field(default_factory=dict)
    inputs: list[int] = Field(default_factory=list)
    in_shapes: list[tuple[int, ...]] = Field(default_factory=list)
    shape: tuple[int, ...]
    name: str = ""                  # dotted display/module path
    module: str | None = None       # dotted module path for stateful ops
    scope: list[ScopeFrame] = Field(default_factory=list)
    loc: Loc | None = None
    params: int = 0
    macs: int = 0
    reparam: str | None = None      # path of the reparam group this node belongs to
    label: str | None = None
    # the op's arguments as the spec gave them, before the op's normalize hook derived its own from the input
    # shapes (None: the node was not made from spec arguments); the input contract normalizes them again at
    # other sizes, so an argument derived from a size (layernorm's normalized shape) keeps the size fixed
    bound: dict[str, Any] | None = None
    # whether the value has the batch axis: False for a buffer, a parameter stored without it
    # (``batch_dim=false``) and what is computed from such values alone (a relative position bias gathered from
    # its table); ``shape`` is then the whole tensor's shape, dims still count dim 0 as the (absent) batch
    batched: bool = True


@dataclass
class ReparamGroup:
    """A ``reparam <kind>:`` group, filled in by lowering as the group is expanded.

    ``input`` / ``output`` are the node ids the group reads and produces (``None`` until the group
    expanded without errors); ``fused_path`` is the module path of the one conv it becomes in the deploy
    form; ``single`` marks a group with one branch (no merge node); ``fused_container`` marks
    ``fused="."``: the fused layer is the group's container itself (``fused_path`` is the container's path).
    """

    kind: str = "add"
    loc: Loc | None = None
    label: str | None = None
    fused_path: str | None = None
    fused_container: bool = False
    input: int | None = None
    output: int | None = None
    single: bool = False


class Graph:
    """A network after expansion and shape inference.

    Declared fields besides the nodes: ``address`` (``file.arch:network`` the graph was compiled from,
    the network name otherwise), ``scale`` (the family variant it was built as, or None), ``reparam_groups`` (by group path), ``fused_nodes`` (ids of the convs a
    deploy pass fused reparam groups into, for drawing) and ``warnings`` (lint diagnostics).
    """

    def __init__(self, name: str, reference: str | None = None) -> None:
        self.name = name
        self.reference = reference
        self.address: str = name
        self.scale: str | None = None              # the family variant (``--scale``) it was built as
        self._recs: dict[int, Node] = {}          # creation order
        self._succ: dict[int, list[int]] = {}     # consumers of each node, in creation order
        self._nx: Any = None                      # networkx.DiGraph, built by the ``g`` property
        self.inputs: list[int] = []
        self.outputs: list[tuple[str, int]] = []
        # several outputs: the generated forward returns a dict by name, or with output_list a list in order
        # (timm's features_only); the names stay the outputs' names either way
        self.output_list: bool = False
        self.params_used: dict[str, Any] = {}
        self.loc: Loc | None = None
        self.reparam_groups: dict[str, ReparamGroup] = {}
        self.fused_nodes: set[int] = set()
        self.warnings: list[Any] = []   # archdsl.errors.Diagnostic, severity "warning" (passes.lint)
        # conditions the expansion relied on about sizes read from tensors (archdsl.lower.dims): formula ->
        # the value it must keep; complete=False when there were too many to keep (the contract then fixes
        # every size)
        self.size_facts: dict[tuple[Any, ...], Any] = {}
        self.size_facts_complete = True

    @property
    def g(self) -> Any:
        """The networkx ``DiGraph`` (node attribute ``rec``: the :class:`Node`; edge attribute ``index``:
        the input position), built on first use and kept in step with :meth:`add` afterwards."""
        if self._nx is None:
            import networkx as nx

            dg = nx.DiGraph()
            for rec in self._recs.values():
                self._nx_add(dg, rec)
            self._nx = dg
        return self._nx

    def to_networkx(self) -> Any:
        """A new networkx ``DiGraph`` of this graph for analysis (changing it leaves this graph alone).

        Nodes are the node ids; each carries the record's fields as attributes (see docs/api.md, "The
        graph as networkx"): ``op``, ``name``, ``module``, ``label``, ``args``, ``shape`` (per sample),
        ``in_shapes``, ``params``, ``macs``, ``batched`` (whether it has the batch axis), ``scope`` (the enclosing block paths, outermost first),
        ``loc`` (``file:line:col`` or None), ``reparam``, and ``rec``: the :class:`Node` itself. Edges
        run producer -> consumer with ``index``: the input position. Graph attributes: ``name``,
        ``reference``, ``address``, ``inputs`` (ids) and ``outputs`` (``{name: id}``)."""
        import networkx as nx

        dg = nx.DiGraph(name=self.name, reference=self.reference, address=self.address, inputs=list(self.inputs),
                        outputs=dict(self.outputs))
        for rec in self._recs.values():
            dg.add_node(rec.id, op=rec.op, name=rec.name, module=rec.module, label=rec.label, args=dict(rec.args),
                        shape=tuple(rec.shape), in_shapes=[tuple(s) for s in rec.in_shapes], params=rec.params,
                        macs=rec.macs, scope=[f.path for f in rec.scope if f.path], reparam=rec.reparam,
                        batched=rec.batched,
                        loc=str(rec.loc) if rec.loc else None, rec=rec)
        for rec in self._recs.values():
            for pos, src in enumerate(rec.inputs):
                dg.add_edge(src, rec.id, index=pos)
        return dg

    def __repr__(self) -> str:
        """One line: name, input -> outputs, node count, params, MACs (the diagram is ``archdsl.show``)."""
        outs = {k: list(v) for k, v in self.output_shapes.items()} if self.outputs else {}
        shown = next(iter(outs.values())) if len(outs) == 1 else outs
        ins = list(self.input_shape) if self.inputs else None
        return (f"<Graph {self.name}: input {ins} -> {shown}, {len(self._recs)} nodes, "
                f"{self.total_params:,} params, {self.total_macs:,} MACs>")

    @staticmethod
    def _nx_add(dg: Any, node: Node) -> None:
        dg.add_node(node.id, rec=node)
        for pos, src in enumerate(node.inputs):
            dg.add_edge(src, node.id, index=pos)

    def add(self, node: Node) -> Node:
        self._recs[node.id] = node
        self._succ.setdefault(node.id, [])
        for src in dict.fromkeys(node.inputs):  # one edge per producer, as in a DiGraph
            self._succ.setdefault(src, []).append(node.id)
        if self._nx is not None:
            self._nx_add(self._nx, node)
        return node

    def node(self, nid: int) -> Node:
        return self._recs[nid]

    def __len__(self) -> int:
        return len(self._recs)

    def records(self) -> list[Node]:
        """Every node by id (creation order), without a topological sort."""
        return [self._recs[i] for i in sorted(self._recs)]

    def nodes(self) -> Iterator[Node]:
        """Nodes in a deterministic topological order (creation order breaks ties)."""
        import networkx as nx

        for nid in nx.lexicographical_topological_sort(self.g):
            yield self.node(nid)

    def consumers(self, nid: int) -> list[int]:
        return sorted(self._succ.get(nid, []))

    def out_degree(self, nid: int) -> int:
        """How many nodes read ``nid``'s output."""
        return len(self._succ.get(nid, []))

    @property
    def total_params(self) -> int:
        return sum(n.params for n in self.nodes())

    @property
    def total_macs(self) -> int:
        return sum(n.macs for n in self.nodes())

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.node(self.inputs[0]).shape

    @property
    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: self.node(nid).shape for name, nid in self.outputs}

    def derive(self, name: str | None = None) -> "Graph":
        """An empty graph with this one's interface (inputs, outputs, parameters, location, address),
        for passes that rebuild the nodes (deploy, fused rendering)."""
        g = Graph(name or self.name, self.reference)
        g.inputs = list(self.inputs)
        g.outputs = list(self.outputs)
        g.output_list = self.output_list
        g.params_used = dict(self.params_used)
        g.loc = self.loc
        g.address = self.address
        g.size_facts = dict(self.size_facts)
        g.size_facts_complete = self.size_facts_complete
        g.scale = self.scale
        return g

    def problems(self) -> list[str]:
        """Every well-formedness violation (empty when the graph is well-formed); see :meth:`verify`."""
        out: list[str] = []
        for nid, n in self._recs.items():
            where = f"node {nid} ({n.op} {n.name!r})"
            if n.id != nid:
                out.append(f"{where} is stored under id {nid} but says id {n.id}")
            if not n.shape or any(not isinstance(d, int) or d <= 0 for d in n.shape):
                out.append(f"{where} has no valid shape recorded: {n.shape!r}")
            if n.op == "input":
                if n.inputs:
                    out.append(f"{where} is an input but reads {n.inputs}")
                continue
            if not n.inputs:
                out.append(f"{where} reads nothing")
            if len(n.in_shapes) != len(n.inputs):
                out.append(f"{where} records {len(n.in_shapes)} input shapes for {len(n.inputs)} inputs")
            for pos, src in enumerate(n.inputs):
                if src not in self._recs:
                    out.append(f"{where} reads node {src}, which does not exist")
                    continue
                if src >= nid:
                    out.append(f"{where} reads node {src}, which does not precede it (ids are the order)")
                if pos < len(n.in_shapes) and tuple(n.in_shapes[pos]) != tuple(self._recs[src].shape):
                    out.append(f"{where} records input shape {list(n.in_shapes[pos])} but node {src} has "
                               f"shape {list(self._recs[src].shape)}")
            if nid not in self._succ:
                out.append(f"{where} was not added through Graph.add (no consumer list)")
        for nid in self.inputs:
            if nid not in self._recs or self._recs[nid].op != "input":
                out.append(f"graph input {nid} is not an input node")
        if not self.outputs:
            out.append("the graph has no output")
        names = [name for name, _ in self.outputs]
        if len(set(names)) != len(names):
            out.append(f"output names repeat: {names}")
        for name, nid in self.outputs:
            if nid not in self._recs:
                out.append(f"output '{name}' is node {nid}, which does not exist")
        for nid in sorted(self.fused_nodes - set(self._recs)):
            out.append(f"fused node {nid} does not exist")
        return out

    def verify(self) -> "Graph":
        """Check well-formedness: unique ids that are the order (inputs exist and precede), shapes
        recorded and consistent with the producers, interface nodes present. Returns ``self``; raises
        :class:`IRError` listing every problem (capped) otherwise."""
        found = self.problems()
        if found:
            shown = found[:10] + ([f"... and {len(found) - 10} more"] if len(found) > 10 else [])
            raise IRError(f"graph '{self.name}' is not well-formed:\n  " + "\n  ".join(shown))
        return self
