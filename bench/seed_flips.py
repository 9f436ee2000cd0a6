"""Run the suite's numerical tests under several seeds and list any whose outcome flips.

    python bench/seed_flips.py                          # the default selection, seeds 0-4
    python bench/seed_flips.py --seeds 0,1,2,3,4,5,6,7 tests/test_repvit.py -k deploy
    python bench/seed_flips.py --out bench/results/seed_flips.md

Every test starts from ``torch.manual_seed(ARCHDSL_TEST_SEED)`` (tests/conftest.py; default 0), so a run is
reproducible; this script varies that seed (and ``--hypothesis-seed``) to find the comparisons that pass
only for the draw CI happens to use -- a tolerance that is too tight for a randomly initialized network, or a
reference built from unseeded numbers. A test that passes under some seeds and fails under others is a flip;
the report gives the first line of each failure. Arguments after the options are passed to pytest (test
files, node ids, ``-k``, ``-m``); without them the default selection below runs.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: numerical comparisons of deep, randomly initialized networks against a reference or another form of
#: themselves (the tests a seed can flip); hypothesis-driven and structural tests are left out
DEFAULT = [
    "tests/test_reparam_nets.py::test_train_form_loads_strictly_and_matches",
    "tests/test_reparam_nets.py::test_deploy_matches_train_form_and_timm_reparameterize",
    "tests/test_compat.py::test_users_spec_loads_the_reference_strictly_and_matches",
]


def run_seed(seed: int, args: list[str], workers: int) -> tuple[dict[str, str], float]:
    """One pytest run under ``seed``: {test id: 'passed' | 'failed: <first line>' | ...}, wall seconds."""
    env = dict(os.environ, ARCHDSL_TEST_SEED=str(seed), PYTHONPATH=str(ROOT))
    with tempfile.TemporaryDirectory() as d:
        xml = Path(d) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *args]
        cmd += ["-n", str(workers)] if workers > 1 else ["-p", "no:xdist"]
        if seed:
            cmd.append(f"--hypothesis-seed={seed}")
        t = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - t
        outcomes: dict[str, str] = {}
        if not xml.exists():
            return {"(pytest did not run)": "error"}, wall
        for case in ET.parse(xml).getroot().iter("testcase"):
            name = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
            bad = next((c for c in case if c.tag in ("failure", "error")), None)
            skipped = next((c for c in case if c.tag == "skipped"), None)
            if bad is not None:
                first = (bad.get("message") or "").strip().splitlines()
                outcomes[name] = f"{bad.tag}: {first[0][:160] if first else ''}"
            elif skipped is not None:
                outcomes[name] = "skipped"
            else:
                outcomes[name] = "passed"
        return outcomes, wall


def report(seeds: list[int], runs: dict[int, dict[str, str]], walls: dict[int, float], args: list[str]) -> str:
    tests = sorted({t for r in runs.values() for t in r})
    flips = [t for t in tests if len({runs[s].get(t, "missing").split(":")[0] for s in seeds}) > 1]
    always = [t for t in tests if t not in flips and all(runs[s].get(t, "").startswith(("failed", "error"))
                                                         for s in seeds)]
    lines = ["# Seed flips", "",
             f"`python bench/seed_flips.py --seeds {','.join(map(str, seeds))} {' '.join(args)}`".rstrip(), "",
             f"{len(tests)} tests x {len(seeds)} seeds (ARCHDSL_TEST_SEED); wall time per seed: "
             + ", ".join(f"{s}: {walls[s]:.0f} s" for s in seeds) + ".", "",
             f"**{len(flips)} flip(s)**" + (":" if flips else "."), ""]
    for t in flips:
        lines.append(f"* `{t}`")
        for s in seeds:
            lines.append(f"  * seed {s}: {runs[s].get(t, 'missing')}")
    if always:
        lines += ["", "Failing under every seed (not a flip, a failure):", ""]
        lines += [f"* `{t}`: {runs[seeds[0]][t]}" for t in always]
    lines += ["", "| test | " + " | ".join(f"seed {s}" for s in seeds) + " |",
              "|---|" + "---|" * len(seeds)]
    for t in tests:
        lines.append(f"| `{t.removeprefix('tests/')}` | " + " | ".join(runs[s].get(t, "missing").split(":")[0]
                                                            for s in seeds) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds (default 0,1,2,3,4)")
    ap.add_argument("--workers", type=int, default=1, help="pytest-xdist workers per run (default 1)")
    ap.add_argument("--out", help="also write the Markdown report here")
    ns, rest = ap.parse_known_args(argv)
    seeds = [int(s) for s in ns.seeds.split(",") if s.strip()]
    args = rest or DEFAULT
    runs: dict[int, dict[str, str]] = {}
    walls: dict[int, float] = {}
    for s in seeds:
        runs[s], walls[s] = run_seed(s, args, ns.workers)
        bad = sum(not v.startswith("passed") for v in runs[s].values())
        print(f"seed {s}: {len(runs[s])} tests, {bad} not passed ({walls[s]:.0f} s)", flush=True)
    text = report(seeds, runs, walls, rest)
    print(text)
    if ns.out:
        Path(ns.out).write_text(text)
    return 1 if "**0 flip(s)**" not in text else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
