"""Interpretation numbers checked against scikit-learn; figures are real Figures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.figure import Figure
from sklearn import metrics as skm

from dragonclf import interpret
from dragonclf.errors import DragonError
from ml_fixtures import install_model, ml_home, trained_models  # noqa: F401 - fixtures

LABELS = ["a", "b", "c", "d"]


def test_confusion_matrix_and_per_class_scores_match_scikit_learn():
    rng = np.random.default_rng(1)
    actual = list(rng.choice(LABELS, 200))
    predicted = [a if rng.random() < 0.6 else rng.choice(LABELS[:3]) for a in actual]  # "d" is never predicted
    cm = interpret.confusion_matrix(actual, predicted, LABELS)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(actual, predicted, labels=LABELS))
    report = interpret.per_class_report(cm, LABELS)
    p, r, f, s = skm.precision_recall_fscore_support(actual, predicted, labels=LABELS, zero_division=0)
    for i, lab in enumerate(LABELS):
        assert report[lab]["precision"] == pytest.approx(p[i])
        assert report[lab]["recall"] == pytest.approx(r[i])
        assert report[lab]["f1"] == pytest.approx(f[i])
        assert report[lab]["support"] == s[i]


def test_metrics_from_probs_match_scikit_learn():
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(4), 50)
    actual = list(rng.choice(LABELS, 50))
    m = interpret.metrics_from_probs(actual, probs, LABELS)
    pred = [LABELS[i] for i in probs.argmax(1)]
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(actual, pred))
    assert m["valid_loss"] == pytest.approx(skm.log_loss(actual, probs, labels=LABELS))
    assert m["error_rate"] == pytest.approx(1 - m["accuracy"])


@pytest.fixture
def evaluation(ml_home, trained_models):
    model = install_model(trained_models["quick"].model_dir)
    return interpret.evaluate(model, trained_models["items"], dataset="photos")


def test_evaluation_of_a_saved_model(evaluation, trained_models):
    ev = evaluation
    valid = [it for it in trained_models["items"] if it.split == "valid"]
    assert ev.ids == [it.id for it in valid] and ev.actual == [it.label for it in valid]
    assert ev.metrics["accuracy"] == pytest.approx(skm.accuracy_score(ev.actual, ev.predicted))
    # The model's own record of its served graph's validation accuracy is what evaluation finds.
    meta = json.loads((trained_models["quick"].model_dir / "model.json").read_text())
    served = meta["variant"]["valid_accuracy"][meta["variant"]["variant"]]
    assert ev.metrics["accuracy"] == pytest.approx(served, abs=1e-6)
    if meta["variant"]["variant"] == "float32":
        assert served == pytest.approx(trained_models["quick"].metrics["accuracy"], abs=1e-6)
    np.testing.assert_array_equal(ev.confusion, skm.confusion_matrix(ev.actual, ev.predicted, labels=ev.labels))


def test_top_losses_uncertain_samples_and_confused_pairs(evaluation):
    ev = evaluation
    top = ev.top_losses(k=5)
    assert [t["loss"] for t in top] == sorted((t["loss"] for t in top), reverse=True)
    for t in top:
        assert t["loss"] == pytest.approx(-np.log(max(t["p_actual"], 1e-7)), rel=1e-5)
        assert set(t) >= {"id", "path", "actual", "predicted", "loss", "probability"}
    all_losses = sorted((r["loss"] for r in ev.top_losses(k=10_000)), reverse=True)
    assert [t["loss"] for t in top] == pytest.approx(all_losses[:5])
    unsure = ev.most_uncertain(k=4)
    assert [u["margin"] for u in unsure] == sorted(u["margin"] for u in unsure)
    assert all(r["actual"] == r["predicted"] for r in ev.samples(correct=True, k=5))
    wrong = ev.samples(correct=False, k=100)
    assert all(r["actual"] != r["predicted"] for r in wrong)
    assert len(wrong) == int(ev.confusion.sum() - np.trace(ev.confusion))
    pairs = ev.most_confused()
    assert sum(n for _, _, n in pairs) == len(wrong)
    for a, p, n in pairs:
        assert len(ev.cell_images(a, p)) == n


def test_tta_and_figures(evaluation, trained_models):
    ev = evaluation
    tta = interpret.evaluate(ev.model_dir, trained_models["items"], dataset="photos", tta=True)
    np.testing.assert_allclose(tta.probs.sum(1), 1, atol=1e-5)
    assert tta.tta and not np.allclose(tta.probs, ev.probs)
    for fig in (interpret.plot_confusion_matrix(ev.confusion, ev.labels),
                interpret.plot_confusion_matrix(ev.confusion, ev.labels, normalize=True),
                interpret.plot_records(ev.top_losses(4), "Top losses"),
                interpret.plot_history([{"epoch": 1, "train_loss": 1.0, "valid_loss": 0.8},
                                        {"epoch": 2, "train_loss": 0.5, "valid_loss": 0.6}])):
        assert isinstance(fig, Figure) and fig.axes


def test_a_model_from_another_dataset_is_refused(ml_home, trained_models):
    from dragonclf.store import Store

    model = install_model(trained_models["quick"].model_dir)  # trained on "photos"
    with pytest.raises(DragonError, match="trained on dataset 'photos', not 'demo'"):
        interpret.evaluate(model, Store.open("demo"))
