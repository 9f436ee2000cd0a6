"""How fast and how lean archc refuses runaway specs (the resource bounds of archdsl.Limits).

Run: ``.venv/bin/python bench/limits.py``. For each runaway spec: wall and CPU time until the ArchError, peak
Python memory (tracemalloc) and the message. Every case should stop well under 2 s with the default
limits; nothing here builds a weight.
"""
from __future__ import annotations

import time
import tracemalloc

from archdsl.errors import ArchError
from archdsl.pipeline import compile_graph

H = "network net():\n    input [3, 32, 32]\n"
CASES = {
    "huge repeat (max_repeat)": H + "    relu * 1000000000\n",
    "nested repeats (max_nodes)": H + "    [relu * 10000] * 10000\n",
    "10k x 10k block repeats (max_nodes)":
        "block B():\n    conv2d(8, 1) * 10000\nnetwork net():\n    input [3, 8, 8]\n    B() * 10000\n",
    "recursive block (max_depth)": "block B(c):\n    conv2d(c, 1)\n    B(c)\n" + H + "    B(8)\n",
    "gigantic channels (max_channels)": H + "    conv2d(4194304, 1)\n",
    "gigantic weights (max_params)": H + "    conv2d(1048576, 1)\n    conv2d(1048576, 1)\n",
    "filtered 9k x 9k comprehension (max_steps)":
        H + "    q = [i for i in range(9000) for j in range(9000) if false]\n",
    "range(10 ** 12) (max_repeat)": H + "    n = len(range(10 ** 12))\n",
    "10 ** 100000 (power bound)": H + "    n = 10 ** 100000\n",
    "deep expression nesting": H + "    n = " + "-" * 5000 + "1\n",
}


def _run(text: str) -> str:
    try:
        compile_graph(text)
        return "NO ERROR"
    except ArchError as e:
        return e.errors[0].message


def main() -> None:
    _run(H + "    relu\n")  # load the grammar once, outside the measurements
    print(f"{'case':45s} {'wall':>8s} {'CPU':>8s} {'peak MiB':>9s}  message")
    for name, text in CASES.items():
        t, c = time.perf_counter(), time.process_time()
        msg = _run(text)
        dt, cpu = time.perf_counter() - t, time.process_time() - c
        tracemalloc.start()  # a second run for memory: tracing slows Python down several times
        _run(text)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"{name:45s} {dt:7.2f}s {cpu:7.2f}s {peak / 2**20:9.1f}  {msg}")


if __name__ == "__main__":
    main()
