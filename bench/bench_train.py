"""Train benchmark: our quick model and fine-tune vs plain fastai, and predict latency.

One run on the bundled demo dataset (122 photos, 4 labels), with the store's
fixed validation split for every contender:

1. quick model (embeddings from a cold cache + logistic regression + ONNX export)
   vs plain fastai `vision_learner(...)` + `fine_tune(3)`, same backbone, same split;
2. our `fine_tune` (defaults: warm-started head, 3 unfrozen epochs) vs the same plain run;
3. single-image predict latency, file to answer: ONNX Runtime (our Predictor)
   vs fastai `learn.predict` on the same fine-tuned model.

    .venv/bin/python bench/bench_train.py [--seeds 0 1] [--write]

`--write` replaces the "## Train" section of bench/RESULTS.md with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from results import write_section  # noqa: E402 - bench/results.py, beside this script

import numpy as np  # noqa: E402


def plain_fastai(items, labels, arch, kw, size: int, seed: int, bs: int) -> tuple[float, float]:
    """The textbook recipe: Resize(224) + aug_transforms(), vision_learner, fine_tune(3)."""
    from fastai.vision.all import (CategoryBlock, DataBlock, FuncSplitter, ImageBlock, Resize, accuracy,
                                   aug_transforms, set_seed, vision_learner)
    from dragonclf.train import item_is_valid, item_label, item_path

    set_seed(seed)
    t0 = time.perf_counter()
    dls = DataBlock(blocks=(ImageBlock, CategoryBlock(vocab=labels)), get_x=item_path, get_y=item_label,
                    splitter=FuncSplitter(item_is_valid), item_tfms=Resize(size),
                    batch_tfms=aug_transforms()).dataloaders(items, bs=bs, num_workers=0)
    learn = vision_learner(dls, arch, metrics=accuracy, path=tempfile.mkdtemp(), **kw)
    with learn.no_bar():
        learn.fine_tune(3)
    acc = float(learn.recorder.values[-1][2])
    return acc, time.perf_counter() - t0


def latency(fn, sources, warmup: int = 3) -> dict:
    for s in sources[:warmup]:
        fn(s)
    times = []
    for s in sources:
        t = time.perf_counter()
        fn(s)
        times.append((time.perf_counter() - t) * 1000)
    return {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95)), "n": len(times)}


def clear_embeddings(home: Path) -> None:
    for f in (home / "cache").glob("embeddings.sqlite*"):
        f.unlink()
    shutil.rmtree(home / "cache" / "vectors", ignore_errors=True)  # the cache's vector files


def run(seeds: list[int], backbone: str) -> dict:
    home = Path(tempfile.mkdtemp(prefix="dragonclf-bench-"))
    os.environ["DRAGONCLF_HOME"] = str(home)
    import torch

    from dragonclf import backbones, features, items as items_mod, train
    from dragonclf.predict import Predictor
    from dragonclf.store import Store

    store = Store.open("demo")
    name, items = items_mod.collect(store)
    labels = items_mod.label_order(items)
    arch, kw = backbones.fastai_arch(backbone)  # converts the offline weights once, outside the timings
    size = backbones.get_backbone(backbone).size
    out = {"load_before": os.getloadavg()[0], "backbone": backbone, "size": size, "n_train": sum(i.split == "train" for i in items),
           "n_valid": sum(i.split == "valid" for i in items), "torch_threads": torch.get_num_threads(),
           "cpu": platform.processor() or platform.machine(), "cuda": torch.cuda.is_available(), "runs": []}
    for seed in seeds:
        row = {"seed": seed}
        clear_embeddings(home)
        r = features.fit_quick(store, backbone)
        row["quick"] = {"accuracy": r.metrics["accuracy"], "seconds": r.seconds}
        r = features.fit_quick(store, backbone)
        row["quick_cached"] = {"accuracy": r.metrics["accuracy"], "seconds": r.seconds}
        acc, secs = plain_fastai(items, labels, arch, dict(kw), size, seed, bs=32)
        row["plain_fastai"] = {"accuracy": acc, "seconds": secs}
        clear_embeddings(home)  # our fine-tune pays for its own embeddings
        r = train.fine_tune(store, backbone, seed=seed)
        row["ours_finetune"] = {"accuracy": r.metrics["accuracy"], "seconds": r.seconds, "model": str(r.model_dir)}
        out["runs"].append(row)
        print(json.dumps(row), flush=True)

    # Latency, file to answer, on the last fine-tuned model.
    from fastai.learner import load_learner

    model = Path(out["runs"][-1]["ours_finetune"]["model"])
    paths = [it.path for it in items][:60]
    pred = Predictor(model)
    learn = load_learner(model / "export.pkl")
    with learn.no_bar():
        out["latency_fastai"] = latency(lambda p: learn.predict(p), paths)
    out["latency_onnx"] = latency(lambda p: pred.predict_image(p), paths)
    out["load_after"] = os.getloadavg()[0]
    return out


def summarise(res: dict) -> str:
    def mean(key, field):
        return float(np.mean([r[key][field] for r in res["runs"]]))

    def accs(key):
        return ", ".join(f"{r[key]['accuracy']:.3f}" for r in res["runs"])

    q, qc, pf, of = (mean(k, "seconds") for k in ("quick", "quick_cached", "plain_fastai", "ours_finetune"))
    lf, lo = res["latency_fastai"], res["latency_onnx"]
    lines = [
        f"Demo dataset: {res['n_train']} train / {res['n_valid']} valid images (the store's fixed split), "
        f"{res['backbone']} at {res['size']} px, {len(res['runs'])} seed(s), CUDA: {res['cuda']}, "
        f"torch threads: {res['torch_threads']}, {os.cpu_count()} CPUs, 1-min load average {res['load_before']:.1f} before / "
        f"{res['load_after']:.1f} after (other jobs share this machine: times are noisy). "
        f"Command: `.venv/bin/python bench/bench_train.py --write`.",
        "",
        "| run | valid accuracy (per seed) | wall time (mean) | vs plain fastai |",
        "|---|---|---|---|",
        f"| plain fastai `vision_learner` + `fine_tune(3)` | {accs('plain_fastai')} | {pf:.1f} s | 1.00x |",
        f"| quick model, cold embedding cache | {accs('quick')} | {q:.1f} s | {q / pf:.2f}x time ({pf / q:.0f}x faster) |",
        f"| quick model, cached embeddings | {accs('quick_cached')} | {qc:.1f} s | {qc / pf:.3f}x time |",
        f"| our `fine_tune` (warm-started head, 3 epochs) | {accs('ours_finetune')} | {of:.1f} s | {of / pf:.2f}x time |",
        "",
        "| single-image predict, file to answer | p50 | p95 |",
        "|---|---|---|",
        f"| fastai `learn.predict` | {lf['p50_ms']:.1f} ms | {lf['p95_ms']:.1f} ms |",
        f"| ONNX Runtime (`Predictor.predict_image`) | {lo['p50_ms']:.1f} ms | {lo['p95_ms']:.1f} ms |",
        f"| speed-up | {lf['p50_ms'] / lo['p50_ms']:.1f}x | {lf['p95_ms'] / lo['p95_ms']:.1f}x |",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--write", action="store_true", help="write the figures into bench/RESULTS.md")
    ap.add_argument("--json", help="also save raw results to this file")
    a = ap.parse_args()
    res = run(a.seeds, a.backbone)
    text = summarise(res)
    print(text)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    if a.write:
        write_section("Train", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
