#!/usr/bin/env bash
# The whole test suite, from a fresh clone: bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q -n 2 --dist loadgroup "$@"
