"""The quick model: a linear head on cached embeddings (see `embeddings`).

A logistic regression on the embeddings is the quick model: fitted in seconds on a CPU, exported as
one ONNX graph (body + linear head + softmax), evaluated and used for
prediction exactly like a fine-tuned model. Out-of-fold probabilities from
k such heads let Clean judge every image by a model that never saw it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from dragonclf import backbones, distributed, items as items_mod, modelstore, oof
from dragonclf.embeddings import embed, embed_to_cache, onnx_body_ready, use_onnx_body
from dragonclf.errors import DragonError
from dragonclf.modelstore import TrainResult
from dragonclf.progress import Cancelled, report

__all__ = ["Cancelled", "LinearHead", "OutOfFold", "embed", "fit_head", "fit_quick", "head_module",
           "int8_accuracy", "out_of_fold_probs", "warm_head", "warm_heads"]  # embed, Cancelled: the cache's, re-exported


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


SMALL_FIT = 20_000  # rows below which a head is fitted with one BLAS thread


def fit_head(X: np.ndarray, y: list[str], labels: list[str], C: float = 1.0) -> LinearHead:
    """Logistic regression on standardised embeddings, as one linear layer over `labels`.

    The objective of scikit-learn's `LogisticRegression(C=C)` (lbfgs: multinomial
    for 3+ classes, one sigmoid row for 2), minimised here with scipy's L-BFGS:
    the same optimum, without importing scikit-learn (seconds in a fresh process).
    Labels absent from `y` (possible in a cross-validation fold) get a
    bias so low that their probability is ~0.
    """
    from threadpoolctl import threadpool_limits

    present = sorted(set(y))
    mu, sd = X.mean(axis=0), X.std(axis=0) + 1e-6
    # Up to a few thousand rows these are small matrix products, which BLAS threads only slow down (they
    # wait on each other and spin against other processes): on the hard set's 161 x 1,280 embeddings the
    # fit took 0.09 s on one thread and 0.97 s on two, the machine shared (bench/RESULTS.md).
    with threadpool_limits(1 if len(X) < SMALL_FIT else None, user_api="blas"):
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

    Returns a `TrainResult`; its `model_dir` is the finished model folder.
    """
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
    X = embed(items, backbone, size=size, progress=lambda f, m: report(progress, 0.9 * f, m), cancel=cancel)
    tr = [i for i, it in enumerate(items) if it.split == "train"]
    va = [i for i, it in enumerate(items) if it.split == "valid"]
    head = fit_head(X[tr], [items[i].label for i in tr], labels, C=C)
    probs = head.probs(X[va])
    from dragonclf.interpret import metrics_from_probs

    metrics = metrics_from_probs([items[i].label for i in va], probs, labels)
    model_dir = None
    if save and distributed.is_main():
        report(progress, 0.95, "Exporting the quick model to ONNX")

        def write_files(tmp):
            more = {}
            if use_onnx_body():
                from dragonclf import onnxbody, quantize

                onnxbody.write_quick_model(backbone, size, head.weight, head.bias, tmp / "model.onnx")
                # The int8 body (quantised once per install) with this head: served if as accurate.
                valid = [items[i] for i in va]
                try:
                    onnxbody.write_quick_variant(backbone, size, head.weight, head.bias, tmp / quantize.INT8_FILE,
                                                 True)
                    a8 = int8_accuracy(head, valid, backbone, size)
                    more["variant"] = quantize.pick(metrics["accuracy"] if valid else float("nan"), a8)
                except DragonError as e:
                    more["variant"] = {"onnx": "model.onnx", "variant": "float32", "why": str(e),
                                       "valid_accuracy": {"float32": metrics["accuracy"], "int8": None}}
            else:
                modelstore.export_onnx(head_module(backbone, head), size, tmp / "model.onnx")
            np.savez(tmp / "head.npz", weight=head.weight, bias=head.bias, labels=np.array(labels))
            return more

        with modelstore.training_lock(name):
            model_dir = modelstore.write_model(
                name, mode="quick", backbone=backbone, labels=labels, size=size, mean=b.mean, std=b.std,
                metrics=metrics, training_data=items_mod.summary(items), params={"C": C, "valid_share": valid_share},
                warnings=warnings, write_files=write_files)
    report(progress, 1.0, f"Quick model: accuracy {metrics['accuracy']:.3f}")
    return TrainResult(model_dir=model_dir, dataset=name, backbone=backbone, mode="quick", metrics=metrics,
                       history=[], seconds=time.perf_counter() - t0, warnings=warnings)


def int8_accuracy(head: LinearHead, valid, backbone: str, size: int, chunk: int = 64) -> float:
    """Accuracy on `valid` (items) of model.int8.onnx as `onnxbody.write_quick_variant` writes it: the int8
    body's embeddings through `head` (the same arithmetic as the graph, on the body's session, which a
    process makes once, in chunks, so memory stays flat)."""
    from dragonclf import onnxbody
    from dragonclf.preprocess import to_batch

    if not valid:
        return float("nan")
    b = backbones.get_backbone(backbone)
    body = onnxbody.get_body(backbone, size, int8=True)
    right = 0
    for i in range(0, len(valid), chunk):
        part = valid[i:i + chunk]
        guess = head.probs(body(to_batch([it.path for it in part], size, b.mean, b.std))).argmax(axis=1)
        right += sum(head.labels[g] == it.label for g, it in zip(guess, part))
    return right / len(valid)


def warm_head(items, labels: list[str], backbone: str, size: int, cancel=None) -> LinearHead:
    """The quick-model head that warm-starts fine-tuning, fitted on `items`, the same on every rank.

    Under a launcher all ranks embed the images into the cache together; rank 0
    reads them back and fits the logistic regression; the others receive the head.
    """
    if not distributed.active():
        X = embed(items, backbone, size=size, cancel=cancel)
        return fit_head(X, [it.label for it in items], labels)
    embed_to_cache(items, backbone, size=size, cancel=cancel)

    def fit():
        X = embed(items, backbone, size=size, cancel=cancel)  # all cached now: a read
        return fit_head(X, [it.label for it in items], labels)

    return distributed.run_on_main(fit)
