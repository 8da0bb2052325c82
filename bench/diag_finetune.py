"""Why does a fine-tune end below the quick model it starts from? Held-out accuracy after every epoch.

One process, the hard set imported once, embeddings once per size; each variant
builds our learner (warm-started head), scores the start (epoch 0) and every
epoch on the store's valid split and on the 100 held-out photos.

    .venv/bin/python bench/diag_finetune.py --variants base noaug lr1e-4 --size 160 --epochs 3
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
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

VARIANTS = {  # name -> fine_tune-like settings
    "base": {},
    "noaug": {"augment": "none"},
    "light": {"augment": "light"},
    "lr1e-4": {"lr": 1e-4},
    "lr3e-4": {"lr": 3e-4},
    "lr3e-3": {"lr": 3e-3},
    "mult10": {"lr_mult": 10.0},
    "mult1000": {"lr_mult": 1000.0},
    "bneval": {"bn_eval": True},
    "headonly": {"freeze_body": True},
    "nodrop": {"dropout": 0.0},
    "wd0": {"wd": 0.0},
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", nargs="+", default=["base"])
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="dragonclf-diag-"))
    os.environ["DRAGONCLF_HOME"] = str(home)
    import shutil

    shutil.copytree(HERE / "out" / "hardset" / "prep" / "cache" / "weights", home / "cache" / "weights")
    import numpy as np
    import torch
    from fastai.callback.core import Callback
    from fastai.torch_core import set_seed

    from dragonclf import features, items as items_mod, train
    from dragonclf.importer import import_path
    from dragonclf.store import Store
    from hard_set import load

    store = Store.open("hard", create=True)
    import_path(store, HERE / "out" / "hardset" / "tree")
    name, items = items_mod.collect(store)
    labels = items_mod.label_order(items)
    tr = [it for it in items if it.split == "train"]
    X = features.embed(tr, "efficientnet_lite0", size=a.size)
    head = features.fit_head(X, [it.label for it in tr], labels)
    _, held = load()
    held_paths = [str(p) for p, _ in held]
    held_y = [lab for _, lab in held]

    def score(learn):
        dl = learn.dls.test_dl(held_paths)
        with learn.no_bar():
            p, _ = learn.get_preds(dl=dl)
            pv, tv = learn.get_preds(dl=learn.dls.valid)
        h = float(np.mean([labels[i] == y for i, y in zip(p.argmax(1).tolist(), held_y)]))
        v = float((pv.argmax(1) == tv).float().mean())
        return v, h

    class BnEval(Callback):
        def before_batch(self):
            for m in self.learn.model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()

    class Track(Callback):
        order = 90

        def __init__(self, rows):
            self.rows = rows

        busy = False

        def after_epoch(self):
            if Track.busy:  # get_preds runs the epoch callbacks again
                return
            Track.busy = True
            try:
                self._score()
            finally:
                Track.busy = False

        def _score(self):
            training = self.learn.model.training
            v, h = score(self.learn)
            self.learn.model.train(training)
            self.rows.append({"epoch": self.epoch + 1, "valid": v, "heldout": h,
                              "train_loss": float(self.recorder.losses[-1]) if self.recorder.losses else None})

    for vname in a.variants:
        kw = dict(VARIANTS[vname])
        set_seed(a.seed)
        t0 = time.time()
        learn = train.build_learner(items, labels, "efficientnet_lite0", a.size, 32, kw.get("augment", "default"),
                                    head)
        if "dropout" in kw:
            learn.model[1][2].p = kw["dropout"]
        learn.model.to(memory_format=torch.channels_last)
        rows = []
        v, h = score(learn)
        rows.append({"epoch": 0, "valid": v, "heldout": h})
        lr = kw.get("lr", 1e-3)
        cbs = [Track(rows)] + ([BnEval()] if kw.get("bn_eval") else [])
        with learn.no_bar():
            if kw.get("freeze_body"):
                learn.freeze()
                learn.fit_one_cycle(a.epochs, lr, cbs=cbs, wd=kw.get("wd"))
            else:
                learn.unfreeze()
                learn.fit_one_cycle(a.epochs, slice(lr / kw.get("lr_mult", 100.0), lr), cbs=cbs, wd=kw.get("wd"))
        out = {"variant": vname, "size": a.size, "seed": a.seed, "seconds": time.time() - t0, "rows": rows}
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
