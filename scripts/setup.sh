#!/usr/bin/env bash
# One-time (idempotent) set-up on a fresh Debian machine: the system packages the tests drive (graphviz's `dot`
# for diagrams, Chromium for the HTML viewer test) and a virtualenv with archdsl and its test extras (which
# include triton, for the Triton-interpreter tests, and import-linter, for the import-layer contract).
# Usage: bash scripts/setup.sh        (called by scripts/main.sh and scripts/test.sh; a second run does nothing)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${ARCHDSL_VENV:-.venv}

# System packages: one apt-get call for whatever is missing, none when everything is there.
missing=()
command -v dot >/dev/null 2>&1 || missing+=(graphviz)
# tests/test_render.py drives /usr/bin/chromium through Playwright (no browser download): the Debian package
[ -x /usr/bin/chromium ] || missing+=(chromium)
# Debian's python3 has no venv/ensurepip until python3-venv is installed
if [ ! -x "$VENV/bin/python" ] && ! python3 -c "import ensurepip, venv" >/dev/null 2>&1; then
    missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "[setup] installing ${missing[*]} with apt-get"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "[setup] need root or sudo to install: ${missing[*]}" >&2; exit 1; }
        SUDO="sudo"
    fi
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
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
