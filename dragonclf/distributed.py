"""Rank helpers and data-parallel hooks for runs across processes, GPUs and machines.

`accelerate launch [its options] -m dragonclf train|embed ...` starts the same
command in every process; Accelerate (PyTorch DDP underneath, NCCL on GPUs,
gloo on CPUs) joins them. One rule keeps the store safe: rank 0 alone touches
it. Rank 0 opens the dataset, prepares the backbone weights, and hands every
other rank the list of images (paths, labels, split); they read image files
and nothing else. Model folders, the training lock, the embedding cache and
log lines come from rank 0 only; the other ranks send it what they computed.

Every helper here is a no-op (or the plain answer) in a single process, so the
CLI and the library need no separate code path. The work itself lives with its
owner: `items.dataset_items` (rank 0 reads the store), `embeddings.embed_to_cache`
(each rank a shard), `features.warm_head`, and `train.train` (the one mode
dispatcher, distributed quick model included).
"""

from __future__ import annotations

import os

from dragonclf.errors import DragonError


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


def device():
    """This process's torch device: its own GPU (LOCAL_RANK) with CUDA, else the CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def run_on_main(fn):
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
            return dl if isinstance(dl, DistributedDL) else AnyDeviceDL(dl, device=device())

    return Trainer


def attach(learn):
    """Make `learn` train data-parallel when launched with several processes (else a no-op).

    Batch norm becomes SyncBatchNorm only with CUDA (PyTorch's SyncBatchNorm
    has no CPU kernel); on CPU each rank normalises its own batch and DDP
    copies rank 0's running statistics to the others at every step.
    Mixed precision is fastai's own callback, chosen by `settings.choose_precision`,
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
