"""Benchmark: loading 100,000 cached embeddings (1,280 features): float16 vector file vs float32 SQLite blobs.

The blob layout is the embedding cache's (one row per (sha256, backbone, size), float32 bytes, read
500 keys a query). Run: .venv/bin/python bench/bench_vectors.py [--n 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    from dragonclf.vector_file import VectorFile

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1280)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vectors-"))
    rng = np.random.default_rng(0)
    keys = [f"{rng.integers(1 << 62):016x}{i:08d}" for i in range(a.n)]
    vf = VectorFile(tmp / "vf", a.dim)
    con = sqlite3.connect(tmp / "blobs.sqlite")
    con.execute("CREATE TABLE embeddings (sha256 TEXT, backbone TEXT, size INTEGER, vec BLOB,"
                " PRIMARY KEY (sha256, backbone, size))")
    t_add = 0.0
    for i in range(0, a.n, 1000):  # as embedding batches arrive
        X = rng.standard_normal((len(keys[i:i + 1000]), a.dim), np.float32)
        t = time.perf_counter()
        vf.add(keys[i:i + 1000], X)
        t_add += time.perf_counter() - t
        con.executemany("INSERT INTO embeddings VALUES (?,?,?,?)",
                        [(k, "b", 224, v.tobytes()) for k, v in zip(keys[i:i + 1000], X)])
        con.commit()
    vf.close()
    con.close()
    os.system(f"sync; cat {tmp}/vf/* {tmp}/blobs.sqlite > /dev/null")  # both warm in the page cache
    out = {"n": a.n, "dim": a.dim, "vector_file_mb": (tmp / "vf" / "vectors.f16").stat().st_size / 1e6,
           "blobs_mb": (tmp / "blobs.sqlite").stat().st_size / 1e6, "append_s_total": t_add}
    t = time.perf_counter()
    found, X = VectorFile(tmp / "vf", a.dim).get(keys)
    out["vector_file_load_s"] = time.perf_counter() - t
    rss_after_vf = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    del X
    t = time.perf_counter()
    con = sqlite3.connect(tmp / "blobs.sqlite")
    found = {}
    for i in range(0, a.n, 500):
        chunk = keys[i:i + 500]
        q = f"SELECT sha256, vec FROM embeddings WHERE backbone=? AND size=? AND sha256 IN ({','.join('?' * len(chunk))})"
        for sha, vec in con.execute(q, ["b", 224, *chunk]):
            found[sha] = np.frombuffer(vec, dtype=np.float32)
    Y = np.stack([found[k] for k in keys])
    out["blobs_load_s"] = time.perf_counter() - t
    out["peak_rss_mb_after_vector_file"] = rss_after_vf
    out["peak_rss_mb_after_blobs"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["loadavg"] = os.getloadavg()[0]
    del Y
    print(json.dumps(out))
    os.system(f"rm -rf {tmp}")


if __name__ == "__main__":
    main()
