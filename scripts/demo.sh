#!/usr/bin/env bash
# Set up a venv and run the main job on the embedded default (a generated synthetic atlas).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[scvi]"
exec .venv/bin/atlasloader demo "$@"
