"""Embedding cache, the quick model and out-of-fold probabilities, on real photos."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from dragonclf import config, embeddings, features
from dragonclf.errors import DragonError
from dragonclf.items import Item
from dragonclf.predict import Predictor
from ml_fixtures import SIZE, ml_home, photo_items  # noqa: F401 - fixture


def cached_rows(backbone: str = "efficientnet_lite0") -> int:
    vf = embeddings.vectors(backbone, SIZE)
    try:
        return len(vf)
    finally:
        vf.close()


def test_embeddings_are_cached_and_resume_after_stop(ml_home):
    items = photo_items(per_label=6)
    stop = threading.Event()

    def progress(frac, msg):
        if frac > 0:  # (0: loading the network) Stop as soon as the first batch is in
            stop.set()

    with pytest.raises(features.Cancelled):
        features.embed(items, size=SIZE, batch_size=8, progress=progress, cancel=stop)
    assert cached_rows() == 8  # the finished batch was kept
    stop.clear()
    first = features.embed(items, size=SIZE, batch_size=8)
    assert first.shape == (len(items), 1280) and cached_rows() == len(items)
    # Everything is cached now: even with Stop pressed nothing needs computing.
    stop.set()
    again = features.embed(items, size=SIZE, cancel=stop)
    np.testing.assert_array_equal(first, again)
    # The cache is per backbone and size.
    assert features.embed(items[:2], "mobilenet_v2", size=SIZE).shape == (2, 1280)
    assert cached_rows() == len(items) and cached_rows("mobilenet_v2") == 2


def test_linear_head_matches_scikit_learn(ml_home):
    """Standardisation folded into one linear layer gives sklearn's own probabilities."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    for n_classes in (2, 4):
        X = rng.normal(size=(80, 16)).astype(np.float32) + np.repeat(np.arange(n_classes), 80 // n_classes)[:, None]
        y = [f"c{i}" for i in np.repeat(np.arange(n_classes), 80 // n_classes)]
        labels = sorted(set(y))
        head = features.fit_head(X, y, labels)
        ref = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
        np.testing.assert_allclose(head.probs(X), ref.predict_proba(X), atol=1e-4)


def test_quick_model_learns_the_photos(ml_home):
    items = photo_items()
    r = features.fit_quick(items, dataset="photos")  # the backbone's own 224 px, as users get it
    n_valid = sum(it.split == "valid" for it in items)
    assert r.metrics["n_valid"] == n_valid
    assert r.metrics["accuracy"] >= 0.85  # chance is 0.25-0.32
    meta = json.loads((r.model_dir / "model.json").read_text())
    assert meta["mode"] == "quick" and meta["labels"] == ["fishes", "monuments", "renewable", "tools"]
    assert meta["input_size"] == 224 and meta["training_data"]["n_valid"] == n_valid
    # The saved ONNX graph (body + head) reproduces the head on the cached embeddings.
    valid = [it for it in items if it.split == "valid"]
    X = features.embed(valid)
    w = np.load(r.model_dir / "head.npz")
    head = features.LinearHead(meta["labels"], w["weight"], w["bias"])
    onnx = Predictor(r.model_dir).probs([it.path for it in valid])
    np.testing.assert_allclose(onnx, head.probs(X), atol=1e-3)


def test_out_of_fold_probs_flag_swapped_labels(ml_home):
    items = photo_items()
    # Two real mislabels: a fish filed as tools, a tool filed as fishes.
    fish = next(i for i, it in enumerate(items) if it.label == "fishes")
    tool = next(i for i, it in enumerate(items) if it.label == "tools")
    items[fish] = Item(items[fish].id, items[fish].path, "tools", items[fish].sha256, items[fish].split)
    items[tool] = Item(items[tool].id, items[tool].path, "fishes", items[tool].sha256, items[tool].split)
    oof = features.out_of_fold_probs(items, k=5, size=128)
    assert oof.probs.shape == (len(items), 4) and oof.ids == [it.id for it in items]
    np.testing.assert_allclose(oof.probs.sum(1), 1, atol=1e-5)
    p_given = oof.probs[np.arange(len(items)), [oof.labels.index(g) for g in oof.given]]
    worst = set(np.argsort(p_given)[:4])
    assert {fish, tool} <= worst
    assert oof.as_dict()[items[fish].id]["fishes"] > 0.5


def test_out_of_fold_works_with_a_tiny_label(ml_home):
    items = photo_items(per_label=8, labels=["fishes", "tools"]) + photo_items(per_label=1, labels=["monuments"])
    oof = features.out_of_fold_probs(items, k=5, size=SIZE)
    assert oof.probs.shape == (len(items), 3)


@pytest.mark.parametrize("case", ["empty", "one label"])
def test_quick_model_refuses_unlearnable_datasets(ml_home, case):
    items = [] if case == "empty" else photo_items(per_label=5, labels=["fishes"])
    with pytest.raises(DragonError, match="no active images" if case == "empty" else "one label"):
        features.fit_quick(items, dataset="photos", size=SIZE)
    assert not (config.models_root() / "photos").exists() or not any((config.models_root() / "photos").iterdir())


def test_a_label_with_one_image_trains_with_a_warning(ml_home):
    items = photo_items(per_label=8, labels=["fishes", "tools"]) + photo_items(per_label=1, labels=["monuments"])
    r = features.fit_quick(items, dataset="photos", size=SIZE)
    assert any("monuments" in w and "only 1 image" in w for w in r.warnings)
    assert "monuments" in json.loads((r.model_dir / "model.json").read_text())["labels"]
