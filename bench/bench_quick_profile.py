"""Where a quick model's whole process spends its time, now and the way it was, in one run.

Each side is a fresh process on a fresh home (the hard set's 200 training photos
imported first, untimed; the converted weights and ONNX bodies copied in, as
bench_hard.py does) that fits and saves the quick model, stamping the wall
clock after each phase:

- now: dragonclf's modules without torch, embeddings through ONNX Runtime,
  scipy's L-BFGS for the head, model.onnx by appending the head to the cached
  body graph, the int8 variant (cached int8 body) scored on the valid split;
- before: torch + timm imported and the body built in torch, torch's forward,
  scikit-learn's LogisticRegression, `torch.onnx.export` of body + head.

    .venv/bin/python bench/bench_quick_profile.py [--rounds 2] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

CHILD = r'''
import json, os, sys, time
t = {"start": time.time()}
sys.path[:0] = [sys.argv[2], sys.argv[3]]
old = sys.argv[1] == "before"
import numpy as np
from dragonclf import embeddings, features, items as items_mod, modelstore
from dragonclf.store import Store
if old:
    import torch, timm  # what the old path imported before any work
    from sklearn.linear_model import LogisticRegression
t["imports"] = time.time()
store = Store.open("hard")
name, items = items_mod.collect(store)
labels = items_mod.label_order(items)
t["store"] = time.time()
if old:
    embeddings.use_onnx_body = lambda: False
    body = embeddings.load_body("efficientnet_lite0")
    t["body load"] = time.time()
else:
    from dragonclf import onnxbody
    onnxbody.get_body("efficientnet_lite0", 224)
    t["body load"] = time.time()
X = features.embed(items, "efficientnet_lite0", size=224)
t["embedding"] = time.time()
tr = [i for i, it in enumerate(items) if it.split == "train"]
if old:  # the old fit_head: scikit-learn on standardised embeddings, folded into one linear layer
    mu, sd = X[tr].mean(0), X[tr].std(0) + 1e-6
    lr = LogisticRegression(C=1.0, max_iter=2000).fit((X[tr] - mu) / sd, [items[i].label for i in tr])
    W = np.zeros((len(labels), X.shape[1]), np.float32)
    b = np.full(len(labels), -30.0, np.float32)
    for row, cls in enumerate(lr.classes_):
        W[labels.index(cls)] = lr.coef_[row] / sd
        b[labels.index(cls)] = lr.intercept_[row] - (lr.coef_[row] / sd) @ mu
    head = features.LinearHead(labels, W, b)
else:
    head = features.fit_head(X[tr], [items[i].label for i in tr], labels)
t["head fit"] = time.time()
out = modelstore.dataset_dir(name) / ("m-" + sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
if old:
    modelstore.export_onnx(features.head_module("efficientnet_lite0", head), 224, out / "model.onnx")
else:
    from dragonclf import quantize
    onnxbody.write_quick_model("efficientnet_lite0", 224, head.weight, head.bias, out / "model.onnx")
    onnxbody.write_quick_variant("efficientnet_lite0", 224, head.weight, head.bias, out / quantize.INT8_FILE, True)
    va = [it for it in items if it.split == "valid"]
    quantize.accuracy(out / quantize.INT8_FILE, [it.path for it in va], [it.label for it in va], labels, 224,
                      [0.5] * 3, [0.5] * 3)
t["ONNX export"] = time.time()
print("STAMPS " + json.dumps(t))
'''


def run_side(side: str, prep: dict) -> dict:
    from bench_hard import fresh_home

    home = fresh_home(prep)
    env = dict(os.environ, DRAGONCLF_HOME=str(home), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    subprocess.run([sys.executable, "-m", "dragonclf", "import", str(prep["tree"]), "--dataset", "hard"],
                   env=env, cwd=HERE.parent, check=True, capture_output=True)
    t0 = time.time()
    p = subprocess.run([sys.executable, "-c", CHILD, side, str(HERE.parent), str(HERE)], env=env,
                       capture_output=True, text=True)
    end = time.time()
    line = [x for x in p.stdout.splitlines() if x.startswith("STAMPS ")]
    if not line:
        raise RuntimeError(p.stderr[-3000:])
    t = json.loads(line[0][7:])
    keys = list(t)
    phases = {"process start": t["start"] - t0}
    for a, b in zip(keys, keys[1:]):
        phases[b] = t[b] - t[a]
    phases["exit"] = end - t[keys[-1]]
    phases["total"] = end - t0
    return phases


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    from bench_hard import prepare

    prep = prepare()
    res = {"now": [], "before": []}
    load = [os.getloadavg()[0]]
    for _ in range(a.rounds):
        for side in ("before", "now"):
            res[side].append(run_side(side, prep))
            load.append(os.getloadavg()[0])
    phases = list(res["now"][0])
    lines = [f"Quick model on the hard set (200 photos: 159 train + 41 valid embedded), one fresh process per side, "
             f"{a.rounds} round(s), sides alternating, one torch thread; 1-min load average "
             f"{min(load):.1f}-{max(load):.1f}. Command: `bench/bench_quick_profile.py {' '.join(sys.argv[1:])}`.",
             "", "| phase | before (torch, scikit-learn, torch.onnx) | now (ONNX Runtime, scipy, graph append + int8) |",
             "|---|---|---|"]
    for ph in phases:
        b = sum(r[ph] for r in res["before"]) / a.rounds
        n = sum(r[ph] for r in res["now"]) / a.rounds
        lines.append(f"| {ph} | {b:.1f} s | {n:.1f} s |")
    text = "\n".join(lines)
    print(text)
    (HERE / "out").mkdir(exist_ok=True)
    (HERE / "out" / "quick_profile.json").write_text(json.dumps(res, indent=1))
    if a.write:
        from results import write_section

        write_section("Quick path profile", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
