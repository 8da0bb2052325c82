"""The large-dataset out-of-fold pass: scikit-learn's answers, folds that never see their images, warm refits."""

import numpy as np
import pytest

from clean_fixtures import pets, seed_home  # noqa: F401 - fixtures
from dragonclf import oof


def blobs(n=600, d=24, k=3, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (k, d))
    y = rng.integers(0, k, n)
    X = (centres[y] + rng.normal(0, noise, (n, d))).astype(np.float32)
    labels = [f"c{i}" for i in range(k)]
    return X, [labels[i] for i in y], labels, [f"{rng.integers(1 << 62):016x}" for _ in range(n)]


def sklearn_probs(X, given, labels, C, train, test):
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=C, max_iter=5000, tol=1e-8).fit(X[train], [given[i] for i in train])
    out = np.zeros((len(test), len(labels)))
    out[:, [labels.index(c) for c in lr.classes_]] = lr.predict_proba(X[test])
    return out


@pytest.mark.parametrize("k_labels,C", [(3, 1e-3), (2, 1e-3), (4, 1.0)])
def test_the_heads_are_scikit_learns_logistic_regression(k_labels, C):
    X, given, labels, _ = blobs(k=k_labels, noise=2.0)
    Xs = oof.standardise(X.copy())
    y = np.array([labels.index(g) for g in given])
    W, _ = oof.fit_softmax(Xs, y, len(labels), C, gtol=1e-9, max_iter=5000)
    every = np.arange(len(y))
    assert np.abs(oof.predict(Xs, W) - sklearn_probs(Xs, given, labels, C, every, every)).max() < 2e-3


def test_each_image_is_scored_by_heads_that_never_saw_it():
    X, given, labels, ids = blobs(noise=2.5)
    probs, warm = oof.out_of_fold(X.copy(), ids, given, labels, k=4, seeds=(0,), C=1e-2)
    Xs = oof.standardise(X.copy())
    folds = oof.fold_of(ids, 4, 0)
    for f in range(4):
        test, train = np.flatnonzero(folds == f), np.flatnonzero(folds != f)
        assert np.abs(probs[test] - sklearn_probs(Xs, given, labels, 1e-2, train, test)).max() < 5e-3
    assert warm.refitted == 4 and np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_folds_follow_ids_not_the_other_images():
    ids = [f"id{i}" for i in range(500)]
    assert list(oof.fold_of(ids, 5, 1)[:100]) == list(oof.fold_of(ids[:100], 5, 1))
    assert sorted(set(oof.fold_of(ids, 5, 1))) == [0, 1, 2, 3, 4]
    assert list(oof.fold_of(ids, 5, 1)) != list(oof.fold_of(ids, 5, 2))


def test_a_refit_after_edits_fits_only_the_folds_that_changed_and_matches_a_fresh_pass():
    X, given, labels, ids = blobs(n=800, noise=2.0)
    first, warm = oof.out_of_fold(X.copy(), ids, given, labels, k=5, seeds=(0, 1))
    again, same = oof.out_of_fold(X.copy(), ids, given, labels, k=5, seeds=(0, 1), warm=warm)
    assert same.refitted == 0 and np.array_equal(first, again)  # nothing changed: nothing refitted
    edited = list(given)
    edited[7] = labels[(labels.index(given[7]) + 1) % len(labels)]  # one relabel
    warm_probs, after = oof.out_of_fold(X.copy(), ids, edited, labels, k=5, seeds=(0, 1), warm=warm)
    assert after.refitted == 2 * 4  # per seed, every fold but the one that holds image 7
    fresh, _ = oof.out_of_fold(X.copy(), ids, edited, labels, k=5, seeds=(0, 1))
    assert np.abs(warm_probs - fresh).max() < 2e-3


def test_the_clean_pass_on_a_large_dataset_ranks_planted_swaps_and_refits_warm(pets, monkeypatch):
    """The path datasets of 2,000+ images take (threshold lowered to the 122-photo set): same job, same answers."""
    from dragonclf import clean, features
    from test_clean import plant_swaps

    monkeypatch.setattr(oof, "LARGE", 50)
    features.warm_heads.clear()
    truth = plant_swaps(pets)
    found = clean.find_suspects(pets, ["mislabel"])
    top = found.items[: len(truth)]
    assert {s["id"] for s in top} == set(truth) and all(s["suggested"] == truth[s["id"]] for s in top)
    assert len(features.warm_heads) == 4  # two backbones x two shuffles, kept for the next pass
    first = next(iter(features.warm_heads.values()))
    for image_id, label in truth.items():
        clean.decide(pets, [image_id], "relabel", label)
    report = clean.refit_after_edits(pets, found.snapshot)
    assert report["accuracy_after"] > report["accuracy_before"]
    assert next(iter(features.warm_heads.values())) is not first  # refitted from the kept heads
