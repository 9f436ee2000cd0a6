#!/usr/bin/env bash
# The whole test suite, from a fresh clone: bash scripts/test.sh [extra pytest args]
# First the import-layer contract (pyproject.toml [tool.importlinter]; a violation fails the run), then mypy over
# the package ([tool.mypy]), then pytest.
# A test skipped for any reason but "needs a CUDA device" fails the run too (tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== lint-imports (import-layer contract)"
.venv/bin/lint-imports --no-cache
echo "== mypy (the package's types; config in pyproject.toml)"
.venv/bin/mypy
echo "== pytest"
exec .venv/bin/python -m pytest -q -n 2 --dist loadgroup "$@"
