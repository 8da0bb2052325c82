#!/usr/bin/env bash
# Set up (first time: venv, test tools, Chromium) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh dev
export GRADIO_ANALYTICS_ENABLED=False MPLBACKEND=Agg HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
