"""The view model's data: what a diagram shows (boxes, frames, edges, legend), independent of the format.

:func:`~.view.build_view` fills it; :mod:`.paper` rewrites it into a figure; :mod:`.dot` and :mod:`.html`
draw it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..ir import Graph, ScopeFrame

__all__ = ["View", "ViewNode", "ViewCluster", "ViewEdge"]


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
    color: str = ""               # paper style: the fill of a block type (its legend entry)
    spec: str = ""                # the spec line it comes from (``file:line:col``), for the viewer's panel
    change: str = ""              # a diff's mark: 'added', 'changed' or 'renamed' (:mod:`.changes`)


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
    container: bool = False       # only holds stages (torchvision's ``features``): not a level of depth
    key: str = ""                 # the frame's key in the :class:`~.fold.FrameTree`


@dataclass
class ViewEdge:
    """A tensor flowing from ``src`` to ``dst``; ``shape`` is the IR shape of the producing node.
    ``size_only``: ``dst`` reads only the tensor's size (a reshape's run-time sizes, resize_as's reference)."""

    id: str
    src: str
    dst: str
    shape: tuple[int, ...]
    size_only: bool = False
    labelled: bool = True         # draw the shape on the edge (the paper style labels only where it changes)


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
    style: str = "default"        # 'default' or 'paper'
    graph: Graph | None = None    # the graph drawn (the deploy form's with --deploy); ``ir`` ids point into it
    legend: list[tuple[str, str, str]] = field(default_factory=list)   # paper style: (kind, name, fill)

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
