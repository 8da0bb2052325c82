"""Evaluate tab: confusion matrix, top losses, most uncertain, most confused, per-class metrics."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from dragonclf import interpret
from ui.common import model_dropdown_update, servable, ui_errors
from ui.people import open_store

TITLE = "Evaluate"


def _gallery(records: list[dict]) -> list[tuple[str, str]]:
    return [(servable(r["path"]), f"{r['actual']} → {r['predicted']} · p={r['probability']:.2f} · loss {r['loss']:.2f}")
            for r in records]


@ui_errors(say=0, of=9)
def evaluate(name: str, model: str, tta: bool, progress=gr.Progress()):
    if not model:
        raise gr.Error("Train a model first (Train tab), then pick it here.")
    store = open_store(name)
    ev = interpret.evaluate(model, store, dataset=store.name, tta=bool(tta),
                            progress=lambda f, m: progress(f, desc=m))
    m = ev.metrics
    cm = ev.confusion
    summary = (f"**{len(ev.actual)} validation images**{' (with TTA)' if tta else ''}: accuracy **{m['accuracy']:.3f}**, "
               f"error rate {m['error_rate']:.3f}, loss {m['valid_loss']:.3f}")
    per_class = pd.DataFrame([{"class": k, **{c: round(v, 3) if isinstance(v, float) else v for c, v in s.items()}}
                              for k, s in m["per_class"].items()])
    numbers = pd.DataFrame(cm, index=ev.labels, columns=ev.labels).reset_index(names="actual \\ predicted")
    summary += "\n\n" + mistakes_note(ev)
    confused_rows = ev.most_confused()
    confused = gr.update(value=pd.DataFrame(confused_rows, columns=["actual", "predicted", "count"]),
                         label="Most confused" if confused_rows else "Most confused: none, no mistakes")
    wrong = ev.samples(correct=False, k=12)
    return (summary, interpret.plot_confusion_matrix(cm, ev.labels), numbers, per_class, confused,
            _gallery(ev.top_losses(12)), _gallery(ev.most_uncertain(12)),
            gr.update(value=_gallery(wrong), label="Wrong" if wrong else "Wrong: none, no mistakes"),
            _gallery(ev.samples(correct=True, k=12)))


def mistakes_note(ev) -> str:
    """How many validation images are wrong, in words: the empty Wrong and Most confused views say it too."""
    wrong = sum(a != p for a, p in zip(ev.actual, ev.predicted))
    if not wrong:
        return (f"**No mistakes**: all {len(ev.actual)} validation images are right. Top losses lists the least "
                "confident right answers.")
    return f"**{wrong} wrong** of {len(ev.actual)}: see Wrong and Most confused; Top losses puts them first."


def build(bar) -> None:
    with gr.Row():
        model = gr.Dropdown([], label="Model", scale=3, allow_custom_value=True, elem_id="eval-model")
        tta = gr.Checkbox(False, label="Mirror test (TTA)", scale=1, min_width=140)
        refresh_btn = gr.Button("↻ Models", scale=0)
        run_btn = gr.Button("Evaluate", variant="primary", scale=1, elem_id="eval-run")
    summary = gr.Markdown(elem_id="eval-summary")
    with gr.Row():
        cm_plot = gr.Plot(label="Confusion matrix", elem_id="eval-cm")
        with gr.Column():
            per_class = gr.Dataframe(headers=["class", "precision", "recall", "f1", "support"], label="Per class",
                                     interactive=False, elem_id="eval-per-class")
            confused = gr.Dataframe(headers=["actual", "predicted", "count"], label="Most confused", interactive=False)
    numbers = gr.Dataframe(headers=["actual \\ predicted"], label="Confusion matrix (counts)", interactive=False)
    with gr.Tabs(overflow_behavior="wrap"):
        with gr.Tab("Top losses"):
            losses = gr.Gallery(columns=6, height=320, elem_id="eval-top-losses")
        with gr.Tab("Most uncertain"):
            uncertain = gr.Gallery(columns=6, height=320)
        with gr.Tab("Wrong"):
            wrong = gr.Gallery(columns=6, height=320, label="Wrong", elem_id="eval-wrong")
        with gr.Tab("Right"):
            right = gr.Gallery(columns=6, height=320)

    outputs = [summary, cm_plot, numbers, per_class, confused, losses, uncertain, wrong, right]
    run_btn.click(evaluate, [bar.dataset, model, tta], outputs, api_name="evaluate", concurrency_limit=2)
    refresh_btn.click(model_dropdown_update, [bar.dataset, model], model, api_visibility="private")
    bar.model_lists.append(model)
