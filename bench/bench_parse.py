"""Parse time of the whole library (every ``.arch`` under specs/ and examples/), with and without the parse cache.

Issue 20 asks whether the parse cache earns its keep (a cache is data someone could plant): this measures,
in one process, after a warm-up pass (the Lark tables built, the files in the OS cache),

* ``uncached``: :func:`archdsl.lang.parser.parse` with the cache off (``ARCHDSL_NO_CACHE=1``): Lark + transform;
* ``disk hit``: the entry read from the private cache directory, its MAC checked and decoded (the in-memory
  memo cleared before each pass, as in a fresh ``archc`` process);
* ``memory hit``: the in-process memo (a notebook or a fuzzer parsing the same text again),

as the median of ``--runs`` passes over all files, and then ``archc check specs/ examples/`` in fresh processes
with the cache off and with a warm cache (what a user waits for). Usage::

    python bench/bench_parse.py [--runs 7] [--cli-runs 3] [--out bench/results/parse.md]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from archdsl.cachedir import NO_CACHE_ENV, CACHE_ENV  # noqa: E402
from archdsl.lang import astcache, parser  # noqa: E402
from archdsl.source import Source  # noqa: E402


def _files() -> list[Path]:
    return sorted(p for d in ("specs", "examples") for p in (ROOT / d).rglob("*.arch"))


def _median_pass(fn: Callable[[], None], runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _cli(env: dict[str, str], runs: int) -> float:
    cmd = [sys.executable, "-m", "archdsl", "check", "specs/", "examples/"]
    full = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    subprocess.run(cmd, cwd=ROOT, env=full, capture_output=True)  # warm-up (and fills a cache that is on)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, env=full, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--cli-runs", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "parse.md"))
    args = ap.parse_args()
    files = _files()
    sources = [Source.from_file(p) for p in files]
    nbytes = sum(len(s.text.encode()) for s in sources)
    cache = tempfile.mkdtemp(prefix="archdsl-bench-parse-")
    os.environ[CACHE_ENV] = cache

    def parse_all() -> None:
        for s in sources:
            parser.parse(s)

    def uncached() -> None:
        os.environ[NO_CACHE_ENV] = "1"
        try:
            astcache._MEMO.clear()
            parse_all()
        finally:
            del os.environ[NO_CACHE_ENV]

    def disk_hit() -> None:
        astcache._MEMO.clear()
        parse_all()

    t_uncached = _median_pass(uncached, args.runs)
    parse_all()  # fills the disk cache
    t_disk = _median_pass(disk_hit, args.runs)
    t_memo = _median_pass(parse_all, args.runs)
    cli_off = _cli({NO_CACHE_ENV: "1"}, args.cli_runs)
    cli_on = _cli({CACHE_ENV: tempfile.mkdtemp(prefix="archdsl-bench-parse-cli-")}, args.cli_runs)
    report = (
        "# Parse time of the library, with and without the parse cache\n\n"
        f"{len(files)} files under specs/ and examples/ ({nbytes / 1024:.0f} KiB); in-process medians of "
        f"{args.runs} passes after a warm-up; `archc check` medians of {args.cli_runs} fresh processes.\n\n"
        "| what | time | per file |\n|---|---|---|\n"
        f"| parse, no cache (Lark + transform) | {t_uncached * 1e3:.0f} ms | {t_uncached / len(files) * 1e3:.1f} ms |\n"
        f"| parse, disk-cache hit (read + MAC + decode) | {t_disk * 1e3:.0f} ms | {t_disk / len(files) * 1e3:.1f} ms |\n"
        f"| parse, memory hit | {t_memo * 1e3:.0f} ms | {t_memo / len(files) * 1e3:.2f} ms |\n"
        f"| `archc check specs/ examples/`, `ARCHDSL_NO_CACHE=1` | {cli_off:.2f} s | |\n"
        f"| `archc check specs/ examples/`, warm cache | {cli_on:.2f} s | |\n\n"
        "Reproduce: `PYTHONPATH=. .venv/bin/python bench/bench_parse.py`\n")
    Path(args.out).write_text(report)
    print(report)


if __name__ == "__main__":
    main()
