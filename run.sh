#!/usr/bin/env bash
# Set up (first time) and run the app at http://127.0.0.1:7860 (on a Space: 0.0.0.0:$PORT).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
export GRADIO_ANALYTICS_ENABLED=False MPLBACKEND=Agg
exec .venv/bin/python app.py "$@"
