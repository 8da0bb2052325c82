"""Where a quick model's whole process spends its time, and the CLI processes before and now, in one run.

Two parts, on the hard set's 200 training photos (bench/hard_set.py), every
process on a fresh home with the converted weights and ONNX bodies copied in
(as bench_hard.py does):

1. phases (this checkout): one process fits and saves the quick model the way
   `features.fit_quick` does, stamping wall clock and CPU time (all threads)
   after each phase: imports, store + items, body session, decoding, the
   body's forward pass, head fit, model.onnx + model.int8.onnx written, the
   int8 check on the validation split, interpreter exit;
2. whole processes, interleaved round by round: `import` then
   `train --mode quick` with the code of `--before` (another checkout, e.g.
   `git worktree add /tmp/before <commit>`) and with this one, and this
   one's `import --embed` then `train --mode quick` (the pictures embedded as
   they are imported: the training then only fits the head).

On a machine shared with other jobs wall times swing with the load; CPU time
(user + system) swings far less, so both are reported.

    .venv/bin/python bench/bench_quick_profile.py --before /tmp/before [--rounds 3] [--write]
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

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

CHILD = r'''
import json, os, sys, time
def now():
    return time.time(), time.process_time()
t = {"start": now()}
sys.path[:0] = [sys.argv[1]]
import numpy as np
from dragonclf import features, items as items_mod, onnxbody, quantize
from dragonclf.preprocess import load_image, to_array
from dragonclf.store import Store
import onnxruntime, scipy.optimize  # what fit_quick imports on its way
t["imports"] = now()
name, items = items_mod.collect(Store.open("hard"))
labels = items_mod.label_order(items)
t["store + items"] = now()
body = onnxbody.get_body("efficientnet_lite0", 224)
t["body session"] = now()
x = np.stack([to_array(load_image(it.path), 224, [0.5] * 3, [0.5] * 3) for it in items])
t["decoding (200 photos)"] = now()
X = np.concatenate([body(x[i:i + 32]) for i in range(0, len(x), 32)])
t["forward pass (200 photos)"] = now()
tr = [i for i, it in enumerate(items) if it.split == "train"]
va = [items[i] for i, it in enumerate(items) if it.split == "valid"]
head = features.fit_head(X[tr], [items[i].label for i in tr], labels)
t["head fit"] = now()
from pathlib import Path
out = Path(os.environ["DRAGONCLF_HOME"]) / "m"
out.mkdir()
onnxbody.write_quick_model("efficientnet_lite0", 224, head.weight, head.bias, out / "model.onnx")
onnxbody.write_quick_variant("efficientnet_lite0", 224, head.weight, head.bias, out / quantize.INT8_FILE, True)
t["model.onnx + model.int8.onnx"] = now()
features.int8_accuracy(head, va, "efficientnet_lite0", 224)
t["int8 check (valid split)"] = now()
print("STAMPS " + json.dumps(t), flush=True)
'''


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str], env: dict, cwd: Path) -> tuple[float, float, str]:
    """(wall s, CPU s, stdout) of one process."""
    t, c = time.time(), children_cpu()
    p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(p.stderr[-3000:])
    return time.time() - t, children_cpu() - c, p.stdout


def home_env(prep: dict) -> tuple[Path, dict]:
    from bench_hard import fresh_home

    home = fresh_home(prep)
    return home, dict(os.environ, DRAGONCLF_HOME=str(home), HF_HUB_OFFLINE="1")


def phases(prep: dict) -> dict:
    import shutil

    home, env = home_env(prep)
    try:
        timed([sys.executable, "-m", "dragonclf", "import", str(prep["tree"]), "--dataset", "hard"], env, REPO)
        t0, c0 = time.time(), children_cpu()
        _, _, out = timed([sys.executable, "-c", CHILD, str(REPO)], env, REPO)
        end, cend = time.time(), children_cpu()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    t = json.loads(next(x for x in out.splitlines() if x.startswith("STAMPS "))[7:])
    keys = list(t)
    res = {"process start": (t["start"][0] - t0, t["start"][1])}
    for a, b in zip(keys, keys[1:]):
        res[b] = (t[b][0] - t[a][0], t[b][1] - t[a][1])
    res["exit"] = (end - t[keys[-1]][0], (cend - c0) - t[keys[-1]][1])
    res["total"] = (end - t0, cend - c0)
    return res


def cli_pair(prep: dict, repo: Path, embed: bool) -> dict:
    import shutil

    home, env = home_env(prep)
    try:
        imp = timed([sys.executable, "-m", "dragonclf", "import", str(prep["tree"]), "--dataset", "hard"]
                    + (["--embed"] if embed else []), env, repo)
        tr = timed([sys.executable, "-m", "dragonclf", "train", "--dataset", "hard", "--mode", "quick", "--json",
                    "--quiet"], env, repo)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return {"import": imp[:2], "train": tr[:2], "accuracy": json.loads(tr[2])["accuracy"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, help="a checkout of the earlier code for the whole-process comparison")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    from bench_hard import prepare

    prep = prepare()
    load = [os.getloadavg()[0]]
    ph = [phases(prep) for _ in range(a.rounds)]
    sides = {"before": [], "now": [], "now, import --embed": []}
    for _ in range(a.rounds):
        if a.before:
            sides["before"].append(cli_pair(prep, a.before, False))
        sides["now"].append(cli_pair(prep, REPO, False))
        sides["now, import --embed"].append(cli_pair(prep, REPO, True))
        load.append(os.getloadavg()[0])

    def mean(xs):
        return sum(xs) / len(xs)

    lines = [f"Phases of one quick-model process (this checkout; mean of {a.rounds}; 1-min load average "
             f"{min(load):.1f}-{max(load):.1f}; command: `bench/bench_quick_profile.py {' '.join(sys.argv[1:])}`):",
             "", "| phase | wall | CPU (all threads) |", "|---|---|---|"]
    for k in ph[0]:
        lines.append(f"| {k} | {mean([p[k][0] for p in ph]):.2f} s | {mean([p[k][1] for p in ph]):.2f} s |")
    lines += ["", "Whole CLI processes, interleaved (mean of the rounds; wall / CPU):", "",
              "| code | `import` | `train --mode quick` | both | validation accuracy |", "|---|---|---|---|---|"]
    for side, rs in sides.items():
        if not rs:
            continue
        w = {k: mean([r[k][0] for r in rs]) for k in ("import", "train")}
        c = {k: mean([r[k][1] for r in rs]) for k in ("import", "train")}
        lines.append(f"| {side} | {w['import']:.1f} / {c['import']:.1f} s | {w['train']:.1f} / {c['train']:.1f} s | "
                     f"{w['import'] + w['train']:.1f} / {c['import'] + c['train']:.1f} s | "
                     f"{mean([r['accuracy'] for r in rs]):.3f} |")
    text = "\n".join(lines)
    print(text)
    (HERE / "out").mkdir(exist_ok=True)
    (HERE / "out" / "quick_profile.json").write_text(json.dumps({"phases": ph, "sides": sides, "load": load}, indent=1))
    if a.write:
        from results import write_section

        write_section("Quick path profile", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
