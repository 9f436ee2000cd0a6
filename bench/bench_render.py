"""How long `archc render` takes on the largest spec in specs/ at full depth (target: < 5 s).

Finds the network with the most IR nodes under specs/, then times, in this process (median of N runs):
building the view (``build_view``), writing DOT (``to_dot``) and running Graphviz (``dot -Tsvg``), with
identical blocks folded (the default) and with ``--expand``; plus one fresh-process run of the real CLI
(`archc render SPEC -o OUT.svg`), which includes interpreter start-up, parsing and shape inference.

Then the hostile case of issue 11: three branches of 2,000 conv layers each (6,006 boxes). Graphviz took
45 s on it before ``Limits.max_render_nodes``; now `archc render` refuses it before `dot` runs. The
fresh-process time to that refusal is measured; ``--unbounded`` also times the layout it avoids (slow).
Then the paper style (issue 23, target < 5 s): the same largest spec drawn with ``style="paper"``
(folded and ``--expand``), and `archc render SPEC -o fig.svg|fig.pdf --style paper` in a fresh process.
That section is kept at the end of the results file; ``--paper`` measures and rewrites only it.
Results go to bench/results/render.md. Usage: .venv/bin/python bench/bench_render.py [--runs 3] [--unbounded]
[--paper]
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import archdsl  # noqa: E402
from archdsl.pipeline import list_networks  # noqa: E402
from archdsl.render import build_view, render_bytes, to_dot  # noqa: E402


def _median(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median wall time and median CPU time (this process + finished children, i.e. ``dot``)."""
    walls, cpus = [], []
    for _ in range(runs):
        c0 = time.process_time() + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
        t = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - c0)
    return statistics.median(walls), statistics.median(cpus)


def largest_spec() -> tuple[str, int]:
    """The network in specs/ with the most IR nodes."""
    best = ("", -1)
    for net in list_networks("specs"):
        if "error" in net:
            continue
        n = len(archdsl.graph(net["spec"]))
        if n > best[1]:
            best = (net["spec"], n)
    return best


HOSTILE = "network wide():\n    input [8, 8, 8]\n    add:\n" + "".join(
    f"        b{i}: [conv2d(8, 3, padding=1) for i in range(2000)]\n" for i in range(3))


def hostile(tmp: str, unbounded: bool) -> tuple[float, str, float | None]:
    """Fresh-process `archc render` of the 3 x 2,000-layer spec: (seconds, first stderr line, unbounded seconds)."""
    spec = Path(tmp) / "wide.arch"
    spec.write_text(HOSTILE)
    cmd = [sys.executable, "-m", "archdsl", "render", str(spec), "-o", str(Path(tmp) / "wide.svg")]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    took = time.perf_counter() - t
    if proc.returncode != 1:
        raise SystemExit(f"expected a refusal (exit 1), got {proc.returncode}: {proc.stderr}")
    full = None
    if unbounded:
        t = time.perf_counter()
        subprocess.run(cmd + ["--limit", "max_render_nodes=100000", "--limit", "max_render_edges=100000"],
                       cwd=ROOT, capture_output=True, check=True)
        full = time.perf_counter() - t
    return took, proc.stderr.splitlines()[0], full


PAPER_HEADING = "## Paper style (`--style paper`)"


def paper_section(spec: str, size: int, runs: int) -> str:
    """Time the paper style on ``spec``: view, DOT, dot -Tsvg in process; the CLI to SVG and PDF fresh."""
    g = archdsl.graph(spec)
    rows = []
    for label, expand in (("paper, folded (default)", False), ("paper, --expand", True)):
        view = build_view(g, expand=expand, style="paper")
        src = to_dot(view, rankdir="LR")
        (w_view, c_view) = _median(lambda: build_view(g, expand=expand, style="paper"), runs)
        (w_dot, c_dot) = _median(lambda: to_dot(view, rankdir="LR"), runs)
        (w_gv, c_gv) = _median(lambda: render_bytes(src, "svg"), runs)
        wall, cpu = w_view + w_dot + w_gv, c_view + c_dot + c_gv
        rows.append(f"| {label} | {len(view.nodes)} | {len(view.visible_clusters())} | {len(view.edges)} | "
                    f"{w_view:.2f} / {c_view:.2f} s | {w_dot:.2f} / {c_dot:.2f} s | {w_gv:.2f} / {c_gv:.2f} s | "
                    f"**{wall:.2f}** / {cpu:.2f} s | {'yes' if wall < 5 else 'NO'} |")
    cli = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("svg", "pdf"):
            cmd = [sys.executable, "-m", "archdsl", "render", spec, "-o", str(Path(tmp) / f"fig.{fmt}"),
                   "--style", "paper"]
            t = time.perf_counter()
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            took = time.perf_counter() - t
            if proc.returncode != 0:
                raise SystemExit(proc.stderr)
            cli.append(f"`-o fig.{fmt}` {took:.2f} s")
    return (f"{PAPER_HEADING}\n\nspec: `{spec}` ({size} IR nodes, the largest in specs/); {runs} runs per figure "
            f"(median), wall / CPU as above; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.\n\n"
            "| mode | nodes drawn | clusters | edges | build_view | to_dot | dot -Tsvg | total | wall < 5 s |\n"
            "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
            f"Real CLI in a fresh process (`archc render {spec} --style paper`, start-up, parsing, shape "
            f"inference and rendering): {', '.join(cli)}.\n\n"
            "Reproduce: `.venv/bin/python bench/bench_render.py --paper`\n")


def write_paper_section(out: Path, section: str) -> None:
    """Replace (or add) the paper-style section at the end of ``out``, leaving everything else as it is."""
    text = out.read_text() if out.exists() else ""
    if PAPER_HEADING in text:
        head, _, rest = text.partition(PAPER_HEADING)
        nxt = rest.find("\n## ")
        text = head + (rest[nxt + 1:] + "\n" if nxt >= 0 else "")
    out.write_text(text.rstrip("\n") + "\n\n" + section)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--unbounded", action="store_true", help="also time the 6,006-box layout (about 45 s)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "render.md"))
    ap.add_argument("--paper", action="store_true", help="measure only the paper style and rewrite its section")
    args = ap.parse_args()
    os.chdir(ROOT)  # spec addresses relative to the repository, as a user types them
    spec, size = largest_spec()
    if args.paper:
        section = paper_section(spec, size, args.runs)
        write_paper_section(Path(args.out), section)
        print(section)
        return
    g = archdsl.graph(spec)
    rows = []
    for label, expand in (("folded (default)", False), ("--expand", True)):
        view = build_view(g, expand=expand)
        src = to_dot(view)
        (w_view, c_view) = _median(lambda: build_view(g, expand=expand), args.runs)
        (w_dot, c_dot) = _median(lambda: to_dot(view), args.runs)
        (w_gv, c_gv) = _median(lambda: render_bytes(src, "svg"), args.runs)
        wall, cpu = w_view + w_dot + w_gv, c_view + c_dot + c_gv
        rows.append(f"| {label} | {len(view.nodes)} | {len(view.visible_clusters())} | {len(view.edges)} | "
                    f"{w_view:.2f} / {c_view:.2f} s | {w_dot:.2f} / {c_dot:.2f} s | {w_gv:.2f} / {c_gv:.2f} s | "
                    f"**{wall:.2f}** / {cpu:.2f} s | {'yes' if wall < 5 else 'NO'} |")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "archdsl", "render", spec, "-o", str(Path(tmp) / "out.svg")]
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        t_cli = time.perf_counter() - t
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
        t_hostile, refusal, t_full = hostile(tmp, args.unbounded)
    gv = subprocess.run(["dot", "-V"], capture_output=True, text=True).stderr.strip()
    report = (
        f"# archc render: largest spec at full depth\n\n"
        f"spec: `{spec}` ({size} IR nodes); {args.runs} runs per figure (median), {platform.processor() or platform.machine()}, "
        f"{gv}\n\n"
        "Each time is wall / CPU (CPU includes the `dot` child process). The machine is shared: with a load "
        f"average of {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end of this run, wall times are "
        "inflated by waiting for a core; the CPU times are what the work costs.\n\n"
        "| mode | nodes drawn | clusters | edges | build_view | to_dot | dot -Tsvg | total | wall < 5 s |\n"
        "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        f"Real CLI in a fresh process (`archc render {spec} -o out.svg`, start-up, parsing, shape inference "
        f"and rendering): {t_cli:.2f} s.\n\n"
        "Hostile spec (issue 11): 3 branches x 2,000 conv layers, 6,006 boxes at full depth. Before the render "
        "bound, `archc render` spent 45 s in Graphviz (49.8 s wall measured on this machine before the change). "
        f"Now, in a fresh process: exit 1 after {t_hostile:.2f} s (start-up, parsing, shape inference and the "
        f"view included) with\n\n    {refusal}\n\n"
        + (f"Laid out anyway (`--limit max_render_nodes=100000`): {t_full:.1f} s.\n\n" if t_full is not None
           else "")
        + "Reproduce: `.venv/bin/python bench/bench_render.py` (`--unbounded` also times the refused layout)\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report)
    write_paper_section(Path(args.out), paper_section(spec, size, args.runs))
    print(Path(args.out).read_text())


if __name__ == "__main__":
    main()
