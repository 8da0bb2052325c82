"""The dataset bar: pick or create a dataset, see its labels and images, import your own."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import gradio as gr

from dragonclf import access, config, quotas
from dragonclf.importer import import_files, import_path
from dragonclf.errors import DragonError
from dragonclf.names import dataset_folder_name
from dragonclf.store import list_datasets
from ui.common import model_dropdown_update, servable, ui_errors
from ui.people import me, open_store

GALLERY_MAX = 60


def counts_markdown(name: str) -> str:
    if not name:
        return "No dataset selected."
    store = open_store(name)
    s = store.status()
    rows = " · ".join(f"**{label}** {n}" for label, n in s["labels"].items()) or "no labels yet"
    extra = []
    if s["trashed"]:
        extra.append(f"{s['trashed']} in trash")
    if s["near_duplicate_groups"]:
        extra.append(f"{s['near_duplicate_groups']} near-duplicate groups")
    if s["conflicts"]:
        extra.append(f"{s['conflicts']} label conflicts")
    last = next((h for h in store.history(limit=20) if h.get("actor")), None)
    if last:  # the journal records who made each edit
        extra.append(f"last edit: {last['action']} by {last['actor'].split(':', 1)[-1]}")
    total = sum(s["labels"].values())
    return f"{total} images: {rows}" + (f" ({', '.join(extra)})" if extra else "")


# The label choice that shows every label's pictures: a control character, which no label name may hold.
ALL_LABELS = "\x1fall"


def caption(r, with_label: bool = False) -> str:
    """What a person knows a picture by: its title or file name, and the site it came from (and its label)."""
    name = Path(urlparse(r.source).path).name if r.source else ""
    site = urlparse(r.page_url or r.image_url or "").hostname
    return " · ".join(x for x in (r.label if with_label else "", r.title or name or r.origin or "", site) if x)


def label_choices(name: str | None) -> list[tuple[str, str]]:
    """"All labels" first (the gallery opens on it), then each label."""
    labels = [lab.display for lab in open_store(name).labels()] if name else []
    return ([("All labels", ALL_LABELS)] if labels else []) + [(lab, lab) for lab in labels]


@ui_errors(say=0, of=5)
def refresh(name: str):
    """Counts, label choices and the first page of the first label's gallery for dataset `name`."""
    choices = label_choices(name)
    first = choices[0][1] if choices else None
    gallery, page, info = gallery_page(name, first, "", 1)
    return counts_markdown(name), gr.update(choices=choices, value=first), gallery, page, info


@ui_errors
def dataset_choices(current: str | None):
    """Fresh choices on page load: the datasets this person may open (their own, shared, public)."""
    choices = access.visible(me())
    names = [n for _, n in choices]
    return gr.update(choices=choices, value=current if current in names else (names[0] if names else None))


@ui_errors
def label_gallery(name: str, label: str | None):
    """The newest page of a label (the API's short form of `gallery_page`)."""
    return gallery_page(name, label, "", 1)[0]


@ui_errors(say=2, of=3)
def gallery_page(name: str, label: str | None, text: str, page: float | None):
    """One page of a label's pictures (newest first), filtered by `text`: (gallery, page number, "1-60 of N").

    `label` ALL_LABELS: every label's pictures, each captioned with its label.
    """
    if not name or not label:
        return [], 1, ""
    number = max(1, int(page or 1))
    every = label == ALL_LABELS
    found = open_store(name).page(label=None if every else label, text=text, offset=(number - 1) * GALLERY_MAX,
                                  limit=GALLERY_MAX)
    shown = [(servable(r.path), caption(r, with_label=every)) for r in found.rows]
    return shown, found.number, found.describe() + (f" matching {text.strip()!r}" if (text or "").strip() else "")


@ui_errors(say=2, of=3)
def create(name: str):
    """Make a dataset (spaces become '-' in its folder name); an existing name is said, then picked."""
    if not (name or "").strip():
        raise DragonError("Type a name for the new dataset first.")
    folder = dataset_folder_name(name)
    if folder in access.visible(me()):
        return gr.update(value=folder), "", f"A dataset named **{folder}** already exists: it is now selected."
    store = access.create_dataset(me(), folder)
    note = f"Created **{store.name}**." + (f" (Folder names cannot hold spaces: {name.strip()!r} is stored as "
                                          f"{store.name!r}.)" if store.name != name.strip() else "")
    return gr.update(choices=access.visible(me()), value=store.name), "", note


@ui_errors(say=0, of=2)
def import_uploads(name: str, files, label: str):
    """Uploaded images into `label`, or uploaded zips of <label>/<images> trees.

    Returns the report and an emptied upload box, so the next upload cannot take these files again.
    """
    if not files:
        raise gr.Error("Choose files to import first.")
    store = open_store(name, "edit")
    quotas.check_room(me(), len(files))
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

@ui_errors(say=0)
def rescan(name: str) -> str:
    r = open_store(name, "edit").rescan()
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
    page: gr.Number  # the gallery's page number (1-based)
    page_info: gr.Markdown  # "61-120 of 5,000 (page 2 of 84)"
    model_lists: list = field(default_factory=list)  # every model dropdown of every tab
    trainings: list = field(default_factory=list)  # events that end with a new model

    @property
    def outputs(self) -> list:
        """What `refresh` fills."""
        return [self.counts, self.label, self.gallery, self.page, self.page_info]

    def refresh_after(self, event):
        """Chain a refresh of counts and gallery after another event."""
        return event.then(refresh, self.dataset, self.outputs, api_visibility="private")

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
    # Only the public demo here: each person's own list arrives on page load (dataset_choices), so
    # the page itself names nobody's datasets.
    choices = [config.DEMO_DATASET] if config.DEMO_DATASET in list_datasets() else []
    with gr.Row(equal_height=True):
        dataset = gr.Dropdown(choices, value=config.DEMO_DATASET if config.DEMO_DATASET in choices else None,
                              label="Dataset", scale=2, elem_id="dataset", allow_custom_value=True)
        new_name = gr.Textbox(label="New dataset", placeholder="e.g. dragons", scale=2, elem_id="new-dataset")
        create_btn = gr.Button("Create", scale=1, elem_id="create-dataset")
    note = storage_note()
    if note:
        gr.Markdown(note)
    message = gr.Markdown(elem_id="dataset-message")
    counts = gr.Markdown(elem_id="dataset-counts")
    with gr.Accordion("Images and import", open=False, elem_id="images-accordion"):
        with gr.Row():
            label = gr.Dropdown([], label="Label", scale=1, elem_id="gallery-label", allow_custom_value=True)
            rescan_btn = gr.Button("Rescan folders", scale=0)
        gallery = gr.Gallery(label="Images", columns=8, height=300, elem_id="label-gallery")
        with gr.Row():
            prev_page = gr.Button("← Newer", size="sm", scale=0, elem_id="gallery-prev")
            page = gr.Number(value=1, precision=0, minimum=1, label="Page", scale=0, min_width=90,
                             elem_id="gallery-page")
            next_page = gr.Button("Older →", size="sm", scale=0, elem_id="gallery-next")
            page_info = gr.Markdown(elem_id="gallery-page-info")
            text = gr.Textbox(label="Filter", placeholder="id, title, source or query; Enter", scale=2,
                              elem_id="gallery-filter")
        with gr.Row():
            files = gr.File(file_count="multiple", file_types=["image", ".zip"], label="Upload images or a zip",
                            scale=3, elem_id="import-files")
            with gr.Column(scale=1):
                up_label = gr.Textbox(label="Into label", placeholder="for single images", elem_id="import-label")
                import_btn = gr.Button("Import", variant="primary", elem_id="import-btn")
        import_result = gr.Markdown(elem_id="import-result")

    bar = DatasetBar(dataset, counts, label, gallery, page, page_info)
    dataset.change(refresh, dataset, bar.outputs, api_name="dataset_status")
    shown = [gallery, page, page_info]
    label.change(label_gallery, [dataset, label], gallery, api_name="label_gallery").then(
        lambda d, lab: (*gallery_page(d, lab, "", 1)[1:], ""), [dataset, label], [page, page_info, text],
        api_visibility="private")  # a new label starts at its newest page, unfiltered
    text.submit(lambda d, lab, t: gallery_page(d, lab, t, 1), [dataset, label, text], shown, api_visibility="private")
    page.submit(gallery_page, [dataset, label, text, page], shown, api_name="gallery_page")
    prev_page.click(lambda d, lab, t, n: gallery_page(d, lab, t, (n or 1) - 1), [dataset, label, text, page], shown,
                    api_visibility="private")
    next_page.click(lambda d, lab, t, n: gallery_page(d, lab, t, (n or 1) + 1), [dataset, label, text, page], shown,
                    api_visibility="private")
    bar.refresh_after(create_btn.click(create, new_name, [dataset, new_name, message], api_name="create_dataset"))
    bar.refresh_after(import_btn.click(import_uploads, [dataset, files, up_label], [import_result, files],
                                       api_name="import_files"))
    bar.refresh_after(rescan_btn.click(rescan, dataset, import_result, api_name="rescan"))
    return bar
