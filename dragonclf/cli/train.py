"""CLI for models: train (quick or fine-tune), evaluate, export, predict."""

from __future__ import annotations

import sys
from pathlib import Path

from dragonclf.cli import add_json_flag, emit


def register(sub) -> None:
    from dragonclf.backbones import DEFAULT_BACKBONE, backbone_names
    from dragonclf.settings import AUGMENT_PRESETS, PRECISIONS, SCHEDULES, TrainSettings, cuda_likely, help_for

    defaults = TrainSettings.for_machine()  # sized for this machine: fewer epochs and smaller batches on a CPU
    where = "cuda" if cuda_likely() else "cpu"

    p = sub.add_parser("train", help="train a model on a dataset (quick: seconds; finetune: fastai)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=backbone_names())
    p.add_argument("--mode", default="quick", choices=("quick", "finetune"))
    p.add_argument("--epochs", type=int, default=defaults.epochs,
                   help=f"{help_for('epochs')}; default {defaults.epochs} on this machine ({where})")
    p.add_argument("--size", type=int, help=help_for("size"))
    p.add_argument("--batch-size", type=int, default=defaults.batch_size,
                   help=f"{help_for('batch_size')}; default {defaults.batch_size} on this machine ({where})")
    p.add_argument("--lr", type=float, help=help_for("lr"))
    p.add_argument("--freeze-epochs", type=int, help=help_for("freeze_epochs"))
    p.add_argument("--schedule", default=defaults.schedule, choices=SCHEDULES, help=help_for("schedule"))
    p.add_argument("--augment", default=defaults.augment, choices=list(AUGMENT_PRESETS), help=help_for("augment"))
    p.add_argument("--valid-share", type=float, help=help_for("valid_share"))
    p.add_argument("--mixed-precision", choices=("auto", *PRECISIONS), help=help_for("mixed_precision"))
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_json_flag(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score a model on its dataset's validation images")
    p.add_argument("--model", required=True, help="model folder or id (under the models folder)")
    p.add_argument("--dataset", help="dataset to score on (default: the model's own)")
    p.add_argument("--tta", action="store_true", help="test-time augmentation (average with the mirrored image)")
    p.add_argument("--top", type=int, default=5, help="how many top losses to list")
    add_json_flag(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="write a model out: onnx (a zip of model.onnx, model.json and a README with "
                                      "an onnxruntime example) or pkl (fastai's export.pkl), as the Predict tab does")
    p.add_argument("--model", required=True)
    p.add_argument("--format", required=True, choices=("onnx", "pkl"))
    p.add_argument("--out", default=".", help="destination folder (default: the current one)")
    add_json_flag(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="predict the label of images (files or folders)")
    p.add_argument("--model", required=True)
    p.add_argument("images", nargs="+")
    add_json_flag(p)
    p.set_defaults(func=cmd_predict)


def stderr_progress(quiet: bool):
    if quiet:
        return None
    state = {"last": -1}

    def progress(fraction: float, message: str) -> None:
        pct = int(fraction * 100)
        if pct != state["last"]:
            state["last"] = pct
            print(f"\r{pct:3d}% {message[:70]:<70}", end="" if pct < 100 else "\n", file=sys.stderr, flush=True)

    return progress


def cmd_train(a) -> int:
    from dragonclf import distributed
    from dragonclf.items import dataset_items
    from dragonclf.settings import TrainSettings
    from dragonclf.store import Store
    from dragonclf.train import train

    if distributed.active():  # under `accelerate launch`: only rank 0 opens the store; the rest get its items
        store = dataset_items(a.dataset, a.valid_share, a.backbone)
    else:
        store = Store.open(a.dataset)
    settings = TrainSettings(epochs=a.epochs, size=a.size, batch_size=a.batch_size, lr=a.lr,
                             freeze_epochs=a.freeze_epochs, schedule=a.schedule, augment=a.augment,
                             valid_share=a.valid_share, mixed_precision=a.mixed_precision)
    r = train(store, a.mode, a.backbone, settings=settings, dataset=a.dataset,
              progress=stderr_progress(a.quiet or not distributed.is_main()))
    out = {"model": str(r.model_dir) if r.model_dir else None, "backbone": r.backbone, "mode": r.mode,
           "accuracy": r.metrics["accuracy"], "per_class": r.metrics["per_class"], "seconds": round(r.seconds, 2)}
    if r.mode != "quick":  # where the fine-tune started, which weights it kept, and why
        out.update(start_accuracy=(r.start or {}).get("accuracy"), best_epoch=r.best_epoch, kept=r.kept,
                   verdict=r.verdict)
    if r.warnings:
        out["warnings"] = r.warnings
    if distributed.is_main():  # one answer per run, not one per process
        emit(out, a.json)
    return 0


def cmd_evaluate(a) -> int:
    from dragonclf import interpret
    from dragonclf.modelstore import read_meta, resolve
    from dragonclf.store import Store

    meta = read_meta(resolve(a.model))
    ev = interpret.evaluate(a.model, Store.open(a.dataset or meta["dataset"]), tta=a.tta)
    m = ev.metrics
    out = {"model": str(ev.model_dir), "dataset": a.dataset or meta["dataset"], "tta": a.tta,
           "accuracy": m["accuracy"], "error_rate": m["error_rate"], "valid_loss": m["valid_loss"],
           "n_valid": m["n_valid"], "per_class": m["per_class"], "labels": ev.labels,
           "confusion_matrix": ev.confusion.tolist(),
           "most_confused": [{"actual": x, "predicted": y, "count": n} for x, y, n in ev.most_confused()],
           "top_losses": ev.top_losses(a.top)}
    emit(out, a.json)
    return 0


def cmd_export(a) -> int:
    from dragonclf.modelstore import export_model, how_to_use, resolve

    src = resolve(a.model)
    out = export_model(src, a.format, Path(a.out))
    emit({"model": str(src), "format": a.format, "file": str(out), "how": how_to_use(src, out)}, a.json)
    return 0


def cmd_predict(a) -> int:
    from dragonclf.predict import IMAGE_SUFFIXES, Predictor

    pred = Predictor(a.model)
    paths = []
    for s in a.images:
        p = Path(s)
        if p.is_dir():
            paths += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            paths.append(p)
    results = pred.predict_paths(paths)
    emit(results, a.json, lambda rs: "\n".join(
        f"{r['path']}: {r['label']} ({r['probs'][r['label']]:.3f})" if "label" in r else f"{r['path']}: error: {r['error']}"
        for r in rs))
    return 1 if any("error" in r for r in results) else 0
