#!/usr/bin/env bash
# Install (idempotent) and run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh --test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy  # strict on telephony/ and voicebot/ (pyproject.toml [tool.mypy])
exec .venv/bin/python -m pytest "$@"
