"""Single-image predict latency, file to answer, and held-out accuracy per serving variant, in one process.

On the hard set (bench/hard_set.py): the quick model is fitted on the 200
training photos; then the same network (body + the quick model's head) is
served four ways and each answers the 100 held-out photos one at a time:

- fastai `learn.predict` on an export.pkl of that network (`load_learner`);
- ONNX Runtime float32 (`Predictor(variant="float32")`);
- ONNX Runtime int8 (`quantize.quantize`, calibrated on 32 training photos);
- ONNX Runtime int8 with one intra-op thread.

    .venv/bin/python bench/bench_predict.py [--rounds 2] [--write]

Contenders take turns in blocks (all photos for one, a second's pause, then the
next; the order rotates each round), not photo by photo: torch's OpenMP threads
keep spinning for a while after each `learn.predict`, and interleaved they ran
on the cores while ONNX Runtime answered, charging torch's idle spin to it.
p50/p95 over all calls after 5 warm-up calls each.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1, help="passes over the 100 held-out photos")
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch threads for learn.predict (default 1: two threads wait on each other on a loaded "
                         "2-core machine; 0 leaves torch's default)")
    a = ap.parse_args()
    if a.torch_threads:
        import torch

        torch.set_num_threads(a.torch_threads)
    from bench_hard import fresh_home, prepare

    prep = prepare()
    home = fresh_home(prep)
    os.environ["DRAGONCLF_HOME"] = str(home)
    import numpy as np

    from dragonclf import backbones, features, items as items_mod, onnxbody, quantize, train
    from dragonclf.importer import import_path
    from dragonclf.predict import Predictor
    from dragonclf.store import Store
    from hard_set import load

    store = Store.open("hard", create=True)
    import_path(store, prep["tree"])
    r = features.fit_quick(store)
    name, items = items_mod.collect(store)
    labels = items_mod.label_order(items)
    b = backbones.get_backbone("efficientnet_lite0")
    train_paths = [it.path for it in items if it.split == "train"]
    step = max(1, len(train_paths) // 32)
    t = time.perf_counter()
    quantize.quantize(r.model_dir / "model.onnx", r.model_dir / quantize.INT8_FILE, train_paths[::step][:32],
                      b.size, b.mean, b.std)
    quant_s = time.perf_counter() - t
    # fastai: the same network as a Learner (the quick head on the body), exported and loaded back.
    from fastai.learner import load_learner

    npz = np.load(r.model_dir / "head.npz")
    head = features.LinearHead(labels, npz["weight"], npz["bias"])
    learn = train.build_learner(items, labels, "efficientnet_lite0", b.size, 32, "none", head)
    learn.export(home / "export.pkl")
    learn = load_learner(home / "export.pkl")
    import onnxruntime as ort

    one = Predictor(r.model_dir, variant="int8")
    opts = onnxbody.session_options()
    opts.intra_op_num_threads = 1
    one.session = ort.InferenceSession(str(r.model_dir / quantize.INT8_FILE), opts, providers=["CPUExecutionProvider"])

    def fastai_call(p):
        with learn.no_bar():
            _, _, probs = learn.predict(p)
        return str(learn.dls.vocab[int(probs.argmax())])

    def pred_call(pred):
        return lambda p: next(iter(pred.predict_image(p)))

    contenders = {"fastai learn.predict": fastai_call,
                  "ONNX Runtime float32": pred_call(Predictor(r.model_dir, variant="float32")),
                  "ONNX Runtime int8": pred_call(Predictor(r.model_dir, variant="int8")),
                  "ONNX Runtime int8, 1 thread": pred_call(one)}
    _, held = load()
    paths = [str(p) for p, _ in held]
    for fn in contenders.values():
        for p in paths[:5]:
            fn(p)
    times = {k: [] for k in contenders}
    right = {k: 0 for k in contenders}
    load_before = os.getloadavg()[0]
    names = list(contenders)
    for r in range(a.rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            time.sleep(1.0)  # let the previous contender's threads go idle
            fn = contenders[k]
            for p, (_, lab) in zip(paths, held):
                t = time.perf_counter()
                guess = fn(p)
                times[k].append((time.perf_counter() - t) * 1000)
                right[k] += guess == lab
    n = len(paths) * a.rounds
    base = float(np.percentile(times["fastai learn.predict"], 50))
    lines = [f"Hard set, quick model (EfficientNet-Lite0, 224 px) served four ways; {len(paths)} held-out photos x "
             f"{a.rounds} round(s), one at a time, file path to label, contenders in turn (blocks of {len(paths)}); "
             f"1-min load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after; int8 quantisation "
             f"(32 calibration photos) took {quant_s:.1f} s; torch threads {a.torch_threads or 'default'}. Command: `bench/bench_predict.py "
             f"{' '.join(sys.argv[1:])}`.", "",
             "| predictor | p50 | p95 | vs `learn.predict` at p50 | held-out accuracy |", "|---|---|---|---|---|"]
    out = {}
    for k in contenders:
        p50, p95 = float(np.percentile(times[k], 50)), float(np.percentile(times[k], 95))
        out[k] = {"p50_ms": p50, "p95_ms": p95, "accuracy": right[k] / n}
        lines.append(f"| {k} | {p50:.1f} ms | {p95:.1f} ms | {base / p50:.1f}x | {right[k] / n:.2f} |")
    text = "\n".join(lines)
    print(text)
    (HERE / "out").mkdir(exist_ok=True)
    (HERE / "out" / "predict.json").write_text(json.dumps(out, indent=1))
    if a.write:
        from results import write_section

        write_section("Predict latency (hard set)", text)
    shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
