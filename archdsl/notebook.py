"""Notebook display: Jupyter shows a :class:`~archdsl.ir.Graph` (and a built module) as its diagram.

Attached here, at the top of the package, so that ``ir.py`` imports nothing above it; graphviz is
imported only when a diagram is actually displayed.
"""
from __future__ import annotations

from .errors import ArchError
from .ir import Graph

__all__ = ["graph_svg"]


def graph_svg(graph: Graph) -> str | None:
    """The architecture diagram of ``graph`` as SVG text (None, i.e. plain repr, without Graphviz)."""
    from .render import render_svg  # graphviz only when a diagram is asked for

    try:
        return render_svg(graph)
    except ArchError:
        return None


Graph._repr_svg_ = graph_svg  # type: ignore[attr-defined]
