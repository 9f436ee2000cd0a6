#!/usr/bin/env bash
# One-time (idempotent) set-up on a fresh Debian machine: graphviz + a virtualenv with archdsl.
# Usage: bash scripts/setup.sh        (called by scripts/main.sh and scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${ARCHDSL_VENV:-.venv}

if ! command -v dot >/dev/null 2>&1; then
    echo "[setup] installing graphviz (dot) with apt-get"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq graphviz >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtualenv $VENV"
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
stamp="$VENV/.archdsl-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "[setup] installing archdsl and its test dependencies (torch from local wheels where available)"
    "$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    # torch 2.14.1 / torchvision 0.29.1 are the releases that import together here; pin them
    "$PY" -m pip install -q "torch==2.14.1" "torchvision==0.29.1" 2>/dev/null \
        || "$PY" -m pip install -q "torch>=2.4" "torchvision>=0.19"
    "$PY" -m pip install -q -e ".[test]"
    touch "$stamp"
fi
