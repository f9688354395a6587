#!/usr/bin/env bash
# The main job, from a fresh clone: sets up .venv, builds ponder, runs `ponder demo`.
# Extra arguments go to `ponder demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/ponder demo "$@"
