"""Clean: find the pictures that are probably wrong, and apply what the person decides.

Suspects come in kinds, each ranked by `score` (higher = more suspicious):

- "mislabel": every image is judged by quick models (strongly regularised
  logistic regression on the cached embeddings of two offline backbones)
  that never saw it (k-fold, out-of-fold probabilities),
  and flagged by the confident-learning rule: per-class thresholds are the
  mean self-confidence of the class; an image is a label issue when another
  class's probability reaches that class's threshold and its given label's
  does not. Ranked by margin (best other class minus given label).
- "top_loss": the validation images the last fine-tuned model got most wrong.
- "duplicate": near-duplicate clusters (perceptual hash), within and across labels.
- "conflict": the same picture arrived under two labels.
- "quality": tiny, very dark or bright, near-blank, blurry, extreme aspect ratio.

Each suspect is a plain dict: id, path, source, label, suggested, score, reason,
kind, action (what we suggest: relabel | trash | keep | review), group (the
duplicate cluster, else None). Images marked kept are not suspected again.
Decisions go through `Store.apply`: one journalled batch, undo and redo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from dragonclf import backbones, quality
from dragonclf.errors import DragonError
from dragonclf.store import Decision, EditResult, ImageRow, Store

KINDS = ("mislabel", "top_loss", "duplicate", "conflict", "quality")
DECISIONS = ("relabel", "trash", "keep", "restore", "unkeep")


class MissingLabel(DragonError):
    """A relabel names a label the dataset does not have: the UI offers to create it."""

    def __init__(self, label: str, dataset: str, existing: list[str]):
        self.label = label
        super().__init__(
            f"Label {label!r} does not exist in {dataset!r} (labels: {', '.join(existing) or 'none'}). "
            f"Create it? Tick 'create the label' (CLI: --create) and relabel again."
        )


# ---- confident learning (pure: arrays in, arrays out) ----------------------

@dataclass
class LabelIssues:
    flagged: np.ndarray  # (N,) bool: a label issue by the confident-learning rule
    suggested: np.ndarray  # (N,) int: the class the image most confidently belongs to
    score: np.ndarray  # (N,) float: best other class's probability minus the given label's
    thresholds: np.ndarray  # (K,) per-class mean self-confidence


def find_label_issues(probs: np.ndarray, given: np.ndarray) -> LabelIssues:
    """The confident-learning rule on out-of-fold `probs` (N, K) with given label indices (N,).

    Written here from the paper's definition (Northcutt et al., 2021), not from
    cleanlab's code: threshold t_j = mean p_j over images labelled j; an image
    is confidently in class j when p_j >= t_j (the most probable such class
    when several are); it is an issue when that class is not its given label
    and its given label's probability is below that label's threshold.
    """
    probs = np.asarray(probs, dtype=np.float64)
    given = np.asarray(given, dtype=np.int64)
    n, k = probs.shape
    thresholds = np.ones(k)
    for j in range(k):
        mine = given == j
        if mine.any():
            thresholds[j] = probs[mine, j].mean()
    above = probs >= thresholds[None, :] - 1e-12
    confident = np.where(above, probs, -1.0).argmax(axis=1)
    rows = np.arange(n)
    self_conf = probs[rows, given]
    others = probs.copy()
    others[rows, given] = -1.0
    best_other = others.argmax(axis=1)
    suggested = np.where(above.any(axis=1) & (confident != given), confident, best_other)
    flagged = above.any(axis=1) & (confident != given) & ~above[rows, given]
    score = probs[rows, best_other] - self_conf
    return LabelIssues(flagged, suggested, score, thresholds)


def ranking(issues: LabelIssues) -> np.ndarray:
    """Indices, most suspicious first: flagged issues by margin, then the rest by margin."""
    order = np.lexsort((-issues.score, ~issues.flagged))
    return order


# ---- suspects ----------------------------------------------------------------

@dataclass
class Suspects:
    items: list[dict]
    notes: list[str] = field(default_factory=list)  # why a kind could not be computed
    snapshot: dict | None = None  # quick-model predictions before edits (for refit_after_edits)


def source_of(row: ImageRow) -> str | None:
    """Where an image came from: the image URL, the imported file, or the page."""
    return row.image_url or row.source or row.page_url


def _suspect(row: ImageRow, kind: str, score: float, reason: str, action: str, suggested: str | None = None,
             group: str | None = None) -> dict:
    return {"id": row.id, "path": str(row.path), "source": source_of(row), "label": row.label,
            "suggested": suggested, "score": round(float(score), 4), "reason": reason, "kind": kind,
            "action": action, "group": group}


def neighbour_probs(X: np.ndarray, given: list[str], labels: list[str], k: int = 10, temperature: float = 0.05) -> np.ndarray:
    """Leave-one-out votes of each image's k most similar images (cosine on embeddings).

    A second opinion that never sees the image's own label: a wrongly labelled
    photo sits among photos of its true class. Averaged with the linear
    model's out-of-fold probabilities it ranks planted label flips better than
    either alone (bench/bench_clean.py).
    """
    n = len(given)
    if n < 2:
        return np.full((n, len(labels)), 1.0 / len(labels))
    Z = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    sim = Z @ Z.T
    np.fill_diagonal(sim, -np.inf)
    k = min(k, n - 1)
    nearest = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    col = np.array([labels.index(g) for g in given])
    probs = np.zeros((n, len(labels)))
    weights = np.exp((np.take_along_axis(sim, nearest, axis=1) - 1.0) / temperature)
    for i in range(n):
        np.add.at(probs[i], col[nearest[i]], weights[i])
    return probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-300)


def combine_with_neighbours(model_probs: np.ndarray, X: np.ndarray, given: list[str], labels: list[str],
                            k: int = 10) -> np.ndarray:
    """Average model probabilities with neighbour votes, in two passes.

    Mislabelled photos are often alike (one wrong search result, five
    times): a correct photo whose nearest neighbours were all mislabelled
    would be outvoted by them. So the first pass finds the confident label
    issues, and the second pass lets neighbours vote with those corrected.
    """
    idx = np.array([labels.index(g) for g in given])
    first = 0.5 * model_probs + 0.5 * neighbour_probs(X, given, labels, k)
    issues = find_label_issues(first, idx)
    corrected = [labels[issues.suggested[i]] if issues.flagged[i] else g for i, g in enumerate(given)]
    return 0.5 * model_probs + 0.5 * neighbour_probs(X, corrected, labels, k)


# The quick heads for Clean. With ~100 images and 1280 features an unregularised
# head separates the training folds perfectly and scores held-out images
# over-confidently; a strong L2 penalty gives probabilities that rank label
# flips better (bench/RESULTS.md, "## Clean": chosen on flip seeds 100-159,
# reported on seeds 0-4).
HEAD_C = 0.001
# A second offline body whose mistakes differ from EfficientNet's: averaging
# the two heads' out-of-fold probabilities is a small ensemble.
SECOND_BACKBONE = "mobilenet_v2"


def _ready(name: str) -> bool:
    return any(b["name"] == name and b["ready"] for b in backbones.available_backbones())


def fold_repeats(n_images: int) -> int:
    """How many fold shuffles to average: 2 from ~120 images up, up to 10 below.

    With a handful of images per label, which few images share a fold moves
    a borderline photo's out-of-fold probability a lot (a tool photo planted
    among 10 fish fell out of the queue for ~1 fold shuffle in 15 with 2
    repeats, never with 5); head fits on so few images cost next to nothing.
    """
    return max(2, min(10, math.ceil(240 / max(n_images, 1))))


def out_of_fold(store: Store, backbone: str = backbones.DEFAULT_BACKBONE, folds: int = 5, repeats: int | None = None,
                neighbours: int = 0, second: str | None = SECOND_BACKBONE, progress=None, cancel=None):
    """Probabilities from models that never saw each image's label.

    Strongly regularised linear heads (k-fold, `repeats` shuffles, by default
    `fold_repeats` of the dataset's size) on the embeddings of `backbone` and,
    when its weights are at hand, of `second`, all averaged. `neighbours` > 0
    also averages in leave-one-out votes of that many nearest images (off by
    default: no better on held-out seeds). Deterministic for a given dataset.
    """
    from dragonclf import items as items_mod
    from dragonclf.features import embed, out_of_fold_probs

    _, items = items_mod.collect(store)  # read once: every run and the neighbours use these
    if repeats is None:
        repeats = fold_repeats(len(items))
    bodies = [backbone] + ([second] if second and second != backbone and _ready(second) else [])
    runs = [(b, seed) for b in bodies for seed in range(repeats)]
    oof = None
    for n, (body, seed) in enumerate(runs):
        def report(f, m, n=n):
            if progress is not None:
                progress((n + f) / len(runs), m)

        run = out_of_fold_probs(items, body, dataset=store.name, k=folds, seed=seed, C=HEAD_C, progress=report, cancel=cancel)
        if oof is None:
            oof = run
        else:
            if run.ids != oof.ids or run.labels != oof.labels:
                raise DragonError("The dataset changed during the suspects pass; run it again.")
            oof.probs = oof.probs + run.probs
    oof.probs = oof.probs / len(runs)
    if neighbours:
        X = embed(sorted(items, key=lambda it: it.id), backbone)  # the rows of oof are in id order  # cached by now: no new forward passes
        oof.probs = combine_with_neighbours(oof.probs, X, oof.given, oof.labels, neighbours)
    return oof


def snapshot_from(oof) -> dict:
    """Given labels, out-of-fold predictions and accuracy, JSON-able (kept in UI state)."""
    predicted = [oof.labels[i] for i in oof.probs.argmax(axis=1)]
    acc = float(np.mean([p == g for p, g in zip(predicted, oof.given)])) if oof.given else None
    return {"accuracy": acc, "given": dict(zip(oof.ids, oof.given)), "predicted": dict(zip(oof.ids, predicted))}


def mislabel_suspects(store: Store, backbone: str = backbones.DEFAULT_BACKBONE, progress=None, cancel=None,
                      include_unflagged: bool = False) -> tuple[list[dict], dict]:
    """Likely mislabels (ranked) and the snapshot of the quick model's predictions."""
    oof = out_of_fold(store, backbone, progress=progress, cancel=cancel)
    given = np.array([oof.labels.index(g) for g in oof.given])
    issues = find_label_issues(oof.probs, given)
    order = []
    for i in ranking(issues):
        # the rule's issues first; then images whose model prefers another label all the same
        if not (issues.flagged[i] or issues.score[i] > 0 or include_unflagged):
            break
        order.append(i)
    rows = store.images_by_id(oof.ids[i] for i in order)  # the suspects' rows, not every image's
    out = []
    for i in order:
        row = rows.get(oof.ids[i])
        if row is None or row.kept:
            continue
        s = oof.labels[issues.suggested[i]]
        p_s, p_g = oof.probs[i, issues.suggested[i]], oof.probs[i, given[i]]
        # unsure between several labels, or not a confident issue: a person should look
        action = "relabel" if issues.flagged[i] and p_s >= 0.5 else "review"
        reason = (f"models that never saw its label say {s!r} ({p_s:.0%}), {row.label!r} only {p_g:.0%} "
                  f"(typical for {row.label!r}: {issues.thresholds[given[i]]:.0%})")
        out.append(_suspect(row, "mislabel", issues.score[i], reason, action, s))
    return out, snapshot_from(oof)


def last_finetuned(dataset: str) -> dict | None:
    """The newest fine-tuned (not quick) model of a dataset, as listed by modelstore."""
    from dragonclf import modelstore

    return next((m for m in modelstore.list_models(dataset) if m.get("mode") not in (None, "quick")), None)


def top_loss_suspects(store: Store, k: int = 30, progress=None) -> list[dict]:
    """The validation images the last fine-tuned model got most wrong (empty when there is no such model)."""
    from dragonclf import interpret

    model = last_finetuned(store.name)
    if model is None:
        return []
    ev = interpret.evaluate(model["path"], store, split="valid", progress=progress)
    rows = {r.id: r for r in store.images()}
    out = []
    for rec in ev.top_losses(k=len(ev.actual)):
        row = rows.get(rec["id"])
        if row is None or row.kept or rec["p_actual"] >= 0.5:
            continue
        reason = (f"fine-tuned model {model['id']} predicts {rec['predicted']!r} ({rec['probability']:.0%}); "
                  f"loss {rec['loss']:.2f}")
        out.append(_suspect(row, "top_loss", rec["loss"], reason, "review", rec["predicted"]))
        if len(out) >= k:
            break
    return out


def duplicate_suspects(store: Store) -> list[dict]:
    """Near-duplicate clusters: the best copy (largest, oldest) suggested "keep", the others "trash"."""
    groups = store.near_duplicate_groups()
    rows = store.images_by_id(i for ids in groups for i in ids)  # the clusters' members only, not every image
    out = []
    for n, ids in enumerate(groups, start=1):
        members = sorted((rows[i] for i in ids if i in rows and rows[i].status == "active"), key=lambda r: (-r.width * r.height, r.added_at, r.id))
        if len(members) < 2:
            continue
        labels = sorted({r.label for r in members})
        across = len(labels) > 1
        best = members[0]
        group = f"dup-{n}"
        where = f"across labels {', '.join(map(repr, labels))}" if across else f"within {labels[0]!r}"
        for r in members:
            if r.kept:
                continue
            if r is best:
                reason = f"best copy in a cluster of {len(members)} near-duplicates {where}"
                action, score = ("review", 0.9) if across else ("keep", 0.5)
                suggested = None
            else:
                reason = f"near-duplicate of {best.id} ({len(members)} in the cluster, {where})"
                action, score = "trash", (1.0 if across else 0.6)
                suggested = best.label if across and r.label != best.label else None
            out.append(_suspect(r, "duplicate", score, reason, action, suggested, group))
    return out


def conflict_suspects(store: Store) -> list[dict]:
    """The same picture arrived under two labels: one of the two answers is wrong."""
    out = []
    for c in store.conflicts():
        row = store.image(c["image_id"])
        if row.kept:
            continue
        where = f" from {c['source']}" if c["source"] else ""
        reason = f"the same picture also arrived as {c['other_label']!r}{where}; stored as {c['label']!r}"
        out.append(_suspect(row, "conflict", 1.0, reason, "review", c["other_label"]))
    # one card per image even if it arrived under several other labels
    seen, unique = set(), []
    for s in out:
        if s["id"] not in seen:
            seen.add(s["id"])
            unique.append(s)
    return unique


def trash_suspects(rows: list[ImageRow]) -> list[dict]:
    """Trashed images (rows, e.g. a page of the trash) as review cards (action: restore), for the trash view."""
    return [_suspect(r, "trash", 0.0, "in the trash: Restore brings it back; Empty trash deletes it", "restore")
            for r in rows]


def quality_suspects(store: Store, thresholds: quality.Thresholds = quality.Thresholds(), progress=None) -> list[dict]:
    rows = [r for r in store.images() if not r.kept]
    measures = quality.measure_rows(rows, progress)
    out = []
    for r in rows:
        found = quality.flags(measures[r.id], thresholds)
        if found:
            score = max(sev for _, sev, _ in found)
            out.append(_suspect(r, "quality", score, "; ".join(reason for _, _, reason in found), "trash"))
    return out


def find_suspects(store: Store, kinds=None, backbone: str = backbones.DEFAULT_BACKBONE, progress=None,
                  cancel=None) -> Suspects:
    """All suspects of the asked-for kinds (default all), each kind ranked by score.

    A kind that cannot be computed for this dataset (e.g. mislabels with one
    label) is skipped with a note when all kinds are asked for, and raises its
    DragonError when it was asked for by name.
    """
    asked = list(kinds) if kinds else list(KINDS)
    unknown = [k for k in asked if k not in KINDS]
    if unknown:
        raise DragonError(f"unknown kind of suspect {unknown[0]!r} (use one of {', '.join(KINDS)})")
    result = Suspects([])

    def report(f, m):
        if progress is not None:
            progress(f, m)

    for n, kind in enumerate(asked):
        def part(f, m, n=n):
            report((n + f) / len(asked), m)

        part(0.0, f"Looking for {kind.replace('_', ' ')} suspects: reading {store.name} and loading what it needs…")
        try:
            if kind == "mislabel":
                found, result.snapshot = mislabel_suspects(store, backbone, progress=part, cancel=cancel)
            elif kind == "top_loss":
                found = top_loss_suspects(store, progress=part)
            elif kind == "duplicate":
                found = duplicate_suspects(store)
            elif kind == "conflict":
                found = conflict_suspects(store)
            else:
                found = quality_suspects(store, progress=part)
        except DragonError as e:
            if kinds:
                raise
            result.notes.append(f"{kind}: {e}")
            continue
        result.items += sorted(found, key=lambda s: -s["score"]) if kind != "duplicate" else found
    report(1.0, f"{len(result.items)} suspects")
    return result


def suspects(store: Store, kind: str | None = None, **kw) -> list[dict]:
    """The ranked suspects of one kind (or all kinds) as plain dicts."""
    return find_suspects(store, [kind] if kind else None, **kw).items


# ---- decisions ---------------------------------------------------------------

def decide(store: Store, ids, action: str, label: str | None = None, create_label: bool = False,
           actor: str | None = None) -> EditResult:
    """Apply one decision to several images as one journalled batch (one undo step) by `actor`."""
    ids = list(dict.fromkeys(ids))  # the same card twice in a selection is one edit
    if not ids:
        raise DragonError("Select at least one image first.")
    if action not in DECISIONS:
        raise DragonError(f"unknown action {action!r} (use one of {', '.join(DECISIONS)})")
    if action == "relabel":
        if not (label or "").strip():
            raise DragonError("Choose the label to move the images to.")
        label = label.strip()
        if create_label:
            store.label_or_create(label)
        else:
            try:
                store.label(label)
            except DragonError:  # a name clash too: say which labels exist
                raise MissingLabel(label, store.name, [lab.display for lab in store.labels()]) from None
    return store.apply([Decision(i, action, label) for i in ids], actor=actor)


def describe(res: EditResult, action: str) -> str:
    """One line for people about what an edit did."""
    verb = {"relabel": "relabelled", "trash": "moved to the trash", "keep": "marked kept",
            "restore": "restored", "unkeep": "unmarked", "undo": "undone", "redo": "redone"}.get(action, action)
    parts = [f"{len(res.changed)} {verb}"]
    if res.unchanged:
        parts.append(f"{len(res.unchanged)} already so")
    if res.skipped:
        parts.append(f"{len(res.skipped)} skipped (changed by someone else since)")
    return ", ".join(parts) + "."


# ---- after edits ---------------------------------------------------------------

def snapshot(store: Store, backbone: str = backbones.DEFAULT_BACKBONE, progress=None) -> dict:
    """The quick model's out-of-fold predictions now (take one before a batch of edits)."""
    return snapshot_from(out_of_fold(store, backbone, progress=progress))


def refit_after_edits(store: Store, before: dict | None, backbone: str = backbones.DEFAULT_BACKBONE,
                      progress=None) -> dict:
    """Refit the quick model (seconds, embeddings are cached) and say what the edits changed.

    Accuracy is out-of-fold over all active images (each judged by a model
    that never saw it), before against the old labels, after against the new.
    `flipped`: images whose predicted label changed.
    """
    after = snapshot(store, backbone, progress)
    before = before or {}
    flipped = []
    for image_id, pred in after["predicted"].items():
        old = (before.get("predicted") or {}).get(image_id)
        if old is not None and old != pred:
            flipped.append({"id": image_id, "label": after["given"][image_id], "before": old, "after": pred})
    relabelled = sum(1 for i, g in after["given"].items() if (before.get("given") or {}).get(i, g) != g)
    removed = len(set(before.get("given") or {}) - set(after["given"]))
    return {"accuracy_before": before.get("accuracy"), "accuracy_after": after["accuracy"],
            "n_images": len(after["given"]), "relabelled": relabelled, "removed": removed,
            "flipped": flipped, "snapshot": after}


def cell_images(store: Store, model, actual: str, predicted: str) -> list[dict]:
    """The validation images in one confusion-matrix cell (actual A, predicted B), as suspects."""
    from dragonclf import interpret

    ev = interpret.evaluate(model, store, split="valid")
    for name in (actual, predicted):
        if name not in ev.labels:
            raise DragonError(f"label {name!r} is not one of the model's labels ({', '.join(ev.labels)})")
    rows = {r.id: r for r in store.images()}
    out = []
    for rec in ev.cell_images(actual, predicted):
        row = rows.get(rec["id"])
        if row is None:
            continue
        reason = f"actual {actual!r}, predicted {predicted!r} ({rec['probability']:.0%})"
        action = "keep" if actual == predicted else "review"
        out.append(_suspect(row, "cell", rec["loss"], reason, action, predicted if actual != predicted else None))
    return sorted(out, key=lambda s: -s["score"])


# the dataset zip lives in its own module; Clean offers it
from dragonclf.dataset_export import export_dataset  # noqa: E402,F401
