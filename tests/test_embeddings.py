"""The embedding cache on its float16 vector file: incremental, parallel and the old cache moved over, on real photos
through the real EfficientNet-Lite0 body (offline weights, exported to ONNX once per test run)."""

from __future__ import annotations

import shutil
import sqlite3
import threading

import numpy as np
import pytest

from dragonclf import config, embeddings
from dragonclf.progress import Cancelled
from dragonclf.vector_file import DATA
from ml_fixtures import SIZE, ml_home, photo_items  # noqa: F401 - fixture

BACKBONE = "efficientnet_lite0"
# The cache keeps float16: two passes over the same picture agree to its rounding (and batches of other sizes to
# float32's), so values are compared to a few parts in a thousand.
TOL = dict(rtol=3e-3, atol=3e-3)


def forget_cache() -> None:
    shutil.rmtree(config.cache_root() / embeddings.VECTORS, ignore_errors=True)


def said(progress_lines: list[str]):
    return lambda frac, msg: progress_lines.append(msg)


def test_incremental_embeddings_equal_a_full_recompute(ml_home):
    items = photo_items(per_label=6)
    first, more = items[::2], items[1::2]
    lines: list[str] = []
    a = embeddings.embed(first, BACKBONE, size=SIZE, batch_size=5, workers=1)
    both = embeddings.embed(first + more, BACKBONE, size=SIZE, batch_size=5, workers=1, progress=said(lines))
    assert lines[-1] == f"Embedding images: {len(more)}/{len(more)} ({BACKBONE})"  # only the new pictures
    assert np.array_equal(both[:len(first)], a)  # the cached ones read back as they were returned
    again = embeddings.embed(more + first, BACKBONE, size=SIZE, workers=1)
    assert np.array_equal(again, np.vstack([both[len(first):], both[:len(first)]]))  # any order, from the cache
    folder = embeddings.vector_folder(BACKBONE, SIZE)
    assert (folder / DATA).stat().st_size == len(items) * 1280 * 2  # each picture once, float16

    forget_cache()
    full = embeddings.embed(first + more, BACKBONE, size=SIZE, batch_size=32, workers=1)
    np.testing.assert_allclose(both, full, **TOL)
    assert full.dtype == np.float32 and full.shape == (len(items), 1280) and np.abs(full).max() > 0.1


def test_worker_processes_give_the_in_process_vectors_and_stop_on_cancel(ml_home):
    items = photo_items(per_label=5)
    here = embeddings.embed(items, BACKBONE, size=SIZE, workers=1)
    forget_cache()
    lines: list[str] = []
    pooled = embeddings.embed(items, BACKBONE, size=SIZE, batch_size=4, workers=2, progress=said(lines))
    np.testing.assert_allclose(pooled, here, **TOL)
    assert lines[-1] == f"Embedding images: {len(items)}/{len(items)} ({BACKBONE}, 2 processes)"
    assert embeddings.missing(items, BACKBONE, SIZE) == []

    forget_cache()
    stop, every = threading.Event(), photo_items()
    with pytest.raises(Cancelled):
        embeddings.embed(every, BACKBONE, size=SIZE, batch_size=1, workers=2, cancel=stop,
                         progress=lambda frac, msg: msg.startswith("Embedding images") and stop.set())  # a batch in
    left = embeddings.missing(every, BACKBONE, SIZE)
    assert 0 < len(left) < len(every)  # the workers stopped, and what they finished before Stop was kept ...
    np.testing.assert_allclose(embeddings.embed(items, BACKBONE, size=SIZE, workers=1), here, **TOL)  # ... and resumes


def test_vectors_of_the_old_sqlite_cache_are_moved_over_not_recomputed(ml_home):
    items = photo_items(per_label=3)
    X = embeddings.embed(items, BACKBONE, size=SIZE, workers=1)
    forget_cache()
    con = sqlite3.connect(config.cache_root() / embeddings.LEGACY)  # as versions before the vector file wrote it
    with con:
        con.execute("CREATE TABLE embeddings (sha256 TEXT, backbone TEXT, size INTEGER, vec BLOB,"
                    " PRIMARY KEY (sha256, backbone, size))")
        con.executemany("INSERT INTO embeddings VALUES (?,?,?,?)",
                        [(it.sha256, BACKBONE, SIZE, (x + 1).astype(np.float32).tobytes()) for it, x in zip(items, X)])
    con.close()
    assert embeddings.missing(items, BACKBONE, SIZE) == []
    lines: list[str] = []
    got = embeddings.embed(items, BACKBONE, size=SIZE, progress=said(lines))
    assert lines == [f"All {len(items)} embeddings cached ({BACKBONE})"]
    np.testing.assert_allclose(got, X + 1, **TOL)  # the old cache's own vectors (shifted: not a recompute)


def test_worker_count_follows_the_cores_and_the_setting(monkeypatch):
    from dragonclf import embed_pool
    from dragonclf.errors import DragonError

    monkeypatch.delenv("DRAGONCLF_EMBED_WORKERS", raising=False)
    assert embed_pool.default_workers(embed_pool.PARALLEL_FROM - 1) == 1  # a few pictures: no workers to start
    assert embed_pool.default_workers(embed_pool.PARALLEL_FROM) == embed_pool.cores()
    monkeypatch.setenv("DRAGONCLF_EMBED_WORKERS", "3")
    assert embed_pool.default_workers(5) == 3
    monkeypatch.setenv("DRAGONCLF_EMBED_WORKERS", "many")
    with pytest.raises(DragonError, match="whole number"):
        embed_pool.default_workers(5)
