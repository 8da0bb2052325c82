"""Where a model goes wrong: confusion matrix, top losses, uncertain cases, per-class scores.

`evaluate` runs a saved model (through its ONNX graph, the same path the
predictor uses) over the validation images of a dataset and returns an
`Evaluation`; the other functions turn that into plain data. The `plot_*`
functions draw that data on a new matplotlib Figure each (never pyplot's
global one, so Gradio can show them and threads don't collide).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dragonclf import items as items_mod
from dragonclf.errors import DragonError
from dragonclf.store import Store

EPS = 1e-7


# ---- numbers ---------------------------------------------------------------

def confusion_matrix(actual: list[str], predicted: list[str], labels: list[str]) -> np.ndarray:
    """Counts, rows = actual label, columns = predicted label, in `labels` order."""
    index = {lab: i for i, lab in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for a, p in zip(actual, predicted):
        cm[index[a], index[p]] += 1
    return cm


def per_class_report(cm: np.ndarray, labels: list[str]) -> dict[str, dict]:
    """Precision, recall, F1 and support per label (0 where undefined, as scikit-learn's zero_division=0)."""
    out = {}
    for i, lab in enumerate(labels):
        tp = cm[i, i]
        pred, support = cm[:, i].sum(), cm[i, :].sum()
        precision = tp / pred if pred else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[lab] = {"precision": float(precision), "recall": float(recall), "f1": float(f1), "support": int(support)}
    return out


def metrics_from_probs(actual: list[str], probs: np.ndarray, labels: list[str]) -> dict:
    """accuracy, error_rate, valid_loss (mean cross-entropy), per_class, n_valid."""
    labels = list(labels)
    if len(actual) == 0:
        return {"accuracy": None, "error_rate": None, "valid_loss": None, "per_class": {}, "n_valid": 0}
    extra = sorted({a for a in actual} - set(labels))  # labels the model never learnt
    all_labels = labels + extra
    probs = np.pad(probs, ((0, 0), (0, len(extra))))
    predicted = [labels[i] for i in probs[:, : len(labels)].argmax(1)]
    idx = np.array([all_labels.index(a) for a in actual])
    cm = confusion_matrix(actual, predicted, all_labels)
    acc = float(np.trace(cm) / cm.sum())
    loss = float(-np.log(np.clip(probs[np.arange(len(idx)), idx], EPS, 1)).mean())
    return {"accuracy": acc, "error_rate": 1 - acc, "valid_loss": loss,
            "per_class": per_class_report(cm, all_labels), "n_valid": len(actual)}


@dataclass
class Evaluation:
    model_dir: Path
    labels: list[str]  # model labels, then any label in the data the model does not know
    ids: list[str]
    paths: list[Path]
    actual: list[str]
    probs: np.ndarray  # (N, len(labels))
    tta: bool = False
    predicted: list[str] = field(init=False)

    def __post_init__(self):
        self.predicted = [self.labels[i] for i in self.probs.argmax(1)] if len(self.actual) else []

    @property
    def confusion(self) -> np.ndarray:
        return confusion_matrix(self.actual, self.predicted, self.labels)

    @property
    def metrics(self) -> dict:
        return metrics_from_probs(self.actual, self.probs, self.labels)

    def record(self, i: int) -> dict:
        """Image `i`: id, path, actual and predicted label, top probability, p(actual), loss."""
        a = self.labels.index(self.actual[i])
        p = self.probs[i]
        return {"id": self.ids[i], "path": str(self.paths[i]), "actual": self.actual[i],
                "predicted": self.predicted[i], "probability": float(p.max()),
                "p_actual": float(p[a]), "loss": float(-np.log(max(p[a], EPS)))}

    def top_losses(self, k: int = 9) -> list[dict]:
        """The k images the model got most wrong (highest cross-entropy), worst first."""
        recs = [self.record(i) for i in range(len(self.actual))]
        return sorted(recs, key=lambda r: r["loss"], reverse=True)[:k]

    def most_uncertain(self, k: int = 9) -> list[dict]:
        """Images closest to the decision boundary: smallest gap between the top two probabilities."""
        if self.probs.shape[1] < 2:
            return []
        top2 = np.sort(self.probs, axis=1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
        return [dict(self.record(int(i)), margin=float(margin[i])) for i in np.argsort(margin)[:k]]

    def samples(self, correct: bool, k: int = 9, seed: int = 0) -> list[dict]:
        """A random sample of correctly (or wrongly) classified images with their probabilities."""
        idx = [i for i in range(len(self.actual)) if (self.actual[i] == self.predicted[i]) == correct]
        random.Random(seed).shuffle(idx)
        return [self.record(i) for i in idx[:k]]

    def most_confused(self, min_count: int = 1) -> list[tuple[str, str, int]]:
        """(actual, predicted, count) off the diagonal, most frequent first."""
        cm = self.confusion
        pairs = [(self.labels[i], self.labels[j], int(cm[i, j])) for i in range(len(cm)) for j in range(len(cm))
                 if i != j and cm[i, j] >= min_count]
        return sorted(pairs, key=lambda t: (-t[2], t[0], t[1]))

    def cell_images(self, actual: str, predicted: str) -> list[dict]:
        """The images in one confusion-matrix cell (Clean reviews these)."""
        return [self.record(i) for i in range(len(self.actual))
                if self.actual[i] == actual and self.predicted[i] == predicted]


def evaluate(model, store_or_rows, dataset: str | None = None, split: str = "valid", tta: bool = False,
             progress=None) -> Evaluation:
    """Score a saved model on a dataset's `split` images ("valid", "train" or "all")."""
    from dragonclf.predict import Predictor

    pred = Predictor(model)
    # Score on the split the model was trained with (a store re-splits by each image's fixed key).
    name, items = items_mod.collect(store_or_rows, dataset, pred.meta.get("params", {}).get("valid_share"))
    trained_on = pred.meta.get("dataset")
    if isinstance(store_or_rows, Store) and trained_on != name:
        raise DragonError(f"Model {pred.model_dir.name} was trained on dataset {trained_on!r}, not {name!r}.")
    chosen = [it for it in items if split == "all" or it.split == split]
    if not chosen:
        raise DragonError(f"Dataset {name!r} has no {split} images to evaluate on.")
    probs = []
    for start in range(0, len(chosen), 32):
        probs.append(pred.probs([it.path for it in chosen[start:start + 32]], tta=tta))
        if progress is not None:
            progress(min(1.0, (start + 32) / len(chosen)), f"Evaluating: {min(start + 32, len(chosen))}/{len(chosen)}")
    probs = np.concatenate(probs)
    labels = list(pred.labels)
    extra = sorted({it.label for it in chosen} - set(labels))
    probs = np.pad(probs, ((0, 0), (0, len(extra))))
    return Evaluation(pred.model_dir, labels + extra, [it.id for it in chosen], [it.path for it in chosen],
                      [it.label for it in chosen], probs, tta)


# ---- figures ---------------------------------------------------------------

def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained")


def plot_confusion_matrix(cm: np.ndarray, labels: list[str], normalize: bool = False):
    """The confusion matrix as a Figure: counts (or row shares) in each cell."""
    n = len(labels)
    fig = _figure(1.2 + 0.7 * n, 1.0 + 0.7 * n)
    ax = fig.add_subplot()
    data = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    ax.imshow(data, cmap="Blues")
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("Actual")
    hi = data.max() if data.size else 0
    for i in range(n):
        for j in range(n):
            txt = f"{data[i, j]:.2f}" if normalize else str(int(data[i, j]))
            ax.text(j, i, txt, ha="center", va="center", color="white" if data[i, j] > hi / 2 else "black")
    ax.set_title("Confusion matrix")
    return fig


def plot_records(records: list[dict], title: str = "", ncols: int = 3):
    """A grid of images, each titled actual / predicted / loss / probability (top losses etc.)."""
    from PIL import Image

    n = max(len(records), 1)
    nrows = (n + ncols - 1) // ncols
    fig = _figure(3 * ncols, 3.2 * nrows)
    for k, r in enumerate(records):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        with Image.open(r["path"]) as im:
            ax.imshow(im.convert("RGB"))
        ax.set_title(f"{r['actual']} → {r['predicted']}\nloss {r['loss']:.2f}, p {r['probability']:.2f}", fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return fig


def plot_history(history: list[dict]):
    """Train and valid loss per epoch (the training tab's loss chart)."""
    fig = _figure(5, 3)
    ax = fig.add_subplot()
    ep = [h["epoch"] for h in history]
    ax.plot(ep, [h.get("train_loss") for h in history], marker="o", label="train loss")
    ax.plot(ep, [h.get("valid_loss") for h in history], marker="o", label="valid loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    # from zero, with room above: one epoch's point would otherwise get an axis from 0.96 to 1.04
    top = max((v for h in history for v in (h.get("train_loss"), h.get("valid_loss")) if v is not None), default=1)
    ax.set_ylim(0, top * 1.15)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs only
    if ep:
        ax.set_xlim(min(ep) - 0.5, max(ep) + 0.5)
    ax.legend()
    return fig
