"""How a fine-tune's fastai Learner is built, and exported so that plain fastai loads it.

The DataBlock reads `items.Item`s (active images, the manifest's fixed split),
squish-resizes them (what the ONNX predictor replicates) and augments the
training batches with a preset. Used by the fine-tune (`train`) and by the
learning-rate finder and augmentation preview (`lr_find`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from dragonclf import backbones
from dragonclf.errors import DragonError
from dragonclf.items import Item
from dragonclf.settings import AUGMENT_PRESETS


# ---- DataBlock pieces: module-level so export.pkl unpickles anywhere --------

def item_path(x):
    """get_x: an Item's file; a plain path passes through (so learn.predict(path) works)."""
    return x.path if isinstance(x, Item) else x


def item_label(x: Item) -> str:
    return x.label


def item_is_valid(x: Item) -> bool:
    return x.split == "valid"


def export_learner(learn, dest: Path) -> None:
    """`learn.export(dest)` such that plain fastai loads it where dragonclf is not installed.

    Our DataBlock reads Items through `item_path` / `item_label`, which a pickle
    names by module; for the export both become fastcore's `noop` on plain paths
    and strings (all `learn.predict(path)` needs), and they are put back after.
    """
    from fastai.data.transforms import Transform
    from fastcore.basics import noop

    lists = [tl for ds in (learn.dls.train_ds, learn.dls.valid_ds) for tl in ds.tls]
    saved = [(tl, tl.tfms.fs[0], tl.types) for tl in lists]
    try:
        for i, tl in enumerate(lists):
            tl.tfms.fs[0] = Transform(noop)
            tl.types = [(Path, str)[i % 2], *tl.types[1:]]  # image lists, then label lists
        learn.export(dest)
    finally:
        for tl, fn, types in saved:
            tl.tfms.fs[0] = fn
            tl.types = types


def augment_tfms(preset: str) -> list:
    from fastai.vision.augment import aug_transforms

    if preset not in AUGMENT_PRESETS:
        raise DragonError(f"Unknown augmentation preset {preset!r}; choose one of {', '.join(AUGMENT_PRESETS)}.")
    kw = AUGMENT_PRESETS[preset]
    return [] if kw is None else aug_transforms(**kw)


def make_dls(items: list[Item], labels: list[str], size: int, batch_size: int, augment: str = "default",
             normalize: tuple | None = None):
    from fastai.data.block import CategoryBlock, DataBlock
    from fastai.data.transforms import FuncSplitter, Normalize
    from fastai.vision.augment import Resize, ResizeMethod
    from fastai.vision.data import ImageBlock
    import torch

    tfms = augment_tfms(augment)
    if normalize is not None:
        tfms.append(Normalize.from_stats(*normalize))
    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock(vocab=labels)),  # fixed vocab: a label seen only in valid still has a slot
        get_x=item_path, get_y=item_label, splitter=FuncSplitter(item_is_valid),
        item_tfms=Resize(size, method=ResizeMethod.Squish), batch_tfms=tfms,
    )
    n_train = sum(it.split == "train" for it in items)
    # fastai drops the last partial training batch: a batch larger than the data would leave none.
    bs = max(2, min(batch_size, n_train))
    cuda = torch.cuda.is_available()
    return block.dataloaders(items, bs=bs, num_workers=min(4, os.cpu_count() or 1) if cuda else 0,
                             device="cuda" if cuda else "cpu")


def build_learner(items: list[Item], labels: list[str], backbone: str, size: int, batch_size: int,
                  augment: str, warm_head=None, path: Path | None = None, precision: str = "no",
                  label_smoothing: float = 0.0):
    """A fastai Learner (dls + model + metrics) for `backbone`; `warm_head` a features.LinearHead.

    `precision` is what `choose_precision` picked: "fp16" or "bf16" add fastai's
    mixed-precision callback, "no" trains in float32.
    """
    # These modules patch Learner with no_bar, fit_one_cycle/fit_sgdr/lr_find and to_fp16.
    import fastai.callback.fp16  # noqa: F401
    import fastai.callback.progress  # noqa: F401
    import fastai.callback.schedule  # noqa: F401
    from fastai.learner import Learner
    from fastai.metrics import accuracy, error_rate
    from fastai.vision.learner import vision_learner
    import torch
    from torch import nn

    b = backbones.get_backbone(backbone)
    path = path or Path(tempfile.mkdtemp(prefix="dragonclf-learn-"))
    if not b.pretrained:
        dls = make_dls(items, labels, size, batch_size, augment, normalize=(list(b.mean), list(b.std)))
        learn = Learner(dls, backbones.SmallCNN(len(labels)), metrics=[accuracy, error_rate], path=path)
    else:
        dls = make_dls(items, labels, size, batch_size, augment)
        arch, kw = backbones.fastai_arch(backbone)
        if warm_head is not None:
            lin = nn.Linear(warm_head.weight.shape[1], len(labels))
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(warm_head.weight))
                lin.bias.copy_(torch.from_numpy(np.maximum(warm_head.bias, -10.0)))
            kw["custom_head"] = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), lin)
            kw["init"] = None  # fastai would re-initialise the head and throw the warm start away
        learn = vision_learner(dls, arch, metrics=[accuracy, error_rate], path=path, **kw)
    if label_smoothing:
        from fastai.losses import LabelSmoothingCrossEntropyFlat

        learn.loss_func = LabelSmoothingCrossEntropyFlat(eps=label_smoothing)
    from fastcore.basics import noop

    learn.logger = noop  # the per-epoch rows go to on_epoch, not stdout
    if precision == "fp16":
        learn.to_fp16()
    elif precision == "bf16":
        if not torch.cuda.is_bf16_supported():
            raise DragonError("This GPU cannot train in bf16; use --mixed-precision fp16 (or no).")
        learn.to_bf16()
    return learn
