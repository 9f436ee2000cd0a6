"""Graphviz: a :class:`~.view.View` as DOT source, and the ``dot`` program that lays it out.

This is the only module of archdsl that imports the ``graphviz`` package (lazily, in :func:`to_dot`) or
runs ``dot``. Before ``dot`` runs, the view's size is checked against ``Limits.max_render_nodes`` /
``max_render_edges``: Graphviz's layout grows much faster than linearly (a 6,000-layer chain takes
about 45 s), so an oversized diagram is refused in milliseconds with a hint instead.

Counting boxes and edges is not enough for a dense graph (issue 20: 64 convs each adding all earlier
tensors, ~2,000 edges, took minutes). ``dot`` ranks the nodes and splits an edge that spans several ranks
into a chain of virtual nodes; crossing minimization then reorders every rank many times, and its cost
grows much faster than the widest rank. :func:`layout_width` estimates that width (longest-path ranks,
plus the edges passing through each rank) and ``Limits.max_render_width`` bounds it. Measured (dot 2.43,
``bench/bench_render.py``): dense DAGs of 16/20/24/32 convs have widths 65/101/145/257 and take
0.6-0.8/3-5/14-40/>50 s of CPU; the widest view in specs/ and examples/ (ConvNeXt-V2 expanded) has 41 and
takes 0.2 s. The bound is 100.
A backstop remains: ``dot`` is stopped after ``Limits.max_render_seconds``, and it never outlives archc
(it dies with it on Linux even when archc is killed; SIGTERM/SIGHUP and errors stop it everywhere).
"""
from __future__ import annotations

import html
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter
from typing import Any, Callable

from ..errors import ArchError
from ..limits import Limits
from .changes import CHANGE_COLORS
from .style import BLOCK_FILL, CLUSTER_STYLE, FONT, FUSED_COLOR, family_color, fmt_shape, left_justified
from .view import View, ViewNode

__all__ = ["to_dot", "require_dot", "render_bytes", "check_size", "layout", "layout_width", "RANKDIRS"]

#: Accepted ``--rankdir`` values: top to bottom, left to right, and their reverses.
RANKDIRS = ("TB", "LR", "BT", "RL")


def _dot_id(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name) or "network"


def to_dot(view: View, *, rankdir: str = "TB", tooltips: bool = True, classes: bool = False) -> str:
    """The view as Graphviz DOT source (deterministic).

    ``tooltips`` adds hover text (shapes, params, spec line) to SVG output; ``classes`` tags every
    element with the clusters it sits in (``in-c3``), for the HTML viewer.
    """
    import graphviz

    if rankdir not in RANKDIRS:
        raise ArchError(f"--rankdir must be one of {', '.join(RANKDIRS)}, got '{rankdir}'", None,
                        hint="TB draws top to bottom, LR left to right (BT and RL: the reverse)")
    paper = view.style == "paper"
    dot = graphviz.Digraph(name=_dot_id(view.name), engine="dot")
    if paper:
        # sized for a figure in a two-column paper: 8 pt text at 100 %, tight spacing, the legend below
        dot.attr(rankdir=rankdir, fontname=FONT, fontsize="8", nodesep="0.14", ranksep="0.22",
                 label=_legend(view) if view.legend else "", labelloc="b", labeljust="l", bgcolor="white",
                 pad="0.05")
    else:
        title = "\n".join([view.title, *view.notes])
        dot.attr(rankdir=rankdir, fontname=FONT, fontsize="11", nodesep="0.25",
                 ranksep="0.32", label=left_justified(title) if view.notes else title, labelloc="t",
                 labeljust="l", bgcolor="white")
    if tooltips:
        dot.attr(tooltip=" ")  # no generic tooltip over the background in SVG viewers
    fs = ("8", "7") if paper else ("10", "8")
    dot.attr("node", shape="box", style="rounded,filled", fontname=FONT, fontsize=fs[0],
             margin="0.06,0.03" if paper else "0.12,0.05", penwidth="0.8", color="#555555",
             **({"height": "0.3", "width": "0.3"} if paper else {}))
    dot.attr("edge", fontname=FONT, fontsize=fs[1], color="#555555", fontcolor="#333333", arrowsize="0.6",
             penwidth="0.8")

    kids: dict[str | None, list[str]] = {}
    for c in view.visible_clusters():
        kids.setdefault(c.parent, []).append(c.id)
    members: dict[str | None, list[ViewNode]] = {}
    for n in view.nodes.values():
        members.setdefault(n.cluster, []).append(n)

    # paper style, left to right: a stage's boxes are stacked across the flow (one column per stage), so
    # the figure is about as wide as a page rather than a long strip
    stacked = {c.id for c in view.visible_clusters() if paper and rankdir in ("LR", "RL") and
               not kids.get(c.id) and len(members.get(c.id, [])) >= 2}

    def node_attrs(n: ViewNode) -> dict[str, str]:
        attrs: dict[str, str] = {"id": n.id, "label": n.label}
        if n.kind == "block" and paper:
            attrs.update(shape="box", style="filled", fillcolor=n.color or BLOCK_FILL, color="#444444")
        elif n.kind == "block":
            attrs.update(shape="box3d", style="filled", fillcolor=BLOCK_FILL, color="#6f6f6f")
        elif n.kind in ("input", "output"):
            attrs.update(shape="oval", style="filled", fillcolor=family_color(n.family))
        else:
            attrs["fillcolor"] = family_color(n.family)
            if n.fused:
                attrs.update(style="rounded,filled,bold", color=FUSED_COLOR, penwidth="1.6")
        if n.change:   # a diff's mark wins over the family colour (archc diff --render)
            fill, border = CHANGE_COLORS[n.change]
            attrs.update(fillcolor=fill, color=border, penwidth="1.0" if n.change == "same" else "2.4")
        if tooltips:
            attrs["tooltip"] = n.tooltip
        if classes:
            attrs["class"] = " ".join(["arch-" + n.kind] + [f"in-{c}" for c in view.ancestors(n.cluster)])
        return attrs

    def emit(sub: Any, parent: str | None) -> None:
        for cid in kids.get(parent, []):
            c = view.clusters[cid]
            with sub.subgraph(name=f"cluster_{cid}") as s:
                style, border, fill = CLUSTER_STYLE.get(c.frame.kind, CLUSTER_STYLE["group"])
                if paper:
                    style, border, fill = "rounded,filled", "#8a8a8a", "#f6f6f6" if c.level % 2 else "#ffffff"
                s.attr(label=left_justified(c.title), id=cid, style=style, color=border, fillcolor=fill,
                       fontname=FONT, fontsize=fs[0], labeljust="l",
                       penwidth="1.0" if c.frame.kind != "reparam" else "1.6",
                       # a wider margin keeps Graphviz from drawing a cluster's last node on its border
                       margin="14")
                if c.count > 1 and not paper:
                    s.attr(peripheries="1", style=style + ",bold")
                if tooltips:
                    s.attr(tooltip=c.title)
                if classes:
                    s.attr("graph", **{"class": " ".join(["arch-cluster"] + [f"in-{a}" for a in
                                                                             view.ancestors(c.parent)])})
                emit(s, cid)
                inner = members.get(cid, [])
                if cid in stacked:
                    # a stage's blocks stacked across the flow: a figure as wide as a page, not 4 pages
                    with s.subgraph() as r:
                        r.attr(rank="same")
                        for n in inner:
                            r.node(n.id)
        for n in members.get(parent, []):
            sub.node(n.id, **node_attrs(n))

    emit(dot, None)
    for e in view.edges:
        attrs = {"id": e.id, "label": fmt_shape(e.shape) if e.labelled else ""}
        if e.size_only:   # read for its size only: a light dashed edge, so the data path stands out
            attrs.update(label="size", style="dashed", color="#9a9a9a", fontcolor="#7a7a7a", arrowsize="0.6",
                         constraint="false")   # and it does not rank the nodes
        if tooltips:
            attrs["tooltip"] = f"{list(e.shape)}"
        if classes:
            shared = set(view.ancestors(view.nodes[e.src].cluster)) & set(view.ancestors(view.nodes[e.dst].cluster))
            attrs["class"] = " ".join(f"in-{c}" for c in sorted(shared, key=lambda x: int(x[1:])))
        if view.nodes[e.src].cluster in stacked and view.nodes[e.src].cluster == view.nodes[e.dst].cluster:
            # an edge within one rank: Graphviz puts its tail first (at the bottom in LR); drawn reversed
            # with the arrow turned back, the stage reads top to bottom; its size is in the stage's title
            attrs.update(dir="back", label="")
            dot.edge(e.dst, e.src, **attrs)
            continue
        dot.edge(e.src, e.dst, **attrs)
    return dot.source


def _legend(view: View) -> str:
    """The paper style's legend as a Graphviz HTML-like label: a swatch and a name per block type and op
    family, six to a row."""
    cells = []
    for kind, name, fill in view.legend:
        cells.append(f'<td bgcolor="{fill}" border="1" width="12" height="9" fixedsize="true"></td>'
                     f'<td align="left">{html.escape(name + (" (op)" if kind == "op" else ""))}</td>')
    rows = ["<tr>" + "".join(cells[i:i + 6]) + "</tr>" for i in range(0, len(cells), 6)]
    return '<<table border="0" cellspacing="3" cellpadding="1">' + "".join(rows) + "</table>>"


def require_dot() -> str:
    """Path of Graphviz's ``dot``, or an ArchError saying how to install it."""
    path = shutil.which("dot")
    if path is None:
        raise ArchError("cannot render: Graphviz's 'dot' program was not found on PATH", None,
                        hint="install Graphviz with 'apt-get install graphviz' (or run the set-up script "
                             "'bash scripts/setup.sh'); '-o FILE.dot' writes the DOT source without it")
    return path


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when archc dies, however it dies (Linux ``prctl``
    PR_SET_PDEATHSIG); None elsewhere (signals and errors still stop ``dot``, see :func:`render_bytes`)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def arm() -> None:   # runs in the child between fork and exec: no Python objects of the parent touched
        prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
        if os.getppid() != parent:   # archc died before the line above: nobody will wait for this dot
            os._exit(1)
    return arm


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def render_bytes(dot_source: str, fmt: str, *, timeout_s: float | None = None) -> bytes:
    """Run ``dot -T<fmt>`` on DOT source; ArchError if dot is missing, fails or takes over ``timeout_s``
    (default ``Limits().max_render_seconds``). ``dot`` is killed when this returns or raises for any reason
    (also KeyboardInterrupt), when archc gets SIGTERM or SIGHUP, and (Linux) when archc dies."""
    exe = require_dot()
    limit = float(timeout_s if timeout_s is not None else Limits().max_render_seconds)
    proc = subprocess.Popen([exe, f"-T{fmt}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=_die_with_parent())
    previous: dict[int, Any] = {}

    def on_signal(signum: int, frame: Any) -> None:
        _stop(proc)   # then the signal's own action (default: terminate), as if we had not been here
        signal.signal(signum, previous.pop(signum))
        os.kill(os.getpid(), signum)

    if threading.current_thread() is threading.main_thread():   # handlers can only be set there
        for sig in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)):
            if sig is not None:
                previous[sig] = signal.signal(sig, on_signal)
    try:
        out, err = proc.communicate(dot_source.encode("utf-8"), timeout=limit)
    except subprocess.TimeoutExpired:
        raise ArchError(f"Graphviz 'dot' did not finish within {limit:g} s: the diagram is too dense to lay out",
                        None, hint="draw less with --depth 1 or 2 (or leave out --expand); '-o FILE.dot' writes "
                                   "the DOT source without a layout; --limit max_render_seconds=N waits longer"
                        ) from None
    finally:
        _stop(proc)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if proc.returncode != 0:
        msg = err.decode("utf-8", "replace").strip().splitlines()
        raise ArchError(f"Graphviz 'dot' failed: {msg[0] if msg else 'exit code ' + str(proc.returncode)}", None,
                        hint="rerun with '-o FILE.dot' to inspect the generated DOT")
    return out


def layout_width(view: View) -> int:
    """The widest rank ``dot``'s layout of ``view`` will have: nodes plus the virtual nodes of the edges that
    pass through it, with longest-path ranks (an estimate of dot's network-simplex ranking; size-only edges
    do not rank). The cost of crossing minimization grows with it much faster than linearly."""
    preds: dict[str, list[str]] = {n: [] for n in view.nodes}
    edges = [(e.src, e.dst) for e in view.edges if not e.size_only and e.src in preds and e.dst in preds]
    for s, d in edges:
        preds[d].append(s)
    rank: dict[str, int] = {}
    pending = {n: len(p) for n, p in preds.items()}
    succ: dict[str, list[str]] = {n: [] for n in view.nodes}
    for s, d in edges:
        succ[s].append(d)
    ready = [n for n, k in pending.items() if k == 0]
    while ready:   # Kahn's order; nodes on a cycle (a folded run's edges may form one) keep rank 0
        n = ready.pop()
        rank.setdefault(n, 0)
        for d in succ[n]:
            rank[d] = max(rank.get(d, 0), rank[n] + 1)
            pending[d] -= 1
            if pending[d] == 0:
                ready.append(d)
    width: Counter[int] = Counter(rank.get(n, 0) for n in view.nodes)
    through: Counter[int] = Counter()   # +1 where an edge starts passing ranks, -1 where it stops
    for s, d in edges:
        if rank.get(d, 0) - rank.get(s, 0) > 1:
            through[rank.get(s, 0) + 1] += 1
            through[rank.get(d, 0)] -= 1
    running = 0
    for r in range(max(rank.values(), default=0) + 1):
        running += through[r]
        width[r] += running
    return max(width.values(), default=0)


def check_size(view: View, limits: Limits | None = None, *, full_layout: bool = False) -> None:
    """Refuse a view Graphviz would take minutes to lay out (``Limits.max_render_nodes`` / ``_edges``).

    Boxes and frames count as nodes. ``full_layout`` (the HTML viewer, which always lays out every layer)
    changes only the hint: ``--depth`` does not shrink that layout.
    """
    lim = limits or Limits()
    boxes = len(view.nodes) + len(view.visible_clusters())
    over = [(what, n, name, bound) for what, n, name, bound in (
        ("boxes and frames", boxes, "max_render_nodes", lim.max_render_nodes),
        ("edges", len(view.edges), "max_render_edges", lim.max_render_edges)) if n > bound]
    if not over:
        width = layout_width(view)
        if width > lim.max_render_width:   # few boxes, but so many crossing edges that dot would take minutes
            over = [("boxes and edges on its widest rank", width, "max_render_width", lim.max_render_width)]
    if not over:
        return
    what, n, name, bound = over[0]
    if full_layout:
        hint = (f"the HTML viewer lays out every layer; draw an .svg with --depth 1 or 2 instead, or raise the "
                f"bound with --limit {name}={n}")
    else:
        hint = (f"draw less with --depth 1 or 2 (runs of identical blocks fold unless --expand), or raise the "
                f"bound with --limit {name}={n}")
    raise ArchError(f"the diagram has {n:,} {what}, over the limit of {bound:,} ({name}): Graphviz would take "
                    "minutes to lay it out", None, hint=hint)


def layout(view: View, fmt: str, *, rankdir: str = "TB", limits: Limits | None = None, tooltips: bool = True,
           classes: bool = False, full_layout: bool = False) -> bytes:
    """The view laid out by ``dot`` in ``fmt`` (svg, png, pdf), after the size check."""
    check_size(view, limits, full_layout=full_layout)
    return render_bytes(to_dot(view, rankdir=rankdir, tooltips=tooltips, classes=classes), fmt,
                        timeout_s=(limits or Limits()).max_render_seconds)
