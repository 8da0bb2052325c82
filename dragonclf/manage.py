"""Renaming and deleting whole datasets, for their owner; deleted datasets are kept and can be restored.

- `rename_dataset(who, name, new)`: the dataset folder and its models folder get the new name
  (`fish vs tools` -> `fish-vs-tools`, as when creating); each model.json says the new name; the
  owner, shares and public flags follow. Undo renames it back.
- `delete_dataset(who, name)`: the dataset and its models move, whole, to `datasets/.deleted/<id>/`
  and `models/.deleted/<id>/` (nothing is removed); the registry keeps its owner, name, shares and
  public flags in `deleted`. `restore_dataset(who, id)` (or Undo) puts everything back.
  `purge_deleted(who, id)` removes one for good: the only step that frees the disk.
- `undo_dataset_change(who)`: undoes `who`'s latest rename or delete.

Only the owner (or an admin, or the local user for the Space's own datasets) may rename, delete or
restore: `access.check(who, name, "destroy")`. The bundled demo is neither renamed nor deleted.
While a training runs or pictures are being added, the dataset is not moved (a clear message says so).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path

from dragonclf import access, config, modelstore
from dragonclf.access import Denied
from dragonclf.errors import DragonError
from dragonclf.identity import Identity
from dragonclf.layout import fsync_dir
from dragonclf.names import check_dataset_name, dataset_folder_name
from dragonclf.registry import DEPLOYMENT, Registry, display_name
from dragonclf.store import Store, list_datasets

DELETED = ".deleted"  # under datasets/ and models/: deleted datasets, whole (a dot name is never a dataset)


def rename_dataset(who: Identity, name: str, new: str) -> str:
    """Rename dataset `name` (owner only) to `new` as people type it; returns the new folder name."""
    folder = access.check(who, name, "destroy")
    _not_the_demo(folder, "renamed")
    display = dataset_folder_name(new)
    if "--" in display and who.kind != "local":
        raise DragonError("dataset names cannot contain '--' (it separates owner and name in folder names)")
    old_display = display_name(folder)
    target = folder.removesuffix(old_display) + display if folder.endswith(old_display) else display
    if target == folder:
        raise DragonError(f"the dataset is already called {display!r}")
    _move(folder, target, display)
    Registry.here().log_change(who.id, "rename", folder, target)
    return target


def delete_dataset(who: Identity, name: str) -> str:
    """Move dataset `name` and its models aside (owner only); returns the id `restore_dataset` takes."""
    folder = access.check(who, name, "destroy")
    _not_the_demo(folder, "deleted")
    deleted_id = f"{folder}~{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    reg = Registry.here()
    with reg.write_lock, _quiet(folder):
        for root in (config.datasets_root(), config.models_root()):
            _rename(root / folder, root / DELETED / deleted_id)
        reg.stash(folder, deleted_id, who.id)
        reg.log_change(who.id, "delete", folder, deleted_id)
    return deleted_id


def deleted_datasets(who: Identity) -> list[dict]:
    """The deleted datasets `who` may restore, newest first: id, name, display, deleted_at, images."""
    out = []
    for e in Registry.here().deleted_entries():
        if _may_restore(who, e):
            out.append({"id": e["id"], "name": e["name"], "display": e["display"], "deleted_at": e["at"],
                        "deleted_by": e["deleted_by"]})
    return out


def restore_dataset(who: Identity, deleted_id: str, as_name: str | None = None) -> str:
    """Put a deleted dataset back (under `as_name` when its name is taken now); returns its folder name."""
    e = _deleted_entry(who, deleted_id)
    display = dataset_folder_name(as_name) if as_name else e["display"]
    name = e["name"].removesuffix(e["display"]) + display if as_name else e["name"]
    reg = Registry.here()
    with reg.write_lock:
        if name in list_datasets() or reg.entry(name):
            raise DragonError(f"a dataset named {display!r} exists now; rename that one, or restore this one under "
                              "another name")
        for root in (config.datasets_root(), config.models_root()):
            _rename(root / DELETED / deleted_id, root / name)
        _retag_models(name)
        reg.unstash(deleted_id, name, display)
        reg.log_change(who.id, "restore", name, deleted_id)
    return name


def purge_deleted(who: Identity, deleted_id: str) -> str:
    """Remove a deleted dataset and its models for good (no undo): the disk they use is freed."""
    e = _deleted_entry(who, deleted_id)
    for root in (config.datasets_root(), config.models_root()):
        shutil.rmtree(root / DELETED / deleted_id, ignore_errors=True)
    Registry.here().run("DELETE FROM deleted WHERE id=?", (deleted_id,))
    return f"Dataset {e['display']!r} (deleted {time.strftime('%Y-%m-%d %H:%M', time.localtime(e['at']))}) is gone for good."


def undo_dataset_change(who: Identity) -> tuple[str, str]:
    """Undo `who`'s latest dataset rename (renamed back) or delete (restored): (the folder name now, a sentence)."""
    reg = Registry.here()
    change = reg.last_change(who.id)
    if change is None:
        raise DragonError("no dataset rename or delete of yours to undo")
    if change["action"] == "rename":
        folder = access.check(who, change["other"], "destroy")
        display = _display_of(change["name"], folder)
        _move(folder, change["name"], display)
        reg.mark_undone(change["seq"])
        return change["name"], f"Undone: the dataset is called {display!r} again."
    name = restore_dataset(who, change["other"])
    reg.mark_undone(change["seq"])
    return name, f"Undone: dataset {display_name(name)!r} is back, with its pictures and models."


# ---- moving a dataset -----------------------------------------------------------------

def _display_of(target: str, folder: str) -> str:
    """The display name a folder rename back to `target` gives (the owner's prefix stays)."""
    shown = display_name(folder)
    prefix = folder.removesuffix(shown) if folder.endswith(shown) else ""
    return target.removeprefix(prefix)


def _move(folder: str, target: str, display: str) -> None:
    """Rename dataset folder `folder` to `target` (datasets, models, model.json, registry)."""
    target = check_dataset_name(target)
    reg = Registry.here()
    with reg.write_lock:
        if target in list_datasets() or reg.entry(target) or (config.datasets_root() / target).exists():
            raise DragonError(f"there is already a dataset named {display!r}; choose another name")
        with _quiet(folder):
            for root in (config.datasets_root(), config.models_root()):
                _rename(root / folder, root / target)
            _retag_models(target)
            reg.rename(folder, target, display)


@contextmanager
def _quiet(folder: str):
    """Hold the dataset still while it moves: no training, no picture being added; its store closed after."""
    store = Store.open(folder)
    with ExitStack() as stack:
        stack.enter_context(modelstore.training_lock(folder))
        stack.enter_context(store.held_still())
        yield
    store.close()


def _rename(src: Path, dest: Path) -> None:
    """Move a folder (in one rename on the same disk); a missing `src` (no models yet) is nothing to move."""
    if not src.exists():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        raise DragonError(f"{dest.name!r} exists already; nothing was moved")
    os.rename(src, dest)
    fsync_dir(dest.parent)
    fsync_dir(src.parent)


def _retag_models(folder: str) -> None:
    """Each model.json names its dataset: make it the dataset's folder name now (after a rename or restore).

    A model keeps the class names it was trained with (its `labels`), whatever labels are called now.
    """
    d = config.models_root() / folder
    if not d.is_dir():
        return
    for meta_path in d.glob("*/model.json"):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue  # a damaged model.json is listed as damaged anyway; it is not rewritten
        if meta.get("dataset") != folder:
            meta.setdefault("renamed_from", meta.get("dataset"))
            meta["dataset"] = folder
            modelstore.write_json(meta_path, meta)


def _not_the_demo(folder: str, what: str) -> None:
    if folder == config.DEMO_DATASET:
        raise DragonError(f"the bundled demo cannot be {what}; copy it to your datasets to make one of your own")


def _may_restore(who: Identity, e) -> bool:
    return e["owner"] == who.id or who.is_admin or (e["owner"] == DEPLOYMENT and who.kind == "local")


def _deleted_entry(who: Identity, deleted_id: str):
    rows = Registry.here().run("SELECT * FROM deleted WHERE id=?", ((deleted_id or "").strip(),))
    if not rows or not _may_restore(who, rows[0]):
        raise Denied(f"No deleted dataset {deleted_id!r} that you can restore.")
    if who.anonymous:
        raise Denied("Visitors cannot restore datasets; sign in.")
    return rows[0]
