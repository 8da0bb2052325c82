"""Fine-tune a CNN with fastai over a dataset's active images, and save it as a model.

The DataBlock reads `items.Item`s (active images, the manifest's fixed split),
squish-resizes them (what the ONNX predictor replicates) and augments the
training batches with a preset. `fine_tune` runs one-cycle or SGDR, reports
each batch through `progress(fraction, message)` and each epoch through
`on_epoch(row)`, stops cleanly on `cancel`, and writes the model folder
atomically (export.pkl, model.onnx, model.json). One training per dataset at a
time. Under `accelerate launch` every rank trains; only rank 0 writes.

Warm start: by default the head is a single linear layer initialised from the
quick model (a logistic regression on cached embeddings, seconds), so the
frozen-body epoch of fastai's `fine_tune` is not needed.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from contextlib import nullcontext

import numpy as np

from dragonclf import backbones, distributed, items as items_mod, modelstore
from dragonclf.errors import DragonError
from dragonclf.learner import (  # noqa: F401 - export.pkl files written before the move name the readers here
    augment_tfms, build_learner, export_learner, item_is_valid, item_label, item_path, make_dls)
from dragonclf.modelstore import TrainResult, list_models  # noqa: F401 - part of this module's API
from dragonclf.progress import Cancelled, report as report_progress  # noqa: F401 - Cancelled: what Stop raises
from dragonclf.settings import (  # noqa: F401 - the settings' names, as this module always offered them
    AUGMENT_PRESETS, LIMITS, PRECISIONS, QUICK_FIELDS, SCHEDULES, TrainSettings, choose_precision, cuda_likely)

os.environ.setdefault("MPLBACKEND", "Agg")


# ---- progress, per-epoch rows, cancel ----------------------------------------

def _report_callback_class():
    from fastai.callback.core import Callback, CancelFitException
    from fastai.learner import Recorder

    class ReportProgress(Callback):
        """Per-batch progress, per-epoch rows, Stop, and a snapshot of each complete epoch."""

        order = Recorder.order + 1  # after the Recorder has logged the epoch's values

        def __init__(self, state: dict, progress, on_epoch, cancel):
            self.state, self.progress, self.on_epoch_fn, self.cancel = state, progress, on_epoch, cancel

        def _check_cancel(self):
            if self.cancel is not None and self.cancel.is_set():
                raise CancelFitException()

        def before_batch(self):
            self._check_cancel()

        def before_epoch(self):
            self.state["epoch_started"] = time.monotonic()

        def after_batch(self):
            s = self.state
            s["done"] += 1
            if self.training:
                s["lrs"].append([float(h["lr"]) for h in self.opt.hypers])
            phase = "train" if self.training else "valid"
            report_progress(self.progress, s["done"] / s["total"],
                    f"Epoch {s['epoch'] + 1}/{s['epochs']}: {phase} batch {self.iter + 1}/{self.n_iter}")
            self._check_cancel()

        def after_epoch(self):
            s = self.state
            names = [n for n in self.recorder.metric_names[1:-1]]  # drop "epoch" and "time"
            vals = self.recorder.values[-1] if self.recorder.values else []
            row = {"epoch": s["epoch"] + 1, "phase": s["phase"],
                   "time": round(time.monotonic() - s.get("epoch_started", time.monotonic()), 1)}
            row.update({n: (float(v) if v is not None else None) for n, v in zip(names, vals)})
            s["history"].append(row)
            s["epoch"] += 1
            # Keep the weights of the last complete epoch (Stop mid-epoch falls back to them)
            # and of the best one on the validation split so far (the start counts as epoch 0).
            s["snapshot"] = {k: v.detach().clone() for k, v in self.learn.model.state_dict().items()}
            if better(row, s["best"]):
                s["best"] = {"epoch": row["epoch"], "accuracy": row.get("accuracy"),
                             "valid_loss": row.get("valid_loss"), "weights": s["snapshot"]}
            if self.on_epoch_fn is not None:
                self.on_epoch_fn(row)

    return ReportProgress


def better(row: dict, best: dict | None) -> bool:
    """Whether an epoch beats the best so far on the validation split: no lower accuracy and a lower loss.

    With a few dozen validation images one image is several points of accuracy, so a
    higher accuracy with a higher loss (more confident mistakes) is not taken as
    progress: on the hard set that rule would have swapped the quick model (held-out
    0.68) for an epoch one validation image better but worse held out (0.66). An
    epoch without validation figures never displaces a scored start.
    """
    if best is None:
        return True
    acc, loss = row.get("accuracy"), row.get("valid_loss")
    if acc is None or loss is None or not np.isfinite(loss):
        return False
    if best.get("accuracy") is None:
        return True
    return acc >= best["accuracy"] and loss < best["valid_loss"]


def _start_point(learn) -> dict | None:
    """Validation loss and accuracy of the model before training (with a warm head: the quick model)."""
    if not learn.dls.valid.n:
        return None
    with learn.no_bar():
        loss, acc, _ = learn.validate()
    return {"epoch": 0, "accuracy": float(acc), "valid_loss": float(loss),
            "weights": {k: v.detach().clone() for k, v in learn.model.state_dict().items()}}


def verdict(start: dict | None, best: dict | None, epochs_done: int, warm: bool) -> tuple[str, str]:
    """(which weights were kept: "start" | "best" | "last", one plain sentence saying so)."""
    if best is None:
        return "last", "No validation images: kept the last epoch."
    if start is None:  # no warm head: the start is a random head, not worth keeping
        if best["epoch"] < epochs_done:
            return "best", (f"Kept epoch {best['epoch']} of {epochs_done} (validation accuracy "
                            f"{best['accuracy']:.3f}): later epochs scored lower.")
        return "last", f"Kept the last epoch: validation accuracy {best['accuracy']:.3f}."
    if best["epoch"] == 0:
        what = "the quick model it started from" if warm else "its starting weights"
        return "start", (f"The fine-tune did not beat {what} on the validation split (start {start['accuracy']:.3f}, "
                         f"no epoch higher); the starting weights were kept"
                         + (": the quick model remains the recommended one." if warm else "."))
    if best["epoch"] < epochs_done:
        return "best", (f"Kept epoch {best['epoch']} of {epochs_done} (validation accuracy {best['accuracy']:.3f}, "
                        f"start {start['accuracy']:.3f}): later epochs scored lower.")
    return "last", (f"Kept the last epoch: validation accuracy {best['accuracy']:.3f}, "
                    f"from {start['accuracy']:.3f} at the start.")


def _frozen_bn_callback():
    """Batch norm layers stay in eval mode (pretrained running statistics) while the rest trains."""
    from fastai.callback.core import Callback
    from torch import nn

    class FrozenBatchNormStats(Callback):
        order = 1  # after TrainEvalCallback has put the whole model in training mode

        def before_train(self):
            for m in self.learn.model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()

    return FrozenBatchNormStats()


def _fit(learn, n_epochs: int, lr, schedule: str, cbs, pct_start=0.3):
    if n_epochs <= 0:
        return
    if schedule == "sgdr":
        learn.fit(n_epochs, cbs=[_sgdr_scheduler(learn, lr, n_epochs)] + list(cbs))
    else:
        learn.fit_one_cycle(n_epochs, lr, pct_start=pct_start, cbs=cbs)


def _sgdr_scheduler(learn, lr, n_cycles: int):
    """SGDR: cosine annealing from lr to ~0, restarting every epoch.

    fastai's `fit_sgdr` divides by (cycle_mult - 1) and so cannot do equal-length cycles.
    """
    from fastai.callback.schedule import ParamScheduler, SchedCos

    if learn.opt is None:
        learn.create_opt()
    learn.opt.set_hyper("lr", lr)  # a slice spreads over the layer groups (discriminative lr)
    lr_max = np.array([h["lr"] for h in learn.opt.hypers])
    cos = SchedCos(lr_max, lr_max / 1e3)

    def restart_every_epoch(pos: float):
        return cos(cycle_position(pos, n_cycles))

    return ParamScheduler({"lr": restart_every_epoch})


def cycle_position(pos: float, n_cycles: int) -> float:
    """Where in its cycle (0 at a restart, just under 1 at its end) the overall position `pos` in [0, 1] lies.

    fastai gives pos = epoch / n_epochs at an epoch's start; k / n * n can land
    a hair below k in floating point, which would start that cycle at its end.
    """
    x = pos * n_cycles
    k = min(int(round(x)) if abs(x - round(x)) < 1e-6 else int(x), n_cycles - 1)
    return min(max(x - k, 0.0), 0.999)


# ---- the public functions -----------------------------------------------------

def fine_tune(store_or_rows, backbone: str = backbones.DEFAULT_BACKBONE, *, settings: TrainSettings | None = None,
              dataset: str | None = None, progress=None, on_epoch=None, cancel: threading.Event | None = None,
              save: bool = True, **overrides) -> TrainResult:
    """Train `backbone` on the dataset and save it; returns a TrainResult.

    `settings` (default `TrainSettings()`) with `overrides` (any of its fields by
    name, e.g. `epochs=5`): every field is described once, in `settings.py`.

    Pretrained backbones: `freeze_epochs` with the body frozen (default 0 with a
    warm-started head, else 1), then `epochs` with everything trainable, the
    body at lr/lr_mult when `discriminative`. `small_cnn` trains from scratch
    with one-cycle for `epochs`. `mixed_precision`: see `choose_precision`.

    Never worse than its start: the model is scored on the validation split
    before training (with a warm head, that is the quick model at this size) and
    after every epoch; with `keep_best` the best of these weights is saved, the
    start included, and `TrainResult.kept` / `.verdict` say which and why.

    `bn_stats` "frozen" (the default with a warm head) keeps batch norm on the
    pretrained running statistics while training (its scale and shift still
    learn); "train" updates them from each batch, fastai's default. Measured on
    the hard set: batch statistics of 32 photos of one dataset are far from
    ImageNet's, and the head fitted on the frozen body's embeddings scores a
    training batch at loss 3.2 with them vs 0.02 without (bench/RESULTS.md).
    """
    import torch
    from fastai.torch_core import set_seed

    st = (settings or TrainSettings()).updated(**overrides).check()
    epochs, lr, freeze_epochs, schedule, discriminative, lr_mult = (
        st.epochs, st.lr, st.freeze_epochs, st.schedule, st.discriminative, st.lr_mult)
    size, batch_size, valid_share, augment, warm_start, seed = (
        st.size, st.batch_size, st.valid_share, st.augment, st.warm_start, st.seed)
    mixed_precision, keep_best, bn_stats = st.mixed_precision, st.keep_best, st.bn_stats
    t0 = time.perf_counter()
    name, items = items_mod.collect(store_or_rows, dataset, valid_share)
    warnings = items_mod.check_trainable(name, items)
    precision, precision_warning = choose_precision(mixed_precision)
    if precision_warning:
        warnings.append(precision_warning)
    labels = items_mod.label_order(items)
    b = backbones.get_backbone(backbone)
    size = size or b.size
    main = distributed.is_main()
    lock = modelstore.training_lock(name) if (save and main) else nullcontext()
    with lock:
        set_seed(seed)
        warm_head = None
        if b.pretrained and warm_start:
            from dragonclf import features

            report_progress(progress, 0.0, "Fitting the starting head on cached embeddings")
            # Under a launcher all ranks embed a share; rank 0 alone writes the cache and fits.
            warm_head = features.warm_head([it for it in items if it.split == "train"], labels, backbone, size,
                                           cancel)
        if freeze_epochs is None:
            freeze_epochs = 0 if (warm_head is not None or not b.pretrained) else 1
        bn_stats = bn_stats or ("frozen" if warm_head is not None else "train")
        if not b.pretrained:
            freeze_epochs = 0
        lr = lr or (1e-3 if warm_head is not None else (3e-3 if not b.pretrained else 2e-3))
        learn = build_learner(items, labels, backbone, size, batch_size, augment, warm_head, precision=precision,
                              label_smoothing=st.label_smoothing)
        # channels_last convolutions train faster on CPU here (A/B per step: ~1.3-3x);
        # the model goes back to the default layout before export.
        learn.model.to(memory_format=torch.channels_last)
        report_progress(progress, 0.0, "Scoring the starting model on the validation split")
        start = _start_point(learn) if warm_head is not None else None  # every rank alike, before sharding
        distributed.attach(learn)  # data-parallel under `accelerate launch`; a no-op in one process
        total_epochs = freeze_epochs + epochs
        # Under a launcher each process runs its share of the batches.
        per_epoch = -(-(len(learn.dls.train) + len(learn.dls.valid)) // distributed.world_size())
        state = {"done": 0, "total": max(1, per_epoch * total_epochs), "epoch": 0, "epochs": total_epochs,
                 "history": [], "snapshot": None, "phase": "frozen", "lrs": [], "best": start}
        cbs = [_report_callback_class()(state, progress, on_epoch, cancel)]
        if bn_stats == "frozen" and b.pretrained:
            cbs.append(_frozen_bn_callback())
        try:
            with learn.no_bar():
                if b.pretrained and freeze_epochs:
                    learn.freeze()
                    _fit(learn, freeze_epochs, lr, schedule, cbs, pct_start=0.99)
                if not (cancel is not None and cancel.is_set()):
                    state["phase"] = "unfrozen" if b.pretrained else "scratch"
                    learn.unfreeze()
                    body_lr = slice(lr / lr_mult, lr) if (discriminative and b.pretrained) else lr
                    _fit(learn, epochs, body_lr, schedule, cbs)
            stopped = cancel is not None and cancel.is_set()
            if stopped and state["snapshot"] is None:
                raise Cancelled("Training stopped before the first epoch finished; no model was saved.")
            best = state["best"]
            kept, why = verdict(start, best, len(state["history"]), warm_head is not None)
            if not keep_best:
                kept, why = "last", "Kept the last epoch (keep_best off)."
            if kept in ("start", "best"):
                learn.model.load_state_dict(best["weights"])
            elif stopped:
                learn.model.load_state_dict(state["snapshot"])
            learn.model.to(memory_format=torch.contiguous_format)
            report = {"start": _public(start), "best_epoch": best["epoch"] if best else None, "kept": kept,
                      "verdict": why}
            result = _finish(learn, name, items, labels, backbone, size, state["history"], stopped, warnings,
                             # every setting, with what "automatic" resolved to
                             params={**st.as_dict(), "freeze_epochs": freeze_epochs, "lr": lr, "size": size,
                                     "warm_start": warm_head is not None, "mixed_precision": precision,
                                     "bn_stats": bn_stats},
                             save=save and main, progress=progress, report=report)
        finally:
            shutil.rmtree(learn.path, ignore_errors=True)  # lr_find/_tmp files; the model is saved elsewhere
    result.seconds = time.perf_counter() - t0
    result.lrs = state["lrs"]
    return result


def _public(point: dict | None) -> dict | None:
    return None if point is None else {k: v for k, v in point.items() if k != "weights"}


def _finish(learn, name, items, labels, backbone, size, history, stopped, warnings, params, save, progress,
            report: dict | None = None):
    """Score on the valid split with fastai, then write export.pkl + model.onnx + model.json."""
    from dragonclf.interpret import metrics_from_probs

    b = backbones.get_backbone(backbone)
    if learn.dls.valid.n:
        with learn.no_bar():
            probs, targs = learn.get_preds(dl=learn.dls.valid)
        actual = [labels[i] for i in targs.numpy().astype(int)]
        metrics = metrics_from_probs(actual, probs.float().numpy(), labels)
    else:
        metrics = metrics_from_probs([], np.zeros((0, len(labels))), labels)
    distributed.detach(learn)  # its callback holds an Accelerator: never pickle it into export.pkl
    mode = "finetune" if b.pretrained else "scratch"
    report = report or {}
    result = TrainResult(None, name, backbone, mode, metrics, history, warnings=warnings, stopped_early=stopped,
                         start=report.get("start"), best_epoch=report.get("best_epoch"), kept=report.get("kept"),
                         verdict=report.get("verdict", ""))
    if not save:
        return result
    report_progress(progress, 1.0, "Exporting the model (fastai export.pkl and ONNX)")
    if hasattr(learn, "to_fp32"):
        learn.to_fp32()
    mean, std = (list(b.mean), list(b.std))

    def write_files(tmp):
        learn.model.cpu().eval()
        modelstore.export_onnx(learn.model, size, tmp / "model.onnx")
        from dragonclf import quantize

        # int8 answers faster on a CPU; it is served only if as accurate on the validation split.
        report_progress(progress, 1.0, "Quantising the model to int8 and checking it on the validation split")
        variant = quantize.choose_variant(tmp, items, labels, size, mean, std)
        learn.dls.cpu()
        export_learner(learn, tmp / "export.pkl")
        return {"variant": variant, "pkl_needs": modelstore.pickle_needs(tmp / "export.pkl")}

    result.model_dir = modelstore.write_model(
        name, mode=mode, backbone=backbone, labels=labels, size=size, mean=mean, std=std, metrics=metrics,
        training_data=items_mod.summary(items), params=params, warnings=warnings, write_files=write_files, pkl=True,
        history=history, stopped_early=stopped, epochs_completed=len(history), start_metrics=report.get("start"),
        best_epoch=report.get("best_epoch"), kept=report.get("kept"), verdict=report.get("verdict", ""))
    return result


def train(store_or_rows, mode: str = "quick", backbone: str = backbones.DEFAULT_BACKBONE, *,
          settings: TrainSettings | None = None, dataset: str | None = None, progress=None, on_epoch=None,
          cancel: threading.Event | None = None, save: bool = True, **overrides) -> TrainResult:
    """The one entry point for the UI, the CLI and distributed runs: mode "quick" or "finetune".

    `settings` with `overrides` as for `fine_tune`, checked before any work
    whoever called; the quick model uses only `size` and `valid_share` of them
    (`settings.QUICK_FIELDS`). Under a launcher (`accelerate launch`)
    fine-tuning runs on every rank (see `distributed.attach`); for the quick
    model all ranks embed a share of the images into the cache, then rank 0
    fits and saves it alone. Rank 0 gets the full result, the others one with
    `model_dir` None.
    """
    from dragonclf import features

    st = (settings or TrainSettings()).updated(**overrides).check()
    if mode == "finetune":
        return fine_tune(store_or_rows, backbone, settings=st, dataset=dataset, progress=progress,
                         on_epoch=on_epoch, cancel=cancel, save=save)
    if mode != "quick":
        raise DragonError(f"Unknown mode {mode!r}; choose quick or finetune.")
    quick = dict(dataset=dataset, valid_share=st.valid_share, size=st.size, cancel=cancel, save=save)
    if not distributed.active():
        return features.fit_quick(store_or_rows, backbone, progress=progress, **quick)
    from dragonclf.embeddings import embed_to_cache

    name, items = items_mod.collect(store_or_rows, dataset)
    embed_to_cache(items, backbone, size=st.size or backbones.get_backbone(backbone).size,
                   progress=progress if distributed.is_main() else None)
    result = distributed.run_on_main(lambda: features.fit_quick(items, backbone, **quick))
    if not distributed.is_main():
        result = TrainResult(None, name, backbone, mode, result.metrics, seconds=result.seconds)
    return result
