"""Shared fixtures. Tests run in 2 xdist workers on CI, so each worker uses one torch thread."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
os.chdir(ROOT)  # spec addresses in tests are relative to the repository root
# keep the parse cache of test runs (fuzzing parses thousands of specs) out of the user's ~/.cache
if "ARCHDSL_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["ARCHDSL_CACHE_DIR"] = tempfile.mkdtemp(prefix="archdsl-test-cache-")

try:
    import torch

    torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, os.cpu_count() or 1))
except ImportError:  # pragma: no cover - torch is a test dependency
    pass


@pytest.fixture
def root() -> Path:
    return ROOT
