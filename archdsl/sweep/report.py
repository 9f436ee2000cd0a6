"""A sweep's report: the Pareto front, a CSV table, a static plot (PNG/SVG/PDF) and an interactive HTML page.

The front is accuracy-free: a variant is on it when no other variant costs less (``cost``: latency, MACs or
activation memory) while giving at least as much of ``benefit`` (parameters by default: capacity per cost).
"""
from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path
from typing import Any

from ..errors import ArchError
from ..fsutil import atomic_write
from .runner import SweepResult

__all__ = ["METRICS", "pareto_front", "write_report", "to_csv", "to_html", "plot_bytes"]

# column -> (label, unit scale, unit)
METRICS: dict[str, tuple[str, float, str]] = {
    "parameters": ("parameters", 1e6, "M"),
    "macs": ("MACs", 1e9, "G"),
    "activation_bytes": ("peak activations", 2 ** 20, "MiB"),
    "eager_ms": ("eager latency", 1.0, "ms"),
    "deploy_ms": ("deploy latency", 1.0, "ms"),
}


def pareto_front(rows: list[dict[str, Any]], cost: str, benefit: str) -> list[int]:
    """Indices (into ``rows``) of the valid variants no other valid variant dominates: lower or equal ``cost``
    and higher or equal ``benefit``, strictly better in one. Sorted by cost."""
    pts = [(i, r[cost], r[benefit]) for i, r in enumerate(rows)
           if r.get("ok") and isinstance(r.get(cost), (int, float)) and isinstance(r.get(benefit), (int, float))]
    front = [i for i, c, b in pts
             if not any((c2 <= c and b2 >= b) and (c2 < c or b2 > b) for _, c2, b2 in pts)]
    return sorted(front, key=lambda i: (rows[i][cost], -rows[i][benefit]))


def _axes(res: SweepResult, cost: str | None, benefit: str) -> tuple[str, str]:
    if cost is None:
        cost = "deploy_ms" if res.settings.get("measure") else "macs"
    for name in (cost, benefit):
        if name not in METRICS:
            raise ArchError(f"'{name}' is not a sweep metric", None, hint="one of: " + ", ".join(METRICS))
        if res.valid and name not in res.valid[0]:
            raise ArchError(f"the sweep has no '{name}' column", None,
                            hint="latency columns need --measure cpu (or cuda)")
    return cost, benefit


def to_csv(res: SweepResult, front: list[int]) -> str:
    keys = list(dict.fromkeys(k for r in res.rows for k in r["params"]))
    metrics = [m for m in METRICS if any(m in r for r in res.rows)]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["variant", *keys, *metrics, "pareto", "error"])
    for i, r in enumerate(res.rows):
        w.writerow([r["variant"], *[json.dumps(r["params"].get(k)) for k in keys], *[r.get(m, "") for m in metrics],
                    "yes" if i in front else "", (r.get("error") or "").splitlines()[0] if r.get("error") else ""])
    return buf.getvalue()


def plot_bytes(res: SweepResult, front: list[int], cost: str, benefit: str, fmt: str = "png") -> bytes:
    """The scatter of every valid variant with the front drawn through, as PNG/SVG/PDF (matplotlib, Agg)."""
    try:
        import matplotlib
    except ImportError:
        raise ArchError("a static plot needs matplotlib", None, hint="pip install 'archdsl[sweep]', or write "
                        "-o sweep.html / sweep.csv") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    (cl, cs, cu), (bl, bs, bu) = METRICS[cost], METRICS[benefit]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=150)
    ok = [(i, r) for i, r in enumerate(res.rows) if r["ok"]]
    ax.scatter([r[cost] / cs for _, r in ok], [r[benefit] / bs for _, r in ok], s=22, color="#8aa4c8",
               label="variant", zorder=2)
    fx = [res.rows[i][cost] / cs for i in front]
    fy = [res.rows[i][benefit] / bs for i in front]
    ax.plot(fx, fy, "-o", color="#d0442c", ms=5, lw=1.5, label="Pareto front", zorder=3)
    for i in front:
        ax.annotate(res.rows[i]["variant"], (res.rows[i][cost] / cs, res.rows[i][benefit] / bs), fontsize=6,
                    xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel(f"{cl} ({cu})")
    ax.set_ylabel(f"{bl} ({bu})")
    title = f"{res.spec}: {len(ok)} variants"
    if res.sgemm_gflops:
        title += f" (sgemm {res.sgemm_gflops:.0f} GFLOP/s)"
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt)
    plt.close(fig)
    return buf.getvalue()


def to_html(res: SweepResult, front: list[int], cost: str, benefit: str) -> str:
    """One self-contained page (no network): a scatter whose axes can be switched, the front highlighted,
    hover for a variant's figures, and the table of every variant (invalid ones with their error)."""
    data = {"rows": res.rows, "front": front, "cost": cost, "benefit": benefit,
            "metrics": {k: list(v) for k, v in METRICS.items() if any(k in r for r in res.rows)},
            "spec": res.spec, "sgemm": res.sgemm_gflops}
    # the JSON is put inside <script>: '<' escaped so no value can close the element
    blob = json.dumps(data).replace("<", "\\u003c")
    return _PAGE.replace("__TITLE__", html.escape(f"archc sweep: {res.spec}")).replace("__DATA__", blob)


def write_report(res: SweepResult, outputs: list[Path], *, cost: str | None = None,
                 benefit: str = "parameters") -> list[int]:
    """Write each of ``outputs`` by its suffix (.csv, .html, .png, .svg, .pdf, .json); returns the front."""
    cost, benefit = _axes(res, cost, benefit)
    front = pareto_front(res.rows, cost, benefit)
    for out in outputs:
        ext = out.suffix.lower()
        if ext == ".csv":
            atomic_write(out, to_csv(res, front))
        elif ext in (".html", ".htm"):
            atomic_write(out, to_html(res, front, cost, benefit))
        elif ext in (".png", ".svg", ".pdf"):
            atomic_write(out, plot_bytes(res, front, cost, benefit, ext[1:]))
        elif ext == ".json":
            atomic_write(out, json.dumps({"spec": res.spec, "sgemm_gflops": res.sgemm_gflops, "cost": cost,
                                          "benefit": benefit, "front": front, "rows": res.rows}, indent=1))
        else:
            raise ArchError(f"output '{out}': unknown format '{ext}'", None,
                            hint="write .csv, .html, .png, .svg, .pdf or .json")
    return front


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body{font:13px system-ui,sans-serif;margin:16px;color:#222}
#plot{border:1px solid #ddd;background:#fff}
.pt{fill:#8aa4c8;stroke:#fff;cursor:pointer}.pt.front{fill:#d0442c}
.pt.sel{stroke:#000;stroke-width:2}
#tip{position:absolute;pointer-events:none;background:#fffbe6;border:1px solid #cc9;padding:4px 6px;display:none;
white-space:pre}
table{border-collapse:collapse;margin-top:12px}td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
td:first-child,th:first-child{text-align:left}tr.front td{background:#fdebe7}tr.bad td{color:#999}
</style></head><body>
<h2 id="title"></h2>
<label>x (cost) <select id="xs"></select></label>
<label>y (benefit) <select id="ys"></select></label>
<div><svg id="plot" width="720" height="420"></svg></div><div id="tip"></div>
<table id="tab"></table>
<script>
const D = __DATA__;
const NS = "http://www.w3.org/2000/svg";
const M = D.metrics, rows = D.rows;
document.getElementById("title").textContent = D.spec + ": " + rows.length + " variants" +
  (D.sgemm ? " (sgemm " + D.sgemm.toFixed(0) + " GFLOP/s)" : "");
function fmt(k, v){ if (v === undefined || v === null || v === "") return ""; const m = M[k];
  return m ? (v / m[1]).toPrecision(4) + " " + m[2] : String(v); }
function front(c, b){ const p = rows.map((r, i) => [i, r[c], r[b]]).filter(t => rows[t[0]].ok &&
  typeof t[1] === "number" && typeof t[2] === "number");
  return new Set(p.filter(([i, x, y]) => !p.some(([j, x2, y2]) => x2 <= x && y2 >= y && (x2 < x || y2 > y)))
    .map(t => t[0])); }
for (const id of ["xs", "ys"]) { const s = document.getElementById(id);
  for (const k of Object.keys(M)) { const o = document.createElement("option"); o.value = k; o.textContent = M[k][0];
    s.appendChild(o); }
  s.value = id === "xs" ? D.cost : D.benefit; s.onchange = draw; }
function el(n, a){ const e = document.createElementNS(NS, n); for (const k in a) e.setAttribute(k, a[k]); return e; }
function draw(){ const c = document.getElementById("xs").value, b = document.getElementById("ys").value;
  const svg = document.getElementById("plot"); svg.innerHTML = ""; const F = front(c, b);
  const ok = rows.map((r, i) => i).filter(i => rows[i].ok && typeof rows[i][c] === "number");
  const W = 720, H = 420, L = 70, B = 40, T = 16, R = 20;
  const xs = ok.map(i => rows[i][c]), ys = ok.map(i => rows[i][b]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const X = v => L + (x1 > x0 ? (v - x0) / (x1 - x0) : 0.5) * (W - L - R);
  const Y = v => H - B - (y1 > y0 ? (v - y0) / (y1 - y0) : 0.5) * (H - B - T);
  svg.appendChild(el("line", {x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#999"}));
  svg.appendChild(el("line", {x1: L, y1: T, x2: L, y2: H - B, stroke: "#999"}));
  const xl = el("text", {x: (W + L) / 2, y: H - 8, "text-anchor": "middle"}); xl.textContent = M[c][0] + " (" + M[c][2] + ")";
  const yl = el("text", {x: 14, y: (H - B) / 2, transform: "rotate(-90 14 " + (H - B) / 2 + ")", "text-anchor": "middle"});
  yl.textContent = M[b][0] + " (" + M[b][2] + ")"; svg.appendChild(xl); svg.appendChild(yl);
  for (const [v, anchor, x, y] of [[x0, "start", L, H - B + 14], [x1, "end", W - R, H - B + 14]]) {
    const t = el("text", {x: x, y: y, "text-anchor": anchor, "font-size": 10}); t.textContent = fmt(c, v); svg.appendChild(t); }
  for (const [v, y] of [[y0, H - B], [y1, T + 8]]) {
    const t = el("text", {x: L - 4, y: y, "text-anchor": "end", "font-size": 10}); t.textContent = fmt(b, v); svg.appendChild(t); }
  const fl = [...F].sort((i, j) => rows[i][c] - rows[j][c]);
  if (fl.length > 1) svg.appendChild(el("polyline", {points: fl.map(i => X(rows[i][c]) + "," + Y(rows[i][b])).join(" "),
    fill: "none", stroke: "#d0442c", "stroke-width": 1.5}));
  const tip = document.getElementById("tip");
  for (const i of ok) { const p = el("circle", {cx: X(rows[i][c]), cy: Y(rows[i][b]), r: 5,
      class: "pt" + (F.has(i) ? " front" : ""), "data-variant": rows[i].variant});
    p.onmousemove = e => { tip.style.display = "block"; tip.style.left = (e.pageX + 12) + "px"; tip.style.top = (e.pageY + 8) + "px";
      tip.textContent = rows[i].variant + "\\n" + Object.keys(M).filter(k => k in rows[i]).map(k => M[k][0] + ": " + fmt(k, rows[i][k])).join("\\n"); };
    p.onmouseleave = () => { tip.style.display = "none"; };
    p.onclick = () => { document.querySelectorAll(".pt.sel").forEach(q => q.classList.remove("sel")); p.classList.add("sel");
      const tr = document.querySelector('tr[data-i="' + i + '"]'); if (tr) tr.scrollIntoView({block: "nearest"}); };
    svg.appendChild(p); }
  table(F); }
function table(F){ const t = document.getElementById("tab"); t.innerHTML = "";
  const ks = Object.keys(M); const h = t.insertRow(); for (const s of ["variant", ...ks.map(k => M[k][0]), "front", "error"]) {
    const th = document.createElement("th"); th.textContent = s; h.appendChild(th); }
  rows.forEach((r, i) => { const tr = t.insertRow(); tr.dataset.i = i; tr.className = r.ok ? (F.has(i) ? "front" : "") : "bad";
    for (const v of [r.variant, ...ks.map(k => fmt(k, r[k])), F.has(i) ? "yes" : "", r.error || ""]) tr.insertCell().textContent = v; }); }
draw();
</script></body></html>
"""
