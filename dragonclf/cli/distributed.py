"""CLI for work spread over processes: `embed` fills the embedding cache.

Runs alone (`python -m dragonclf embed --dataset NAME`) or as a distributed
job (`accelerate launch --multi_gpu --num_processes N -m dragonclf embed ...`):
each process embeds its share, rank 0 writes the cache and prints the answer.
"""

from __future__ import annotations

from dragonclf.cli import add_json_flag, emit


def register(sub) -> None:
    from dragonclf.backbones import DEFAULT_BACKBONE, backbone_names

    p = sub.add_parser("embed", help="compute the embedding cache of a dataset (resumable; distributable)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=backbone_names())
    p.add_argument("--size", type=int, help="image size in pixels (default: the backbone's)")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch, per process")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_json_flag(p)
    p.set_defaults(func=cmd_embed)


def cmd_embed(a) -> int:
    from dragonclf import distributed
    from dragonclf.cli.train import stderr_progress
    from dragonclf.embeddings import embed_dataset

    progress = stderr_progress(a.quiet or not distributed.is_main())
    out = embed_dataset(a.dataset, a.backbone, size=a.size, batch_size=a.batch_size, progress=progress)
    if distributed.is_main():
        emit(out, a.json)
    return 0
