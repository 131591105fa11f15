#!/usr/bin/env bash
# Run the test suite (and the linter) in the project's virtual environment, creating or
# updating it first. Extra arguments go to pytest, e.g. ./run_tests.sh -k results -x
set -euo pipefail
cd "$(dirname "$0")"
./run_all.sh setup --dev
VENV="${HMOE_VENV:-.venv}"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
exec "$VENV/bin/python" -m pytest "$@"
