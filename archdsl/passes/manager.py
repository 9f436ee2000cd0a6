"""The pass runner: named passes over the graph IR, the IR verified between them, dumps on request.

A pass is a function ``(graph, ctx) -> graph``: an analysis returns its input unchanged (and records what
it found in ``ctx``), a rewrite returns a *new* :class:`~archdsl.ir.Graph` built with
:meth:`Graph.derive` from node copies — never the input's pydantic nodes edited in place, since callers
keep the input (the train graph stays valid next to its deploy form). ``ctx`` is whatever the passes of
one pipeline share (e.g. :class:`archdsl.passes.deploy.DeployPlan`).

``print_after``: dump the IR after the passes named (``"fold_bn"``, ``"fold_bn,fuse_reparam"`` or
``"all"``), from the API or the ``ARCHDSL_PRINT_AFTER`` environment variable, to stderr.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TextIO, TypeVar

from ..ir import Graph, IRError

__all__ = ["Pass", "run_passes", "format_graph", "PRINT_AFTER_ENV"]

PRINT_AFTER_ENV = "ARCHDSL_PRINT_AFTER"
C = TypeVar("C")


@dataclass(frozen=True)
class Pass:
    """A named pass: ``run(graph, ctx)`` returns the graph after it (the input itself for analyses)."""

    name: str
    run: Callable[[Graph, Any], Graph]
    doc: str = ""


def format_graph(graph: Graph) -> str:
    """A readable dump of the IR: one line per node, ``%id = op(%inputs) {args} : shape  # name``."""
    lines = [f"graph {graph.name} ({graph.address}): inputs {graph.inputs}, outputs {graph.outputs}"]
    for n in graph.records():
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(n.args.items()))
        ins = ", ".join(f"%{i}" for i in n.inputs)
        extra = f"  [{n.module}]" if n.module else ""
        lines.append(f"  %{n.id} = {n.op}({ins}) {{{args}}} : {list(n.shape)}  # {n.name}{extra}")
    return "\n".join(lines)


def _wanted(print_after: str | None) -> set[str]:
    text = print_after if print_after is not None else os.environ.get(PRINT_AFTER_ENV, "")
    return {p.strip() for p in text.split(",") if p.strip()}


def run_passes(graph: Graph, passes: Sequence[Pass], ctx: C, *, verify: bool = True,
               print_after: str | None = None, out: TextIO | None = None) -> Graph:
    """Run ``passes`` in order from ``graph``; return the last graph.

    With ``verify`` (the default) the input and every pass's result are checked with :meth:`Graph.verify`;
    a broken graph raises :class:`~archdsl.ir.IRError` naming the pass that produced it.
    """
    wanted = _wanted(print_after)
    unknown = wanted - {p.name for p in passes} - {"all"}
    if unknown and print_after is not None:   # a typo in an API call; the env var may name other pipelines' passes
        raise ValueError(f"print_after names no pass of this pipeline: {sorted(unknown)} "
                         f"(passes: {[p.name for p in passes]})")
    if verify:
        graph.verify()
    for p in passes:
        result = p.run(graph, ctx)
        if verify:
            try:
                result.verify()
            except IRError as e:
                raise IRError(f"after pass '{p.name}': {e}") from None
        if p.name in wanted or "all" in wanted:
            print(f"// IR after {p.name}\n{format_graph(result)}", file=out or sys.stderr)
        graph = result
    return graph
