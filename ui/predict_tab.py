"""Predict tab: a picture in (upload, webcam, clipboard), top-k probabilities out; batch; export."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd
from PIL import Image, UnidentifiedImageError

from dragonclf import access, modelstore
from dragonclf.predict import Predictor, load_predictor
from ui.common import download_dir, model_dropdown_update, ui_errors
from ui.people import dataset_for, me

TITLE = "Predict"


def picture_input(**kwargs) -> gr.Image:
    """A gr.Image that hands our loader the file as uploaded, and says plainly when it is not a picture.

    Gradio opens the upload with PIL before any handler runs; a text file renamed .jpg would end as a
    bare "Error". With image_mode=None Gradio only reads the header and passes the path on, so decoding
    (under our pixel limit) and colour conversion happen in dragonclf.preprocess. The check wraps this
    one instance's preprocess (a gr.Image subclass would make Gradio write a .pyi stub beside this file).
    """
    image = gr.Image(type="filepath", image_mode=None, **kwargs)
    gradio_preprocess = image.preprocess

    def preprocess(payload):
        try:
            return gradio_preprocess(payload)
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as e:
            name = getattr(payload, "orig_name", None) or "This file"
            raise gr.Error(f"{name} is not a readable image ({type(e).__name__}); try a JPEG, PNG or WebP.") from e

    image.preprocess = preprocess
    return image


def predictor(dataset: str, model: str | None) -> Predictor:
    """The chosen model of `dataset` (default: its newest), loaded once per file version.

    Needs read access to the dataset, or (with a model named) that model made public."""
    if not dataset:
        raise gr.Error("Choose a dataset first.")
    dataset = access.check_model(me(), dataset, model) if model else dataset_for(dataset)
    if not model:
        models = [m for m in modelstore.list_models(dataset) if "error" not in m] if dataset else []
        if not models:
            raise gr.Error(f"Dataset {dataset!r} has no trained model yet: train one in the Train tab.")
        model = models[0]["id"]
    return load_predictor(model, dataset)  # only inside the app's models folder; another dataset's is refused


NOT_SURE = "not sure"


@ui_errors(say=1, of=2)
def predict(image: str | None, dataset: str, model: str | None = None, top_k: int = 5, threshold: float = 0.5):
    """Probabilities for one image (a file path from gr.Image), and which model answered.

    Below `threshold` the headline is "not sure": a picture of none of the classes still gets
    probabilities that add up to one, and its best guess should not look like an answer.
    """
    if not image:
        raise gr.Error("Upload, paste or take a picture first.")
    p = predictor(dataset, model)
    probs = p.predict_image(image, top_k=int(top_k) or None)
    best, score = next(iter(probs.items()))
    threshold = float(threshold or 0)
    answered = f"Answered by `{p.model_dir.name}` ({p.meta.get('mode', '?')}, {p.meta.get('backbone', '?')})."
    if score < threshold:
        guesses = ", ".join(f"{k} {v:.1%}" for k, v in probs.items())
        answered += (f"\n\n**Not sure**: the best guess is below the {threshold:.0%} threshold, so the picture may "
                     f"show none of these classes. Guesses: {guesses}.")
        return NOT_SURE, answered
    return probs, answered


@ui_errors(say=1, of=2)
def predict_batch(files, dataset: str, model: str | None):
    if not files:
        raise gr.Error("Choose some images first.")
    p = predictor(dataset, model)
    rows = []
    for f in files:
        path = f if isinstance(f, str) else f.name
        r = p.predict_paths([path])[0]
        rows.append({"file": Path(path).name, "label": r.get("label", ""),
                     "probability": round(max(r["probs"].values()), 3) if "probs" in r else None,
                     "error": r.get("error", "")})
    bad = sum(1 for r in rows if r["error"])
    return pd.DataFrame(rows), (f"{len(rows) - bad} predicted by `{p.model_dir.name}`"
                                + (f"; {bad} could not be read (see the error column)." if bad else "."))


@ui_errors(say=1, of=2)
def export(dataset: str, model: str | None, fmt: str) -> tuple[str, str]:
    d = predictor(dataset_for(dataset), model).model_dir  # exporting needs the dataset, not only a public model
    out = modelstore.export_model(d, fmt, download_dir())
    return str(out), modelstore.how_to_use(d, out)


def build(bar) -> None:
    with gr.Row():
        model = gr.Dropdown([], label="Model (empty: the newest)", scale=3, allow_custom_value=True,
                            elem_id="predict-model")
        refresh_btn = gr.Button("↻ Models", scale=0)
    with gr.Row():
        image = picture_input(sources=["upload", "webcam", "clipboard"], label="Picture", elem_id="predict-image")
        with gr.Column():
            with gr.Row():
                top_k = gr.Slider(1, 10, value=5, step=1, label="Show top")
                threshold = gr.Slider(0, 1, value=0.5, step=0.05, label="Not sure below", elem_id="predict-threshold")
            result = gr.Label(num_top_classes=10, label="Prediction", elem_id="predict-label")
            answered = gr.Markdown(elem_id="predict-answered")
    with gr.Accordion("Many pictures at once", open=False):
        files = gr.File(file_count="multiple", file_types=["image"], label="Images")
        batch_btn = gr.Button("Predict all")
        table = gr.Dataframe(interactive=False)
        batch_status = gr.Markdown(elem_id="predict-batch-status")
    with gr.Accordion("Export the model", open=False):
        with gr.Row():
            fmt = gr.Radio([("ONNX + JSON (any runtime)", "onnx"), ("fastai export.pkl", "pkl")], value="onnx",
                           label="Format")
            export_btn = gr.Button("Export", elem_id="export-model")
        download = gr.File(label="Download", elem_id="export-file")
        export_status = gr.Markdown(elem_id="export-status")

    image.change(predict, [image, bar.dataset, model, top_k, threshold], [result, answered], api_name="predict",
                 concurrency_limit=8, concurrency_id="predict", show_progress="minimal")
    threshold.change(lambda img, *rest: predict(img, *rest) if img else (gr.skip(), gr.skip()), [image, bar.dataset, model, top_k, threshold], [result, answered],
                     api_visibility="private", concurrency_id="predict", show_progress="minimal")
    batch_btn.click(predict_batch, [files, bar.dataset, model], [table, batch_status], api_name="predict_batch",
                    concurrency_id="predict")
    export_btn.click(export, [bar.dataset, model, fmt], [download, export_status], api_name="export_model")
    refresh_btn.click(model_dropdown_update, [bar.dataset, model], model, api_visibility="private")
    bar.model_lists.append(model)
