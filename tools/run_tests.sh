#!/usr/bin/env bash
# Set everything up and run the test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh tests
exec .venv/bin/python -m pytest tests -q -p no:cacheprovider "$@"
