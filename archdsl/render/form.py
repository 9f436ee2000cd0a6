"""The deploy form as ``archc render --deploy`` draws it: exactly the graph the deploy compiler builds.

There is one fusion implementation. The diagram is the result of the deploy passes' torch-free rewrite
(:func:`archdsl.passes.deploy.deploy_plan`: every ``reparam add:`` group proved fusable by
:func:`archdsl.passes.reparam.plan_group` and replaced by one conv, BatchNorms folded where that is exact,
eval-mode identities dropped). The diagram never guesses a fused conv's geometry: a group the planner
refuses is the deploy pass's error at the group's spec line, and whatever the rewrite leaves undone
(``DeployPlan.notes``: a BatchNorm it cannot fold exactly; a group it did not fuse) is printed under the
diagram's title.
"""
from __future__ import annotations

from ..ir import Graph
from ..limits import Limits
from ..passes.deploy import deploy_plan

__all__ = ["deploy_graph"]


def deploy_graph(graph: Graph, notes: list[str] | None = None, *, limits: Limits | None = None) -> Graph:
    """The deploy form of ``graph`` for drawing (no torch); an :class:`ArchError` where deploy would refuse.

    The fused convs keep their group's output id and are listed in ``Graph.fused_nodes``; they lose the
    group's ``reparam`` frame, since each is drawn in place of its group, not inside it. What the diagram
    must say about the form (the plan's notes, groups left unfused) is appended to ``notes``.
    """
    plan = deploy_plan(graph, limits=limits)
    g = plan.graph
    g.name = graph.name
    fused_paths = set(plan.fused_groups)
    unfused = [p for p in graph.reparam_groups if p not in fused_paths]
    if notes is not None:
        notes.extend(plan.notes)
        if unfused:
            notes.append("reparam groups not fused by the deploy pass (drawn as in training): " + ", ".join(unfused))
    for n in g.records():
        if n.id in g.fused_nodes:
            n.scope = [f for f in n.scope if not (f.kind == "reparam" and f.path in fused_paths)]
    return g
