"""Distributed benchmark: 1 vs N processes on the same data, through `accelerate launch`.

On the bundled demo dataset (122 photos, 4 labels, the store's fixed split),
with the same global batch (N processes x batch/N), the same learning rate and
seed:

1. fine-tune: wall time per epoch, training images per second, validation
   accuracy and loss, for 1 process (plain `python`) and N (`accelerate launch
   --multi_gpu --num_processes N`; gloo on CPU, NCCL on GPUs);
2. the embedding cache job (`dragonclf embed`) from a cold cache: images per second.

    .venv/bin/python bench/bench_distributed.py [--procs 2] [--epochs 3] [--size 128] [--write]

`--write` replaces the "## Distributed" section of bench/RESULTS.md. The script
launches itself with `--worker` in every process; the worker times epochs with
fine_tune's `on_epoch` hook and rank 0 writes a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from results import write_section  # noqa: E402 - bench/results.py, beside this script


# ---- the worker: runs in every process -------------------------------------

def worker(a) -> int:
    import torch

    from dragonclf import distributed
    from dragonclf.items import dataset_items
    from dragonclf.train import fine_tune

    items = dataset_items("demo", backbone=a.backbone)
    marks = {"start": None, "ends": []}

    def progress(fraction, message):
        if marks["start"] is None and message.startswith("Epoch"):
            marks["start"] = time.perf_counter()  # the first batch of the first epoch is under way

    r = fine_tune(items, a.backbone, dataset="demo", epochs=a.epochs, size=a.size, batch_size=a.batch_size,
                  lr=a.lr, seed=a.seed, progress=progress, on_epoch=lambda row: marks["ends"].append(time.perf_counter()),
                  save=False)
    if distributed.is_main():
        bounds = [marks["start"], *marks["ends"]]
        epoch_s = [b - a_ for a_, b in zip(bounds, bounds[1:])]
        n_train = sum(it.split == "train" for it in items)
        row = {"processes": distributed.world_size(), "batch_per_process": a.batch_size, "threads": torch.get_num_threads(),
               "epoch_s": epoch_s, "n_train": n_train, "n_valid": r.metrics["n_valid"],
               "accuracy": r.metrics["accuracy"], "valid_loss": r.metrics["valid_loss"],
               "history": r.history, "seconds": r.seconds}
        with open(a.out, "a") as f:
            f.write(json.dumps(row) + "\n")
    return 0


# ---- the driver --------------------------------------------------------------

def _launch(procs: int, args: list[str], home: Path, threads: int | None = None):
    env = dict(os.environ, DRAGONCLF_HOME=str(home), MASTER_ADDR="127.0.0.1")
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    if procs == 1:
        cmd = [sys.executable, *args]
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", str(procs),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_ip", "127.0.0.1", "--main_process_port", str(port), *args]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-4000:]}")
    return r


def fresh_home(weights: Path) -> Path:
    """A new DRAGONCLF_HOME with the demo installed and the converted weights shared."""
    home = Path(tempfile.mkdtemp(prefix="dragonclf-bench-dist-"))
    (home / "cache").mkdir()
    (home / "cache" / "weights").symlink_to(weights, target_is_directory=True)
    env = dict(os.environ, DRAGONCLF_HOME=str(home))
    subprocess.run([sys.executable, "-c", "from dragonclf.store import Store; Store.open('demo')"], cwd=REPO,
                   env=env, check=True)
    return home


def bench_embed(procs: int, size: int, weights: Path) -> dict:
    home = fresh_home(weights)
    try:
        r = _launch(procs, ["-m", "dragonclf", "embed", "--dataset", "demo", "--size", str(size), "--quiet", "--json"], home)
        out = json.loads(r.stdout)
        return {"processes": procs, "images": out["images"], "seconds": out["seconds"],
                "img_s": out["images"] / out["seconds"]}
    finally:
        shutil.rmtree(home, ignore_errors=True)


def bench_train(procs: int, a, weights: Path, seed: int, threads: int | None = None) -> dict:
    home = fresh_home(weights)
    out = home / "result.jsonl"
    try:
        # Same global batch for every process count, so the runs are the same training.
        _launch(procs, [str(Path(__file__).resolve()), "--worker", "--out", str(out), "--epochs", str(a.epochs),
                        "--size", str(a.size), "--batch-size", str(a.batch // procs), "--lr", str(a.lr),
                        "--seed", str(seed), "--backbone", a.backbone], home, threads)
        return json.loads(out.read_text().splitlines()[-1])
    finally:
        shutil.rmtree(home, ignore_errors=True)


def report(a, trains: list[dict], embeds: list[dict]) -> str:
    import statistics

    import torch

    lines = [
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU (gloo on CPU)'}; "
        f"torch {torch.__version__}. Demo dataset, {a.backbone} at {a.size} px, {a.epochs} epochs of fine_tune "
        f"(warm-started head), global batch {a.batch}, lr {a.lr}, seeds {' '.join(map(str, a.seeds))}. "
        "Epoch time is the median over epochs (the first includes warm-up); images/s counts training images.",
        "",
        "| processes | batch/process | threads/process | seed | load avg | s/epoch | train img/s | valid accuracy | valid loss |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in trains:
        ep = statistics.median(t["epoch_s"])
        lines.append(f"| {t['processes']} | {t['batch_per_process']} | {t['threads']} | {t['seed']} | {t['load']:.1f} | {ep:.1f} | "
                     f"{t['n_train'] / ep:.1f} | {t['accuracy']:.3f} ({round(t['accuracy'] * t['n_valid'])}/{t['n_valid']}) "
                     f"| {t['valid_loss']:.3f} |")
    lines += ["", "Embedding cache job (`dragonclf embed`, cold cache, all 122 images):", "",
              "| processes | seconds | images/s |", "|---|---|---|"]
    lines += [f"| {e['processes']} | {e['seconds']:.1f} | {e['img_s']:.1f} |" for e in embeds]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, default=2, help="processes to compare with one")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32, help="global batch (split over the processes)")
    ap.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)  # the worker's per-process batch
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--write", action="store_true", help="write the figures into bench/RESULTS.md")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a)

    from dragonclf import backbones, config

    weights = Path(tempfile.mkdtemp(prefix="dragonclf-bench-weights-"))
    os.environ["DRAGONCLF_HOME"] = str(weights.parent / (weights.name + "-home"))
    backbones.ensure_weights(a.backbone)  # convert once; every run's home links to it
    for f in (config.cache_root() / "weights").iterdir():
        shutil.copy(f, weights / f.name)
    trains, embeds = [], []
    for seed in a.seeds:
        # 1 process with its default threads, 1 process with 1 thread (what each of N processes gets), N processes.
        for procs, threads in ((1, None), (1, 1), (a.procs, None)):
            load = os.getloadavg()[0]  # the cores are shared: say how busy they were
            t = bench_train(procs, a, weights, seed, threads)
            t["seed"], t["load"] = seed, load
            trains.append(t)
            print(json.dumps({k: v for k, v in t.items() if k != "history"}), flush=True)
    for procs in (1, a.procs):
        embeds.append(bench_embed(procs, a.size, weights))
        print(json.dumps(embeds[-1]), flush=True)
    text = report(a, trains, embeds)
    print(text)
    if a.write:
        write_section("Distributed", text)
    shutil.rmtree(weights, ignore_errors=True)
    shutil.rmtree(os.environ["DRAGONCLF_HOME"], ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
