"""Hard-set benchmark: held-out accuracy and whole-process time of every training recipe, in one run.

The set (bench/hard_set.py): 8 close food groups, 200 training photos (the store
splits them 160 train / 40 valid) and 100 held out, never seen by any contender.
Every contender is one fresh process (fresh DRAGONCLF_HOME, the converted
backbone weights copied in) timed from launch to the model written:

The converted backbone weights and the body's ONNX exports, float32 and int8
(`cache/weights`, `cache/onnx`: made once per install) are copied
into every fresh home; everything else each process does itself.

- quick: the CLI as a person runs it, `python -m dragonclf import` then
  `python -m dragonclf train --mode quick` (two processes, both timed);
- quick_embed: the same with `import --embed` (the pictures embedded as they
  are imported, so `train --mode quick` only fits the head);
- ours_*: `import_path` + `train.fine_tune(...)` in one process, per setting;
- fastai: plain `vision_learner` + `fine_tune(3)` at 224 px (same backbone,
  same train/valid files), `learn.export()`.

    .venv/bin/python bench/bench_hard.py --seeds 0 1 2                # the default table
    .venv/bin/python bench/bench_hard.py --seeds 0 --only quick fastai ours_224
    .venv/bin/python bench/bench_hard.py --list                        # the contenders
    .venv/bin/python bench/bench_hard.py --seeds 0 1 2 --write         # into bench/RESULTS.md

Besides wall time, each contender's CPU time (user + system, all threads, up to
the model written) is recorded: on a machine shared with other jobs it varies
far less with the load than wall time does.

Contenders run interleaved per seed (seed 0: all, then seed 1: all, ...) so a
change in machine load hits every contender alike; the load average is
recorded per run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]
OUT = HERE / "out"
PY = sys.executable
THREADS = 1  # torch threads per contender (OMP_NUM_THREADS); --threads 0 leaves each library's default

# name -> (description, worker arguments). "quick" is special-cased (the CLI).
CONTENDERS = {
    "quick": ("quick model (CLI import + train --mode quick)", None),
    "quick_embed": ("quick model, pictures embedded as they are imported (CLI import --embed + train --mode quick)",
                    None),
    "fastai": ("plain fastai `vision_learner` + `fine_tune(3)`, 224 px", ["fastai"]),
    "ours_default": ("our fine-tune, library defaults", ["ours"]),
    "ours_old": ("our fine-tune, the old CPU defaults (160 px, 3 epochs, lr 1e-3, lr_mult 100)",
                 ["ours", "--size", "160", "--epochs", "3", "--lr", "1e-3", "--lr-mult", "100",
                  "--extra", '{"keep_best": false, "bn_stats": "train"}']),
    "ours_224": ("our fine-tune at 224 px, 3 epochs", ["ours", "--size", "224", "--epochs", "3"]),
    "ours_224_bntrain": ("224 px, batch norm statistics updated (fastai's way), best epoch kept",
                         ["ours", "--size", "224", "--extra", '{"bn_stats": "train"}']),
    "ours_160": ("our fine-tune at 160 px, 3 epochs", ["ours", "--size", "160", "--epochs", "3"]),
    "ours_224_lr3e-4": ("224 px, lr 3e-4", ["ours", "--size", "224", "--lr", "3e-4"]),
    "ours_224_lr3e-3": ("224 px, lr 3e-3", ["ours", "--size", "224", "--lr", "3e-3"]),
    "ours_224_mult10": ("224 px, body lr = lr/10", ["ours", "--size", "224", "--lr-mult", "10"]),
    "ours_224_e5": ("224 px, 5 epochs", ["ours", "--size", "224", "--epochs", "5"]),
    "ours_224_light": ("224 px, light augmentation", ["ours", "--size", "224", "--augment", "light"]),
    "ours_224_noaug": ("224 px, no augmentation", ["ours", "--size", "224", "--augment", "none"]),
    "ours_224_cold": ("224 px, no warm start (fastai head, 1 frozen epoch)", ["ours", "--size", "224", "--no-warm"]),
    "ours_224_ls": ("224 px, label smoothing 0.1 (the default since issue 14's second pass)",
                    ["ours", "--size", "224", "--extra", '{"label_smoothing": 0.1}']),
    "ours_224_nols": ("224 px, no label smoothing (the defaults before it)",
                      ["ours", "--size", "224", "--extra", '{"label_smoothing": 0.0}']),
    "ours_224_crop": ("224 px, crop resize instead of squish", ["ours", "--size", "224", "--extra", '{"resize": "crop"}']),
}


def prepare() -> dict:
    """The training tree to import, a prepared store's split for fastai, and the converted weights."""
    from hard_set import load

    train, held = load()
    tree = OUT / "hardset" / "tree"
    if not tree.is_dir():
        tmp = tree.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        for path, label in train:
            (tmp / label).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, tmp / label / path.name)
        tmp.rename(tree)
    prep = OUT / "hardset" / "prep"
    split = prep / "split.json"
    if not split.is_file():
        shutil.rmtree(prep, ignore_errors=True)
        os.environ["DRAGONCLF_HOME"] = str(prep)
        from dragonclf import backbones, items as items_mod
        from dragonclf.importer import import_path
        from dragonclf.store import Store

        store = Store.open("hard", create=True)
        import_path(store, tree)
        backbones.efficientnet_lite0_weights()
        _, items = items_mod.collect(store)
        split.write_text(json.dumps([[str(it.path), it.label, it.split == "valid"] for it in items]))
    if not (prep / "cache" / "onnx" / "efficientnet_lite0-224.int8.onnx").is_file():
        # The body as ONNX (float32 and int8), exported once per install like the converted weights.
        os.environ["DRAGONCLF_HOME"] = str(prep)
        from dragonclf import onnxbody

        onnxbody.ensure_body("efficientnet_lite0", 224)
        onnxbody.ensure_int8_body("efficientnet_lite0", 224)
    rows = json.loads(split.read_text())
    return {"tree": tree, "split": split, "weights": prep / "cache" / "weights", "n_train": len(train),
            "n_heldout": len(held), "n_store_valid": sum(r[2] for r in rows)}


def fresh_home(prep: dict) -> Path:
    home = Path(tempfile.mkdtemp(prefix="dragonclf-hard-"))
    shutil.copytree(prep["weights"], home / "cache" / "weights")
    shutil.copytree(prep["weights"].parent / "onnx", home / "cache" / "onnx")
    return home


def run_worker(args: list[str], timeout: float = 1800) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS)) if THREADS else None
    p = subprocess.run([PY, str(HERE / "hard_worker.py"), *args], capture_output=True, text=True, timeout=timeout,
                       env=env)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"worker {args[:1]} failed ({p.returncode}):\n{p.stderr[-3000:]}")


def children_cpu() -> float:
    """CPU time (user + system) of this process's finished children so far."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_one(name: str, seed: int, prep: dict) -> dict:
    home = fresh_home(prep)
    env = dict(os.environ, DRAGONCLF_HOME=str(home), HF_HUB_OFFLINE="1", MPLBACKEND="Agg")
    if THREADS:
        env["OMP_NUM_THREADS"] = str(THREADS)
    load = os.getloadavg()[0]
    try:
        if name in ("quick", "quick_embed"):
            t0, c0 = time.time(), children_cpu()
            steps, cpu_steps = [], []
            embed = ["--embed"] if name == "quick_embed" else []
            for cmd in (["import", str(prep["tree"]), "--dataset", "hard", "--json", *embed],
                        ["train", "--dataset", "hard", "--mode", "quick", "--json", "--quiet"]):
                t, c = time.time(), children_cpu()
                p = subprocess.run([PY, "-m", "dragonclf", *cmd], cwd=REPO, env=env, capture_output=True, text=True)
                if p.returncode:
                    raise RuntimeError(p.stderr[-3000:])
                steps.append(time.time() - t)
                cpu_steps.append(children_cpu() - c)
            seconds, cpu = time.time() - t0, children_cpu() - c0
            res = json.loads(p.stdout)
            out = run_worker(["score", "--home", str(home), "--model", res["model"]])
            out.update(valid_acc=res["accuracy"], steps=steps, cpu_steps=cpu_steps, cpu=cpu)
        else:
            args = list(CONTENDERS[name][1])
            args += ["--home", str(home), "--seed", str(seed), "--tree", str(prep["tree"]), "--split", str(prep["split"])]
            t0 = time.time()
            out = run_worker(args)
            seconds = out.pop("t_model") - t0
            out["cpu"] = out.pop("cpu_model")
        out.update(name=name, seed=seed, seconds=seconds, load=load)
        return out
    finally:
        shutil.rmtree(home, ignore_errors=True)


def summarise(runs: list[dict], prep: dict, meta: dict) -> str:
    names = [n for n in CONTENDERS if any(r["name"] == n for r in runs)]
    fastai_t = [r["seconds"] for r in runs if r["name"] == "fastai"]
    ft = float(np.mean(fastai_t)) if fastai_t else None
    fastai_c = [r["cpu"] for r in runs if r["name"] == "fastai" and r.get("cpu")]
    fc = float(np.mean(fastai_c)) if fastai_c else None
    lines = [
        f"Hard set (bench/hard_set.py): {prep['n_train']} training photos in 8 food groups (the store keeps "
        f"{prep['n_store_valid']} of them as its validation split), {prep['n_heldout']} held out; EfficientNet-Lite0; "
        f"seeds {meta['seeds']}; {os.cpu_count()} CPUs shared with other jobs, 1-min load average "
        f"{meta['load_min']:.1f}-{meta['load_max']:.1f} during the run; torch threads per process: "
        f"{THREADS or 'default'}; CUDA: {meta['cuda']}. "
        f"Command: `{meta['command']}`.",
        "",
        "| contender | held-out accuracy, mean (min-max) | per seed | own valid split, mean | whole process, mean (min-max) | vs fastai time | CPU time (user + system), mean | vs fastai CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in names:
        rs = [r for r in runs if r["name"] == n]
        acc = [r["heldout_acc"] for r in rs]
        secs = [r["seconds"] for r in rs]
        va = [r["valid_acc"] for r in rs]
        ratio = f"{np.mean(secs) / ft:.2f}x ({ft / np.mean(secs):.1f}x faster)" if ft else "-"
        cpu = [r["cpu"] for r in rs if r.get("cpu")]
        cpu_text = f"{np.mean(cpu):.1f} s" if cpu else "-"
        cpu_ratio = f"{fc / np.mean(cpu):.1f}x less" if (fc and cpu) else "-"
        lines.append(f"| {CONTENDERS[n][0]} | {np.mean(acc):.3f} ({min(acc):.2f}-{max(acc):.2f}) | "
                     f"{', '.join(f'{x:.2f}' for x in acc)} | {np.mean(va):.3f} | {np.mean(secs):.1f} s "
                     f"({min(secs):.0f}-{max(secs):.0f}) | {ratio} | {cpu_text} | {cpu_ratio} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--only", nargs="+", help="contenders to run (default: quick, fastai, ours_default)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--threads", type=int, default=1,
                    help="OMP_NUM_THREADS for every contender (default 1: on a loaded 2-core machine two threads "
                         "wait on each other; 0: library defaults)")
    ap.add_argument("--write", action="store_true", help="write the table into bench/RESULTS.md")
    ap.add_argument("--json", default=str(OUT / "hard.json"))
    a = ap.parse_args()
    if a.list:
        for n, (d, _) in CONTENDERS.items():
            print(f"{n:18s} {d}")
        return 0
    global THREADS
    THREADS = a.threads
    names = a.only or ["quick", "fastai", "ours_default"]
    for n in names:
        if n not in CONTENDERS:
            raise SystemExit(f"unknown contender {n}; see --list")
    prep = prepare()
    runs = []
    for seed in a.seeds:
        for n in names:
            r = run_one(n, seed, prep)
            runs.append(r)
            print(json.dumps({k: v for k, v in r.items() if k not in ("history",)}), flush=True)
            Path(a.json).parent.mkdir(parents=True, exist_ok=True)
            Path(a.json).write_text(json.dumps(runs, indent=1))
    import torch

    loads = [r["load"] for r in runs]
    meta = {"seeds": a.seeds, "load_min": min(loads), "load_max": max(loads), "cuda": torch.cuda.is_available(),
            "command": "bench/bench_hard.py " + " ".join(sys.argv[1:])}
    text = summarise(runs, prep, meta)
    print(text)
    if a.write:
        from results import write_section

        write_section("Hard set", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
