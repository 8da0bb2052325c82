"""The embedding cache: a frozen pretrained body's vectors, computed once per image.

Each image is embedded once per (image sha256, backbone, size) into a float16 vector
file per (backbone, size) under `config.cache_root()/vectors/` (`vector_file`: one
memory-mapped file, keys in SQLite; 100,000 x 1,280 features in 256 MB, read back in
seconds). Batches are appended as they finish, so an interrupted pass resumes where
it stopped, and new pictures only append (incremental). `embed` works in one process
(ONNX Runtime on a CPU, torch with CUDA) or, for hundreds of pictures on a CPU with
several cores, in worker processes (`embed_pool`); `embed_to_cache` spreads the work
over the processes of an `accelerate launch` job (each rank a shard, rank 0 writes the
cache). The quick model, Clean and the warm start of fine-tuning read vectors through
`embed`. Vectors cached by versions before the vector file (float32 blobs in
`embeddings.sqlite`) are moved over the first time they are asked for.
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

from dragonclf import backbones, config, distributed, embed_pool
from dragonclf.preprocess import load_image, to_array
from dragonclf.progress import Cancelled, report
from dragonclf.vector_file import VectorFile


VECTORS = "vectors"  # cache_root()/vectors/<backbone>-<size>/: one vector file per body and input size
LEGACY = "embeddings.sqlite"  # float32 blobs, one row per (sha256, backbone, size): versions before the vector file


def vector_folder(backbone: str, size: int) -> Path:
    return config.cache_root() / VECTORS / f"{backbone}-{size}"


def vectors(backbone: str, size: int | None = None) -> VectorFile:
    """The cache's vector file for (backbone, size), keyed by image sha256 (the caller closes it)."""
    b = backbones.get_backbone(backbone)
    return VectorFile(vector_folder(backbone, size or b.size), b.features)


def _take_legacy(vf: VectorFile, shas: list[str], backbone: str, size: int) -> int:
    """Move the vectors of `shas` that the old SQLite cache holds into the vector file; how many."""
    path = config.cache_root() / LEGACY
    if not shas or not path.is_file():
        return 0
    keys, vecs = [], []
    con = sqlite3.connect(path, timeout=30)
    try:
        for i in range(0, len(shas), 500):
            chunk = shas[i:i + 500]
            q = (f"SELECT sha256, vec FROM embeddings WHERE backbone=? AND size=?"
                 f" AND sha256 IN ({','.join('?' * len(chunk))})")
            for sha, vec in con.execute(q, [backbone, size, *chunk]):
                if len(vec) == 4 * vf.dim:
                    keys.append(sha)
                    vecs.append(np.frombuffer(vec, dtype=np.float32))
    except sqlite3.Error:  # no such table, or not a database: nothing to take
        return 0
    finally:
        con.close()
    if keys:
        vf.add(keys, np.stack(vecs))
    return len(keys)


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


def _first_per_sha(items, missing_shas) -> list:
    """One item per sha256 among `missing_shas`, in order."""
    todo, wanted = [], set(missing_shas)
    for it in items:
        if it.sha256 in wanted:
            todo.append(it)
            wanted.discard(it.sha256)
    return todo


def missing(items, backbone: str, size: int) -> list:
    """Items whose embedding is not cached yet, one per sha256."""
    items = list(items)
    vf = vectors(backbone, size)
    try:
        shas = vf.missing([it.sha256 for it in items])
        if _take_legacy(vf, shas, backbone, size):
            shas = vf.missing(shas)
        return _first_per_sha(items, shas)
    finally:
        vf.close()


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
          progress=None, cancel: threading.Event | None = None, workers: int | None = None) -> np.ndarray:
    """(N, D) float32 embeddings of `items` (anything with .path and .sha256), cached.

    Values are the cache's (float16, widened), whether just computed or read back: a pass
    gives the same matrix as the next. `workers`: processes for the pictures not cached yet
    (None: one per core from `embed_pool.PARALLEL_FROM` pictures on a CPU; 1: this process).
    """
    b = backbones.get_backbone(backbone)
    size = size or b.size
    items = list(items)
    X = np.zeros((len(items), b.features), np.float32)
    vf = vectors(backbone, size)
    try:
        shas = [it.sha256 for it in items]
        found, _ = vf.get(shas, out=X)
        if not found.all() and _take_legacy(vf, sorted({s for s, f in zip(shas, found) if not f}), backbone, size):
            found, _ = vf.get(shas, out=X)
        todo = _first_per_sha(items, (s for s, f in zip(shas, found) if not f))
        if not todo:
            report(progress, 1.0, f"All {len(items)} embeddings cached ({backbone})")
            return X
        first = use_onnx_body() and not onnx_body_ready(backbone, size)
        report(progress, 0.0, f"Loading the {backbone} network"
               + (" (its first use here: converting it for this machine, about a minute)…" if first else "…"))
        workers = embed_pool.default_workers(len(todo)) if workers is None else workers
        if workers > 1 and use_onnx_body():
            from dragonclf import onnxbody

            onnxbody.ensure_body(backbone, size)  # exported once, here: the workers only read it
            embed_pool.embed_parallel(todo, vf.folder, vf.dim, backbone, size, workers, batch_size, progress, cancel)
        else:
            _embed_here(vf, todo, backbone, size, batch_size, progress, cancel)
        new = np.zeros((int((~found).sum()), b.features), np.float32)  # the rows just appended, read back
        vf.get([s for s, f in zip(shas, found) if not f], out=new)
        X[~found] = new
        return X
    finally:
        vf.close()


def _embed_here(vf: VectorFile, todo, backbone: str, size: int, batch_size: int, progress, cancel) -> None:
    """Embed `todo` in this process, a batch at a time, each batch appended to `vf` (a stopped pass resumes)."""
    body, device = _local_body(backbone, size)
    with _malloc_top_pad():  # around the whole pass: between batches the heap must stay
        done = 0
        for start in range(0, len(todo), batch_size):
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"Stopped after embedding {done} of {len(todo)} new images (kept in the cache).")
            batch = todo[start:start + batch_size]
            vf.add([it.sha256 for it in batch], embed_batch(body, batch, backbone, size, device))
            done += len(batch)
            report(progress, done / len(todo), f"Embedding images: {done}/{len(todo)} ({backbone})")


def embed_to_cache(items, backbone: str = backbones.DEFAULT_BACKBONE, size: int | None = None,
                   batch_size: int = 32, progress=None, cancel: threading.Event | None = None) -> dict:
    """Fill the embedding cache for `items`, spread over all processes; returns counts.

    Work goes in rounds: in each round every rank embeds its own batch of the
    images still missing, and rank 0 appends the round's vectors to the cache.
    An interrupted job loses at most one round and resumes from the cache. In
    a single process this is `embed` (the same cache, the same resume).
    """
    b = backbones.get_backbone(backbone)
    size = size or b.size
    items = list(items)
    t0 = time.perf_counter()
    if not distributed.active():
        todo = missing(items, backbone, size)
        embed(todo, backbone, size=size, batch_size=batch_size, progress=progress, cancel=cancel)  # the new ones only
        workers = embed_pool.default_workers(len(todo)) if todo and use_onnx_body() else 1
        return {"images": len(items), "embedded": len(todo), "processes": workers,
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
    vf = vectors(backbone, size) if (distributed.is_main() and todo) else None
    done = 0
    try:
        for k in range(rounds):
            start = (k * ws + r) * batch_size
            mine = todo[start:start + batch_size]
            # One batch decoded at a time: memory stays flat however large the dataset.
            vecs = embed_batch(body, mine, backbone, size, device) if mine else np.zeros((0, b.features), np.float32)
            parts = distributed.gather_to_main([(it.sha256, v.astype(np.float16)) for it, v in zip(mine, vecs)])
            if vf is not None:
                rows = [row for part in parts for row in part]
                if rows:  # per round: an interrupted job resumes from here
                    vf.add([sha for sha, _ in rows], np.stack([v for _, v in rows]))
                done += len(rows)
                report(progress, done / len(todo), f"Embedding images: {done}/{len(todo)} ({backbone}, {ws} processes)")
    finally:
        if vf is not None:
            vf.close()
    # Everyone leaves together: rank 0's last append is done before anyone reads the cache.
    distributed.barrier()
    return {"images": len(items), "embedded": len(todo), "processes": ws,
            "seconds": round(time.perf_counter() - t0, 2)}


def embed_dataset(dataset: str, backbone: str = backbones.DEFAULT_BACKBONE, size: int | None = None,
                  batch_size: int = 32, progress=None) -> dict:
    """Embed every active image of `dataset` into the cache (the `embed` command)."""
    from dragonclf.items import dataset_items

    size = size or backbones.get_backbone(backbone).size
    # The torch weights are needed only to export the body (once per install) or to embed with torch.
    torch_free = not distributed.active() and use_onnx_body() and onnx_body_ready(backbone, size)
    items = dataset_items(dataset, backbone=None if torch_free else backbone)
    out = embed_to_cache(items, backbone, size=size, batch_size=batch_size, progress=progress)
    return {"dataset": dataset, "backbone": backbone, "size": size, **out}
