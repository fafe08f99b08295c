#!/usr/bin/env bash
# Set up a venv (CPU torch from the local wheel first, so nothing pulls a CUDA build) and run
# the test suite. Used by the README and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[test,scvi]"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
