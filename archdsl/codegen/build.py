"""Stage 4 (the only stage that imports torch): generated source -> live nn.Module."""
from __future__ import annotations

import itertools
import linecache
import types
from typing import Any

import torch  # noqa: F401  (the generated code imports it too; importing here fails early and clearly)

from .emit import class_name, generate
from ..ir import Graph

__all__ = ["instantiate", "module_class"]

_counter = itertools.count()


def module_class(graph: Graph, source: str | None = None) -> type:
    """Execute the generated source as a real Python module and return its class."""
    src = source if source is not None else generate(graph, source_note=getattr(graph, "address", graph.name))
    modname = f"archdsl_generated.{graph.name}_{next(_counter)}"
    filename = f"<archdsl:{getattr(graph, 'address', graph.name)}#{modname}>"
    # register the text so tracebacks and inspect.getsource show the generated lines
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    mod = types.ModuleType(modname)
    mod.__file__ = filename
    exec(compile(src, filename, "exec"), mod.__dict__)
    cls = mod.__dict__[class_name(graph.name)]
    cls.__archdsl_source__ = src
    return cls


def _module_svg(self: Any) -> str | None:
    """``_repr_svg_`` of compiled modules: the diagram of ``self.arch_graph`` (None without Graphviz)."""
    graph = getattr(self, "arch_graph", None)
    show = getattr(graph, "_repr_svg_", None)  # attached by archdsl.notebook
    return show() if isinstance(graph, Graph) and show is not None else None


def instantiate(graph: Graph, source: str | None = None) -> Any:
    model = module_class(graph, source)()
    model.arch_graph = graph  # keep the IR at hand for summaries, rendering and deploy
    if not hasattr(type(model), "_repr_svg_"):
        type(model)._repr_svg_ = _module_svg  # Jupyter displays the module as its diagram
    return model
