"""The dataset bar: pick or create a dataset, see its labels and images, import your own."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from dragonclf import config
from dragonclf.importer import import_files, import_path
from dragonclf.store import Store, list_datasets
from ui.common import model_dropdown_update, servable, ui_errors

GALLERY_MAX = 60


def counts_markdown(name: str) -> str:
    if not name:
        return "No dataset selected."
    s = Store.open(name).status()
    rows = " · ".join(f"**{label}** {n}" for label, n in s["labels"].items()) or "no labels yet"
    extra = []
    if s["trashed"]:
        extra.append(f"{s['trashed']} in trash")
    if s["near_duplicate_groups"]:
        extra.append(f"{s['near_duplicate_groups']} near-duplicate groups")
    if s["conflicts"]:
        extra.append(f"{s['conflicts']} label conflicts")
    total = sum(s["labels"].values())
    return f"{total} images: {rows}" + (f" ({', '.join(extra)})" if extra else "")


@ui_errors
def refresh(name: str):
    """Counts, label choices and the first label's gallery for dataset `name`."""
    labels = [lab.display for lab in Store.open(name).labels()] if name else []
    first = labels[0] if labels else None
    return counts_markdown(name), gr.update(choices=labels, value=first), label_gallery(name, first)


def dataset_choices(current: str | None):
    """Fresh choices on page load: datasets made by other sessions or the CLI appear."""
    return gr.update(choices=list_datasets(), value=current)


@ui_errors
def label_gallery(name: str, label: str | None):
    if not name or not label:
        return []
    rows = Store.open(name).images(label=label)
    shown = rows[-GALLERY_MAX:][::-1]  # newest first
    return [(servable(r.path), f"{r.id} · {r.origin or ''}") for r in shown]


@ui_errors
def create(name: str):
    store = Store.open(name, create=True)
    return gr.update(choices=list_datasets(), value=store.name), ""


@ui_errors
def import_uploads(name: str, files, label: str):
    """Uploaded images into `label`, or uploaded zips of <label>/<images> trees.

    Returns the report and an emptied upload box, so the next upload cannot take these files again.
    """
    if not files:
        raise gr.Error("Choose files to import first.")
    store = Store.open(name)
    paths = [Path(f if isinstance(f, str) else f.name) for f in files]
    zips = [p for p in paths if p.suffix.lower() == ".zip"]
    images = [p for p in paths if p.suffix.lower() != ".zip"]
    if images and not (label or "").strip():
        raise gr.Error("Type the label these images belong to.")
    lines = []
    for z in zips:
        report = import_path(store, z, label=label or None)
        lines.append(f"**{z.name}**: " + "; ".join(report.where() or [report.summary()]))
    if images:
        report = import_files(store, images, label.strip(), names=[p.name for p in images])
        lines.append(f"**{len(images)} files**: " + "; ".join(report.where()))
        for item in report.items:
            if item["outcome"] == "refused":
                lines.append(f"- {item['source']}: {item['reason']} ({item['detail']})")
    return "\n\n".join(lines), None

@ui_errors
def rescan(name: str) -> str:
    r = Store.open(name).rescan()
    rejected = ", ".join(f"{n} {k}" for k, n in r["rejected"].items()) or "none"
    return (f"Rescan: {r['adopted']} files adopted, {len(r.get('found', []))} missing files found again, "
            f"{len(r['missing'])} missing files noted, "
            f"new labels: {', '.join(r['new_labels']) or 'none'}, refused: {rejected}.")


@dataclass
class DatasetBar:
    dataset: gr.Dropdown
    counts: gr.Markdown
    label: gr.Dropdown
    gallery: gr.Gallery
    model_lists: list = field(default_factory=list)  # every model dropdown of every tab
    trainings: list = field(default_factory=list)  # events that end with a new model

    def refresh_after(self, event):
        """Chain a refresh of counts and gallery after another event."""
        return event.then(refresh, self.dataset, [self.counts, self.label, self.gallery], api_visibility="private")

    def wire_model_lists(self, demo: gr.Blocks) -> None:
        """Every model list fills on page load, on a change of dataset, and after every training (newest first)."""
        lists = self.model_lists
        if not lists:
            return

        def keep_current(dataset, *current):
            return [model_dropdown_update(dataset, keep) for keep in current]

        def newest(dataset):
            return [model_dropdown_update(dataset) for _ in lists]  # one dict each: gradio consumes them

        demo.load(keep_current, [self.dataset, *lists], lists, api_visibility="private")
        self.dataset.change(keep_current, [self.dataset, *lists], lists, api_visibility="private")
        for event in self.trainings:
            event.then(newest, self.dataset, lists, api_visibility="private")


def storage_note() -> str:
    if config.is_space() and config.persistent_dir() is None and not os.environ.get("DRAGONCLF_HOME"):
        return ("⚠️ This Space has no persistent storage: datasets and models are lost when it restarts. "
                "Add persistent storage (mounted at /data) to keep them.")
    return ""


def build() -> DatasetBar:
    choices = list_datasets()
    with gr.Row(equal_height=True):
        dataset = gr.Dropdown(choices, value=config.DEMO_DATASET if config.DEMO_DATASET in choices else None,
                              label="Dataset", scale=2, elem_id="dataset", allow_custom_value=True)
        new_name = gr.Textbox(label="New dataset", placeholder="e.g. dragons", scale=2, elem_id="new-dataset")
        create_btn = gr.Button("Create", scale=1, elem_id="create-dataset")
    note = storage_note()
    if note:
        gr.Markdown(note)
    counts = gr.Markdown(elem_id="dataset-counts")
    with gr.Accordion("Images and import", open=False, elem_id="images-accordion"):
        with gr.Row():
            label = gr.Dropdown([], label="Label", scale=1, elem_id="gallery-label", allow_custom_value=True)
            rescan_btn = gr.Button("Rescan folders", scale=0)
        gallery = gr.Gallery(label="Images", columns=8, height=300, elem_id="label-gallery")
        with gr.Row():
            files = gr.File(file_count="multiple", file_types=["image", ".zip"], label="Upload images or a zip",
                            scale=3, elem_id="import-files")
            with gr.Column(scale=1):
                up_label = gr.Textbox(label="Into label", placeholder="for single images", elem_id="import-label")
                import_btn = gr.Button("Import", variant="primary", elem_id="import-btn")
        import_result = gr.Markdown(elem_id="import-result")

    bar = DatasetBar(dataset, counts, label, gallery)
    outputs = [counts, label, gallery]
    dataset.change(refresh, dataset, outputs, api_name="dataset_status")
    label.change(label_gallery, [dataset, label], gallery, api_name="label_gallery")
    bar.refresh_after(create_btn.click(create, new_name, [dataset, new_name], api_name="create_dataset"))
    bar.refresh_after(import_btn.click(import_uploads, [dataset, files, up_label], [import_result, files],
                                       api_name="import_files"))
    bar.refresh_after(rescan_btn.click(rescan, dataset, import_result, api_name="rescan"))
    return bar
