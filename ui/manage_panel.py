"""Rename, merge or delete labels; rename, delete or restore datasets; Undo. Below the dataset picker.

Thin handlers over `Store.rename_label` / `merge_labels` / `delete_label` (journalled: Undo here or in
Clean walks them) and `dragonclf.manage` (owner only; deleted datasets are kept and restorable).
Deleting asks for the "Yes, delete" tick first.
"""

from __future__ import annotations

import time

import gradio as gr

from dragonclf import access, manage
from dragonclf.errors import DragonError
from ui.common import ui_errors
from ui.people import me, open_store

OUT = 6  # message, label, merge-into, new label name, confirm tick, what Undo undoes


def _labels(dataset: str | None) -> list[str]:
    return [lab.display for lab in open_store(dataset).labels()] if dataset else []


def _after_label_edit(dataset: str, message: str, keep: str | None = None):
    labels = _labels(dataset)
    return (message, gr.update(choices=labels, value=keep if keep in labels else None),
            gr.update(choices=labels, value=None), "", False, "label")


@ui_errors
def fill(dataset: str | None):
    """Fresh label lists when the panel opens or the dataset changes (the last message stays)."""
    labels = _labels(dataset)
    return gr.update(choices=labels, value=labels[0] if labels else None), gr.update(choices=labels, value=None)


@ui_errors(say=0, of=OUT)
def rename_label(dataset: str, label: str | None, new: str):
    store = open_store(dataset, "edit")
    if not label:
        raise DragonError("Choose the label to rename.")
    if not (new or "").strip():
        raise DragonError(f"Type the new name for {label!r} in 'New name'.")
    change = store.rename_label(label, new, actor=me().id)
    return _after_label_edit(dataset, change.message, change.label)


@ui_errors(say=0, of=OUT)
def merge_label(dataset: str, label: str | None, into: str | None):
    store = open_store(dataset, "edit")
    if not label or not into:
        raise DragonError("Choose a label, and in 'Merge into' the label that takes its pictures.")
    change = store.merge_labels(label, into, actor=me().id)
    return _after_label_edit(dataset, change.message, change.label)


@ui_errors(say=0, of=OUT)
def delete_label(dataset: str, label: str | None, confirm: bool):
    store = open_store(dataset, "edit")
    if not label:
        raise DragonError("Choose the label to delete.")
    if not confirm:
        n = store.count(label=label)
        raise DragonError(f"Deleting {label!r} moves its {n} pictures to the trash (Undo brings them back). "
                          "Tick 'Yes, delete' first.")
    change = store.delete_label(label, actor=me().id)
    return _after_label_edit(dataset, change.message)


def _deleted_choices() -> list[tuple[str, str]]:
    return [(f"{d['display']} · deleted {time.strftime('%Y-%m-%d %H:%M', time.localtime(d['deleted_at']))}", d["id"])
            for d in manage.deleted_datasets(me())]


@ui_errors
def deleted_choices():
    """The deleted datasets this person may restore (filled when the panel opens)."""
    return gr.update(choices=_deleted_choices(), value=None)


def _after_dataset_edit(message: str, picked: str | None):
    visible = access.visible(me())
    names = [n for _, n in visible]
    value = picked if picked in names else (names[0] if names else None)
    return (message, gr.update(choices=visible, value=value), "", False,
            gr.update(choices=_deleted_choices(), value=None), "dataset")


@ui_errors(say=0, of=6)
def rename_dataset(dataset: str, new: str):
    if not dataset:
        raise DragonError("Choose a dataset first.")
    access.check(me(), dataset, "destroy")  # who may comes before what they typed
    if not (new or "").strip():
        raise DragonError("Type the dataset's new name in 'New dataset name'.")
    name = manage.rename_dataset(me(), dataset, new)
    return _after_dataset_edit(f"Renamed the dataset to **{name}**. Its models moved with it. Undo renames it back.",
                               name)


@ui_errors(say=0, of=6)
def delete_dataset(dataset: str, confirm: bool):
    if not dataset:
        raise DragonError("Choose a dataset first.")
    access.check(me(), dataset, "destroy")  # who may comes before the tick
    if not confirm:
        raise DragonError(f"Deleting {dataset!r} moves it and its models to 'Deleted datasets' (restorable). "
                          "Tick 'Yes, delete' first.")
    manage.delete_dataset(me(), dataset)
    return _after_dataset_edit(f"Deleted **{dataset}**: it is kept in 'Deleted datasets' below; Restore or Undo "
                               "brings it back with its models.", None)


@ui_errors(say=0, of=6)
def restore_dataset(deleted_id: str | None):
    if not deleted_id:
        raise DragonError("Choose a deleted dataset to restore.")
    name = manage.restore_dataset(me(), deleted_id)
    return _after_dataset_edit(f"Restored **{name}** with its pictures and models.", name)


@ui_errors(say=0, of=5)
def undo(dataset: str, last: str | None):
    """Undo this page's latest change: a dataset rename or delete, or else your latest label or picture edit."""
    if last == "dataset":
        name, message = manage.undo_dataset_change(me())
        out = _after_dataset_edit(message, name)
        return out[0], out[1], gr.skip(), gr.skip(), None  # the new dataset's labels come with its change
    res = open_store(dataset, "edit").undo(actor=me().id)
    said = "; ".join(res.labels)
    moved = f"{len(res.changed)} pictures back where they were" if res.changed else ""
    skipped = f"{len(res.skipped)} changed by someone else since, left as they are" if res.skipped else ""
    message = "Undone: " + ", ".join(x for x in (said, moved, skipped) if x) + "."
    out = _after_label_edit(dataset, message)
    return out[0], gr.skip(), out[1], out[2], None


def build(bar) -> None:
    last = gr.State(None)  # what Undo undoes: "dataset" after a dataset change here, else the dataset's edits
    with gr.Accordion("Rename, merge or delete labels · rename or delete this dataset", open=False,
                      elem_id="manage-accordion") as acc:
        message = gr.Markdown(elem_id="manage-message")
        with gr.Row(equal_height=True):
            label = gr.Dropdown([], label="Label", scale=2, elem_id="manage-label", allow_custom_value=True)
            new = gr.Textbox(label="New name", placeholder="e.g. Drogon the black", scale=2, elem_id="manage-label-new")
            rename_btn = gr.Button("Rename label", scale=1, elem_id="manage-label-rename")
            into = gr.Dropdown([], label="Merge into", scale=2, elem_id="manage-merge-into", allow_custom_value=True)
            merge_btn = gr.Button("Merge", scale=1, elem_id="manage-label-merge")
            delete_btn = gr.Button("Delete label", variant="stop", scale=1, elem_id="manage-label-delete")
        with gr.Row(equal_height=True):
            new_ds = gr.Textbox(label="New dataset name", placeholder="e.g. dragons 2", scale=2,
                                elem_id="manage-dataset-new")
            rename_ds_btn = gr.Button("Rename dataset", scale=1, elem_id="manage-dataset-rename")
            delete_ds_btn = gr.Button("Delete dataset", variant="stop", scale=1, elem_id="manage-dataset-delete")
            confirm = gr.Checkbox(label="Yes, delete (a label's pictures go to the trash; a dataset is kept below)",
                                  value=False, scale=2, elem_id="manage-confirm")
            undo_btn = gr.Button("↶ Undo", scale=1, elem_id="manage-undo")
        with gr.Row(equal_height=True):
            deleted = gr.Dropdown([], label="Deleted datasets", scale=3, elem_id="manage-deleted", allow_custom_value=True)
            restore_btn = gr.Button("Restore", scale=1, elem_id="manage-restore")
        gr.Markdown("Models trained before a rename keep the class names they were trained with; train again to "
                    "use the new names.", elem_id="manage-note")

    filled = [label, into]
    acc.expand(fill, bar.dataset, filled, api_visibility="private")
    acc.expand(deleted_choices, None, deleted, api_visibility="private")
    bar.dataset.change(fill, bar.dataset, filled, api_name="manage_labels", api_visibility="private")
    label_out = [message, label, into, new, confirm, last]
    bar.refresh_after(rename_btn.click(rename_label, [bar.dataset, label, new], label_out, api_name="rename_label"))
    bar.refresh_after(merge_btn.click(merge_label, [bar.dataset, label, into], label_out, api_name="merge_label"))
    bar.refresh_after(delete_btn.click(delete_label, [bar.dataset, label, confirm], label_out,
                                       api_name="delete_label"))
    dataset_out = [message, bar.dataset, new_ds, confirm, deleted, last]
    rename_ds_btn.click(rename_dataset, [bar.dataset, new_ds], dataset_out, api_name="rename_dataset")
    delete_ds_btn.click(delete_dataset, [bar.dataset, confirm], dataset_out, api_name="delete_dataset")
    restore_btn.click(restore_dataset, deleted, dataset_out, api_name="restore_dataset")
    bar.refresh_after(undo_btn.click(undo, [bar.dataset, last], [message, bar.dataset, label, into, last],
                                     api_name="manage_undo"))
