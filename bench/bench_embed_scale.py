"""Benchmark: the embedding cache at 100,000 pictures, and embedding in parallel processes.

`--n 100000` (the app's side of a large dataset): a store of n pictures (20 imported, the rest
filled as `bench_growth.py --fill` does, each row with its own sha256) whose embeddings are already
in the cache's vector file (synthetic: a centre per label plus noise, 2% of the pictures drawn from
another label's centre: mislabels for Clean to find). Then a fresh process, as the app would:
- `features.embed(items)` of every active picture, all cached: the load;
- `features.out_of_fold_probs(store)` (one run of 5 folds, the load included);
- `features.fit_quick(store, save=False)` (the quick model's head on the train split, scored on valid);
with wall time, CPU time and the process's peak RSS after each.

`--parallel 400` (embedding itself): 400 synthetic 192-px pictures embedded at 224 px by
EfficientNet-Lite0 (ONNX Runtime), in this process, then (cache emptied) with 2 worker processes
(and with one per core when there are more): wall time and CPU time of this process and its children.

Run: .venv/bin/python bench/bench_embed_scale.py --n 100000 --parallel 400
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

from bench_growth import DATASET, LABELS, fill, picture  # noqa: E402


def cpu_s(children: bool = False) -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN) if children else None
    return r.ru_utime + r.ru_stime + ((c.ru_utime + c.ru_stime) if c else 0.0)


def rss_mb() -> float:
    """Peak RSS of this process so far: VmHWM (ru_maxrss would carry the parent's peak across fork and exec)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(home: Path, n: int) -> None:
    """The store and its cached vectors (not timed)."""
    import numpy as np

    from dragonclf import embeddings, onnxbody
    from dragonclf.store import Store

    s = Store.open(DATASET, create=True)
    if s.count(status=None) < 20:
        for i in range(20):
            s.ingest(picture(i), s.label_or_create(LABELS[i % len(LABELS)]).display)
    fill(s, n, [r.phash for r in s.page(limit=20).rows])
    con = sqlite3.connect(s.db_path)
    with con:  # each filled row its own picture, as far as the cache can tell
        con.execute("UPDATE images SET sha256 = 'fill-' || id WHERE origin = 'fill'")
    con.close()
    rows = s.images()
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (len(LABELS), 1280)).astype(np.float32)
    vf = embeddings.vectors("efficientnet_lite0", 224)
    todo = vf.missing([r.sha256 for r in rows])
    label_of = {r.sha256: LABELS.index(r.label) for r in rows}
    for i in range(0, len(todo), 5000):
        keys = todo[i:i + 5000]
        y = np.array([label_of[k] for k in keys])
        flip = rng.random(len(y)) < 0.02
        y[flip] = (y[flip] + 1) % len(LABELS)
        vf.add(keys, centres[y] * 0.15 + rng.standard_normal((len(keys), 1280), np.float32))
    vf.close()
    onnxbody.ensure_body("efficientnet_lite0", 224)  # exported once (torch), so the app process needs no torch
    s.close()


def app_side() -> dict:
    """In a fresh process: load, OOF, quick head; wall, CPU and peak RSS after each."""
    from dragonclf import features, items as items_mod
    from dragonclf.store import Store

    out = {"rss_start_mb": rss_mb()}
    s = Store.open(DATASET)
    t, c = time.perf_counter(), cpu_s()
    _, items = items_mod.collect(s)
    out.update(items=len(items), read_items_s=time.perf_counter() - t)
    t, c = time.perf_counter(), cpu_s()
    X = features.embed(items)
    out.update(load_s=time.perf_counter() - t, load_cpu_s=cpu_s() - c, load_shape=list(X.shape), rss_load_mb=rss_mb())
    del X
    t, c = time.perf_counter(), cpu_s()
    oof = features.out_of_fold_probs(s)
    out.update(oof_s=time.perf_counter() - t, oof_cpu_s=cpu_s() - c, rss_oof_mb=rss_mb(),
               oof_agrees=float((oof.probs.argmax(1) == [oof.labels.index(g) for g in oof.given]).mean()))
    del oof
    t, c = time.perf_counter(), cpu_s()
    r = features.fit_quick(s, save=False)
    out.update(quick_s=time.perf_counter() - t, quick_cpu_s=cpu_s() - c, rss_quick_mb=rss_mb(),
               quick_valid_accuracy=r.metrics["accuracy"], loadavg=os.getloadavg())
    return out


def parallel(home: Path, n: int) -> dict:
    from dragonclf import config, embed_pool, embeddings
    from dragonclf.items import Item, file_sha256

    folder = home / "pictures"
    folder.mkdir(exist_ok=True)
    items = []
    for i in range(n):
        p = folder / f"{i}.jpg"
        if not p.exists():
            p.write_bytes(picture(10_000_000 + i))
        items.append(Item(str(i), p, LABELS[i % len(LABELS)], file_sha256(p), "train"))
    embeddings.embed(items[:4], workers=1)  # the body exported and loaded once, outside the timings
    out = {"pictures": n, "cores": embed_pool.cores()}
    for workers in sorted({1, 2, embed_pool.cores()}):
        shutil.rmtree(config.cache_root() / embeddings.VECTORS, ignore_errors=True)
        load = os.getloadavg()[0]
        t, c = time.perf_counter(), cpu_s(children=True)
        embeddings.embed(items, workers=workers)
        wall, cpu = time.perf_counter() - t, cpu_s(children=True) - c
        out[f"workers_{workers}"] = {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                                     "per_picture_ms": round(1000 * wall / n, 1), "loadavg": round(load, 1)}
        print(json.dumps(out), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=0, help="the 100,000-picture side (0: skip)")
    ap.add_argument("--parallel", type=int, default=0, help="pictures for the parallel side (0: skip)")
    ap.add_argument("--home")
    ap.add_argument("--app-side", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.app_side:
        print(json.dumps(app_side()))
        return
    home = Path(a.home) if a.home else Path(tempfile.mkdtemp(prefix="dragonclf-embed-"))
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DRAGONCLF_HOME"] = str(home)
    print(f"home: {home}", flush=True)
    if a.n:
        t = time.perf_counter()
        build(home, a.n)
        print(f"built {a.n:,} in {time.perf_counter() - t:.0f} s", flush=True)
        r = subprocess.run([sys.executable, __file__, "--app-side"], env={**os.environ, "PYTHONPATH": str(REPO)},
                           capture_output=True, text=True)
        print(r.stdout.strip().splitlines()[-1] if r.returncode == 0 else r.stderr[-3000:], flush=True)
    if a.parallel:
        print(json.dumps(parallel(home, a.parallel)), flush=True)


if __name__ == "__main__":
    main()
