"""The learning-rate finder and the augmentation preview: what the Train tab shows before a fine-tune.

Both build the same fastai Learner / DataLoaders a fine-tune would (`learner.build_learner`,
`learner.make_dls`) and change nothing on disk.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np

from dragonclf import backbones, items as items_mod
from dragonclf.errors import DragonError
from dragonclf.items import Item
from dragonclf.progress import report as report_progress
from dragonclf.settings import TrainSettings, choose_precision
from dragonclf.learner import build_learner, make_dls


def lr_find(store_or_rows, backbone: str = backbones.DEFAULT_BACKBONE, *, settings: TrainSettings | None = None,
            dataset: str | None = None, num_it: int | None = None, progress=None,
            cancel: threading.Event | None = None, **overrides):
    """(Figure of loss vs learning rate, suggested learning rate).

    `settings` with `overrides` as for `train.fine_tune` (it uses `size`, `batch_size`,
    `augment`, `valid_share`, `warm_start` and `mixed_precision`), checked first.
    Run on the model `fine_tune` will train with the same settings: by default
    the warm-started head with the body unfrozen; without `warm_start`, fastai's
    fresh head with the body frozen (what its first, frozen epoch trains).
    The sweep sees about one epoch of pictures (`lr_sweep_plan`), reports
    `progress(fraction, message)` per batch and ends with a DragonError on `cancel`.
    """
    from fastai.callback.core import Callback, CancelFitException
    from fastai.callback.schedule import valley

    st = (settings or TrainSettings()).updated(**overrides).check()
    name, items = items_mod.collect(store_or_rows, dataset, st.valid_share)
    items_mod.check_trainable(name, items)
    labels = items_mod.label_order(items)
    n_train = sum(it.split == "train" for it in items)
    batch_size, planned = lr_sweep_plan(n_train, st.batch_size)
    num_it = num_it or planned
    b = backbones.get_backbone(backbone)
    size = st.size or b.size
    warm_head = None
    if b.pretrained and st.warm_start:
        from dragonclf import features

        train_items = [it for it in items if it.split == "train"]
        warm_head = features.fit_head(features.embed(train_items, backbone, size=size),
                                      [it.label for it in train_items], labels)
    precision, _ = choose_precision(st.mixed_precision)
    learn = build_learner(items, labels, backbone, size, batch_size, st.augment, warm_head, precision=precision)
    if warm_head is not None or not b.pretrained:
        learn.unfreeze()

    class Report(Callback):
        order = 60  # after the LR finder's own callback

        def before_batch(self):
            if cancel is not None and cancel.is_set():
                raise CancelFitException()

        def after_batch(self):
            if self.training:
                done = len(self.recorder.lrs)
                report_progress(progress, min(1.0, done / num_it),
                        f"Learning-rate sweep: batch {done}/{num_it}, {done * batch_size} pictures")

    stopped = DragonError("Learning-rate finder stopped; nothing changed.")
    learn.add_cb(Report())
    try:
        with learn.no_bar():
            learn.lr_find(num_it=num_it, show_plot=False, suggest_funcs=None)
        lrs = [float(x) for x in learn.recorder.lrs]
        losses = [float(x) for x in learn.recorder.losses]
    except Exception:
        if cancel is not None and cancel.is_set():  # a sweep cut short has too few points to suggest from
            raise stopped from None
        raise
    finally:
        shutil.rmtree(learn.path, ignore_errors=True)
    if cancel is not None and cancel.is_set():
        raise stopped
    report_progress(progress, 1.0, f"Learning-rate sweep done: {len(lrs)} batches, {len(lrs) * batch_size} pictures")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(lrs, losses)
    ax.margins(y=0.1)  # the whole curve, with room above its highest point
    ax.set_title("Loss vs learning rate (one sweep)", fontsize=9)  # headroom under the plot's label
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    sug = _suggest_lr(lrs, losses, num_it, valley)
    ax.axvline(sug, color="red", linestyle="--", label=f"suggested {sug:.1e}")
    ax.legend()
    return fig, sug


def _suggest_lr(lrs: list[float], losses: list[float], num_it: int, valley) -> float:
    """fastai's valley rule on the trimmed curve; on a curve too short for it (the loss blew up
    early), a tenth of the rate with the lowest loss."""
    import math

    import torch

    cut = [(lr, v) for lr, v in zip(lrs[num_it // 10:-5], losses[num_it // 10:-5]) if not math.isnan(v)]
    if len(cut) >= 3:
        try:
            return float(valley(torch.tensor([c[0] for c in cut]), torch.tensor([c[1] for c in cut]), num_it)[0])
        except (IndexError, ValueError, RuntimeError):
            pass  # fastai's valley needs a curve with a descent; on a flat or short one, use the rule below
    return lrs[int(np.nanargmin(losses))] / 10


def lr_sweep_plan(n_train: int, batch_size: int) -> tuple[int, int]:
    """(batch size, batches) for an LR sweep that sees about one epoch of pictures, in 16-100 steps.

    fastai sweeps 100 batches whatever the dataset: 3,200 pictures for a demo of 100, i.e. many
    epochs' time. Smaller batches keep enough points on the curve for a small dataset.
    """
    bs = max(4, min(int(batch_size), n_train // 16))
    return bs, max(16, min(100, round(n_train / bs)))


def preview_augmentations(store_or_rows, *, settings: TrainSettings | None = None, n: int = 8, image: int = 0,
                          dataset: str | None = None, **overrides):
    """A Figure of `n` augmented versions of image number `image` (no normalisation).

    `settings` with `overrides` as for `train.fine_tune`: it uses `augment`, `size` (default 224) and `seed`.
    """
    from fastai.torch_core import set_seed
    from matplotlib.figure import Figure

    st = (settings or TrainSettings()).updated(**overrides).check()
    augment, size = st.augment, st.size or 224
    name, items = items_mod.collect(store_or_rows, dataset)
    if not items:
        raise DragonError(f"Dataset {name!r} has no active images to preview.")
    it = items[image % len(items)]
    one = [Item(f"{it.id}-{k}", it.path, it.label, it.sha256, "train") for k in range(n)]
    set_seed(st.seed)
    dls = make_dls(one + [Item("v", it.path, it.label, it.sha256, "valid")], [it.label], size, n, augment)
    xb, _ = dls.train.one_batch()
    fig = Figure(figsize=(2 * min(n, 4), 2 * ((n + 3) // 4)), layout="constrained")
    for k in range(len(xb)):
        ax = fig.add_subplot((n + 3) // 4, min(n, 4), k + 1)
        ax.imshow(xb[k].float().cpu().permute(1, 2, 0).clamp(0, 1).numpy())
        ax.axis("off")
    fig.suptitle(f"{augment}: {it.label} / {Path(it.path).name}")
    return fig
