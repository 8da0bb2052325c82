"""The settings of one fine-tune, declared once: the library, the CLI, the Train tab
and distributed runs all read them from `TrainSettings`.

`TrainSettings()` holds the library's defaults; `TrainSettings.for_machine()` the
starting values the Train tab and the CLI offer, sized for the machine. Both are
224 px (the backbone's own size, so a fine-tune starts exactly from the quick
model: 160 px started 4 points lower on the hard set and never caught up); a CPU
gets 3 epochs of 32 pictures (within plain fastai's time), a GPU 5 epochs of 64
(bench/bench_hard.py, bench/RESULTS.md). Each field's `help` is its one
description, shown by the CLI. What they resolve to on this machine:
`choose_precision`, `default_settings`, and `setting_note` (what a CPU setting costs).
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from dragonclf.errors import DragonError

SCHEDULES = ("one_cycle", "sgdr")
PRECISIONS = ("no", "fp16", "bf16")  # what `mixed_precision` may ask for; "auto" (or None) picks
# fastai aug_transforms arguments per preset (None: no augmentation)
AUGMENT_PRESETS = {
    "none": None,
    "light": dict(do_flip=True, max_rotate=5.0, max_zoom=1.05, max_lighting=0.1, max_warp=0.0, p_affine=0.5, p_lighting=0.5),
    "default": dict(),  # fastai's aug_transforms defaults: flip, rotate 10, zoom 1.1, lighting 0.2, warp 0.2
    "strong": dict(do_flip=True, max_rotate=25.0, max_zoom=1.3, max_lighting=0.4, max_warp=0.3, p_affine=0.9, p_lighting=0.9),
}
BN_STATS = ("frozen", "train")
# Bounds of the numeric settings, checked on the server whoever called (browser, API client, CLI, script).
LIMITS = {"epochs": (1, 1000), "freeze_epochs": (0, 100), "size": (32, 1024), "batch_size": (1, 1024),
          "valid_share": (0.01, 0.9), "lr": (1e-8, 10.0), "label_smoothing": (0.0, 0.5)}
QUICK_FIELDS = ("size", "valid_share")  # what the quick model (a linear head on embeddings) uses
# The machine-sized starting values (see the module's docstring).
CPU_DEFAULTS = {"size": 224, "batch_size": 32, "epochs": 3}
GPU_DEFAULTS = {"size": 224, "batch_size": 64, "epochs": 5}


def _f(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = _f(3, "epochs with everything trainable (after the frozen ones)")
    lr: float | None = _f(None, "learning rate (default: a sensible one per backbone and warm start)")
    freeze_epochs: int | None = _f(None, "epochs with the body frozen first (default: 0 with a warm-started head, "
                                         "else 1)")
    schedule: str = _f("one_cycle", "learning-rate schedule: one_cycle, or sgdr (warm restarts)")
    discriminative: bool = _f(True, "discriminative learning rates: the body at lr / lr_mult")
    lr_mult: float = _f(100.0, "how much slower the body learns than the head (with discriminative)")
    size: int | None = _f(None, "image size in pixels (default: the backbone's)")
    batch_size: int = _f(32, "images per batch, per process")
    valid_share: float | None = _f(None, "share of images for validation (default 0.2)")
    augment: str = _f("default", "augmentation preset: none, light, default or strong")
    warm_start: bool = _f(True, "start the head from the quick model fitted on cached embeddings")
    seed: int = _f(0, "random seed")
    mixed_precision: str | None = _f(None, "finetune on a GPU: fp16, bf16 or no (default: accelerate launch's "
                                           "--mixed_precision, else fp16 with CUDA; a CPU always trains in full "
                                           "precision)")
    keep_best: bool = _f(True, "save the best of the start and every epoch on the validation split, not the last")
    bn_stats: str | None = _f(None, "batch norm statistics while training: frozen (the default with a warm head) "
                                    "keeps the pretrained ones, train updates them from each batch")
    # 0.1: on the hard set's 3 seeds the warm-started fine-tune then keeps learning (its validation loss falls every
    # epoch) and ends at or above its start and plain fastai on every seed; without it one seed ended a photo below
    # the quick model (bench/RESULTS.md, "Hard set").
    label_smoothing: float = _f(0.1, "label smoothing of the training loss (0: plain cross-entropy)")

    @classmethod
    def for_machine(cls, cuda: bool | None = None, **overrides) -> TrainSettings:
        """The starting values for this machine (CPU- or GPU-sized), with `overrides`."""
        sized = GPU_DEFAULTS if (cuda_likely() if cuda is None else cuda) else CPU_DEFAULTS
        return cls(**{**sized, **overrides})

    def updated(self, **changes) -> TrainSettings:
        """A copy with `changes` (names of fields; an unknown one is a DragonError)."""
        unknown = sorted(set(changes) - set(field_names()))
        if unknown:
            raise DragonError(f"Unknown training setting(s): {', '.join(unknown)}.")
        return replace(self, **changes)

    def check(self) -> TrainSettings:
        """Itself, or a DragonError naming the first setting out of range."""
        if self.epochs < 1:
            raise DragonError("Train for at least one epoch.")
        for key, (lo, hi) in LIMITS.items():
            value = getattr(self, key)
            if value is not None and not lo <= value <= hi:
                raise DragonError(f"{key.replace('_', ' ')} must be between {lo:g} and {hi:g}, not {value!r}.")
        if self.schedule not in SCHEDULES:
            raise DragonError(f"Unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}.")
        if self.augment not in AUGMENT_PRESETS:
            raise DragonError(f"Unknown augmentation preset {self.augment!r}; choose one of "
                              f"{', '.join(AUGMENT_PRESETS)}.")
        if self.bn_stats is not None and self.bn_stats not in BN_STATS:
            raise DragonError(f"bn_stats must be 'frozen' or 'train', not {self.bn_stats!r}.")
        return self

    def as_dict(self) -> dict:
        return asdict(self)


def cuda_likely() -> bool:
    """torch's answer when torch is already imported; else whether an NVIDIA driver is loaded.

    Choosing starting values must not import torch: that alone costs a command seconds.
    """
    if "torch" in sys.modules:
        return sys.modules["torch"].cuda.is_available()
    return Path("/proc/driver/nvidia/version").exists()


def field_names() -> list[str]:
    return [f.name for f in fields(TrainSettings)]


def help_for(name: str) -> str:
    """The one description of a setting (CLI help)."""
    return next(f.metadata["help"] for f in fields(TrainSettings) if f.name == name)


def choose_precision(requested: str | None = None, cuda: bool | None = None) -> tuple[str, str | None]:
    """(precision to train in, a warning or None).

    An explicit request (our `--mixed-precision`) wins; else the one
    `accelerate launch --mixed_precision` (or its config) put in
    ACCELERATE_MIXED_PRECISION; else fp16 on a CUDA GPU and full precision on
    a CPU. fastai's mixed precision autocasts on CUDA only, so on a CPU any
    request becomes full precision, with a warning saying so.
    """
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    source = "--mixed-precision"
    wanted = (requested or "").strip().lower()
    if wanted in ("", "auto"):
        wanted = os.environ.get("ACCELERATE_MIXED_PRECISION", "").strip().lower()
        source = "accelerate's mixed_precision"
    if wanted in ("", "auto"):
        return ("fp16" if cuda else "no"), None
    if wanted not in PRECISIONS:
        raise DragonError(f"Mixed precision {wanted!r} (from {source}) is not supported; choose one of "
                          f"{', '.join(PRECISIONS)}.")
    if wanted != "no" and not cuda:
        return "no", f"Mixed precision {wanted} needs a CUDA GPU; trained in full precision on the CPU."
    return wanted, None


def default_settings(cuda: bool | None = None) -> dict:
    """The machine-sized starting values (`TrainSettings.for_machine`) as the Train tab and the CLI show them."""
    if cuda is None:
        cuda = cuda_likely()
    m = TrainSettings.for_machine(cuda)
    return {"device": "cuda" if cuda else "cpu", "size": m.size, "batch_size": m.batch_size, "epochs": m.epochs}


# What the CPU settings cost. Time: a fine-tune's whole process on a quiet 2-core machine, a fixed part
# (start-up, embeddings, the start's score, export and the int8 check) plus a part per training image and
# epoch that scales with the pixels. Measured on the hard set (bench/RESULTS.md, "Hard set"): 49.0 s for
# the default (224 px, 3 epochs, 161 training photos) on a quiet machine; in one run on the shared machine
# 160 px took 188 s where 224 px took 225 s, which puts two thirds of the time in the fixed part.
# Accuracy: 160 px scored 2 held-out points below 224 px there (0.63 vs 0.65), and an earlier run 4 (its
# start, the quick model at 160 px, 0.64 vs 0.68 at 224 px).
CPU_FIXED_SECONDS = 33.0
CPU_SECONDS_PER_IMAGE_EPOCH_224 = 0.034
POINTS_LOST_AT_160 = "2-4"


def setting_note(size: int | None, epochs: int | None, n_train: int | None = None, cuda: bool | None = None) -> str:
    """One line for the Train tab: what the chosen fine-tune setting costs in time and accuracy on this CPU."""
    d = default_settings(cuda)
    size, epochs = int(size or d["size"]), int(epochs or d["epochs"])
    if d["device"] == "cuda":
        return f"GPU: {size} px, {epochs} epochs, mixed precision. GPU times were not measured here."
    n = n_train or 100

    def secs(px: int) -> float:
        return CPU_FIXED_SECONDS + CPU_SECONDS_PER_IMAGE_EPOCH_224 * (px / 224) ** 2 * n * epochs

    where = f"for {n} training images on 2 CPU cores"
    runs = f"{epochs} epoch{'' if epochs == 1 else 's'}"
    if size >= 224:
        return (f"Accurate: {size} px, {runs}, ~{secs(size):.0f} s {where}; starts from the quick model "
                f"and keeps the best epoch. Fast: 160 px, ~{secs(160):.0f} s, usually {POINTS_LOST_AT_160} points less.")
    return (f"Fast: {size} px, {runs}, ~{secs(size):.0f} s {where} (224 px: ~{secs(224):.0f} s); usually "
            f"{POINTS_LOST_AT_160} points less than 224 px (it starts from a quick model fitted at {size} px).")
