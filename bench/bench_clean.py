"""Mislabel finding: our ranking vs fastai's cleaner ranking vs cleanlab, on the demo with 10% labels flipped.

    .venv/bin/python bench/bench_clean.py                 # ~3 min on 2 cores (fastai fine_tune dominates)
    .venv/bin/python bench/bench_clean.py --seeds 10      # ours and cleanlab over 10 flip seeds
    .venv/bin/python bench/bench_clean.py --no-fastai     # skip the fine-tune

Flip 10% of the demo's labels at random (seeded), then take the top k
suspects of each ranking, k = the number flipped:

- ours: dragonclf.clean (out-of-fold, strongly regularised linear heads on two offline backbones'
  embeddings, averaged; confident-learning rule, then margin);
- cleanlab: `cleanlab.filter.find_label_issues` (AGPL: installed for this benchmark only, see
  requirements-bench.txt) on the same out-of-fold probabilities ours uses, and on the old default heads'
  (one backbone, C=1) alone;
- fastai: ImageClassifierCleaner's ranking: loss of a `fine_tune`d model on the very images it trained on
  (train and valid, augmentation on for train, as the widget computes it).

Also the wall time of a full suspects pass (all kinds), with a cold and a warm embedding cache.
Writes bench/out/clean.json; copy the figures into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
OUT = REPO / "bench" / "out"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ["DRAGONCLF_HOME"] = str(OUT / "clean-home")

import numpy as np  # noqa: E402

from dragonclf import clean  # noqa: E402
from dragonclf.store import Store  # noqa: E402


def flipped_dataset(seed: int, share: float = 0.1) -> tuple[Store, dict[str, str]]:
    """A copy of the demo with `share` of its labels flipped at random: (store, {id: true label})."""
    name = f"flip{seed}"
    demo = Store.open("demo")
    demo.checkpoint()  # the copy must hold every committed row
    root = demo.root.parent / name
    if root.exists():
        Store.open(name).close()
        shutil.rmtree(root)
    shutil.copytree(demo.root, root, ignore=shutil.ignore_patterns("manifest.sqlite-*"))
    store = Store.open(name)
    rng = random.Random(seed)
    rows = store.images()
    labels = [lab.display for lab in store.labels()]
    truth = {}
    for r in rng.sample(rows, round(share * len(rows))):
        store.relabel([r.id], rng.choice([lab for lab in labels if lab != r.label]))
        truth[r.id] = r.label
    return store, truth


def precision_recall(ranked_ids: list[str], truth: set[str], k: int) -> tuple[float, float]:
    top = ranked_ids[:k]
    hits = len(set(top) & truth)
    return (hits / len(top) if top else 0.0), hits / len(truth)


def ours(store: Store, k: int) -> dict:
    oof = clean.out_of_fold(store)
    given = np.array([oof.labels.index(g) for g in oof.given])
    issues = clean.find_label_issues(oof.probs, given)
    ranked = [oof.ids[i] for i in clean.ranking(issues)]
    flagged = [oof.ids[i] for i in np.flatnonzero(issues.flagged)]
    return {"ranked": ranked, "flagged": flagged, "oof": oof, "given": given}


def cleanlab_ranking(probs: np.ndarray, given: np.ndarray, ids: list[str]) -> list[str]:
    from cleanlab.filter import find_label_issues

    idx = find_label_issues(given, probs, return_indices_ranked_by="self_confidence")
    return [ids[i] for i in idx]


def fastai_ranking(store: Store, epochs: int) -> tuple[list[str], float]:
    """fastai's ImageClassifierCleaner order: in-sample loss after fine_tune, train (augmented) and valid."""
    from fastai.vision.all import CategoryBlock, DataBlock, ImageBlock, Resize, aug_transforms, vision_learner

    from dragonclf import backbones

    t0 = time.perf_counter()
    rows = store.images()
    arch, kw = backbones.fastai_arch("efficientnet_lite0")
    dblock = DataBlock(blocks=(ImageBlock, CategoryBlock), get_x=lambda r: r.path, get_y=lambda r: r.label,
                       splitter=lambda items: ([i for i, r in enumerate(items) if r.split == "train"],
                                               [i for i, r in enumerate(items) if r.split == "valid"]),
                       item_tfms=Resize(224), batch_tfms=aug_transforms())
    dls = dblock.dataloaders(rows, bs=32, num_workers=0)
    learn = vision_learner(dls, arch, **kw)
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(epochs)
    scored = []
    for ds_idx in (0, 1):  # what ImagesCleaner does for "Train" and "Valid"
        dl = learn.dls[ds_idx].new(shuffle=False, drop_last=False)
        with learn.no_bar():
            _, _, losses = learn.get_preds(dl=dl, with_loss=True)
        scored += [(float(loss), item.id) for loss, item in zip(losses, dl.items)]
    return [i for _, i in sorted(scored, reverse=True)], time.perf_counter() - t0


def suspects_pass_time(store: Store) -> dict:
    cache = Path(os.environ["DRAGONCLF_HOME"]) / "cache"
    for f in ("embeddings.sqlite", "quality.sqlite"):
        for p in cache.glob(f + "*"):
            p.unlink()
    shutil.rmtree(cache / "vectors", ignore_errors=True)  # the embedding cache's vector files
    t0 = time.perf_counter()
    found = clean.find_suspects(store)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    clean.find_suspects(store)
    warm = time.perf_counter() - t0
    return {"cold_s": round(cold, 1), "warm_s": round(warm, 1), "n_images": len(store.images()),
            "n_suspects": len(found.items), "notes": found.notes}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5, help="flip seeds for ours and cleanlab (fastai: seed 0 only)")
    ap.add_argument("--epochs", type=int, default=3, help="fastai fine_tune epochs")
    ap.add_argument("--no-fastai", action="store_true")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    OUT.mkdir(parents=True, exist_ok=True)
    results = {"per_seed": []}
    for seed in range(args.seeds):
        store, truth = flipped_dataset(seed)
        k = len(truth)
        o = ours(store, k)
        row = {"seed": seed, "k": k, "n": len(store.images())}
        row["ours"] = precision_recall(o["ranked"], set(truth), k)
        row["ours_flagged"] = precision_recall(o["flagged"], set(truth), len(o["flagged"]))
        row["ours_flagged_n"] = len(o["flagged"])
        try:
            row["cleanlab_same_probs"] = precision_recall(cleanlab_ranking(o["oof"].probs, o["given"], o["oof"].ids),
                                                          set(truth), k)
            from dragonclf.features import out_of_fold_probs

            lr = out_of_fold_probs(store)
            row["cleanlab_linear_probs"] = precision_recall(cleanlab_ranking(lr.probs, o["given"], lr.ids),
                                                            set(truth), k)
        except ImportError:
            row["cleanlab"] = "not installed (pip install -r requirements-bench.txt)"
        if seed == 0 and not args.no_fastai:
            ranked, secs = fastai_ranking(store, args.epochs)
            row["fastai"] = precision_recall(ranked, set(truth), k)
            row["fastai_seconds"] = round(secs, 1)
        if seed == 0:
            results["suspects_pass"] = suspects_pass_time(store)
        print(json.dumps(row), flush=True)
        results["per_seed"].append(row)
        store.close()
    for key in ("ours", "cleanlab_same_probs", "cleanlab_linear_probs"):
        vals = [r[key] for r in results["per_seed"] if key in r]
        if vals:
            results[f"mean_{key}"] = [round(float(np.mean([v[0] for v in vals])), 3),
                                      round(float(np.mean([v[1] for v in vals])), 3)]
    print(json.dumps({k: v for k, v in results.items() if k != "per_seed"}, indent=2))
    (OUT / "clean.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
