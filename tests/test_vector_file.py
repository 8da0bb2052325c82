"""The compact vector file: incremental appends read back exactly as one full write, across processes and crashes."""

import multiprocessing
import os

import numpy as np
import pytest

from dragonclf.errors import DragonError
from dragonclf.vector_file import DATA, VectorFile


def vectors(n, dim=64, seed=0):
    rng = np.random.default_rng(seed)
    return [f"sha{seed}-{i}" for i in range(n)], rng.normal(0, 3, (n, dim)).astype(np.float32)


def test_incremental_appends_equal_one_full_write(tmp_path):
    keys, X = vectors(3000)
    inc = VectorFile(tmp_path / "inc", 64)
    for start in range(0, 3000, 700):  # batches, as new pictures arrive
        assert inc.add(keys[start:start + 700], X[start:start + 700]) == len(keys[start:start + 700])
    full = VectorFile(tmp_path / "full", 64)
    full.add(keys, X)
    order = list(np.random.default_rng(1).permutation(keys))
    f1, a = inc.get(order)
    f2, b = full.get(order)
    assert f1.all() and f2.all() and np.array_equal(a, b)
    assert np.array_equal(a, X[[keys.index(k) for k in order]].astype(np.float16).astype(np.float32))
    assert (tmp_path / "inc" / DATA).stat().st_size == 3000 * 64 * 2  # float16, nothing else


def test_known_keys_are_kept_and_unknown_ones_reported(tmp_path):
    keys, X = vectors(10)
    vf = VectorFile(tmp_path, 64)
    vf.add(keys[:6], X[:6])
    assert vf.add(keys[4:], X[4:] + 100) == 4  # keys 4 and 5 keep their first vectors
    found, got = vf.get(keys[4:6] + ["nope"])
    assert list(found) == [True, True, False] and np.allclose(got, X[4:6], atol=0.01)
    assert vf.missing(keys + ["nope", "nope"]) == ["nope"] and len(vf) == 10
    vf.close()
    assert len(VectorFile(tmp_path, 64)) == 10  # reopened
    with pytest.raises(DragonError, match="64-feature"):
        VectorFile(tmp_path, 32)


def test_rows_a_crash_left_unnamed_are_skipped(tmp_path):
    keys, X = vectors(20)
    vf = VectorFile(tmp_path, 64)
    vf.add(keys[:10], X[:10])
    with open(tmp_path / DATA, "ab") as f:  # an append that died before its keys committed (half a row, too)
        f.write(np.ones((3, 64), "<f2").tobytes() + b"\0" * 7)
    vf.add(keys[10:], X[10:])
    found, got = vf.get(keys)
    assert found.all() and np.allclose(got, X, atol=0.01)


def _append(folder, seed):
    keys, X = vectors(400, seed=seed)
    vf = VectorFile(folder, 64)
    for start in range(0, 400, 50):
        vf.add(keys[start:start + 50], X[start:start + 50])


def test_processes_appending_at_once_lose_nothing(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append, args=(tmp_path, seed)) for seed in (1, 2, 3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    vf = VectorFile(tmp_path, 64)
    for seed in (1, 2, 3):
        keys, X = vectors(400, seed=seed)
        found, got = vf.get(keys)
        assert found.all() and np.allclose(got, X, atol=0.01)
    assert os.path.getsize(tmp_path / DATA) == 1200 * 64 * 2
