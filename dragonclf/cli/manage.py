"""CLI for managing labels and whole datasets, each change journalled and undoable.

    label rename OLD NEW --dataset D       label merge SOURCE INTO --dataset D       label delete NAME --dataset D
    dataset rename NAME NEW                dataset delete NAME --yes                 dataset deleted
    dataset restore ID [--as NAME]         dataset undo                              dataset purge ID --yes

Label edits are undone with `undo --dataset D` (one step each, like any edit); a deleted label's
pictures are in the trash. Dataset deletes are kept under `datasets/.deleted/` until purged. The
CLI acts as the machine's owner (the local user). Model-free: no torch, fastai, timm or scikit-learn.
"""

from __future__ import annotations

import time

from dragonclf import manage
from dragonclf.cli import add_json_flag, emit
from dragonclf.identity import LOCAL
from dragonclf.store import Store


def _label_change(a, edit) -> int:
    change = edit(Store.open(a.dataset))
    emit({"batch": change.batch, "moved": change.moved, "label": change.label, "message": change.message}, a.json,
         lambda r: r["message"])
    return 0


def register(sub) -> None:
    p = sub.add_parser("label", help="rename, merge or delete a label (undo with `undo --dataset D`)")
    s = p.add_subparsers(dest="label_command", required=True)
    for verb, args, helptext, edit in (
        ("rename", ("old", "new"), "give a label a new name (its folder follows)",
         lambda a, st: st.rename_label(a.old, a.new, actor=LOCAL.id)),
        ("merge", ("source", "into"), "move every picture of SOURCE into the label INTO; SOURCE is gone",
         lambda a, st: st.merge_labels(a.source, a.into, actor=LOCAL.id)),
        ("delete", ("name",), "remove a label; its pictures go to the trash",
         lambda a, st: st.delete_label(a.name, actor=LOCAL.id)),
    ):
        c = s.add_parser(verb, help=helptext)
        for arg in args:
            c.add_argument(arg)
        c.add_argument("--dataset", required=True, help="dataset name")
        add_json_flag(c)
        c.set_defaults(func=lambda a, edit=edit: _label_change(a, lambda st: edit(a, st)))

    p = sub.add_parser("dataset", help="rename, delete, restore a whole dataset (deleted ones are kept until purged)")
    s = p.add_subparsers(dest="dataset_command", required=True)
    c = s.add_parser("rename", help="rename a dataset and its models folder")
    c.add_argument("name")
    c.add_argument("new")
    c.set_defaults(func=lambda a: emit({"renamed": a.name, "to": manage.rename_dataset(LOCAL, a.name, a.new)}, False,
                                       lambda r: f"renamed {r['renamed']} to {r['to']}"))
    c = s.add_parser("delete", help="move a dataset and its models to the deleted datasets (restorable)")
    c.add_argument("name")
    c.add_argument("--yes", action="store_true", required=True, help="confirm")
    c.set_defaults(func=lambda a: emit({"deleted": a.name, "id": manage.delete_dataset(LOCAL, a.name)}, False,
                                       lambda r: f"deleted {r['deleted']}; restore it with: dataset restore {r['id']}"))
    c = s.add_parser("deleted", help="list deleted datasets that can be restored")
    add_json_flag(c)
    c.set_defaults(func=lambda a: emit(manage.deleted_datasets(LOCAL), a.json, _listing))
    c = s.add_parser("restore", help="bring a deleted dataset back, with its models")
    c.add_argument("id", help="as `dataset deleted` lists it")
    c.add_argument("--as", dest="as_name", help="another name, when its own is taken now")
    c.set_defaults(func=lambda a: emit({"restored": manage.restore_dataset(LOCAL, a.id, a.as_name)}, False,
                                       lambda r: f"restored {r['restored']}"))
    c = s.add_parser("undo", help="undo your latest dataset rename or delete")
    c.set_defaults(func=lambda a: print(manage.undo_dataset_change(LOCAL)[1]) or 0)
    c = s.add_parser("purge", help="remove a deleted dataset for good (no undo)")
    c.add_argument("id")
    c.add_argument("--yes", action="store_true", required=True, help="confirm")
    c.set_defaults(func=lambda a: print(manage.purge_deleted(LOCAL, a.id)) or 0)


def _listing(rows: list[dict]) -> str:
    if not rows:
        return "no deleted datasets"
    return "\n".join(f"{r['id']}  {r['display']}  deleted {time.strftime('%Y-%m-%d %H:%M', time.localtime(r['deleted_at']))}"
                     for r in rows)
