"""Shared fixtures and run-wide rules. Tests run in 2 xdist workers on CI, so each worker uses one torch thread.

A skipped test is a test that did not run, so the run fails when any test is skipped for a reason other than
``needs a CUDA device`` (the one thing a CPU machine cannot provide): everything else a test needs (Graphviz,
Chromium, triton for the interpreter tests) is installed by ``scripts/setup.sh``. The Triton-interpreter tests
set ``TRITON_INTERPRET=1`` themselves, in the subprocess that runs the kernels; nobody has to export it.

Every test starts from the same random state (the autouse fixture ``_seeded``): torch, ``random`` and numpy
are seeded with ``ARCHDSL_TEST_SEED`` (default 0) before each test, so a reference model built with torch's
default initializers, or a ``torch.randn`` without a generator, draws the same numbers in every run, on any
worker, in any order. Hypothesis tests are derandomized (their examples follow from the test; with a seed
given, from ``--hypothesis-seed``, which bench/seed_flips.py passes). ``bench/seed_flips.py`` runs the numerical tests under several seeds and lists any that flip.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
os.chdir(ROOT)  # spec addresses in tests are relative to the repository root
# The Triton-interpreter tests set TRITON_INTERPRET=1 in the subprocess that runs the kernels; in this
# process it must be off whatever the user's shell says (it turns the CUDA-only backends on for CPU tensors
# and the CUDA tests into interpreter runs).
os.environ.pop("TRITON_INTERPRET", None)
# keep the parse cache of test runs (fuzzing parses thousands of specs) out of the user's ~/.cache
if "ARCHDSL_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["ARCHDSL_CACHE_DIR"] = tempfile.mkdtemp(prefix="archdsl-test-cache-")

#: the environment variable holding the seed every test starts from (bench/seed_flips.py varies it)
SEED_ENV = "ARCHDSL_TEST_SEED"
TEST_SEED = int(os.environ.get(SEED_ENV, "0"))

try:
    from hypothesis import settings as _hyp_settings

    # derandomize: examples follow from the test function, never from the clock or a saved database, so a
    # CI run cannot fail on a draw a local run never saw (with a seed given, --hypothesis-seed picks them)
    _hyp_settings.register_profile("archdsl", derandomize=TEST_SEED == 0, database=None)
    _hyp_settings.load_profile("archdsl")
except ImportError:  # pragma: no cover - hypothesis is a test dependency
    pass

try:
    import torch

    torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, os.cpu_count() or 1))
except ImportError:  # pragma: no cover - torch is a test dependency
    pass


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def clean_plugin_ops() -> Any:
    """Plugin ops a test registers by loading a written plugin file (``NAME_plugins.py``) are unregistered and
    the file's module forgotten after it: later tests in the process (the ops reference) see the shipped
    registry."""
    from archdsl.ops.user import user_ops
    from archdsl.plugins import unregister_op
    ops, mods = set(user_ops()), set(sys.modules)
    yield
    for name in set(user_ops()) - ops:
        unregister_op(name)
    for name in set(sys.modules) - mods:
        if name.endswith("_plugins"):
            sys.modules.pop(name, None)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Seed torch, ``random`` and numpy with :data:`TEST_SEED` before every test (see the module docstring)."""
    import random

    random.seed(TEST_SEED)
    try:
        import numpy
        numpy.random.seed(TEST_SEED % 2**32)
    except ImportError:  # pragma: no cover - numpy comes with torch
        pass
    try:
        import torch
        torch.manual_seed(TEST_SEED)
    except ImportError:  # pragma: no cover
        pass



# ---- no silent skips ------------------------------------------------------------------------------------
ALLOWED_SKIP = "needs a CUDA device"
_disallowed_skips: list[tuple[str, str]] = []


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, line, "Skipped: <reason>")
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Record every skip whose reason is not the CUDA one (under xdist this runs on the controller too)."""
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        if ALLOWED_SKIP not in reason:
            _disallowed_skips.append((report.nodeid, reason))


def pytest_collectreport(report: pytest.CollectReport) -> None:
    """A module skipped at collection (``pytest.skip(..., allow_module_level=True)``, importorskip) counts too."""
    if report.skipped:
        reason = _skip_reason(report)  # type: ignore[arg-type]
        if ALLOWED_SKIP not in reason:
            _disallowed_skips.append((report.nodeid, reason))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _disallowed_skips and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not _disallowed_skips:
        return
    terminalreporter.section("skipped tests fail the run", sep="=", red=True, bold=True)
    terminalreporter.write_line(f'only a skip whose reason says "{ALLOWED_SKIP}" is allowed; scripts/setup.sh '
                                "installs what the others need:")
    for nodeid, reason in _disallowed_skips:
        terminalreporter.write_line(f"  {nodeid}: {reason}")
