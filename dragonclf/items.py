"""The images a model learns from: read from a Store, or from a plain list.

Training, embeddings and evaluation all take `store_or_rows`: a dataset Store
(its active images and their fixed train/valid split) or any list of rows with
`.path` and `.label` (and optionally `.id`, `.sha256`, `.split`), or of
(path, label[, split]) tuples. Functions work on data, so they can be tested
and benchmarked without a store.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from dragonclf import distributed
from dragonclf.errors import DragonError
from dragonclf.store import Store


@dataclass(frozen=True)
class Item:
    id: str
    path: Path
    label: str
    sha256: str
    split: str  # "train" | "valid"


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def collect(store_or_rows, dataset: str | None = None, valid_share: float | None = None) -> tuple[str, list[Item]]:
    """(dataset name, items) for the active images: the one place the ML stages read the store.

    `store_or_rows`: a Store (its active images), or rows already read (ImageRows,
    Items, or (path, label[, split]) tuples) so a stage reads once and passes items down.

    `valid_share` re-splits rows that carry a `split_key` (the store's fixed per-image
    key; near-duplicates share one, so they stay on one side; a new arrival never moves
    an earlier image); otherwise each row's own `split` is used.
    """
    if isinstance(store_or_rows, Store):
        name = dataset or store_or_rows.name
        rows = store_or_rows.images(status="active")
    else:
        name = dataset or "adhoc"
        rows = list(store_or_rows)
    items = []
    for r in rows:
        if isinstance(r, Item):
            items.append(r)  # already read: passed down as is (an Item has no split key to re-split by)
            continue
        if isinstance(r, (tuple, list)):
            path, label = Path(r[0]), str(r[1])
            split = r[2] if len(r) > 2 else "train"
            rid, sha = path.stem, None
        else:
            path, label = Path(r.path), str(r.label)
            split = getattr(r, "split", None) or "train"
            rid, sha = str(getattr(r, "id", path.stem)), getattr(r, "sha256", None)
            key = getattr(r, "split_key", None)
            if valid_share is not None and key is not None:
                split = "valid" if key < valid_share else "train"
        items.append(Item(rid, path, label, sha or file_sha256(path), split))
    return name, items


def label_order(items: list[Item]) -> list[str]:
    """Labels that have at least one image, in a stable (sorted) order."""
    return sorted({it.label for it in items})


def check_trainable(name: str, items: list[Item], need_valid: bool = True) -> list[str]:
    """Refuse datasets no classifier can learn from; return warnings for weak ones."""
    if not items:
        raise DragonError(f"Dataset {name!r} has no active images: collect or restore some first.")
    counts = Counter(it.label for it in items)
    if len(counts) < 2:
        only = next(iter(counts))
        raise DragonError(f"Dataset {name!r} has images of one label only ({only!r}); a classifier needs at least two.")
    train_labels = {it.label for it in items if it.split == "train"}
    if len(train_labels) < 2:
        raise DragonError(f"Dataset {name!r}: the training split holds fewer than two labels; add images.")
    if need_valid and not any(it.split == "valid" for it in items):
        raise DragonError(f"Dataset {name!r} has no validation images; add images or raise the validation share.")
    return [f"Label {lab!r} has only {n} image{'s' if n > 1 else ''}; add more for a useful model."
            for lab, n in sorted(counts.items()) if n < 5]


def summary(items: list[Item]) -> dict:
    """Per-label train/valid counts: recorded in model.json."""
    per = {}
    for it in items:
        per.setdefault(it.label, {"train": 0, "valid": 0})[it.split] += 1
    return {
        "n_images": len(items),
        "n_train": sum(v["train"] for v in per.values()),
        "n_valid": sum(v["valid"] for v in per.values()),
        "per_label": dict(sorted(per.items())),
    }


def dataset_items(dataset: str, valid_share: float | None = None, backbone: str | None = None) -> list[Item]:
    """The active images of `dataset` as Items, identical on every rank of a distributed job.

    Only rank 0 opens the store (the SQLite manifest, the folders). It also
    makes sure `backbone`'s weights are on disk before anyone builds a model,
    so no other rank converts or downloads them into the shared cache.
    """
    def read():
        from dragonclf import backbones

        _, items = collect(Store.open(dataset), dataset, valid_share)
        if backbone is not None and backbones.get_backbone(backbone).pretrained:
            backbones.ensure_weights(backbone)
        return items

    return distributed.run_on_main(read)
