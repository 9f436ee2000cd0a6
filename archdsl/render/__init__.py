"""Stage 5, diagrams: graph IR -> Graphviz DOT / SVG / PNG / PDF and a self-contained HTML view.

Modules, in the order data flows: :mod:`.style` (family colours, label text), :mod:`.form` (the deploy
form, from the exact reparam planner and the deploy pass), :mod:`.fold` (frame tree, folding of repeated
blocks), :mod:`.view` (``build_view``: the format-independent view model), :mod:`.dot` (DOT source and the
``dot`` program: the only place Graphviz is used; the render size limits), :mod:`.html` (the viewer page,
with ``viewer.js`` / ``viewer.css`` as package data), :mod:`.output` (``write_diagram``). :mod:`.model` holds
the view's data classes; :mod:`.paper` turns a view into a figure for a paper (``style="paper"``).

Output is deterministic: ids come from the IR's node order, never from memory addresses, so the same
spec always gives byte-identical DOT, SVG and HTML. Nothing here imports torch.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

from ..errors import ArchError
from ..ir import Graph
from .dot import RANKDIRS, check_size, render_bytes, require_dot, to_dot
from .form import deploy_graph
from .html import render_html
from .output import DIAGRAM_FORMATS, default_rankdir, render_svg, write_diagram
from .paper import STYLES
from .style import FAMILY_COLORS, family_color
from .view import View, ViewCluster, ViewEdge, ViewNode, build_view

__all__ = [
    "FAMILY_COLORS", "View", "ViewNode", "ViewCluster", "ViewEdge", "build_view", "to_dot", "render_bytes",
    "render_svg", "render_html", "write_diagram", "deploy_graph", "family_color", "require_dot",
    "DIAGRAM_FORMATS", "RANKDIRS", "STYLES", "check_size", "default_rankdir", "draw",
]


def draw(obj: Any, output: str | Path | None = None, *, style: str = "default", **options: Any) -> str:
    """Draw a graph (``archdsl.graph(spec)``) or a built model (it carries ``arch_graph``): the SVG text, or with
    ``output`` the file written by :func:`write_diagram` (format from its extension) and the format's name.
    ``style="paper"`` is the figure style; ``options`` are those of :func:`write_diagram` (``depth``,
    ``detail``, ``show_args``, ``rankdir``, ...). ``archdsl.render(...)`` is this function."""
    graph = obj if isinstance(obj, Graph) else getattr(obj, "arch_graph", None)
    if not isinstance(graph, Graph):
        raise ArchError(f"render: expected a graph (archdsl.graph(spec)) or a model built by archdsl, got "
                        f"{type(obj).__name__}", None, hint="archdsl.render(archdsl.graph('resnet50'), style='paper')")
    if output is None:
        return render_svg(graph, style=style, **options)
    return write_diagram(graph, output, style=style, **options)


class _CallableModule(types.ModuleType):
    """``archdsl.render`` is this package and a function at once: ``archdsl.render(g, style="paper")``."""

    def __call__(self, obj: Any, output: str | Path | None = None, **options: Any) -> str:
        return draw(obj, output, **options)


sys.modules[__name__].__class__ = _CallableModule
