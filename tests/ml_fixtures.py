"""Shared fixtures for the ML tests: real photos as plain rows, small and fast.

The lead owns tests/conftest.py; test modules import what they need from here.
Rows are built straight from ../shared/datasets/photos (122 real photos,
4 classes) with a fixed hash-based split, so the ML code is exercised without
depending on the store.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from dragonclf.items import Item, file_sha256

PHOTOS = Path(os.environ.get("DRAGONCLF_PHOTOS", Path(__file__).resolve().parents[2] / "shared" / "datasets" / "photos"))
SIZE = 64  # tiny images keep the suite fast on 2 CPU cores


def photo_items(per_label: int | None = None, labels=None, valid_share: float = 0.25) -> list[Item]:
    """Items for the real photos: split fixed by a hash of the file name."""
    if not PHOTOS.is_dir():
        pytest.skip(f"photos not found at {PHOTOS}")
    out = []
    for folder in sorted(p for p in PHOTOS.iterdir() if p.is_dir()):
        if labels and folder.name not in labels:
            continue
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in (".webp", ".jpg", ".jpeg", ".png"))
        for f in files[:per_label] if per_label else files:
            key = int(hashlib.sha1(f.name.encode()).hexdigest()[:8], 16) / 16**8
            out.append(Item(f"{folder.name}-{f.stem}", f, folder.name, file_sha256(f), "valid" if key < valid_share else "train"))
    return out


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh DRAGONCLF_HOME (models, cache) per test; the converted weights are shared."""
    monkeypatch.setenv("DRAGONCLF_HOME", str(tmp_path))
    shared = Path(os.environ.get("DRAGONCLF_TEST_WEIGHTS", "/tmp/dragonclf-test-weights"))
    shared.mkdir(parents=True, exist_ok=True)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "weights").symlink_to(shared, target_is_directory=True)
    return tmp_path
