"""One contender of bench_hard.py, as a whole process: pictures on disk -> model -> held-out score.

    hard_worker.py ours  --home DIR [--mode quick|finetune] [fine-tune options] --seed S
    hard_worker.py fastai --home DIR --split FILE --seed S [--size 224] [--epochs 3]

Prints one JSON line. `t_model` is the wall-clock time (time.time()) at which
the model was written; bench_hard.py subtracts its own launch time, so the
figure covers process start, imports, reading the pictures, training and
export. Held-out scoring happens after `t_model` and is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]


def ours(a) -> dict:
    os.environ["DRAGONCLF_HOME"] = a.home
    from dragonclf import train
    from dragonclf.importer import import_path
    from dragonclf.store import Store

    store = Store.open("hard", create=True)
    import_path(store, a.tree)
    kw = {}
    if a.mode == "finetune":
        kw = dict(epochs=a.epochs, size=a.size, lr=a.lr, freeze_epochs=a.freeze_epochs, augment=a.augment,
                  lr_mult=a.lr_mult, warm_start=not a.no_warm, seed=a.seed, batch_size=a.bs)
        kw = {k: v for k, v in kw.items() if v is not None}
        for k, v in (a.extra or {}).items():
            kw[k] = v
    elif a.size:
        kw["size"] = a.size
    r = train.train(store, a.mode, **kw)
    t_model, cpu_model = time.time(), cpu_seconds()
    out = {"t_model": t_model, "cpu_model": cpu_model, "valid_acc": r.metrics["accuracy"], "train_seconds": r.seconds,
           "model": str(r.model_dir), "history": r.history}
    out.update({k: v for k, v in getattr(r, "__dict__", {}).items() if k in ("start", "best_epoch", "kept", "verdict")})
    from dragonclf.predict import Predictor

    out["heldout_acc"] = heldout_accuracy(Predictor(r.model_dir))
    return out


def cpu_seconds() -> float:
    """CPU time (user + system, all threads) this process has used so far."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def heldout_accuracy(pred) -> float:
    import numpy as np
    from hard_set import load

    _, held = load()
    probs = pred.probs([p for p, _ in held])
    guess = [pred.labels[i] for i in np.argmax(probs, axis=1)]
    return float(np.mean([g == lab for g, (_, lab) in zip(guess, held)]))


def plain_fastai(a) -> dict:
    """The textbook recipe on the same train/valid files: Resize + aug_transforms, vision_learner, fine_tune."""
    from fastai.vision.all import (CategoryBlock, ColSplitter, ColReader, DataBlock, ImageBlock, Resize, accuracy,
                                   aug_transforms, pd, set_seed, vision_learner)

    os.environ["DRAGONCLF_HOME"] = a.home
    from dragonclf import backbones

    arch, kw = backbones.fastai_arch("efficientnet_lite0")
    df = pd.DataFrame(json.loads(Path(a.split).read_text()), columns=["path", "label", "is_valid"])
    set_seed(a.seed)
    dls = DataBlock(blocks=(ImageBlock, CategoryBlock), get_x=ColReader("path"), get_y=ColReader("label"),
                    splitter=ColSplitter("is_valid"), item_tfms=Resize(a.size),
                    batch_tfms=aug_transforms()).dataloaders(df, bs=32, num_workers=0)
    learn = vision_learner(dls, arch, metrics=accuracy, path=tempfile.mkdtemp(), **kw)
    with learn.no_bar():
        learn.fine_tune(a.epochs)
    learn.export("export.pkl")
    t_model, cpu_model = time.time(), cpu_seconds()
    valid_acc = float(learn.recorder.values[-1][2])
    import numpy as np
    from hard_set import load

    _, held = load()
    test_dl = learn.dls.test_dl([str(p) for p, _ in held])
    with learn.no_bar():
        probs, _ = learn.get_preds(dl=test_dl)
    guess = [learn.dls.vocab[i] for i in probs.argmax(1).tolist()]
    return {"t_model": t_model, "cpu_model": cpu_model, "valid_acc": valid_acc,
            "heldout_acc": float(np.mean([g == lab for g, (_, lab) in zip(guess, held)]))}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("who", choices=("ours", "fastai", "score"))
    ap.add_argument("--home", required=True)
    ap.add_argument("--tree")
    ap.add_argument("--split")
    ap.add_argument("--model")
    ap.add_argument("--mode", default="finetune")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--size", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--lr-mult", type=float)
    ap.add_argument("--freeze-epochs", type=int)
    ap.add_argument("--augment")
    ap.add_argument("--bs", type=int)
    ap.add_argument("--no-warm", action="store_true")
    ap.add_argument("--extra", type=json.loads, help="more fine_tune keywords as JSON")
    a = ap.parse_args()
    if a.who == "score":  # a model folder another process wrote
        os.environ["DRAGONCLF_HOME"] = a.home
        from dragonclf.predict import Predictor

        out = {"heldout_acc": heldout_accuracy(Predictor(a.model))}
    elif a.who == "fastai":
        a.size, a.epochs = a.size or 224, a.epochs or 3
        out = plain_fastai(a)
    else:
        out = ours(a)
    print("RESULT " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
