"""dragonclf in the browser: layout and wiring only; the logic lives in dragonclf/.

Run `python app.py` (or `bash run.sh`). On a Hugging Face Space it binds
0.0.0.0:$PORT and keeps data under /data when persistent storage exists.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MPLBACKEND", "Agg")

import gradio as gr  # noqa: E402

from dragonclf import config  # noqa: E402
from ui import dataset_bar  # noqa: E402

TABS = ("collect", "clean", "train", "evaluate", "predict")
MAX_FILE_SIZE = "50mb"

with gr.Blocks(title="dragonclf: your own image classifier") as demo:
    gr.Markdown("# 🐉 dragonclf\nCollect pictures for each class, clean them, train, evaluate, predict.")
    bar = dataset_bar.build()
    import importlib

    for name in TABS:
        try:
            tab = importlib.import_module(f"ui.{name}_tab")
        except ModuleNotFoundError as e:
            if e.name != f"ui.{name}_tab":
                raise
            with gr.Tab(name.capitalize()):
                gr.Markdown("Coming soon.")
            continue
        with gr.Tab(tab.TITLE, id=name, elem_id=f"tab-{name}"):
            tab.build(bar)
    bar.wire_model_lists(demo)
    demo.load(dataset_bar.dataset_choices, bar.dataset, bar.dataset, api_visibility="private")
    demo.load(dataset_bar.refresh, bar.dataset, bar.outputs, api_visibility="private")


def launch_options() -> dict:
    """Where to listen and what to allow, for local use or a Space."""
    on_space = config.is_space()
    opts = dict(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0" if on_space else "127.0.0.1"),
        server_port=int(os.environ.get("PORT") or os.environ.get("GRADIO_SERVER_PORT") or 7860),
        max_file_size=MAX_FILE_SIZE,
        ssr_mode=False,
        show_error=False,
    )
    user, password = os.environ.get("DRAGONCLF_USER"), os.environ.get("DRAGONCLF_PASSWORD")
    if user and password:  # optional login for private deployments
        opts["auth"] = (user, password)
    return opts


if __name__ == "__main__":
    demo.queue(default_concurrency_limit=4).launch(**launch_options())
