"""Fixtures for the Clean tests: a real 122-photo dataset and a warm embedding cache, built once.

Embedding 122 photos takes ~20 s on 2 cores, so the session builds one
dataset and its embedding cache, and each test gets a copy of both in its own
DRAGONCLF_HOME (a copy of files, not a shared object: tests stay independent).
"""

from __future__ import annotations

import shutil

import pytest

from dragonclf.store import Store

DATASET = "pets"


@pytest.fixture(scope="session")
def seed_home(tmp_path_factory, photo_files):
    """A home holding dataset `pets` (all photos, by label) and its embeddings, cached."""
    root = tmp_path_factory.mktemp("clean-seed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DRAGONCLF_HOME", str(root))
        from dragonclf import backbones, clean, features, items

        s = Store.open(DATASET, create=True)
        for label, files in photo_files.items():
            s.add_label(label)
            for f in files:
                s.ingest(f.read_bytes(), label, {"origin": "import", "source": f"{label}/{f.name}",
                                                 "license": "CC0-1.0"})
        for backbone in (backbones.DEFAULT_BACKBONE, clean.SECOND_BACKBONE):  # both bodies the mislabel pass uses
            features.embed(items.collect(s)[1], backbone)
        s.close()
    return root


@pytest.fixture
def pets(seed_home, home) -> Store:
    """A fresh copy of the seed dataset (and the warm caches) in this test's home."""
    shutil.copytree(seed_home / "datasets", home / "datasets")
    shutil.copytree(seed_home / "cache", home / "cache", symlinks=True)
    return Store.open(DATASET)
