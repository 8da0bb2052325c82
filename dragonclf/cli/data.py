"""CLI for the store: datasets, import, status, edits (relabel/trash/restore/undo/redo), check, export-dataset.

None of these needs a model: this module imports no torch, fastai, timm or scikit-learn (see cli/__init__.py).
"""

from __future__ import annotations

from dragonclf.cli import add_json_flag, emit
from dragonclf.store import Store, list_datasets


def _dataset(p, required=True):
    p.add_argument("--dataset", required=required, help="dataset name (a folder under $DRAGONCLF_HOME/datasets)")


def register(sub) -> None:
    p = sub.add_parser("datasets", help="list datasets")
    add_json_flag(p)
    p.set_defaults(func=lambda a: emit(list_datasets(), a.json, lambda r: "\n".join(r)))

    p = sub.add_parser("create", help="create an empty dataset")
    p.add_argument("name")
    p.set_defaults(func=lambda a: emit({"created": Store.open(a.name, create=True).name}, False))

    p = sub.add_parser("import", help="import a folder tree <label>/<images>, a zip of one, or an image file")
    p.add_argument("src")
    _dataset(p)
    p.add_argument("--label", help="put everything under this label")
    p.add_argument("--embed", action="store_true",
                   help="also embed the new pictures for the default backbone, so a quick model then only fits its "
                        "head (the first time on an install this also exports the body, which needs torch)")
    add_json_flag(p)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("status", help="per-label counts, trash, duplicates, conflicts")
    _dataset(p)
    add_json_flag(p)
    p.set_defaults(func=lambda a: emit(Store.open(a.dataset).status(), a.json))

    p = sub.add_parser("relabel", help="move images to another label")
    _dataset(p)
    p.add_argument("ids", nargs="+")
    p.add_argument("--to", required=True, help="the new label")
    p.add_argument("--create", action="store_true", help="create the label if it does not exist")
    add_json_flag(p)
    p.set_defaults(func=lambda a: _edit(a, lambda s: s.relabel(a.ids, a.to, create_labels=a.create)))

    for verb in ("trash", "restore"):
        p = sub.add_parser(verb, help=f"{verb} images (the trash keeps them until emptied)")
        _dataset(p)
        p.add_argument("ids", nargs="+")
        add_json_flag(p)
        p.set_defaults(func=lambda a, verb=verb: _edit(a, lambda s: getattr(s, verb)(a.ids)))

    for verb in ("undo", "redo"):
        p = sub.add_parser(verb, help=f"{verb} the last edit")
        _dataset(p)
        add_json_flag(p)
        p.set_defaults(func=lambda a, verb=verb: _edit(a, lambda s: getattr(s, verb)()))

    p = sub.add_parser("empty-trash", help="delete trashed images for good")
    _dataset(p)
    p.add_argument("--yes", action="store_true", required=True, help="confirm")
    p.set_defaults(func=lambda a: emit({"deleted": Store.open(a.dataset).empty_trash()}, False))

    p = sub.add_parser("check", help="compare folders with the manifest; --repair fixes the drift")
    _dataset(p)
    p.add_argument("--repair", action="store_true")
    add_json_flag(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("export-dataset", help="zip the label folders with manifest.csv and a dataset card")
    _dataset(p)
    p.add_argument("--out", help="a .zip path or a folder (default: ./<dataset>.zip)")
    add_json_flag(p)
    p.set_defaults(func=cmd_export)


def cmd_import(a) -> int:
    from dragonclf.importer import import_path

    store = Store.open(a.dataset, create=True)
    report = import_path(store, a.src, label=a.label)
    out = report.as_dict()
    if a.embed:
        from dragonclf.embeddings import embed_dataset

        out["embedded"] = embed_dataset(store.name)  # only the pictures missing from the cache
    emit(out, a.json, lambda r: report.summary() + (f"; {r['embedded']['embedded']} embedded"
                                                     if r.get("embedded") else ""))
    return 0


def _edit(a, fn) -> int:
    res = fn(Store.open(a.dataset))
    out = {"batch": res.batch, "changed": res.changed, "unchanged": res.unchanged, "skipped": res.skipped}
    emit(out, a.json, lambda r: f"changed {len(res.changed)}, unchanged {len(res.unchanged)}, skipped {len(res.skipped)}")
    return 0


def cmd_check(a) -> int:
    report = Store.open(a.dataset).check(repair=a.repair)
    emit(report, a.json)
    return 0 if report["ok"] or a.repair else 1


def cmd_export(a) -> int:
    from dragonclf.dataset_export import export_dataset

    path = export_dataset(Store.open(a.dataset), a.out)
    emit({"zip": str(path)}, a.json, lambda r: f"wrote {r['zip']}")
    return 0
