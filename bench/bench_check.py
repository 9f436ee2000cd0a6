"""How long `archc check specs/` takes (issue target: the whole library in under 2 s, without torch).

Runs the real CLI in fresh processes (so interpreter start-up and imports are counted, as a user sees
them) and reports the median of N runs. Usage: .venv/bin/python bench/bench_check.py [--runs 5]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "check.md"))
    args = ap.parse_args()
    cmd = [sys.executable, "-m", "archdsl", "check", "specs/"]
    times = []
    last = ""
    for _ in range(args.runs):
        t = time.perf_counter()
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        last = p.stdout.strip() or p.stderr.strip().splitlines()[-1]
    no_torch = subprocess.run(
        [sys.executable, "-c", "import sys; from archdsl.pipeline import check_paths; check_paths(['specs/']);"
         "print('torch' in sys.modules)"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    med = statistics.median(times)
    report = (f"# archc check specs/\n\ncommand: `{' '.join(['python'] + cmd[1:])}` ({args.runs} fresh processes)\n\n"
              f"| median | min | max | result | torch imported |\n|---|---|---|---|---|\n"
              f"| {med:.2f} s | {min(times):.2f} s | {max(times):.2f} s | {last} | {no_torch} |\n\n"
              f"Reproduce: `.venv/bin/python bench/bench_check.py`\n")
    Path(args.out).write_text(report)
    print(report)


if __name__ == "__main__":
    main()
