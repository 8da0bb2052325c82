"""Benchmark: the Clean pass's out-of-fold heads and the quick model's head at 10,000 and 100,000 images.

Embeddings are synthetic (10 labels, 1,280 features like EfficientNet-Lite0's: a class centre plus
noise, 2% of the labels flipped), so the figures are the heads' cost alone; embedding a picture
costs the same whatever the dataset's size (bench_train.py measures it). Each size runs in its own
process so its peak RSS is its own. For each size:
- `oof.out_of_fold`: one run of 5 folds (the Clean pass on a large dataset does two shuffles on each
  of two backbones: four such runs), cold, then a warm refit after 20 relabels;
- the quick model's head (`features.fit_head`, scikit-learn) on the 80% train split;
- at 10,000 only: the small-dataset path (scikit-learn's LogisticRegression per fold, as
  `features.out_of_fold_probs` does below `oof.LARGE`), for comparison.
Run: .venv/bin/python bench/bench_oof.py [--sizes 10000,100000] [--no-sklearn]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def data(n: int, d: int = 1280, k: int = 10, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (k, d)).astype(np.float32)
    y = rng.integers(0, k, n)
    X = np.empty((n, d), np.float32)
    for i in range(0, n, 10_000):  # in slices: a float64 draw of the whole matrix would double the peak
        X[i:i + 10_000] = centres[y[i:i + 10_000]] * 0.15 + rng.standard_normal((len(y[i:i + 10_000]), d), np.float32)
    labels = [f"c{i}" for i in range(k)]
    given = [labels[i] for i in y]
    for i in rng.choice(n, n // 50, replace=False):
        given[i] = labels[(y[i] + 1) % k]
    return X, given, labels, [f"{rng.integers(1 << 62):016x}" for _ in range(n)]


def one_size(n: int, sklearn_folds: bool) -> dict:
    import numpy as np

    from dragonclf import features, oof

    X, given, labels, ids = data(n)
    out = {"n": n, "loadavg_start": os.getloadavg()[0]}
    t, c = time.perf_counter(), cpu_s()
    probs, warm = oof.out_of_fold(X.copy(), ids, given, labels, k=5, seeds=(0,))
    out.update(oof_s=time.perf_counter() - t, oof_cpu_s=cpu_s() - c, oof_iterations=warm.iterations,
               oof_agrees_with_given=float(np.mean(probs.argmax(1) == [labels.index(g) for g in given])))
    edited = list(given)
    for i in range(0, 20 * 97, 97):
        edited[i] = labels[(labels.index(edited[i]) + 1) % len(labels)]
    t, c = time.perf_counter(), cpu_s()
    _, again = oof.out_of_fold(X.copy(), ids, edited, labels, k=5, seeds=(0,), warm=warm)
    out.update(refit_s=time.perf_counter() - t, refit_cpu_s=cpu_s() - c, refit_folds=again.refitted,
               refit_iterations=again.iterations)
    train = np.arange(n) % 5 != 0
    t, c = time.perf_counter(), cpu_s()
    features.fit_head(X[train], [g for g, keep in zip(given, train) if keep], labels, C=1.0)
    out.update(quick_head_s=time.perf_counter() - t, quick_head_cpu_s=cpu_s() - c)
    if sklearn_folds:
        from sklearn.model_selection import StratifiedKFold

        y = np.array(given)
        t, c = time.perf_counter(), cpu_s()
        for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(X, y):
            features.fit_head(X[tr], list(y[tr]), labels, C=1e-3).probs(X[te])
        out.update(sklearn_oof_s=time.perf_counter() - t, sklearn_oof_cpu_s=cpu_s() - c)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["loadavg_end"] = os.getloadavg()[0]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--no-sklearn", action="store_true")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--log", default="oof.jsonl")
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one_size(a.one, not a.no_sklearn and a.one <= 10000)))
        return
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for n in (int(s) for s in a.sizes.split(",")):
        args = [sys.executable, __file__, "--one", str(n)] + (["--no-sklearn"] if a.no_sklearn else [])
        line = subprocess.run(args, env=env, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        print(line, flush=True)
        with open(a.log, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
