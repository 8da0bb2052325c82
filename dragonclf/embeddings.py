"""The embedding cache: a frozen pretrained body's vectors, computed once per image.

Each image is embedded once per (image sha256, backbone, size) and cached in
SQLite under `config.cache_root()`; batches are committed as they finish, so an
interrupted pass resumes where it stopped. `embed` works in one process (ONNX
Runtime on a CPU, torch with CUDA); `embed_to_cache` spreads the work over the
processes of an `accelerate launch` job (each rank a shard, rank 0 writes the
cache). The quick model, Clean and the warm start of fine-tuning read vectors
through `embed`.
"""

from __future__ import annotations

import ctypes
import sqlite3
import sys
import threading
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np

from dragonclf import backbones, config, distributed
from dragonclf.preprocess import load_image, to_array
from dragonclf.progress import Cancelled, report


def cache_connection() -> sqlite3.Connection:
    """A connection to the cache database (the caller closes it)."""
    path = config.cache_root() / "embeddings.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=30)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(
        "CREATE TABLE IF NOT EXISTS embeddings (sha256 TEXT, backbone TEXT, size INTEGER, vec BLOB,"
        " PRIMARY KEY (sha256, backbone, size))"
    )
    return con


@lru_cache(maxsize=4)
def load_body(name: str):
    """The backbone's torch feature extractor, built once per process (shared: do not train it)."""
    return backbones.create_body(name)


_body_lock = threading.Lock()  # one forward at a time: torch already uses every core

M_TOP_PAD, DEFAULT_TOP_PAD = -2, 128 * 1024  # glibc mallopt parameter and its default


@contextmanager
def _malloc_top_pad(nbytes: int = 1 << 30):
    """Let glibc keep freed heap memory during inference, then restore the default.

    Without it every conv layer's large temporary buffers go back to the OS and
    are faulted in again: measured here, CPU embedding runs several times
    faster with it. It is restored afterwards because it slows training down.
    Not glibc (macOS, musl): nothing to tune, the code runs as is.
    """
    libc = None
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt  # noqa: B018 - musl has no mallopt
        except (OSError, AttributeError):
            libc = None
    if libc is not None:
        libc.mallopt(M_TOP_PAD, nbytes)
    try:
        yield
    finally:
        if libc is not None:
            libc.mallopt(M_TOP_PAD, DEFAULT_TOP_PAD)


def use_onnx_body() -> bool:
    """Embed with ONNX Runtime on a cached ONNX body (no torch import, ~3x faster forward on a CPU),
    except on a machine with an NVIDIA GPU, where torch's CUDA forward wins."""
    return not Path("/proc/driver/nvidia/version").exists()


def onnx_body_ready(backbone: str, size: int) -> bool:
    from dragonclf import onnxbody

    return onnxbody.body_path(backbone, size).is_file()


def _lookup(con: sqlite3.Connection, shas, backbone: str, size: int, vectors: bool = True) -> dict:
    """sha256 -> vector (or None when `vectors` is False) for the cached ones among `shas`."""
    found = {}
    shas = sorted(set(shas))
    column = "vec" if vectors else "NULL"
    for i in range(0, len(shas), 500):
        chunk = shas[i:i + 500]
        q = (f"SELECT sha256, {column} FROM embeddings WHERE backbone=? AND size=?"
             f" AND sha256 IN ({','.join('?' * len(chunk))})")
        for sha, vec in con.execute(q, [backbone, size, *chunk]):
            found[sha] = np.frombuffer(vec, dtype=np.float32) if vectors else None
    return found


def _first_per_sha(items, done) -> list:
    todo, seen = [], set(done)
    for it in items:
        if it.sha256 not in seen:
            todo.append(it)
            seen.add(it.sha256)
    return todo


def missing(items, backbone: str, size: int) -> list:
    """Items whose embedding is not cached yet, one per sha256."""
    con = cache_connection()
    try:
        return _first_per_sha(items, _lookup(con, [it.sha256 for it in items], backbone, size, vectors=False))
    finally:
        con.close()


def _write(con: sqlite3.Connection, rows) -> None:
    """(sha256, backbone, size, float32 bytes) rows, committed together."""
    con.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)", rows)
    con.commit()


def embed_batch(body, batch, backbone: str, size: int, device) -> np.ndarray:
    """(len(batch), D) vectors of one batch of items (decoded here, one batch at a time).

    `device` "onnx": `body` is an ONNX Runtime body (numpy in, numpy out); else a torch module on `device`.
    """
    b = backbones.get_backbone(backbone)
    x = np.stack([to_array(load_image(it.path), size, b.mean, b.std) for it in batch])
    if device == "onnx":
        with _body_lock:
            return body(x)
    import torch

    with _body_lock, torch.inference_mode():
        return body(torch.from_numpy(x).to(device)).float().cpu().numpy()


def _local_body(backbone: str, size: int):
    """(body, device) for embedding in this process: ONNX on a CPU machine, torch with CUDA."""
    if use_onnx_body():
        from dragonclf import onnxbody

        return onnxbody.get_body(backbone, size), "onnx"
    import torch

    body = load_body(backbone)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return body.to(device), device


def embed(items, backbone: str = backbones.DEFAULT_BACKBONE, size: int | None = None, batch_size: int = 32,
          progress=None, cancel: threading.Event | None = None) -> np.ndarray:
    """(N, D) float32 embeddings of `items` (anything with .path and .sha256), cached."""
    b = backbones.get_backbone(backbone)
    size = size or b.size
    items = list(items)
    con = cache_connection()
    try:
        found = _lookup(con, [it.sha256 for it in items], backbone, size)
        todo = _first_per_sha(items, found)
        if todo:
            body, device = _local_body(backbone, size)
            with _malloc_top_pad():  # around the whole pass: between batches the heap must stay
                done = 0
                for start in range(0, len(todo), batch_size):
                    if cancel is not None and cancel.is_set():
                        raise Cancelled(f"Stopped after embedding {done} of {len(todo)} new images (kept in the cache).")
                    batch = todo[start:start + batch_size]
                    vecs = embed_batch(body, batch, backbone, size, device)
                    _write(con, [(it.sha256, backbone, size, v.astype(np.float32).tobytes())
                                 for it, v in zip(batch, vecs)])  # per batch: an interrupted pass resumes here
                    for it, v in zip(batch, vecs):
                        found[it.sha256] = v
                    done += len(batch)
                    report(progress, done / len(todo), f"Embedding images: {done}/{len(todo)} ({backbone})")
        else:
            report(progress, 1.0, f"All {len(items)} embeddings cached ({backbone})")
        if not items:
            return np.zeros((0, b.features), np.float32)
        return np.stack([found[it.sha256] for it in items]).astype(np.float32)
    finally:
        con.close()


def embed_to_cache(items, backbone: str = backbones.DEFAULT_BACKBONE, size: int | None = None,
                   batch_size: int = 32, progress=None, cancel: threading.Event | None = None) -> dict:
    """Fill the embedding cache for `items`, spread over all processes; returns counts.

    Work goes in rounds: in each round every rank embeds its own batch of the
    images still missing, and rank 0 writes the round's vectors and commits.
    An interrupted job loses at most one round and resumes from the cache. In
    a single process this is `embed` (the same cache, the same resume).
    """
    b = backbones.get_backbone(backbone)
    size = size or b.size
    items = list(items)
    t0 = time.perf_counter()
    if not distributed.active():
        n_before = len(missing(items, backbone, size))
        embed(items, backbone, size=size, batch_size=batch_size, progress=progress, cancel=cancel)
        return {"images": len(items), "embedded": n_before, "processes": 1,
                "seconds": round(time.perf_counter() - t0, 2)}

    def plan():
        backbones.ensure_weights(backbone)
        return missing(items, backbone, size)

    todo = distributed.run_on_main(plan)
    ws, r = distributed.world_size(), distributed.rank()
    per_round = ws * batch_size
    rounds = (len(todo) + per_round - 1) // per_round
    device = distributed.device()
    body = load_body(backbone).to(device) if todo else None
    con = cache_connection() if (distributed.is_main() and todo) else None
    done = 0
    try:
        for k in range(rounds):
            start = (k * ws + r) * batch_size
            mine = todo[start:start + batch_size]
            # One batch decoded at a time: memory stays flat however large the dataset.
            vecs = embed_batch(body, mine, backbone, size, device) if mine else np.zeros((0, b.features), np.float32)
            parts = distributed.gather_to_main([(it.sha256, v.astype(np.float32).tobytes())
                                                for it, v in zip(mine, vecs)])
            if con is not None:
                rows = [(sha, backbone, size, blob) for part in parts for sha, blob in part]
                _write(con, rows)  # per round: an interrupted job resumes from here
                done += len(rows)
                report(progress, done / len(todo), f"Embedding images: {done}/{len(todo)} ({backbone}, {ws} processes)")
    finally:
        if con is not None:
            con.close()
    # Everyone leaves together: rank 0's last commit is done before anyone reads the cache.
    distributed.barrier()
    return {"images": len(items), "embedded": len(todo), "processes": ws,
            "seconds": round(time.perf_counter() - t0, 2)}


def embed_dataset(dataset: str, backbone: str = backbones.DEFAULT_BACKBONE, size: int | None = None,
                  batch_size: int = 32, progress=None) -> dict:
    """Embed every active image of `dataset` into the cache (the `embed` command)."""
    from dragonclf.items import dataset_items

    items = dataset_items(dataset, backbone=backbone)
    out = embed_to_cache(items, backbone, size=size, batch_size=batch_size, progress=progress)
    return {"dataset": dataset, "backbone": backbone, "size": size or backbones.get_backbone(backbone).size, **out}
