"""A fine-tune never ends worse than the quick model it starts from (on its validation split)."""

from __future__ import annotations

import json
import numpy as np
import pytest

from dragonclf import settings, train
from dragonclf.predict import Predictor
from ml_fixtures import SIZE, ml_home, photo_items  # noqa: F401 - fixture


def test_a_harmful_learning_rate_keeps_the_starting_weights_and_says_so(ml_home):
    items = photo_items(per_label=8)
    # lr 3 on body and head alike blows the weights up within a few steps.
    r = train.fine_tune(items, dataset="photos", epochs=1, size=SIZE, batch_size=8, lr=3.0, lr_mult=1.0,
                        augment="none")
    assert r.start is not None and r.start["epoch"] == 0 and r.start["accuracy"] >= 0.75
    # Its one epoch ends worse than the start (what used to be saved) ...
    assert not r.history[-1]["accuracy"] >= r.start["accuracy"]
    # ... so the start is kept.
    assert r.kept == "start" and r.best_epoch == 0
    assert "did not beat the quick model" in r.verdict and "recommended" in r.verdict
    assert r.metrics["accuracy"] == pytest.approx(r.start["accuracy"])  # the saved model is the start
    meta = json.loads((r.model_dir / "model.json").read_text())
    assert meta["kept"] == "start" and meta["best_epoch"] == 0 and meta["verdict"] == r.verdict
    assert meta["start_metrics"]["accuracy"] == pytest.approx(r.start["accuracy"])
    # The saved ONNX model answers like the quick model (the warm head on the untouched body).
    from dragonclf import features

    train_items = [it for it in items if it.split == "train"]
    head = features.fit_head(features.embed(train_items, size=SIZE), [it.label for it in train_items], meta["labels"])
    valid = [it for it in items if it.split == "valid"]
    quick = head.probs(features.embed(valid, size=SIZE))
    saved = Predictor(r.model_dir, variant="float32").probs([it.path for it in valid])
    assert np.abs(saved - quick).max() < 1e-3


def test_better_needs_no_lower_accuracy_and_a_lower_loss():
    best = {"epoch": 0, "accuracy": 0.8, "valid_loss": 0.5}
    assert train.better({"accuracy": 0.85, "valid_loss": 0.45}, best)
    assert train.better({"accuracy": 0.8, "valid_loss": 0.4}, best)
    assert not train.better({"accuracy": 0.85, "valid_loss": 0.9}, best)  # more confident mistakes: not progress
    assert not train.better({"accuracy": 0.75, "valid_loss": 0.1}, best)
    assert not train.better({"accuracy": 0.8, "valid_loss": 0.5}, best)  # a tie keeps the earlier
    assert not train.better({"accuracy": 0.9, "valid_loss": float("nan")}, best)  # a diverged epoch never wins
    assert train.better({"accuracy": 0.1, "valid_loss": 3.0}, None)


def test_verdict_names_the_kept_epoch():
    start = {"epoch": 0, "accuracy": 0.8, "valid_loss": 0.5}
    kept, text = train.verdict(start, {"epoch": 2, "accuracy": 0.9, "valid_loss": 0.3}, 3, warm=True)
    assert kept == "best" and "epoch 2 of 3" in text and "0.900" in text and "0.800" in text
    kept, text = train.verdict(start, {"epoch": 3, "accuracy": 0.9, "valid_loss": 0.3}, 3, warm=True)
    assert kept == "last" and "0.900" in text
    kept, text = train.verdict(start, start, 3, warm=True)
    assert kept == "start" and "quick model" in text


def test_the_train_tab_note_says_what_the_fast_setting_costs():
    accurate = settings.setting_note(224, 3, n_train=160, cuda=False)
    fast = settings.setting_note(160, 3, n_train=160, cuda=False)
    assert accurate.startswith("Accurate: 224 px") and "Fast: 160 px" in accurate and "points less" in accurate
    assert fast.startswith("Fast: 160 px") and "points less" in fast
    seconds = [int(x.split("~")[1].split(" s")[0]) for x in (accurate, fast)]
    assert seconds[0] > seconds[1]  # the accurate setting costs more time
    assert "not measured" in settings.setting_note(224, 5, cuda=True)
