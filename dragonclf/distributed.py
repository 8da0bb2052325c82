"""Data-parallel training and embedding across processes, GPUs and machines.

`accelerate launch [its options] -m dragonclf train|embed ...` starts the same
command in every process; Accelerate (PyTorch DDP underneath, NCCL on GPUs,
gloo on CPUs) joins them. One rule keeps the store safe: rank 0 alone touches
it. Rank 0 opens the dataset, prepares the backbone weights, and hands every
other rank the list of images (paths, labels, split); they read image files
and nothing else. Model folders, the training lock, the embedding cache and
log lines come from rank 0 only; the other ranks send it what they computed.

Single-process runs pass straight through to the ordinary functions, so the
CLI and the library need no separate code path.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np

from dragonclf import backbones
from dragonclf.errors import DragonError
from dragonclf.items import Item


# ---- who am I ---------------------------------------------------------------

def world_size() -> int:
    """How many processes take part (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def active() -> bool:
    """Launched by accelerate/torchrun with more than one process."""
    return world_size() > 1


def is_main() -> bool:
    return rank() == 0


def init() -> None:
    """Join the process group (idempotent): NCCL with CUDA, else gloo on CPU."""
    if not active():
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    from accelerate import PartialState

    # `accelerate launch --multi_gpu` on a machine without CUDA would otherwise
    # come up as a single process; cpu=True makes Accelerate pick gloo.
    PartialState(cpu=not torch.cuda.is_available())
    if not dist.is_initialized():
        raise DragonError("accelerate did not start the process group; launch with `accelerate launch --multi_gpu "
                          "--num_processes N -m dragonclf ...` (see README, Training bigger).")


def broadcast(obj):
    """Rank 0's `obj` on every rank (any picklable object)."""
    if not active():
        return obj
    import torch.distributed as dist

    init()
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_main(obj) -> list | None:
    """Every rank's `obj`, in rank order, on rank 0; None elsewhere."""
    if not active():
        return [obj]
    import torch.distributed as dist

    init()
    out = [None] * world_size() if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out


def barrier() -> None:
    if active():
        import torch.distributed as dist

        init()
        dist.barrier()


def _run_on_main(fn):
    """Run `fn` on rank 0 and give every rank its result, or its error.

    A failure on rank 0 (unknown dataset, missing weights) is re-raised on every
    rank with the same message, so no rank is left waiting in a collective.
    """
    if not active():
        return fn()
    result = error = None
    if is_main():
        try:
            result = fn()
        except DragonError as e:
            error = str(e)
    result, error = broadcast((result, error))
    if error is not None:
        raise DragonError(error if is_main() else f"(from rank 0) {error}")
    return result


# ---- data: rank 0 reads the store, everyone gets the items --------------------

def dataset_items(dataset: str, valid_share: float | None = None, backbone: str | None = None) -> list[Item]:
    """The active images of `dataset` as Items, identical on every rank.

    Only rank 0 opens the store (the SQLite manifest, the folders). It also
    makes sure `backbone`'s weights are on disk before anyone builds a model,
    so no other rank converts or downloads them into the shared cache.
    """
    def read():
        from dragonclf import items as items_mod
        from dragonclf.store import Store

        _, items = items_mod.collect(Store.open(dataset), dataset, valid_share)
        if backbone is not None and backbones.get_backbone(backbone).pretrained:
            backbones.ensure_weights(backbone)
        return items

    return _run_on_main(read)


# ---- embeddings: each rank a shard, rank 0 writes the cache --------------------

def _missing(items, backbone: str, size: int) -> list[Item]:
    """Items whose embedding is not cached yet, one per sha256 (rank 0 only: it reads the cache)."""
    from dragonclf import features

    con = features._cache_db()
    try:
        cached = set()
        shas = sorted({it.sha256 for it in items})
        for i in range(0, len(shas), 500):
            chunk = shas[i:i + 500]
            q = f"SELECT sha256 FROM embeddings WHERE backbone=? AND size=? AND sha256 IN ({','.join('?' * len(chunk))})"
            cached.update(r[0] for r in con.execute(q, [backbone, size, *chunk]))
    finally:
        con.close()
    todo, seen = [], set(cached)
    for it in items:
        if it.sha256 not in seen:
            todo.append(it)
            seen.add(it.sha256)
    return todo


def embed_to_cache(items, backbone: str = backbones.DEFAULT_BACKBONE, size: int | None = None,
                   batch_size: int = 32, progress=None, cancel: threading.Event | None = None) -> dict:
    """Fill the embedding cache for `items`, spread over all processes; returns counts.

    Work goes in rounds: in each round every rank embeds its own batch of the
    images still missing, and rank 0 writes the round's vectors and commits.
    An interrupted job loses at most one round and resumes from the cache. In
    a single process this is `features.embed` (the same cache, the same resume).
    """
    from dragonclf import features
    from dragonclf.preprocess import load_image, to_array

    b = backbones.get_backbone(backbone)
    size = size or b.size
    items = list(items)
    t0 = time.perf_counter()
    if not active():
        n_before = len(_missing(items, backbone, size))
        features.embed(items, backbone, size=size, batch_size=batch_size, progress=progress, cancel=cancel)
        return {"images": len(items), "embedded": n_before, "processes": 1,
                "seconds": round(time.perf_counter() - t0, 2)}

    def plan():
        backbones.ensure_weights(backbone)
        return _missing(items, backbone, size)

    todo = _run_on_main(plan)
    ws, r = world_size(), rank()
    per_round = ws * batch_size
    rounds = (len(todo) + per_round - 1) // per_round
    import torch

    device = _device()
    body = features._body(backbone).to(device) if todo else None
    con = features._cache_db() if (is_main() and todo) else None
    done = 0
    try:
        for k in range(rounds):
            start = (k * ws + r) * batch_size
            mine = todo[start:start + batch_size]
            vecs = np.zeros((0, b.features), np.float32)
            if mine:
                # One batch decoded at a time: memory stays flat however large the dataset.
                x = torch.from_numpy(np.stack([to_array(load_image(it.path), size, b.mean, b.std) for it in mine]))
                with torch.inference_mode():
                    vecs = body(x.to(device)).float().cpu().numpy()
            parts = gather_to_main([(it.sha256, v.astype(np.float32).tobytes()) for it, v in zip(mine, vecs)])
            if con is not None:
                rows = [(sha, backbone, size, blob) for part in parts for sha, blob in part]
                con.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)", rows)
                con.commit()  # per round: an interrupted job resumes from here
                done += len(rows)
                if progress is not None:
                    progress(done / len(todo), f"Embedding images: {done}/{len(todo)} ({backbone}, {ws} processes)")
    finally:
        if con is not None:
            con.close()
    # Everyone leaves together: rank 0's last commit is done before anyone reads the cache.
    barrier()
    return {"images": len(items), "embedded": len(todo), "processes": ws,
            "seconds": round(time.perf_counter() - t0, 2)}


def embed_dataset(dataset: str, backbone: str = backbones.DEFAULT_BACKBONE, size: int | None = None,
                  batch_size: int = 32, progress=None) -> dict:
    """Embed every active image of `dataset` into the cache (the `embed` command)."""
    items = dataset_items(dataset, backbone=backbone)
    out = embed_to_cache(items, backbone, size=size, batch_size=batch_size, progress=progress)
    return {"dataset": dataset, "backbone": backbone, "size": size or backbones.get_backbone(backbone).size, **out}


def _device():
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def warm_head(items: list[Item], labels: list[str], backbone: str, size: int, cancel=None):
    """The quick-model head that warm-starts fine-tuning, fitted once, the same on every rank.

    All ranks embed the training images into the cache together; rank 0 reads
    them back and fits the logistic regression; the others receive the head.
    """
    from dragonclf import features

    embed_to_cache(items, backbone, size=size, cancel=cancel)

    def fit():
        X = features.embed(items, backbone, size=size, cancel=cancel)  # all cached now: a read
        return features.fit_head(X, [it.label for it in items], labels)

    return _run_on_main(fit)


# ---- training ----------------------------------------------------------------

def train(store_or_items, mode: str, backbone: str, **kw):
    """`train.train` under a launcher: the same TrainResult on rank 0, model_dir None elsewhere.

    Fine-tuning runs on every rank (see `attach`). The quick model is a
    logistic regression on cached embeddings: all ranks embed, then rank 0
    fits and saves it alone.
    """
    from dragonclf import items as items_mod
    from dragonclf.train import TrainResult, train as train_one

    if not active() or mode == "finetune":
        return train_one(store_or_items, mode, backbone, **kw)
    if mode != "quick":
        raise DragonError(f"Unknown mode {mode!r}; choose quick or finetune.")
    name, items = items_mod.collect(store_or_items, kw.get("dataset"))
    b = backbones.get_backbone(backbone)
    embed_to_cache(items, backbone, size=kw.get("size") or b.size,
                   progress=kw.get("progress") if is_main() else None)
    result = _run_on_main(lambda: train_one(items, mode, backbone, **{**kw, "progress": None}))
    if not is_main():
        result = TrainResult(None, name, backbone, mode, result.metrics, seconds=result.seconds)
    return result


def _trainer_class():
    from fastai.distributed import DistributedDL, DistributedTrainer

    class AnyDeviceDL(DistributedDL):
        """fastai's DistributedDL shares rank 0's shuffled order through a CUDA tensor;
        an object broadcast works on gloo (CPU) and NCCL alike."""

        def _broadcast(self, t, rank):
            if rank != 0:  # fastai only ever shares rank 0's order; say so if that changes
                raise DragonError(f"internal: DistributedDL broadcast from rank {rank}")
            return broadcast(list(t))

    class Trainer(DistributedTrainer):
        """fastai's DDP callback with a device-agnostic DataLoader wrapper."""

        def _wrap_dl(self, dl):
            return dl if isinstance(dl, DistributedDL) else AnyDeviceDL(dl, device=_device())

    return Trainer


def attach(learn):
    """Make `learn` train data-parallel when launched with several processes (else a no-op).

    Batch norm becomes SyncBatchNorm only with CUDA (PyTorch's SyncBatchNorm
    has no CPU kernel); on CPU each rank normalises its own batch and DDP
    copies rank 0's running statistics to the others at every step.
    Mixed precision is fastai's own callback, chosen by `train.choose_precision`,
    which honours `accelerate launch --mixed_precision` (Accelerate passes it on
    as ACCELERATE_MIXED_PRECISION). The Accelerator here is told "no" so the
    forward pass is not autocast twice.
    """
    if not active():
        return learn
    import torch

    init()
    cuda = torch.cuda.is_available()
    learn.add_cb(_trainer_class()(sync_bn=cuda, cpu=not cuda, mixed_precision="no"))
    return learn


def detach(learn):
    """Remove the distributed callback (before export: it must not be pickled into export.pkl)."""
    if not active():
        return learn
    from fastai.distributed import DistributedTrainer

    for cb in [c for c in learn.cbs if isinstance(c, DistributedTrainer)]:
        learn.remove_cb(cb)
    return learn
