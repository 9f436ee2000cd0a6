"""Stage 4 of the pipeline, passes over the graph IR: analyses and rewrites.

Every pass is a named function ``(graph, ctx) -> graph`` run by :mod:`archdsl.passes.manager` (which can
verify the IR between passes and print it after a named pass):

- the checks of a compiled network, :func:`run_checks`: ``reparam_proof`` (every ``reparam add:`` group
  fuses into one conv, :mod:`.reparam`) and ``lint`` (warnings, :mod:`.lint`);
- the deploy rewrite, :mod:`.deploy`: ``fuse_reparam``, ``drop_eval_identities``, ``fold_bn``;
- the summary tables, :mod:`.summary`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import Diagnostic
from ..ir import Graph
from ..lang import ast as A
from ..lang.loader import Program
from .lint import lint_graph, span_resolver
from .manager import Pass, run_passes
from .reparam import check_groups

__all__ = ["CheckContext", "CHECK_PASSES", "run_checks"]


@dataclass
class CheckContext:
    """What the check passes read (the program and network the graph came from) and what they found."""

    program: Program
    net: A.NetworkDef
    diagnostics: list[Diagnostic] = field(default_factory=list)


def _reparam_proof(graph: Graph, ctx: CheckContext) -> Graph:
    ctx.diagnostics.extend(check_groups(graph, span_resolver(ctx.program)))
    return graph


def _lint(graph: Graph, ctx: CheckContext) -> Graph:
    ctx.diagnostics.extend(lint_graph(ctx.program, ctx.net, graph))
    return graph


CHECK_PASSES = (
    Pass("reparam_proof", _reparam_proof, "every reparam group fuses into one conv (errors at the group)"),
    Pass("lint", _lint, "suspicious-but-legal specs (warnings)"),
)


def run_checks(graph: Graph, program: Program, net: A.NetworkDef, *, print_after: str | None = None,
               verify: bool = True) -> list[Diagnostic]:
    """The diagnostics of an expanded network: errors first (reparam groups that cannot be fused, each at
    its group's line), then lint warnings. ``graph`` is not changed; the caller raises on errors and keeps
    the warnings (``graph.warnings``)."""
    ctx = CheckContext(program, net)
    run_passes(graph, CHECK_PASSES, ctx, verify=verify, print_after=print_after)
    errors = [d for d in ctx.diagnostics if d.severity == "error"]
    return errors + [d for d in ctx.diagnostics if d.severity != "error"]
