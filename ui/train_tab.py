"""Train tab: the quick model in seconds, or a fastai fine-tune with live progress."""

from __future__ import annotations

import threading

import gradio as gr
import pandas as pd

from dragonclf import backbones, lr_find, quotas, train
from dragonclf.errors import DragonError
from dragonclf.interpret import plot_history
from dragonclf.settings import AUGMENT_PRESETS, TrainSettings, default_settings, setting_note
from ui.common import model_dropdown_update, stream_work, ui_errors
from ui.people import me, open_store

TITLE = "Train"
EPOCH_COLUMNS = ["epoch", "train_loss", "valid_loss", "accuracy", "error_rate", "time"]


def backbone_label(b: dict) -> str:
    """"name (offline)" only when its bundled weights are installed; "(downloaded)", "(needs download)" else."""
    note = "offline" if b["offline"] else ("downloaded" if b["ready"] else "needs download")
    return f"{b['name']} ({note})"


def backbone_choices() -> list[tuple[str, str]]:
    return [(backbone_label(b), b["name"]) for b in backbones.available_backbones()]


class Job(threading.Event):
    """A running training or learning-rate sweep: Stop sets it, and says `stopping`."""

    def __init__(self, stopping: str):
        super().__init__()
        self.stopping = stopping


def _settings(mode, epochs, lr, freeze_epochs, schedule, discriminative, size, batch_size, valid_share,
              augment) -> TrainSettings:
    """The form's fields as one TrainSettings (the quick model reads only size and validation share)."""
    s = TrainSettings(valid_share=float(valid_share), size=int(size) if size else None)
    if mode == "finetune":
        s = s.updated(epochs=int(epochs), lr=_learning_rate(lr),
                      freeze_epochs=int(freeze_epochs) if freeze_epochs not in (None, "") else None,
                      schedule=schedule, discriminative=bool(discriminative), batch_size=int(batch_size),
                      augment=augment)
    return s


def _learning_rate(text) -> float | None:
    text = str(text or "").strip()
    if not text or text.lower() == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise gr.Error(f"Learning rate {text!r} is not a number (e.g. 1e-3), or leave it empty.") from None
    if not 0 < value < 10:
        raise gr.Error("The learning rate must be between 0 and 10 (typical: 1e-4 to 1e-2).")
    return value


@ui_errors(say=1, of=5)
def start(name, mode, backbone, epochs, lr, freeze_epochs, schedule, discriminative, size, batch_size, valid_share,
          augment, progress=gr.Progress()):
    """Train in a worker thread; stream progress, the epoch table and the loss chart."""
    who, store = me(), open_store(name, "train")
    name = store.name
    cancel = Job("Stopping at the end of this batch; the last complete epoch is kept…")
    settings = _settings(mode, epochs, lr, freeze_epochs, schedule, discriminative, size, batch_size, valid_share,
                         augment)
    on_gpu = default_settings()["device"] == "cuda"
    finetune = mode == "finetune"
    quotas.check_training(who, settings.epochs if finetune else None, settings.size if finetune else None, on_gpu)

    def work(report, emit):
        extra = {"on_epoch": emit} if mode == "finetune" else {}  # the quick model has no epochs
        return train.train(store, mode=mode, backbone=backbone, settings=settings, dataset=name, progress=report,
                           cancel=cancel, **extra)

    rows: list[dict] = []
    status = f"Training {mode} model on **{name}** with {backbone}…"
    with quotas.training_slot(who):  # held until this generator ends (done, Stop, a closed tab or an error)
        yield cancel, status, pd.DataFrame(columns=EPOCH_COLUMNS), None, gr.update()
        for item in stream_work(work, cancel):
            if item[0] == "progress":
                progress(item[1], desc=item[2])
            elif item[0] == "event":
                rows.append(item[1])
                yield cancel, status, _table(rows), plot_history(rows), gr.update()
            elif item[0] == "done":
                result = item[1]
                yield cancel, _result_text(result), _table(rows or result.history), \
                    plot_history(rows or result.history) if (rows or result.history) else None, \
                    model_dropdown_update(name)


def _table(rows: list[dict]) -> pd.DataFrame:
    """The epoch rows as people read them: four decimals, the time as m:ss, every column always there."""
    df = pd.DataFrame(rows, columns=EPOCH_COLUMNS)
    for c in ("train_loss", "valid_loss", "accuracy", "error_rate"):
        df[c] = df[c].map(lambda v: "" if v is None or pd.isna(v) else f"{v:.4f}")
    df["time"] = df["time"].map(lambda s: "" if s is None or pd.isna(s) else f"{int(s) // 60}:{int(s) % 60:02d}")
    return df


def _result_text(r) -> str:
    m = r.metrics or {}
    acc = m.get("accuracy")
    lines = [f"**{'Stopped' if r.stopped_early else 'Done'}** in {r.seconds:.0f} s: {r.mode} model, {r.backbone}"
             + (f", validation accuracy **{acc:.3f}**" if acc is not None else "")]
    start = getattr(r, "start", None)
    if start:
        lines.append(f"Started from the quick model's head: validation accuracy **{start['accuracy']:.3f}** "
                     f"before training (epoch 0).")
    if getattr(r, "verdict", ""):
        lines.append(("⚠️ " if r.kept == "start" else "") + r.verdict)
    if r.model_dir:
        lines.append(f"Saved as `{r.model_dir.name}`: pick it in Evaluate and Predict.")
    else:
        lines.append("No complete model was saved.")
    for w in r.warnings:
        lines.append(f"⚠️ {w}")
    per = m.get("per_class") or {}
    if per:
        lines.append("\n| class | precision | recall | F1 | support |\n|---|---|---|---|---|")
        for label, s in per.items():
            lines.append(f"| {label} | {s['precision']:.2f} | {s['recall']:.2f} | {s['f1']:.2f} | {s.get('support', '')} |")
    return "\n".join(lines)


def tradeoff_note(name, size, epochs) -> str:
    """The chosen setting's cost, sized to the dataset's training images when it has any."""
    n = None
    try:
        n = sum(1 for r in open_store(name).images() if r.split == "train") if name else None
    except DragonError:  # no such dataset (yet), or not this person's: the note uses a round 100 images
        n = None
    return setting_note(size, epochs, n_train=n or None)


def stop(cancel):
    """Stop a running training or sweep, in its own words; with none running, say so."""
    if cancel is None or cancel.is_set():
        return "Nothing is training right now."
    cancel.set()
    return getattr(cancel, "stopping", "Stopping…")


@ui_errors(say=3, of=4)
def find_lr(name, backbone, size, batch_size, augment, valid_share, progress=gr.Progress()):
    """The LR sweep (about one epoch of pictures) in a worker; progress over its status; Stop stops it."""
    who, store = me(), open_store(name, "train")
    name = store.name
    cancel = Job("Stopping the learning-rate sweep; the learning rate stays as it was…")
    settings = TrainSettings(size=int(size) if size else None, batch_size=int(batch_size), augment=augment,
                             valid_share=float(valid_share))

    def work(report, emit):
        return lr_find.lr_find(store, backbone, settings=settings, dataset=name, progress=report, cancel=cancel)

    with quotas.training_slot(who):  # a sweep trains too: it takes a slot
        yield cancel, gr.skip(), gr.skip(), "Sweeping learning rates (about one epoch)…"
        for item in stream_work(work, cancel):
            if item[0] == "progress":
                progress(item[1], desc=item[2])
            elif item[0] == "done":
                fig, suggestion = item[1]
                yield cancel, fig, f"{suggestion:.2e}", (f"Suggested learning rate: **{suggestion:.2e}**, now in "
                                                         "Learning rate.")


@ui_errors(say=1, of=2)
def preview(name, augment, size, image_index):
    store = open_store(name)
    settings = TrainSettings(augment=augment, size=int(size or 224), seed=int(image_index))
    fig = lr_find.preview_augmentations(store, settings=settings, image=int(image_index), dataset=store.name)
    return fig, f"Picture #{int(image_index)} as training sees it with the **{augment}** augmentation."


def build(bar) -> None:
    cancel = gr.State(None)
    defaults = TrainSettings.for_machine()  # CPU-sized without CUDA (a free Space), larger on a GPU
    with gr.Row():
        with gr.Column(scale=1):
            mode = gr.Radio([("Quick model (seconds)", "quick"), ("Fine-tune (fastai)", "finetune")],
                            value="quick", label="Mode", elem_id="train-mode")
            backbone = gr.Dropdown(backbone_choices(), value=backbones.DEFAULT_BACKBONE, label="Backbone",
                                   elem_id="train-backbone")
            with gr.Row():
                epochs = gr.Number(defaults.epochs, label="Epochs", precision=0, minimum=1, maximum=100,
                                   elem_id="train-epochs")
                lr = gr.Textbox("", label="Learning rate", placeholder="auto", elem_id="train-lr")
            with gr.Accordion("More settings", open=False, elem_id="train-more-settings"):
                freeze_epochs = gr.Number(None, label="Frozen epochs first (empty: automatic)", precision=0,
                                          minimum=0, maximum=100)
                schedule = gr.Radio([("One-cycle", "one_cycle"), ("SGDR (warm restarts)", "sgdr")],
                                    value="one_cycle", label="Schedule")
                discriminative = gr.Checkbox(True, label="Discriminative learning rates (body slower than head)")
                size = gr.Number(defaults.size, label="Image size (px)", precision=0, minimum=32, maximum=512,
                                 elem_id="train-size")
                batch_size = gr.Number(defaults.batch_size, label="Batch size", precision=0, minimum=1, maximum=512,
                                       elem_id="train-batch-size")
                valid_share = gr.Slider(0.05, 0.5, value=0.2, step=0.05, label="Validation share")
            augment = gr.Dropdown(list(AUGMENT_PRESETS), value=defaults.augment, label="Augmentation")
            tradeoff = gr.Markdown(setting_note(defaults.size, defaults.epochs), elem_id="train-tradeoff")
            with gr.Row():
                start_btn = gr.Button("Train", variant="primary", elem_id="train-start")
                stop_btn = gr.Button("Stop", variant="stop", elem_id="train-stop")
            stop_message = gr.Markdown(elem_id="train-stop-message")
        with gr.Column(scale=2):
            status = gr.Markdown(elem_id="train-status")
            table = gr.Dataframe(headers=EPOCH_COLUMNS, label="Epochs", interactive=False, elem_id="train-epochs-table")
            chart = gr.Plot(label="Loss", elem_id="train-chart")
            models = gr.Dropdown([], label="Models of this dataset", interactive=False, elem_id="train-models")
    with gr.Accordion("Learning-rate finder and augmentation preview", open=False):
        with gr.Row():
            lr_btn = gr.Button("Find learning rate", elem_id="lr-find")
            image_index = gr.Number(0, label="Preview image #", precision=0, minimum=0, maximum=1_000_000)
            preview_btn = gr.Button("Preview augmentation", elem_id="aug-preview")
        lr_status = gr.Markdown(elem_id="lr-status")
        with gr.Row():
            lr_plot = gr.Plot(label="Loss vs learning rate", elem_id="lr-plot")
            aug_plot = gr.Plot(label="Augmented samples", elem_id="aug-plot")

    inputs = [bar.dataset, mode, backbone, epochs, lr, freeze_epochs, schedule, discriminative, size, batch_size,
              valid_share, augment]
    run = start_btn.click(start, inputs, [cancel, status, table, chart, models], api_name="train",
                          concurrency_limit=2, concurrency_id="train", show_progress_on=status)
    bar.trainings.append(run)
    bar.model_lists.append(models)
    stop_btn.click(stop, cancel, stop_message, api_name="stop_train", queue=False)
    start_btn.click(lambda: "", None, stop_message, queue=False, api_visibility="private")
    lr_btn.click(find_lr, [bar.dataset, backbone, size, batch_size, augment, valid_share], [cancel, lr_plot, lr, lr_status],
                 api_name="lr_find", concurrency_id="train", show_progress_on=lr_status)
    preview_btn.click(preview, [bar.dataset, augment, size, image_index], [aug_plot, lr_status],
                      api_name="preview_augmentation")
    for field in (bar.dataset, size, epochs):  # sized to the chosen dataset's training images
        field.change(tradeoff_note, [bar.dataset, size, epochs], tradeoff, api_visibility="private")
