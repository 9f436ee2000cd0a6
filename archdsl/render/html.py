"""The self-contained HTML viewer: one page with the inline SVG, its CSS and a script, nothing fetched:
pan and zoom, search, a side panel with the selected layer's details, blocks that collapse and expand in
place, keyboard navigation.

The script and styles are package data files next to this module (``viewer.js``, ``viewer.css``), read
with :mod:`importlib.resources` so they work from a wheel or a zip as well as from a checkout. The page
holds the full-depth layout; the script collapses and expands frames in place (``viewer.js`` explains
how it closes up the space a collapsed block leaves).
"""
from __future__ import annotations

import html
import json
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping

from ..ir import Graph
from ..limits import Limits
from ..passes.features import receptive_fields
from .changes import mark_changes
from .dot import layout
from .model import View
from .style import _fmt_value, fmt_shape
from .view import build_view

__all__ = ["render_html", "viewer_asset"]


@lru_cache(maxsize=None)
def viewer_asset(name: str) -> str:
    """The text of a viewer file shipped in the package (``viewer.js`` or ``viewer.css``)."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _strip_titles(svg: str) -> str:
    """Drop every ``<title>...</title>``: graphviz puts each element's DOT id there, which browsers would
    show as a tooltip over the viewer's own."""
    out = []
    pos = 0
    while True:
        i = svg.find("<title>", pos)
        if i < 0:
            out.append(svg[pos:])
            break
        j = svg.find("</title>", i)
        if j < 0:
            out.append(svg[pos:])
            break
        out.append(svg[pos:i])
        pos = j + len("</title>")
    return "".join(out)


def _node_info(view: View) -> dict[str, dict[str, Any]]:
    """What the viewer's side panel shows for each box: op, arguments, shapes, parameters, MACs, receptive
    field and stride in input pixels (where the map still has them), and the spec line."""
    g = view.graph
    geo = receptive_fields(g) if g is not None else {}
    out: dict[str, dict[str, Any]] = {}
    for n in view.nodes.values():
        info: dict[str, Any] = {"label": n.label, "kind": n.kind, "tip": n.tooltip, "spec": n.spec,
                                "params": n.params}
        rec = g.node(n.ir[0]) if g is not None and len(n.ir) == 1 else None
        if rec is not None:
            info.update(op=rec.op, name=rec.name or rec.op, out=list(rec.shape),
                        inputs=[list(s) for s in rec.in_shapes], macs=rec.macs,
                        args=", ".join(f"{k}={_fmt_value(v)}" for k, v in rec.args.items()))
            gm = geo.get(rec.id)
            if gm is not None and gm.axes is not None and "H" in gm.axes:
                info.update(rf=list(gm.rf), jump=list(gm.jump))
        out[n.id] = info
    return out


def render_html(graph: Graph, *, depth: int | None = None, expand: bool = False, deploy: bool = False,
                rankdir: str = "TB", limits: Limits | None = None, changes: Mapping[int, str] | None = None,
                removed: list[str] | None = None) -> str:
    """One self-contained HTML page (inline SVG, CSS and JS; no network): pan and zoom, search by label
    or op, a side panel with the selected layer's op, arguments, shapes, parameters, receptive field and
    spec line, blocks that collapse and expand in place, keyboard navigation.

    The layout is the full-depth diagram; ``depth`` (default 1) sets which blocks start collapsed.
    """
    view = build_view(graph, depth=None, expand=expand, deploy=deploy, limits=limits)
    if changes is not None:   # a spec diff drawn on the new network (archc diff --render)
        mark_changes(view, changes, removed)
    svg = layout(view, "svg", rankdir=rankdir, limits=limits, tooltips=False, classes=True,
                 full_layout=True).decode("utf-8")
    svg = _strip_titles(svg[svg.index("<svg"):])
    start = 1 if depth is None else depth
    meta = {
        "axis": "y" if rankdir in ("TB", "BT") else "x",
        "rev": rankdir in ("BT", "RL"),
        "depth": start if view.max_level else None,
        "clusters": {c.id: {"level": c.level, "label": c.title, "container": c.container,
                            "spec": str(c.frame.loc) if c.frame.loc else "", "params": c.params,
                            "tip": c.title + (f"\nspec: {c.frame.loc}" if c.frame.loc else "")}
                     for c in view.clusters.values()},
        "nodes": _node_info(view),
        "edges": {e.id: [e.src, e.dst, fmt_shape(e.shape)] for e in view.edges},
    }
    buttons = "".join(f'<button data-depth="{d}">depth {d}</button>' for d in range(1, view.max_level + 1))
    buttons += '<button data-depth="all">all layers</button>'
    # "</" inside the JSON would end the <script> element early
    meta_json = json.dumps(meta, sort_keys=True).replace("</", "<\\/")
    title = html.escape(view.title)
    notes = "".join(f'<div class="info">{html.escape(line)}</div>' for line in view.notes)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{title}</title>\n<style>\n{viewer_asset('viewer.css')}</style>\n</head>\n<body>\n"
        f"<div id=\"bar\"><b>{title}</b> {buttons}"
        "<button id=\"fit\" title=\"fit to the window (f)\">fit</button>"
        "<button id=\"zoomin\" title=\"zoom in (+)\">+</button><button id=\"zoomout\" title=\"zoom out (-)\">"
        "&minus;</button>"
        "<input id=\"search\" type=\"search\" placeholder=\"search label or op (/)\" autocomplete=\"off\">"
        "<span class=\"info\" id=\"found\"></span><span class=\"info\" id=\"count\"></span>"
        "<span class=\"info\">drag to pan, wheel to zoom; click a layer for details, a frame to collapse it, "
        "a grey box to expand it; keys: arrows, Enter, /, +, -, f</span>"
        f"{notes}</div>\n"
        f"<div id=\"main\"><div id=\"canvas\">{svg}</div>\n"
        "<aside id=\"panel\"><div class=\"empty\">select a layer or block</div></aside></div>\n"
        "<div id=\"tip\"></div>\n"
        f"<script type=\"application/json\" id=\"arch-meta\">{meta_json}</script>\n"
        f"<script>\n{viewer_asset('viewer.js')}</script>\n</body>\n</html>\n"
    )
