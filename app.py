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
from dragonclf.errors import DragonError  # noqa: E402
from dragonclf.identity import SignIn  # noqa: E402
from ui import (access_panel, clean_tab, collect_tab, dataset_bar, evaluate_tab, manage_panel, people,  # noqa: E402
                predict_tab, train_tab)

TABS = {"collect": collect_tab, "clean": clean_tab, "train": train_tab, "evaluate": evaluate_tab,
        "predict": predict_tab}
MAX_FILE_SIZE = "50mb"

# delete_cache: files handed to browsers (exports, galleries) leave Gradio's cache after half an hour
with gr.Blocks(title="dragonclf: your own image classifier", delete_cache=(600, 1800)) as demo:
    gr.Markdown("# 🐉 dragonclf\nCollect pictures for each class, clean them, train, evaluate, predict.")
    bar = dataset_bar.build()
    manage_panel.build(bar)
    panel = access_panel.build(bar)
    with gr.Tabs(overflow_behavior="wrap"):  # on a phone every tab stays in sight, on two rows
        for name, tab in TABS.items():
            with gr.Tab(tab.TITLE, id=name, elem_id=f"tab-{name}"):
                tab.build(bar)
    bar.wire_model_lists(demo)
    demo.load(access_panel.whoami, None, [panel.who, panel.admin, panel.quotas], api_visibility="private")
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
    try:  # fail closed: half a sign-in configuration, or a public bind with none, does not start
        sign_in = SignIn.from_env(opts["server_name"])
    except DragonError as e:
        raise SystemExit(f"dragonclf: {e}") from None
    if sign_in.mode == "users":  # a private deployment: the user list, checked against salted hashes
        opts["auth"] = sign_in.check_password
        opts["auth_message"] = "Sign in with the name and password the owner of this app gave you."
    return opts


if __name__ == "__main__":
    options = launch_options()
    people.configure(SignIn.from_env(options["server_name"]))  # how handlers identify people on this server
    demo.queue(default_concurrency_limit=4).launch(**options)
