"""Embeddings from a frozen pretrained body, and the quick model built on them.

Each active image is embedded once per (image sha256, backbone, size) and
cached in SQLite under `config.cache_root()`; batches are committed as they
finish, so an interrupted pass resumes where it stopped. A logistic regression
on the embeddings is the quick model: fitted in seconds on a CPU, exported as
one ONNX graph (body + linear head + softmax), evaluated and used for
prediction exactly like a fine-tuned model. Out-of-fold probabilities from
k such heads let Clean judge every image by a model that never saw it.
"""

from __future__ import annotations

import ctypes
import sqlite3
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from dragonclf import backbones, config, items as items_mod, modelstore, oof
from dragonclf.errors import DragonError
from dragonclf.preprocess import load_image, to_array


class Cancelled(DragonError):
    """The user pressed Stop; work done so far is kept."""


def _report(progress, fraction, message):
    if progress is not None:
        progress(min(max(fraction, 0.0), 1.0), message)


# ---- embedding cache -------------------------------------------------------

def _cache_db() -> sqlite3.Connection:
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
def _body(name: str):
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


def embed(items, backbone: str = backbones.DEFAULT_BACKBONE, size: int | None = None, batch_size: int = 32,
          progress=None, cancel: threading.Event | None = None) -> np.ndarray:
    """(N, D) float32 embeddings of `items` (anything with .path and .sha256), cached."""
    b = backbones.get_backbone(backbone)
    size = size or b.size
    items = list(items)
    con = _cache_db()
    try:
        found = {}
        shas = sorted({it.sha256 for it in items})
        for i in range(0, len(shas), 500):
            chunk = shas[i:i + 500]
            q = f"SELECT sha256, vec FROM embeddings WHERE backbone=? AND size=? AND sha256 IN ({','.join('?' * len(chunk))})"
            for sha, vec in con.execute(q, [backbone, size, *chunk]):
                found[sha] = np.frombuffer(vec, dtype=np.float32)
        todo, seen = [], set(found)
        for it in items:
            if it.sha256 not in seen:
                todo.append(it)
                seen.add(it.sha256)
        if todo:
            if use_onnx_body():
                from dragonclf import onnxbody

                body, device = onnxbody.get_body(backbone, size), "onnx"
            else:
                import torch

                body = _body(backbone)
                device = "cuda" if torch.cuda.is_available() else "cpu"
                body.to(device)
            with _malloc_top_pad():  # around the whole pass: between batches the heap must stay
                _embed_batches(todo, body, b, size, batch_size, device, con, found, backbone, progress, cancel)
        else:
            _report(progress, 1.0, f"All {len(items)} embeddings cached ({backbone})")
        if not items:
            return np.zeros((0, b.features), np.float32)
        return np.stack([found[it.sha256] for it in items]).astype(np.float32)
    finally:
        con.close()


def use_onnx_body() -> bool:
    """Embed with ONNX Runtime on a cached ONNX body (no torch import, ~3x faster forward on a CPU),
    except on a machine with an NVIDIA GPU, where torch's CUDA forward wins."""
    return not Path("/proc/driver/nvidia/version").exists()


def onnx_body_ready(backbone: str, size: int) -> bool:
    from dragonclf import onnxbody

    return onnxbody.body_path(backbone, size).is_file()


def _embed_batches(todo, body, b, size, batch_size, device, con, found, backbone, progress, cancel) -> int:
    """Embed `todo` batch by batch, committing each batch to the cache as it finishes."""
    done = 0
    for start in range(0, len(todo), batch_size):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"Stopped after embedding {done} of {len(todo)} new images (kept in the cache).")
        batch = todo[start:start + batch_size]
        x = np.stack([to_array(load_image(it.path), size, b.mean, b.std) for it in batch])
        if device == "onnx":
            with _body_lock:
                vecs = body(x)
        else:
            import torch

            with _body_lock, torch.inference_mode():
                vecs = body(torch.from_numpy(x).to(device)).float().cpu().numpy()
        con.executemany(
            "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)",
            [(it.sha256, backbone, size, v.astype(np.float32).tobytes()) for it, v in zip(batch, vecs)],
        )
        con.commit()  # per batch: an interrupted pass resumes from here
        for it, v in zip(batch, vecs):
            found[it.sha256] = v
        done += len(batch)
        _report(progress, done / len(todo), f"Embedding images: {done}/{len(todo)} ({backbone})")
    return done


# ---- the linear head -------------------------------------------------------

@dataclass
class LinearHead:
    """softmax(X @ weight.T + bias) over `labels`; standardisation folded in."""

    labels: list[str]
    weight: np.ndarray  # (K, D)
    bias: np.ndarray  # (K,)

    def probs(self, X: np.ndarray) -> np.ndarray:
        z = X @ self.weight.T + self.bias
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


def fit_head(X: np.ndarray, y: list[str], labels: list[str], C: float = 1.0) -> LinearHead:
    """Logistic regression on standardised embeddings, as one linear layer over `labels`.

    The objective of scikit-learn's `LogisticRegression(C=C)` (lbfgs: multinomial
    for 3+ classes, one sigmoid row for 2), minimised here with scipy's L-BFGS:
    the same optimum, without importing scikit-learn (seconds in a fresh process).
    Labels absent from `y` (possible in a cross-validation fold) get a
    bias so low that their probability is ~0.
    """
    present = sorted(set(y))
    mu, sd = X.mean(axis=0), X.std(axis=0) + 1e-6
    coef, icpt = _logistic((X - mu) / sd, np.array([present.index(v) for v in y]), len(present), C)
    if len(present) == 2:  # one row for two classes: softmax([0, z]) == sigmoid(z)
        coef = np.vstack([np.zeros_like(coef), coef])
        icpt = np.array([0.0, icpt[0]])
    W = np.zeros((len(labels), X.shape[1]))
    b = np.full(len(labels), -30.0)
    for row, cls in enumerate(present):
        k = labels.index(cls)
        W[k] = coef[row] / sd
        b[k] = icpt[row] - (coef[row] / sd) @ mu
    return LinearHead(list(labels), W.astype(np.float32), b.astype(np.float32))


def _logistic(Xs: np.ndarray, yi: np.ndarray, k: int, C: float) -> tuple[np.ndarray, np.ndarray]:
    """(coef, intercept) minimising C * sum(cross-entropy) + ||coef||^2 / 2; intercepts unpenalised."""
    from scipy.optimize import minimize

    n, d = Xs.shape
    if k < 2:
        raise DragonError("A classifier needs at least two labels with images.")
    X64 = Xs.astype(np.float64)
    if k == 2:
        t = 2.0 * yi - 1.0

        def f(w):
            z = X64 @ w[:d] + w[d]
            m = -t * z
            loss = np.logaddexp(0.0, m).sum()
            g = -t / (1.0 + np.exp(-m)) * C  # d/dz
            grad = np.concatenate([X64.T @ g + w[:d], [g.sum()]])
            return C * loss + 0.5 * w[:d] @ w[:d], grad

        w = minimize(f, np.zeros(d + 1), jac=True, method="L-BFGS-B",
                     options={"maxiter": 2000, "gtol": 1e-4 * C * n, "ftol": 64 * np.finfo(float).eps}).x
        return w[:d][None], w[d:]
    Y = np.zeros((n, k))
    Y[np.arange(n), yi] = 1.0

    def f(w):
        W, b = w[:k * d].reshape(k, d), w[k * d:]
        z = X64 @ W.T + b
        z -= z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1, keepdims=True))
        loss = -(Y * (z - lse)).sum()
        G = (np.exp(z - lse) - Y) * C  # d/dz
        grad = np.concatenate([(G.T @ X64 + W).ravel(), G.sum(axis=0)])
        return C * loss + 0.5 * (W * W).sum(), grad

    w = minimize(f, np.zeros(k * d + k), jac=True, method="L-BFGS-B",
                 options={"maxiter": 2000, "gtol": 1e-4 * C * n, "ftol": 64 * np.finfo(float).eps}).x
    return w[:k * d].reshape(k, d), w[k * d:]


def head_module(name: str, head: LinearHead):
    """The body and head as one torch module (image batch -> logits), for ONNX export."""
    import torch
    from torch import nn

    lin = nn.Linear(head.weight.shape[1], len(head.labels))
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(head.weight))
        lin.bias.copy_(torch.from_numpy(head.bias))
    return nn.Sequential(backbones.create_body(name), lin).eval()


# ---- out-of-fold probabilities (for Clean) ----------------------------------

warm_heads: dict = {}  # (dataset, backbone, size, k, seed, C) -> oof.Warm: the last pass's heads, for the next

@dataclass
class OutOfFold:
    ids: list[str]  # image ids, in the order of the rows
    given: list[str]  # each image's current label
    labels: list[str]  # column order of `probs`
    probs: np.ndarray  # (N, K): probabilities from a head that never saw the image

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {i: dict(zip(self.labels, map(float, p))) for i, p in zip(self.ids, self.probs)}


def out_of_fold_probs(store_or_rows, backbone: str = backbones.DEFAULT_BACKBONE, k: int = 5, seed: int = 0,
                      size: int | None = None, C: float = 1.0, progress=None, cancel=None,
                      dataset: str | None = None) -> OutOfFold:
    """Per-image probabilities from k quick models, each scoring the fold it did not see.

    All active images take part regardless of their train/valid split: every
    image gets judged. Stratified folds when each label has k images, else
    plain shuffled folds (a label with fewer images than folds still works).
    Results come in id order, whatever order the images were added in.
    `C`: the heads' inverse regularisation strength (see `fit_head`).
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    name, items = items_mod.collect(store_or_rows, dataset)
    # Folds follow the images' ids, not the order they arrived in (concurrent
    # downloads store them in any order): the same dataset, the same folds.
    items.sort(key=lambda it: it.id)
    labels = items_mod.label_order(items)
    if len(labels) < 2:
        items_mod.check_trainable(name, items, need_valid=False)
    X = embed(items, backbone, size=size, progress=progress, cancel=cancel)
    y = np.array([it.label for it in items])
    k = max(2, min(k, len(items)))
    if len(items) >= oof.LARGE:  # folds by id, shared-weight solver, warm refits: minutes at 100,000 images
        key = (name, backbone, size, k, seed, C)
        probs, warm_heads[key] = oof.out_of_fold(X, [it.id for it in items], list(y), labels, k=k, seeds=(seed,), C=C,
                                            warm=warm_heads.get(key))
        while len(warm_heads) > 8:  # a few datasets' worth (each ~1 MB)
            warm_heads.pop(next(iter(warm_heads)))
        return OutOfFold([it.id for it in items], list(y), labels, probs)
    counts = np.unique(y, return_counts=True)[1]
    folds = (StratifiedKFold(k, shuffle=True, random_state=seed) if counts.min() >= k
             else KFold(k, shuffle=True, random_state=seed))
    probs = np.zeros((len(items), len(labels)), np.float32)
    for tr, te in folds.split(X, y):
        if len(set(y[tr])) < 2:  # a fold with one label left cannot be fitted: fall back to its prior
            probs[te] = [[float(lab == y[tr][0]) for lab in labels]] * len(te)
            continue
        probs[te] = fit_head(X[tr], list(y[tr]), labels, C=C).probs(X[te])
    return OutOfFold([it.id for it in items], list(y), labels, probs)


# ---- the quick model as a saved model --------------------------------------

def fit_quick(store_or_rows, backbone: str = backbones.DEFAULT_BACKBONE, dataset: str | None = None,
              valid_share: float | None = None, size: int | None = None, C: float = 1.0, progress=None, cancel=None,
              save: bool = True):
    """Fit the quick model on the train split, score it on the valid split, save it.

    Returns a `train.TrainResult`; its `model_dir` is the finished model folder.
    """
    from dragonclf.train import TrainResult, is_main_process

    t0 = time.perf_counter()
    name, items = items_mod.collect(store_or_rows, dataset, valid_share)
    warnings = items_mod.check_trainable(name, items)
    b = backbones.get_backbone(backbone)
    if not b.pretrained:
        raise DragonError(f"The quick model needs a pretrained backbone; {backbone} has none.")
    size = size or b.size
    if not (use_onnx_body() and onnx_body_ready(backbone, size)):
        backbones.ensure_weights(backbone)  # imports torch: skipped once the ONNX body is cached
    labels = items_mod.label_order(items)
    X = embed(items, backbone, size=size, progress=lambda f, m: _report(progress, 0.9 * f, m), cancel=cancel)
    tr = [i for i, it in enumerate(items) if it.split == "train"]
    va = [i for i, it in enumerate(items) if it.split == "valid"]
    head = fit_head(X[tr], [items[i].label for i in tr], labels, C=C)
    probs = head.probs(X[va])
    from dragonclf.interpret import metrics_from_probs

    metrics = metrics_from_probs([items[i].label for i in va], probs, labels)
    model_dir = None
    if save and is_main_process():
        _report(progress, 0.95, "Exporting the quick model to ONNX")
        model_id = modelstore.new_model_id("quick", backbone)
        meta = {
            "format": modelstore.FORMAT, "dataset": name, "mode": "quick", "backbone": backbone,
            "labels": labels, "input_size": size, "resize": "squish", "mean": list(b.mean), "std": list(b.std),
            "metrics": metrics, "created": modelstore.now_iso(), "training_data": items_mod.summary(items),
            "params": {"C": C, "valid_share": valid_share}, "files": {"onnx": "model.onnx", "pkl": None},
            "warnings": warnings,
        }
        with modelstore.training_lock(name), modelstore.staging(name, model_id) as tmp:
            if use_onnx_body():
                from dragonclf import onnxbody, quantize

                onnxbody.write_quick_model(backbone, size, head.weight, head.bias, tmp / "model.onnx")
                # The int8 body (quantised once per install) with this head: served if as accurate.
                valid = [items[i] for i in va]
                try:
                    onnxbody.write_quick_variant(backbone, size, head.weight, head.bias, tmp / quantize.INT8_FILE,
                                                 True)
                    a8 = quantize.accuracy(tmp / quantize.INT8_FILE, [it.path for it in valid],
                                           [it.label for it in valid], labels, size, b.mean, b.std)
                    meta["variant"] = quantize.pick(metrics["accuracy"] if valid else float("nan"), a8)
                except DragonError as e:
                    meta["variant"] = {"onnx": "model.onnx", "variant": "float32", "why": str(e),
                                       "valid_accuracy": {"float32": metrics["accuracy"], "int8": None}}
                meta["files"]["onnx"] = meta["variant"]["onnx"]
            else:
                modelstore.export_onnx(head_module(backbone, head), size, tmp / "model.onnx")
            np.savez(tmp / "head.npz", weight=head.weight, bias=head.bias, labels=np.array(labels))
            modelstore.write_json(tmp / "model.json", meta)
        model_dir = modelstore.dataset_dir(name) / model_id
    _report(progress, 1.0, f"Quick model: accuracy {metrics['accuracy']:.3f}")
    return TrainResult(model_dir=model_dir, dataset=name, backbone=backbone, mode="quick", metrics=metrics,
                       history=[], seconds=time.perf_counter() - t0, warnings=warnings)
