"""Model folders: write atomically, list, find, and guard one training per dataset.

A model lives in `models_root()/<dataset>/<model_id>/` with `model.json`
(labels, preprocessing, backbone, mode, metrics, date, training data summary),
`model.onnx` (preprocessed image -> probabilities, what the predictor runs) and,
for fine-tuned models, `export.pkl` (fastai's Learner). It is built in a
`.tmp-*` folder and renamed into place when complete, so a crash or a Stop
never leaves a half-written model where `list_models` looks.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import secrets
import shutil
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from dragonclf import config
from dragonclf.errors import DragonError
from dragonclf.layout import fsync_dir, write_durably
from dragonclf.names import check_dataset_name, check_model_id

FORMAT = 1
log = logging.getLogger(__name__)


def dataset_dir(dataset: str) -> Path:
    """The models folder of a dataset; the name is checked, so it can never point elsewhere."""
    return config.models_root() / check_dataset_name(dataset)


def new_model_id(mode: str, backbone: str) -> str:
    return f"{datetime.now():%Y%m%d-%H%M%S}-{mode}-{backbone}-{secrets.token_hex(2)}"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@contextmanager
def staging(dataset: str, model_id: str):
    """Yield an empty temp folder; on success it becomes the model folder.

    While it is being written, the folder's lock file `.tmp-<id>.lock` is held
    with flock, so `clean_stale_staging` can tell a live staging folder from
    one a killed process left behind. The lock is taken before the folder
    exists: a cleaner that sees the folder also sees its owner's lock.
    """
    parent = dataset_dir(dataset)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".tmp-{model_id}"
    lock_path = parent / f".tmp-{model_id}.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a fresh, unique file: nobody else holds it
        tmp.mkdir()
        try:
            yield tmp
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise DragonError(f"The disk holding the models of {dataset!r} is full: the model was not saved "
                              "(nothing else was changed). Free some space and train again.") from None
        if not (tmp / "model.json").is_file():
            raise DragonError("internal: a model folder was finished without model.json")
        _fsync_tree(tmp)  # every file and the folder itself are on disk before the folder is listed
        os.replace(tmp, parent / model_id)
        fsync_dir(parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
        lock_path.unlink(missing_ok=True)
        os.close(fd)


def clean_stale_staging(dataset: str) -> list[str]:
    """Remove `.tmp-*` staging folders whose writer is gone (kill -9, power loss); return their names.

    A live writer holds the folder's lock file, so a non-blocking flock that
    succeeds proves the folder is orphaned. Folders from before these lock
    files have none; creating one and locking it at once shows the same.
    """
    d = dataset_dir(dataset)
    if not d.is_dir():
        return []
    removed = []
    for tmp in sorted(d.glob(".tmp-*")):
        if not tmp.is_dir() or tmp.name.endswith(".lock"):
            continue
        lock_path = tmp.with_name(tmp.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            log.warning("Cannot check staging folder %s: %s", tmp, e)
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a training is writing it right now
            try:
                shutil.rmtree(tmp)
            except FileNotFoundError:
                continue  # its writer finished (renamed or removed it) after we listed it
            except OSError as e:
                log.warning("Could not remove the unfinished model folder %s: %s", tmp, e)
                continue
            finally:
                lock_path.unlink(missing_ok=True)
            removed.append(tmp.name)
        finally:
            os.close(fd)
    if removed:
        log.info("Removed %d unfinished model folder(s) of %r left by an interrupted training: %s",
                 len(removed), dataset, ", ".join(removed))
    return removed


def _fsync_tree(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        elif p.is_dir():
            fsync_dir(p)
    fsync_dir(folder)


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    write_durably(tmp, json.dumps(data, indent=2, ensure_ascii=False, default=str).encode())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def resolve(model, dataset: str | None = None) -> Path:
    """The folder of a model named by path or id; only inside the app's models folder.

    Models are never loaded from elsewhere: export.pkl is a pickle, and
    unpickling a file someone uploaded would run their code.
    """
    root = config.models_root().resolve()
    p = Path(model)
    if not p.is_absolute() and not p.exists():
        # A bare model id (the app's dropdown, a client's request): a plain name, looked up under
        # the dataset, or under any dataset. Never a glob pattern, never a path.
        model_id = check_model_id(str(model))
        candidates = [dataset_dir(dataset) / model_id] if dataset else sorted(
            d / model_id for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        p = next((c for c in candidates if c.is_dir()), root / model_id)
    p = p.resolve()
    if p.name in ("model.json", "model.onnx", "export.pkl"):
        p = p.parent
    try:
        p.relative_to(root)
    except ValueError:
        raise DragonError(f"Models are loaded only from the app's models folder; {Path(model).name!r} is outside it.") from None
    if not p.is_dir():
        raise DragonError(f"No such model: {Path(model).name}")
    return p


def read_meta(model_dir: Path) -> dict:
    path = Path(model_dir) / "model.json"
    if not path.is_file():
        raise DragonError(f"{Path(model_dir).name} is not a model folder (model.json is missing).")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DragonError(f"model {Path(model_dir).name}: model.json is corrupt: {e}") from e
    missing = [k for k in ("labels", "input_size", "mean", "std", "mode", "backbone") if k not in meta]
    if missing:
        raise DragonError(f"model {Path(model_dir).name}: model.json is incomplete (missing {', '.join(missing)}).")
    return meta


def list_models(dataset: str) -> list[dict]:
    """The finished models of a dataset, newest first: id, path, mode, backbone, metrics, date."""
    out = []
    d = dataset_dir(dataset)
    if not d.is_dir():
        return out
    clean_stale_staging(dataset)
    for sub in d.iterdir():
        if sub.name.startswith(".") or not (sub / "model.json").is_file():
            continue
        try:
            meta = read_meta(sub)
        except DragonError as e:
            out.append({"id": sub.name, "path": str(sub), "error": str(e), "created": ""})
            continue
        out.append({
            "id": sub.name, "path": str(sub), "mode": meta["mode"], "backbone": meta["backbone"],
            "labels": meta["labels"], "metrics": meta.get("metrics", {}), "created": meta.get("created", ""),
            "stopped_early": meta.get("stopped_early", False),
        })
    return sorted(out, key=lambda m: m["created"], reverse=True)


@dataclass
class TrainResult:
    """What a training returns (quick model or fine-tune)."""

    model_dir: Path | None  # the finished model folder (None when nothing was saved)
    dataset: str
    backbone: str
    mode: str  # "quick" | "finetune" | "scratch"
    metrics: dict
    history: list[dict] = field(default_factory=list)  # one row per epoch
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    stopped_early: bool = False
    # Per training batch, the learning rate of each parameter group (body first, head last):
    # the schedule that was really applied (one-cycle, SGDR restarts, discriminative rates).
    lrs: list[list[float]] = field(default_factory=list)
    # Fine-tunes: the starting model's validation score ({"epoch": 0, "accuracy", "valid_loss"}; with a warm
    # head, the quick model at this size), the epoch whose weights were kept (0: the start), which weights
    # ("start" | "best" | "last") and a sentence saying so.
    start: dict | None = None
    best_epoch: int | None = None
    kept: str | None = None
    verdict: str = ""


def write_model(dataset: str, *, mode: str, backbone: str, labels: list[str], size: int, mean, std,
                metrics: dict, training_data: dict, params: dict, warnings: list[str], write_files,
                pkl: bool = False, **extra) -> Path:
    """Write a finished model folder `models/<dataset>/<id>/` in one piece; returns its path.

    `write_files(folder)` writes `model.onnx` (and `export.pkl` when `pkl`) into the
    staging folder and may return more model.json keys; a `variant` key (see
    `quantize`) also names the ONNX file served. `model.json` (labels,
    preprocessing, metrics, provenance, the `extra` keys) is written here, then
    the folder is renamed into place whole.
    """
    model_id = new_model_id(mode, backbone)
    meta = {
        "format": FORMAT, "dataset": dataset, "mode": mode, "backbone": backbone, "labels": labels,
        "input_size": size, "resize": "squish", "mean": list(mean), "std": list(std), "metrics": metrics,
        "created": now_iso(), "training_data": training_data, "params": params, **extra,
        "files": {"onnx": "model.onnx", "pkl": "export.pkl" if pkl else None}, "warnings": warnings,
    }
    with staging(dataset, model_id) as tmp:
        meta.update(write_files(tmp) or {})
        if meta.get("variant"):
            meta["files"]["onnx"] = meta["variant"]["onnx"]
        write_json(tmp / "model.json", meta)
    return dataset_dir(dataset) / model_id


def pickle_needs(path: Path) -> list[str]:
    """The top-level packages a torch-saved pickle (export.pkl) names, read without unpickling it.

    What a user must install to `load_learner` it: `fastai`, `torch`, `timm`... and
    `dragonclf` only for backbones whose constructor is ours.
    """
    import pickletools
    import sys
    import zipfile

    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    names, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL":  # torch.save writes protocol 2: "module name"
            names.add(arg.split()[0])
        elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL" and len(strings) >= 2:  # protocol 4+: module, name pushed before
            names.add(strings[-2])
    top = {n.split(".")[0] for n in names}
    return sorted(n for n in top if n not in sys.stdlib_module_names and n not in ("__builtin__", "_operator"))


def export_onnx(model, size: int, path: Path) -> None:
    """Write `model` (normalised image batch -> logits) + softmax as one ONNX graph."""
    import torch

    net = torch.nn.Sequential(model, torch.nn.Softmax(dim=1)).eval().float().cpu()
    dummy = torch.zeros(1, 3, size, size)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated but handles timm's "same" padding
        # with a fixed input size and needs no torch.export tracing of fastai modules.
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(
                net, dummy, str(path), dynamo=False, input_names=["image"], output_names=["probs"],
                dynamic_axes={"image": {0: "batch"}, "probs": {0: "batch"}}, opset_version=17,
            )


EXPORT_FORMATS = ("onnx", "pkl")

# Ships in the ONNX zip: how to use the model with nothing but onnxruntime, numpy and Pillow.
ONNX_README = """# Your image classifier (ONNX)

`model.onnx` takes a batch of RGB images, 1x3xHxW float32, and returns class probabilities.
`model.json` says how to prepare a picture: `input_size` (squish-resize to a square), `mean`/`std`
(after dividing by 255), and `labels` (the order of the probabilities).

```python
import json, numpy as np, onnxruntime as ort
from PIL import Image

meta = json.load(open("model.json"))
size, mean, std = meta["input_size"], np.array(meta["mean"]), np.array(meta["std"])
img = Image.open("picture.jpg").convert("RGB").resize((size, size), Image.BILINEAR)
x = ((np.asarray(img, np.float32) / 255 - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
session = ort.InferenceSession("model.onnx")
probs = session.run(None, {session.get_inputs()[0].name: x})[0][0]
print(sorted(zip(probs.round(3).tolist(), meta["labels"]), reverse=True)[:3])
```

`pip install onnxruntime numpy pillow` is all it needs.
"""


def export_model(model, fmt: str, dest: Path, dataset: str | None = None) -> Path:
    """Write a model out for use elsewhere, into folder `dest`; returns the file written.

    "onnx": `<id>-onnx.zip` holding `model.onnx`, `model.json` (labels, preprocessing) and a
    README.md whose ten-line onnxruntime example runs as is. "pkl": `<id>.pkl`, fastai's
    `export.pkl` (fine-tuned models only). The CLI's `export` and the Predict tab's Export
    both write exactly this. `model` as for `resolve`.
    """
    src = resolve(model, dataset)
    meta = read_meta(src)
    if fmt not in EXPORT_FORMATS:
        raise DragonError(f"Unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}.")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if fmt == "pkl":
        if not (src / "export.pkl").is_file():
            why = "quick models are ONNX only: fine-tune for one, or export onnx" if meta["mode"] == "quick" else \
                "it was saved without one; export onnx"
            raise DragonError(f"Model {src.name} has no export.pkl ({why}).")
        out, tmp = dest / f"{src.name}.pkl", dest / f".{src.name}.pkl.tmp"
        shutil.copyfile(src / "export.pkl", tmp)
    else:
        out, tmp = dest / f"{src.name}-onnx.zip", dest / f".{src.name}-onnx.zip.tmp"
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for name in ("model.onnx", "model.json"):
                z.write(src / name, name)
            z.writestr("README.md", ONNX_README)
    os.replace(tmp, out)  # never half a file under the final name
    return out


def how_to_use(model_dir: Path, exported: Path) -> str:
    """One paragraph for whoever got `exported` (from `export_model`): how to load it and what it needs."""
    if exported.suffix != ".pkl":
        return "ONNX model, its model.json and a README with a ten-line example (onnxruntime, numpy, Pillow)."
    needs = [n for n in read_meta(model_dir).get("pkl_needs") or [] if n in ("fastai", "timm", "dragonclf")]
    how = ("Load it with `from fastai.learner import load_learner; learn = load_learner('"
           f"{exported.name}')`, then `learn.predict('picture.jpg')`; it needs "
           + (" and ".join(f"`{n}`" for n in needs) or "`fastai`") + " installed.")
    if "dragonclf" in needs:
        how += " This backbone's constructor is dragonclf's own, so dragonclf must be importable too."
    return how


@contextmanager
def training_lock(dataset: str):
    """One training per dataset at a time, across threads and processes.

    An exclusive, non-blocking flock on `.train.lock`, held open for the whole
    training. The kernel drops it when the process ends, however it ends
    (kill -9 included), so no stale lock survives a crash or a restart, and
    there is no window between creating the file and claiming it. Each call
    opens the file afresh, so two threads of one process exclude each other
    too. The file stays on disk (deleting it would let a waiting opener lock
    an orphaned inode); the PID inside is only for the message.
    """
    d = dataset_dir(dataset)
    d.mkdir(parents=True, exist_ok=True)
    path = d / ".train.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            who = f" (process {holder})" if holder.isdigit() else ""
            raise DragonError(f"A training of dataset {dataset!r} is already running{who}; wait or stop it.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        clean_stale_staging(dataset)
        yield
    finally:
        os.close(fd)  # releases the lock
