"""How fast and how lean archc refuses runaway specs (the resource bounds of archdsl.Limits).

Run: ``.venv/bin/python bench/limits.py``. For each runaway spec: wall and CPU time until the ArchError, peak
Python memory (tracemalloc, a second run: tracing slows Python down; that run may reuse the parse), the growth of the process's peak
resident memory (``ru_maxrss``) and the limit the error names. Every case must stop under 2 s and 300 MB
with the default limits (the script exits 1 otherwise); nothing here builds a weight. The evaluation
bombs of issue 11 (values that grow without bound, and walks over them) are the second half of the table;
``tests/test_hostile_eval.py`` asserts the same cases with their exact messages.
"""
from __future__ import annotations

import os
import re
import resource
import sys
import tempfile
import time
import tracemalloc

# a fresh cache directory: the first (timed) run of each case parses cold, as a new spec would
os.environ["ARCHDSL_CACHE_DIR"] = tempfile.mkdtemp(prefix="archdsl-bench-limits-")

from archdsl.errors import ArchError  # noqa: E402  (after the cache directory is chosen)
from archdsl.pipeline import compile_graph  # noqa: E402

H = "network net():\n    input [3, 32, 32]\n"
SQUARES = "".join(f"    n{i + 1} = n{i} * n{i}\n" for i in range(40))
DOUBLES = "".join(f"    s{i + 1} = s{i} + s{i}\n" for i in range(40))
BIG_INT = "    n0 = 2 ** 64\n" + "".join(f"    n{i + 1} = n{i} * n{i}\n" for i in range(5))
CASES = {
    "huge repeat": H + "    relu * 1000000000\n",
    "nested repeats": H + "    [relu * 10000] * 10000\n",
    "10k x 10k block repeats":
        "block B():\n    conv2d(8, 1) * 10000\nnetwork net():\n    input [3, 8, 8]\n    B() * 10000\n",
    "recursive block": "block B(c):\n    conv2d(c, 1)\n    B(c)\n" + H + "    B(8)\n",
    "gigantic channels": H + "    conv2d(4194304, 1)\n",
    "gigantic weights": H + "    conv2d(1048576, 1)\n    conv2d(1048576, 1)\n",
    "filtered 9k x 9k comprehension": H + "    q = [i for i in range(9000) for j in range(9000) if false]\n",
    "range(10 ** 12)": H + "    n = len(range(10 ** 12))\n",
    "10 ** 100000": H + "    n = 10 ** 100000\n",
    "deep expression nesting": H + "    n = " + "-" * 3000 + "1\n",
    # evaluation bombs: the size of values (issue 11)
    "repeated squaring (40 lines)": H + "    n0 = 3\n" + SQUARES,
    "string doubling (40 lines)": H + '    s0 = "ab"\n' + DOUBLES,
    "str() of [[relu]*1e4]*1e4": H + "    q = str([[relu] * 10000] * 10000)\n",
    "== of two 1e8-item nested lists": H + "    q = [[1] * 10000] * 10000 == [[1] * 10000] * 10000\n",
    "sum([[1]*1e4]*1e4, [])": H + "    q = sum([[1] * 10000] * 10000, [])\n",
    "max() over a nested list": H + "    q = max([[[1] * 10000] * 10000, [[2]]])\n",
    "round(1, -100000000)": H + "    q = round(1, -100000000)\n",
    "100k-item list literal": H + "    q = [" + ", ".join(["1"] * 100_000) + "]\n",
    "12k-item list literal (12 lines)": H + "    q = [\n" + "\n".join("        " + "1, " * 1000 for _ in range(12)) + "\n    ]\n",
    "comprehension of 1e4-item lists": H + "    q = [[relu] * 10000 for i in range(10000)]\n",
    "10k str() walks": H + "    q = [str([[1] * 100] * 50) for i in range(10000)]\n",
    "range(10 ** 19)": H + "    q = range(10 ** 19)\n",
    "int() of a 4,000-digit string": H + '    d = "' + "9" * 1000 + '"\n    q = int(d + d + d + d)\n',
    "1e308 * 10 into an op": H + "    dropout(1e308 * 10)\n",
    "float ** overflow": H + "    q = 1048576.0 ** 64\n",
    "huge int / 3": H + BIG_INT + "    q = n5 / 3\n",
}
MAX_SECONDS = 2.0
MAX_MIB = 300.0


def _run(text: str) -> tuple[str, str]:
    """(first error message, the limit its hint names or '-')."""
    try:
        compile_graph(text)
        return "NO ERROR", "-"
    except ArchError as e:
        d = e.errors[0]
        m = re.search(r"Limits\.(\w+)", d.hint or "")
        return d.message, m.group(1) if m else "-"


def main() -> int:
    _run(H + "    relu\n")  # load the grammar once, outside the measurements
    print(f"| {'case':34s} | {'wall':>6s} | {'CPU':>6s} | {'peak MiB':>8s} | {'RSS +MiB':>8s} | {'limit':14s} | message")
    print(f"|{'-' * 36}|{'-' * 8}|{'-' * 8}|{'-' * 10}|{'-' * 10}|{'-' * 16}|---")
    bad = 0
    for name, text in CASES.items():
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t, c = time.perf_counter(), time.process_time()
        msg, limit = _run(text)
        dt, cpu = time.perf_counter() - t, time.process_time() - c
        rss = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024   # KiB on Linux
        tracemalloc.start()
        _run(text)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        ok = msg != "NO ERROR" and dt < MAX_SECONDS and peak / 2**20 < MAX_MIB and rss < MAX_MIB
        bad += not ok
        print(f"| {name:34s} | {dt:5.2f}s | {cpu:5.2f}s | {peak / 2**20:8.1f} | {rss:8.1f} | {limit:14s} | "
              f"{msg[:90]}{'' if ok else '  <-- over budget'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
