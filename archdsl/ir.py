"""The graph IR: a networkx DiGraph whose nodes carry pydantic-typed records.

The records and their edges are also kept in plain dicts, and the networkx view (``Graph.g``) is built
on first use: importing networkx costs a quarter of a second, and ``archc check`` needs no graph
algorithm, only the records.

Every node is one operation applied to the outputs of its input nodes. Shapes are per sample
(the batch dimension is symbolic and left out): ``[C, H, W]`` for feature maps, ``[F]`` after flatten.
"""
from __future__ import annotations

from typing import Any, Iterator

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Loc", "ScopeFrame", "Node", "Graph"]


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


class Graph:
    """A network after expansion and shape inference."""

    def __init__(self, name: str, reference: str | None = None) -> None:
        self.name = name
        self.reference = reference
        self._recs: dict[int, Node] = {}          # creation order
        self._succ: dict[int, list[int]] = {}     # consumers of each node, in creation order
        self._nx: Any = None                      # networkx.DiGraph, built by the ``g`` property
        self.inputs: list[int] = []
        self.outputs: list[tuple[str, int]] = []
        self.params_used: dict[str, Any] = {}
        self.loc: Loc | None = None
        self.reparam_groups: dict[str, dict[str, Any]] = {}
        self.warnings: list[Any] = []   # archdsl.errors.Diagnostic, severity "warning" (archdsl.lint)

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
        g.params_used = dict(self.params_used)
        g.loc = self.loc
        if hasattr(self, "address"):
            g.address = self.address  # type: ignore[attr-defined]
        return g
