"""Where things live and the knobs with their defaults.

Everything the app writes (datasets, manifests, caches, models) lives under one
root, `DRAGONCLF_HOME` (default: the repository folder, so datasets land in
`datasets/`). A Hugging Face Space points it at `/data`; tests at a temp folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# The repository (or installed package) folder: the bundled demo lives here.
REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_DATASETS = REPO_ROOT / "datasets"
DEMO_DATASET = "demo"


def home() -> Path:
    """The root for everything the app writes."""
    env = os.environ.get("DRAGONCLF_HOME")
    if env:
        return Path(env).expanduser().resolve()
    persistent = persistent_dir()
    if is_space() and persistent is not None:
        return persistent / "dragonclf"  # a Space with persistent storage
    return REPO_ROOT


def persistent_dir() -> Path | None:
    """A Space's persistent storage (/data) when it is mounted and writable."""
    p = Path(os.environ.get("DRAGONCLF_PERSISTENT_DIR", "/data"))
    return p if p.is_dir() and os.access(p, os.W_OK) else None


def is_space() -> bool:
    """Running as a Hugging Face Space (the platform sets SPACE_ID)."""
    return bool(os.environ.get("SPACE_ID"))


def datasets_root() -> Path:
    return home() / "datasets"


def models_root() -> Path:
    return home() / "models"


def cache_root() -> Path:
    return home() / "cache"


def allow_private_urls() -> bool:
    """Downloads may reach private/loopback hosts only when this is set (tests)."""
    return os.environ.get("DRAGONCLF_ALLOW_PRIVATE_URLS", "") in ("1", "true", "yes")


@dataclass(frozen=True)
class IngestConfig:
    max_side: int = 512  # longest side of a stored image, in pixels
    min_side: int = 32  # images with a shorter side are refused as too small
    max_pixels: int = 50_000_000  # refuse before decoding anything larger (bomb guard)
    max_bytes: int = 25 * 1024 * 1024  # refuse files larger than this
    jpeg_quality: int = 90  # quality of the stored JPEG
    near_dup_distance: int = 6  # perceptual-hash Hamming distance that counts as near-duplicate
    valid_share: float = 0.2  # default share of images in the validation split
