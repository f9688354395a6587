#!/usr/bin/env bash
# The full test suite, from a fresh clone: sets up .venv (with test dependencies),
# builds ponder, runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
# Two workers: the machine this runs on in CI has two cores.
exec .venv/bin/python -m pytest -n 2 "$@"
