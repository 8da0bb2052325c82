"""Shared fixtures: every test gets its own DRAGONCLF_HOME; images are real photos."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parent.parent
SHARED_PHOTOS = REPO.parent / "shared" / "datasets" / "photos"
DEMO = REPO / "datasets" / "demo"


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """A private root for everything the app writes."""
    root = tmp_path / "home"
    root.mkdir()
    monkeypatch.setenv("DRAGONCLF_HOME", str(root))
    yield root
    from dragonclf import store as store_mod

    store_mod.close_all(under=root)


@pytest.fixture(scope="session")
def photos_dir() -> Path:
    """The 122 real photos (4 labels): ../shared when present, else the bundled demo."""
    return SHARED_PHOTOS if SHARED_PHOTOS.is_dir() else DEMO


@pytest.fixture(scope="session")
def photo_files(photos_dir) -> dict[str, list[Path]]:
    out = {}
    for d in sorted(p for p in photos_dir.iterdir() if p.is_dir()):
        out[d.name] = sorted(f for f in d.iterdir() if f.suffix in (".webp", ".jpg"))
    return out


def jpeg_bytes(color=(200, 30, 30), size=(120, 90), **save) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG", **save)
    return buf.getvalue()


# The real app, launched once per test session on loopback (see app_fixtures.py).
from app_fixtures import app_url, client  # noqa: E402,F401
# Two people, an admin and a visitor on one data root, two servers (see people_fixtures.py).
from people_fixtures import people_world  # noqa: E402,F401
