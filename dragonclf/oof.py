"""Out-of-fold probabilities for large datasets: minutes at 100,000 embeddings, memory bounded, warm refits.

The Clean pass fits strongly regularised softmax heads (the objective of
scikit-learn's `LogisticRegression(C)`: C x summed cross-entropy + half the squared
weights, bias free) on k folds. For tens of thousands of images this module does
the same job with less:
- one float32 copy of the embeddings, standardised in place; folds are 0/1 sample
  weights over all rows, never copies of X (memory: X plus a few n x K arrays);
- L-BFGS (scipy) on float32 matrix products;
- folds from each image's id (a hash), so adding, trashing or relabelling a few
  images leaves every other image in its fold;
- warm starts: every fold starts from the weights the last pass left (`Warm`), and a
  fold whose training images and labels did not change is not refitted at all.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import numpy as np

LARGE = 2000  # from this many images the Clean pass uses this module (below: scikit-learn, stratified folds)


def fold_of(ids: list[str], k: int, seed: int) -> np.ndarray:
    """Each image's fold in 0..k-1, from its id and the seed: stable when other images come and go."""
    return np.array([int.from_bytes(hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=8).digest(), "little") % k
                     for i in ids], dtype=np.int64)


def standardise(X: np.ndarray) -> np.ndarray:
    """X as float32 with zero mean and unit variance per column, in place when X is float32 already."""
    X = np.asarray(X, dtype=np.float32)
    mu = X.mean(axis=0, dtype=np.float64).astype(np.float32)
    X -= mu
    sd = np.sqrt((X * X).mean(axis=0, dtype=np.float64)).astype(np.float32) + 1e-6
    X /= sd
    return X


def fit_softmax(X: np.ndarray, y: np.ndarray, n_labels: int, C: float, weight: np.ndarray | None = None,
                start: np.ndarray | None = None, gtol: float = 1e-4, max_iter: int = 500) -> tuple[np.ndarray, int]:
    """Weights (K, D + 1: the last column the bias) minimising C * sum_i w_i CE_i + |W|^2 / 2; and the iterations.

    With two labels C is halved: two softmax rows penalised together equal one logistic row penalised by C.
    """
    from scipy.optimize import minimize

    n, d = X.shape
    K = n_labels
    w = np.ones(n, np.float32) if weight is None else weight.astype(np.float32)
    # Scaled as scikit-learn scales it (divided by C * sum of weights: a mean loss), so `gtol` means what its
    # `tol` means whatever the size of the dataset.
    C = C * (0.5 if K == 2 else 1.0)
    Cw = w / float(w.sum())
    ridge = 1.0 / (C * float(w.sum()))
    rows = np.arange(n)

    def objective(theta):
        W = theta.reshape(K, d + 1)
        W32 = W.astype(np.float32)
        Z = X @ W32[:, :d].T
        Z += W32[:, d]
        Z -= Z.max(axis=1, keepdims=True)
        E = np.exp(Z)
        S = E.sum(axis=1)
        loss = np.log(S) - Z[rows, y]
        value = float(Cw @ loss) + 0.5 * ridge * float((W[:, :d] ** 2).sum())
        E /= S[:, None]
        E[rows, y] -= 1.0
        E *= Cw[:, None]
        grad = np.empty_like(W)
        grad[:, :d] = (E.T @ X).astype(np.float64) + ridge * W[:, :d]
        grad[:, d] = E.sum(axis=0, dtype=np.float64)
        return value, grad.ravel()

    theta0 = np.zeros(K * (d + 1)) if start is None else start.astype(np.float64).ravel()
    res = minimize(objective, theta0, jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "gtol": gtol, "maxcor": 20})
    return res.x.reshape(K, d + 1), int(res.nit)


def predict(X: np.ndarray, W: np.ndarray) -> np.ndarray:
    d = X.shape[1]
    Z = X @ W[:, :d].T.astype(np.float32) + W[:, d].astype(np.float32)
    Z -= Z.max(axis=1, keepdims=True)
    E = np.exp(Z)
    return E / E.sum(axis=1, keepdims=True)


@dataclass
class Warm:
    """What one pass leaves for the next: per (seed, fold) the weights and a digest of what they were fitted on."""

    labels: list[str] = field(default_factory=list)
    weights: dict = field(default_factory=dict)  # (seed, fold) -> (K, D + 1)
    digests: dict = field(default_factory=dict)  # (seed, fold) -> digest of the fold's training ids and labels
    refitted: int = 0  # folds fitted in the last pass (the others were reused as they were)
    iterations: int = 0


def _digest(ids, y, mask) -> str:
    h = hashlib.blake2b(digest_size=16)
    for i in np.flatnonzero(mask):
        h.update(f"{ids[i]}={y[i]};".encode())
    return h.hexdigest()


def out_of_fold(X: np.ndarray, ids: list[str], given: list[str], labels: list[str], k: int = 5,
                seeds: tuple[int, ...] = (0,), C: float = 1e-3, warm: Warm | None = None, workers: int | None = None,
                progress=None) -> tuple[np.ndarray, Warm]:
    """(N, K) probabilities, each row from heads that never saw that image's label; and the state for a warm refit.

    `X` is standardised in place when it is float32 (pass a copy to keep it). Folds come from the ids. Folds are
    fitted `workers` at a time (default: one per core), each with single-threaded BLAS: on a shared machine,
    BLAS threads that wait for each other cost more than they bring.
    """
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    X = standardise(X)
    y = np.array([labels.index(g) for g in given], dtype=np.int64)
    same_labels = warm is not None and warm.labels == list(labels)
    out = Warm(list(labels))
    folds = {seed: fold_of(ids, k, seed) for seed in seeds}
    jobs = [(seed, f) for seed in seeds for f in range(k)]
    digests = {(seed, f): _digest(ids, y, folds[seed] != f) for seed, f in jobs}
    todo = []
    for job in jobs:
        start = warm.weights.get(job) if same_labels else None
        if start is not None and warm.digests.get(job) == digests[job]:
            out.weights[job] = start  # nothing this fold learns from has changed
        else:
            todo.append((job, start))
    done = [len(jobs) - len(todo)]

    def fit(job, start):
        seed, f = job
        W, nit = fit_softmax(X, y, len(labels), C, weight=(folds[seed] != f).astype(np.float32), start=start)
        out.weights[job] = W
        out.refitted += 1
        out.iterations += nit
        done[0] += 1
        if progress is not None:
            progress(done[0] / len(jobs), f"Out-of-fold heads: {done[0]}/{len(jobs)}")

    with threadpool_limits(limits=1, user_api="blas"):
        if todo and todo[0][1] is None:
            fit(*todo.pop(0))  # a cold start once; the other folds share most of its images and start from it
        first = next(iter(out.weights.values()), None)
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            for future in [pool.submit(fit, job, first if start is None else start) for job, start in todo]:
                future.result()
        probs = np.zeros((len(ids), len(labels)), np.float32)
        for seed, f in jobs:
            test = folds[seed] == f
            if test.any():
                probs[test] += predict(X[test], out.weights[(seed, f)])
    out.digests = digests
    return probs / len(seeds), out
