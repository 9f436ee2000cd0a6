"""Sweep time per variant: the 12-variant grid of docs/design-space.md, analysis only and measured (--measure
cpu: eager and deploy latency, each warmed up until two medians agree), beside the same run's sgemm bound.

Usage: .venv/bin/python bench/bench_sweep.py [--threads 2] [--out bench/results/sweep_cpu.md]
Runs the library API (what ``archc sweep`` calls) with no cache, so every variant is computed.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SPEC = "examples/family_sweep.arch:net"
GRID = ["width=16,24,32,48", "depth=1,2,3"]


def _cpu_flags() -> str:
    from benchlib import cpu_flags, cpu_model
    return f"{cpu_model()} ({', '.join(cpu_flags(('avx2', 'avx512f', 'avx512_bf16', 'amx_bf16'))) or 'no AVX2'})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "sweep_cpu.md"))
    args = ap.parse_args()
    import torch

    from archdsl.sweep import parse_grid, run_sweep, variants
    torch.set_num_threads(args.threads)
    vs = variants(parse_grid(GRID))
    lines = [f"# archc sweep: time per variant ({len(vs)} variants of `{SPEC}`, grid {' '.join(GRID)})", "",
             f"CPU: {_cpu_flags()}; torch {torch.__version__}, {args.threads} threads", "",
             "| mode | total | per variant (mean) | sgemm bound (same run) |", "|---|---|---|---|"]
    per_variant: dict[str, list[float]] = {}
    for mode in (None, "cpu"):
        stamps: list[float] = []
        t0 = time.perf_counter()
        res = run_sweep(SPEC, vs, measure=mode, progress=lambda d, n, r: stamps.append(time.perf_counter()))
        total = time.perf_counter() - t0
        name = "measured (--measure cpu)" if mode else "analysis only"
        gaps = [b - a for a, b in zip([t0, *stamps[:-1]], stamps)]
        per_variant[name] = gaps
        bound = f"{res.sgemm_gflops:.1f} GFLOP/s" if res.sgemm_gflops else "-"
        lines.append(f"| {name} | {total:.2f} s | {total / len(vs) * 1e3:.0f} ms (median "
                     f"{statistics.median(gaps) * 1e3:.0f} ms) | {bound} |")
        if mode:
            lines += ["", "| variant | params | MACs | eager ms | deploy ms | deploy GFLOP/s (2 x MACs / time) |",
                      "|---|---|---|---|---|---|"]
            for r in res.rows:
                if r["ok"]:
                    rate = 2 * r["macs"] / (r["deploy_ms"] * 1e-3) / 1e9
                    lines.append(f"| {r['variant']} | {r['parameters']:,} | {r['macs']:,} | {r['eager_ms']:.3f} | "
                                 f"{r['deploy_ms']:.3f} | {rate:.1f} |")
    lines += ["", f"Reproduce: `.venv/bin/python bench/bench_sweep.py --threads {args.threads}`", ""]
    text = "\n".join(lines)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
