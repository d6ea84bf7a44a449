#!/usr/bin/env bash
# Sets up .venv with the test extras, then lints, type-checks and runs the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q -e '.[test]' >/dev/null

.venv/bin/ruff check smart_tui tests bench
.venv/bin/ruff format --check smart_tui tests bench
.venv/bin/mypy
.venv/bin/pytest -q "$@"
