#!/usr/bin/env bash
# Install (idempotent) and start the bot on its embedded defaults: http://127.0.0.1:8080
# Extra arguments go to `voicebot serve`, e.g. ./run.sh --host 0.0.0.0 --port 9000
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh
exec .venv/bin/voicebot serve "$@"
