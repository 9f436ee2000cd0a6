"""Notebook display: Jupyter shows a :class:`~archdsl.ir.Graph` (and a built module) as its diagram;
:func:`show` draws a spec, graph or built model to a chosen depth, with a text form outside notebooks.

Attached here, at the top of the package, so that ``ir.py`` imports nothing above it; graphviz is
imported only when a diagram is actually displayed.
"""
from __future__ import annotations

from typing import Any

from .errors import ArchError
from .ir import Graph

__all__ = ["graph_svg", "show", "Shown"]


def graph_svg(graph: Graph) -> str | None:
    """The architecture diagram of ``graph`` as SVG text (None, i.e. plain repr, without Graphviz)."""
    from .render import render_svg  # graphviz only when a diagram is asked for

    try:
        return render_svg(graph)
    except ArchError:
        return None


Graph._repr_svg_ = graph_svg  # type: ignore[attr-defined]


class Shown:
    """What :func:`show` returns: Jupyter displays its SVG diagram (``_repr_svg_``); ``repr()`` is the text
    form (the graph's one line and its top-level blocks), for terminals and logs."""

    def __init__(self, graph: Graph, depth: int | None) -> None:
        self.graph, self.depth = graph, depth

    def _repr_svg_(self) -> str | None:
        from .render import render_svg   # graphviz only when a diagram is asked for
        try:
            return render_svg(self.graph, depth=self.depth)
        except ArchError:
            return None

    def svg(self) -> str:
        """The diagram as SVG text (raises :class:`ArchError` when it cannot be drawn)."""
        from .render import render_svg
        return render_svg(self.graph, depth=self.depth)

    def __repr__(self) -> str:
        lines = [repr(self.graph)]
        seen: dict[str, tuple[str, tuple[int, ...]]] = {}
        for n in self.graph.records():
            if n.op == "input":
                continue
            top = next((f for f in n.scope if f.path), None)
            key = top.path.split(".")[0] if top is not None else (n.module or n.name).split(".")[0]
            what = top.name if top is not None and "." not in top.path else n.op
            seen[key] = (seen.get(key, (what, ()))[0], tuple(n.shape))
        if self.depth is None or self.depth >= 1:
            lines += [f"  {k}: {what} -> {list(shape)}" for k, (what, shape) in seen.items()]
        return "\n".join(lines)


def show(obj: Any, depth: int | None = 1, **params: Any) -> Shown:
    """Display ``obj`` (a spec address or text, a :class:`Graph`, or a model built by archdsl) in a notebook:
    its diagram with blocks collapsed below ``depth`` levels (None: every layer), as ``archc render
    --depth``. ``params`` override a spec's parameters. Outside a notebook, ``repr()`` gives a text outline."""
    if isinstance(obj, Graph):
        g = obj
    elif isinstance(obj, str):
        from .pipeline import compile_graph
        g = compile_graph(obj, params)
    elif isinstance(getattr(obj, "arch_graph", None), Graph):
        g = obj.arch_graph
    else:
        raise ArchError(f"show takes a spec, a Graph or a model built by archdsl, not {type(obj).__name__}",
                        None, hint="for any nn.Module, print(archdsl.summary(model, input_size=...))")
    if depth is not None and depth < 0:
        raise ArchError(f"depth must be 0 or more, got {depth}", None)
    return Shown(g, depth)
