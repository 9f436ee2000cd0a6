"""Diagram files: the format from the extension, the size check, an atomic write, clean errors."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from ..errors import ArchError
from ..fsutil import atomic_write, output_problem
from ..ir import Graph
from ..limits import Limits
from .changes import mark_changes
from .dot import check_size, layout, to_dot
from .html import render_html
from .view import build_view

__all__ = ["DIAGRAM_FORMATS", "render_svg", "write_diagram", "default_rankdir"]

#: Output formats ``write_diagram`` understands (by file extension).
DIAGRAM_FORMATS = ("svg", "png", "pdf", "dot", "html")


def render_svg(graph: Graph, *, depth: int | None = None, expand: bool = False, deploy: bool = False,
               rankdir: str | None = None, limits: Limits | None = None, style: str = "default",
               detail: str | None = None, show_args: list[str] | None = None) -> str:
    """The diagram of ``graph`` as SVG text. ``style="paper"`` is the figure style (left to right unless
    ``rankdir`` says otherwise); ``detail`` draws one block in full; see :func:`~.view.build_view`."""
    view = build_view(graph, depth=depth, expand=expand, deploy=deploy, limits=limits, style=style,
                      detail=detail, show_args=show_args)
    return layout(view, "svg", rankdir=default_rankdir(rankdir, style), limits=limits).decode("utf-8")


def default_rankdir(rankdir: str | None, style: str) -> str:
    """``rankdir`` as given, else left to right for the paper style and top to bottom otherwise."""
    return rankdir if rankdir else ("LR" if style == "paper" else "TB")


def write_diagram(graph: Graph, output: str | Path, *, fmt: str | None = None, depth: int | None = None,
                  expand: bool = False, deploy: bool = False, rankdir: str | None = None,
                  limits: Limits | None = None, style: str = "default", detail: str | None = None,
                  show_args: list[str] | None = None, changes: Mapping[int, str] | None = None,
                  removed: list[str] | None = None) -> str:
    """Write the diagram of ``graph`` to ``output``; the format comes from ``fmt`` or the extension.
    ``changes`` (IR node id -> 'added' / 'changed' / 'renamed') and ``removed`` draw a spec diff on it.

    Returns the format written. Writes atomically (never a partial file). The destination is checked
    before any work (a directory, device, FIFO or socket is an error), and a view over ``limits`` is refused before ``dot`` runs;
    the DOT source (``.dot``) is checked too, so the same spec is refused whatever the format.
    """
    out = Path(output)
    if out.is_dir():
        raise ArchError(f"output '{out}' is a directory", None, hint="give a file name, e.g. -o net.svg")
    problem = output_problem(out)
    if problem is not None:   # a device or FIFO would be replaced by a regular file: refused before any work
        raise ArchError(f"output '{out}' exists and {problem}; refusing to replace it", None,
                        hint="write to a regular file (and copy it where it should go)")
    kind = (fmt or out.suffix.lstrip(".")).lower()
    if kind not in DIAGRAM_FORMATS:
        raise ArchError(f"cannot tell the diagram format from '{out.name}'", None,
                        hint="use an output ending in " + ", ".join("." + f for f in DIAGRAM_FORMATS))
    data: str | bytes
    rankdir = default_rankdir(rankdir, style)
    if kind == "html":
        data = render_html(graph, depth=depth, expand=expand, deploy=deploy, rankdir=rankdir, limits=limits,
                           changes=changes, removed=removed)
    else:
        view = build_view(graph, depth=depth, expand=expand, deploy=deploy, limits=limits, style=style,
                          detail=detail, show_args=show_args)
        if changes is not None:
            mark_changes(view, changes, removed)
        if kind == "dot":
            check_size(view, limits)
            data = to_dot(view, rankdir=rankdir)
        else:
            data = layout(view, kind, rankdir=rankdir, limits=limits)
    try:
        atomic_write(out, data)
    except OSError as e:   # an unwritable destination is the user's mistake, not an internal error
        raise ArchError(f"cannot write '{out}': {e.strerror or e}", None) from None
    return kind
