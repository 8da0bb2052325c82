"""Shared helpers for the ML tests: real photos as plain rows, small and fast.

The lead owns tests/conftest.py (its autouse `home` fixture gives each test a
fresh DRAGONCLF_HOME); ML test modules import what they need from here.
Rows come straight from ../shared/datasets/photos (122 real photos, 4 labels)
with a fixed hash-based split, so the ML code runs without the store; the
store glue has its own tests on the bundled demo dataset.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from dragonclf import config
from dragonclf.items import Item, file_sha256

REPO = Path(__file__).resolve().parent.parent
PHOTOS = REPO.parent / "shared" / "datasets" / "photos"
if not PHOTOS.is_dir():
    PHOTOS = REPO / "datasets" / "demo"
SIZE = 64  # tiny images keep the suite fast on 2 CPU cores
GRADIO_IMAGES = None  # set below: real photos of known ImageNet classes, shipped in gradio's wheel
try:
    import importlib.util

    _spec = importlib.util.find_spec("gradio")
    if _spec and _spec.origin:
        GRADIO_IMAGES = Path(_spec.origin).parent / "media_assets" / "images"
except ImportError:
    pass


def photo_items(per_label: int | None = None, labels=None, valid_share: float = 0.25) -> list[Item]:
    """Items for the real photos: split fixed by a hash of the file name."""
    out = []
    for folder in sorted(p for p in PHOTOS.iterdir() if p.is_dir()):
        if labels and folder.name not in labels:
            continue
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in (".webp", ".jpg", ".jpeg", ".png"))
        for f in files[:per_label] if per_label else files:
            key = int(hashlib.sha1(f.name.encode()).hexdigest()[:8], 16) / 16**8
            out.append(Item(f"{folder.name}-{f.stem}", f, folder.name, file_sha256(f), "valid" if key < valid_share else "train"))
    return out


def share_weights(home: Path) -> None:
    """Point this test home's converted-weights and ONNX-body caches at shared folders (made once per run)."""
    shared = Path(os.environ.get("DRAGONCLF_TEST_WEIGHTS", "/tmp/dragonclf-test-weights"))
    shared.mkdir(parents=True, exist_ok=True)
    cache = home / "cache"
    cache.mkdir(exist_ok=True)
    if not (cache / "weights").exists():
        (cache / "weights").symlink_to(shared, target_is_directory=True)
    onnx = shared.parent / (shared.name + "-onnx")  # the bodies exported to ONNX (onnxbody), once per run too
    onnx.mkdir(parents=True, exist_ok=True)
    if not (cache / "onnx").exists():
        (cache / "onnx").symlink_to(onnx, target_is_directory=True)


def install_model(src: Path) -> Path:
    """Copy a model folder made elsewhere into this test's models folder; return its new path."""
    dest = config.models_root() / "photos" / src.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dest)
    return dest


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory):
    """A quick and a fine-tuned model on the photos (64 px, 1 epoch), made once per session."""
    from dragonclf import features, train

    root = tmp_path_factory.mktemp("ml-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DRAGONCLF_HOME", str(root))
        share_weights(root)
        items = photo_items()
        quick = features.fit_quick(items, dataset="photos", size=SIZE)
        tuned = train.fine_tune(items, dataset="photos", epochs=1, size=SIZE, batch_size=16)
    return {"quick": quick, "finetune": tuned, "items": items}


@pytest.fixture
def ml_home(home):
    """conftest's fresh home, with the shared converted weights."""
    share_weights(home)
    return home
