"""Run timm's own ``tests/test_models.py`` against every model ``archdsl.hub.register_timm()`` registers.

timm's file is never copied into this repository: it is read from a timm checkout (``--timm-git``, a git
directory, ``git show HEAD:tests/test_models.py``) or a file (``--test-file``) into a scratch folder, beside
a ``conftest.py`` that registers the library before timm's module builds its parametrizations and keeps only
the tests of models matching ``ARCHDSL_TIMM_MODELS`` (fnmatch patterns, comma-separated; default
``archdsl_*``), with a per-test time limit (``ARCHDSL_TIMM_TEST_TIMEOUT`` s, SIGALRM). With
``ARCHDSL_PREFIX_FILTERS=1`` (the default) timm's own name filters also apply behind our ``archdsl_`` prefix
(``vit_*`` -> ``archdsl_vit_*``): a model gets the tests timm gives its own equivalent. Every test's
outcome is appended to a JSON-lines log; ``--table`` writes the model x test table (markdown).

    python bench/timm_test_models.py --timm-git PATH/pytorch-image-models/.git --log out.jsonl \\
        --tests test_model_forward,test_model_backward [--models 'archdsl_resnet*'] [--timeout 300]
    python bench/timm_test_models.py --log out.jsonl --table bench/results/timm_test_models.md
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

__all__ = ["CONFTEST", "main"]

ROOT = Path(__file__).resolve().parent.parent

CONFTEST = '''
import fnmatch, json, os, signal, time
import pytest
import timm
import archdsl.hub
archdsl.hub.register_timm()

if os.environ.get("ARCHDSL_PREFIX_FILTERS", "1") == "1":
    # timm's name filters (NON_STD_FILTERS 'vit_*', EXCLUDE_JIT_FILTERS 'densenet*', ...) also match the
    # same patterns behind our prefix, so an archdsl model gets the tests timm gives its own equivalent
    _list_models = timm.list_models

    def _prefixed(pats):
        pats = [pats] if isinstance(pats, str) else list(pats or [])
        return pats + ["archdsl_" + p for p in pats if p and not p.startswith("*")]

    def list_models(*args, **kwargs):
        if args:
            kwargs["filter"], args = args[0], args[1:]
        for key in ("filter", "exclude_filters"):
            if kwargs.get(key):
                kwargs[key] = _prefixed(kwargs[key])
        return _list_models(*args, **kwargs)

    timm.list_models = list_models
_PATS = [p for p in os.environ.get("ARCHDSL_TIMM_MODELS", "archdsl_*").split(",") if p]
_LOG = os.environ["ARCHDSL_TIMM_LOG"]
_LIMIT = int(os.environ.get("ARCHDSL_TIMM_TEST_TIMEOUT", "300"))


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for it in items:
        name = getattr(getattr(it, "callspec", None), "params", {}).get("model_name")
        (keep if name and any(fnmatch.fnmatch(name, p) for p in _PATS) else drop).append(it)
    config.hook.pytest_deselected(items=drop)
    items[:] = keep


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout(f"over {_LIMIT} s")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(_LIMIT)
    try:
        yield
    finally:
        signal.alarm(0)


def pytest_runtest_logreport(report):
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        test, _, params = report.nodeid.partition("::")[2].partition("[")
        msg = ""
        if report.outcome == "failed":
            msg = str(getattr(report.longrepr, "reprcrash", None) and report.longrepr.reprcrash.message or "")[:300]
        elif report.outcome == "skipped":
            msg = str(report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr)[:200]
        model = next((p for p in params.rstrip("]").split("-") if p.startswith("archdsl_")), params)
        with open(_LOG, "a") as f:
            f.write(json.dumps({"test": test, "model": model, "outcome": report.outcome,
                                "seconds": round(report.duration, 1), "message": msg}) + "\\n")
'''


def _prepare(args: argparse.Namespace) -> Path:
    work = Path(tempfile.mkdtemp(prefix="timm_test_models_"))
    if args.test_file:
        text = Path(args.test_file).read_text(encoding="utf-8")
    else:
        text = subprocess.run(["git", "--git-dir", args.timm_git, "show", "HEAD:tests/test_models.py"],
                              check=True, capture_output=True, text=True).stdout
    (work / "test_models.py").write_text(text, encoding="utf-8")
    (work / "conftest.py").write_text(CONFTEST, encoding="utf-8")
    return work


def _run(args: argparse.Namespace) -> None:
    work = _prepare(args)
    env = dict(os.environ, ARCHDSL_TIMM_MODELS=args.models, ARCHDSL_TIMM_LOG=str(Path(args.log).resolve()),
               ARCHDSL_TIMM_TEST_TIMEOUT=str(args.timeout),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider", "-rN",
           "-W", "ignore", *(f"test_models.py::{t}" for t in args.tests.split(","))]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=work, env=env)


def _table(log: str, out: str, command: str) -> None:
    rows: dict[str, dict[str, dict[str, str]]] = defaultdict(dict)
    tests: list[str] = []
    for line in Path(log).read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        rows[r["model"]][r["test"]] = r   # the latest run of a test wins
        if r["test"] not in tests:
            tests.append(r["test"])
    mark = {"passed": "pass", "failed": "**FAIL**", "skipped": "skip"}
    short = [t.replace("test_model_", "") for t in tests]
    counts = {o: sum(1 for m in rows.values() for r in m.values() if r["outcome"] == o) for o in mark}
    lines = ["# timm's tests/test_models.py on every model of archdsl.hub.register_timm()", "",
             f"{len(rows)} models; passed {counts['passed']}, failed {counts['failed']}, skipped by timm's own "
             f"conditions {counts['skipped']}; '-': the test does not collect the model (timm's own filters).", "",
             "```", command, "```", "",
             "| model | " + " | ".join(short) + " |", "|---|" + "---|" * len(tests)]
    for model in sorted(rows):
        lines.append(f"| {model.removeprefix('archdsl_')} | "
                     + " | ".join(mark[rows[model][t]["outcome"]] if t in rows[model] else "-" for t in tests) + " |")
    notes = [(m, t, r["message"]) for m in sorted(rows) for t, r in rows[m].items() if r["outcome"] != "passed"]
    if notes:
        lines += ["", "## Not passed", ""] + [f"- {m} / {t}: {msg.splitlines()[0] if msg else ''}"
                                             for m, t, msg in notes]
    Path(out).write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timm-git", help="a timm git directory (its HEAD's tests/test_models.py)")
    ap.add_argument("--test-file", help="timm's tests/test_models.py")
    ap.add_argument("--log", required=True, help="JSON-lines log of the outcomes (appended)")
    ap.add_argument("--tests", default="", help="comma-separated test functions of timm's file")
    ap.add_argument("--models", default="archdsl_*", help="fnmatch patterns, comma-separated")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per test")
    ap.add_argument("--table", help="write the markdown table of the log here")
    ap.add_argument("--command", default="", help="the command line recorded in the table")
    args = ap.parse_args(argv)
    if args.tests:
        _run(args)
    if args.table:
        _table(args.log, args.table, args.command)


if __name__ == "__main__":
    main()
