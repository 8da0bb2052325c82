"""Who you are, and who else may see a dataset: sharing, your own copy, public datasets and models, quotas.

Layout and thin handlers only; the rules are `dragonclf.access` and `dragonclf.quotas`,
checked on the server whatever the page shows (admin controls are only hidden for others).
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from dragonclf import access, quotas
from ui.common import ui_errors
from ui.people import me, oauth_enabled, open_store

ROLE_CHOICES = [("can look (read-only)", "read"), ("can edit", "edit"), ("remove access", "remove")]


@ui_errors(say=0, of=3)
def whoami():
    who = me()
    if who.kind == "local":
        text = "Running locally: you own everything here."
    elif who.anonymous:
        text = (f"You are a visitor ({who.name}): you can look at public datasets and predict with public models. "
                + ("Sign in with Hugging Face (button above) to build your own." if oauth_enabled() else ""))
    else:
        text = f"Signed in as **{who.name}** (`{who.id}`){' · admin' if who.is_admin else ''}."
    used = quotas.usage(who) if not who.anonymous else None
    if used and not who.is_admin:
        text += f" You use {used['images']} of {quotas.get('images_per_person')} images."
    return text, gr.update(visible=who.is_admin), _quota_table() if who.is_admin else ""


def _quota_table() -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in quotas.current().items())
    return "| quota | value |\n|---|---|\n" + rows


@ui_errors(say=0)
def share(dataset: str, person: str, role: str) -> str:
    return access.share(me(), dataset, person, None if role == "remove" else role)


@ui_errors(say=1, of=2)
def copy(dataset: str, new_name: str):
    store = access.copy_dataset(me(), dataset, (new_name or "").strip())
    n = len(store.images())
    return gr.update(choices=access.visible(me()), value=store.name), f"Copied {n} images into your dataset."


@ui_errors(say=0)
def set_public(dataset: str, public: bool) -> str:
    return access.set_public(me(), dataset, bool(public))


@ui_errors(say=0)
def set_model_public(dataset: str, model: str, public: bool) -> str:
    if not (model or "").strip():
        raise gr.Error("Type the model id (shown in the Predict tab's Model list).")
    open_store(dataset, "read")
    return access.set_model_public(me(), dataset, model.strip(), bool(public))


@ui_errors(say=0, of=2)
def set_quota(key: str, value) -> tuple[str, str]:
    if value is None:
        raise gr.Error("Type a number for the quota.")
    return quotas.set_quota(me(), key, int(value)), _quota_table()


@dataclass
class Panel:
    who: gr.Markdown
    admin: gr.Group
    quotas: gr.Markdown


def build(bar) -> Panel:
    with gr.Row(equal_height=True):
        who = gr.Markdown(elem_id="whoami")
        if oauth_enabled():
            gr.LoginButton(scale=0)
    with gr.Accordion("Sharing and access", open=False, elem_id="access-accordion"):
        message = gr.Markdown(elem_id="access-message")
        with gr.Row(equal_height=True):
            person = gr.Textbox(label="Share this dataset with (user name)", elem_id="share-person", scale=2)
            role = gr.Radio(ROLE_CHOICES, value="read", label="They", elem_id="share-role", scale=2)
            share_btn = gr.Button("Share", elem_id="share-btn", scale=0)
        with gr.Row(equal_height=True):
            copy_name = gr.Textbox(label="Copy this dataset to my datasets as", elem_id="copy-name", scale=3)
            copy_btn = gr.Button("Copy to my datasets", elem_id="copy-btn", scale=0)
        with gr.Group(visible=False, elem_id="admin-controls") as admin:
            with gr.Row(equal_height=True):
                public = gr.Checkbox(label="Public: anyone may look at this dataset", elem_id="public-check")
                public_btn = gr.Button("Set", elem_id="public-btn", scale=0)
                model = gr.Textbox(label="Model id", elem_id="public-model", scale=2)
                model_public = gr.Checkbox(label="Anyone may predict with it", elem_id="public-model-check")
                model_btn = gr.Button("Set", elem_id="public-model-btn", scale=0)
            with gr.Row(equal_height=True):
                key = gr.Dropdown(list(quotas.DEFAULTS), value="images_per_person", label="Quota", elem_id="quota-key")
                value = gr.Number(label="Value", precision=0, elem_id="quota-value")
                quota_btn = gr.Button("Set quota", elem_id="quota-btn", scale=0)
            quota_table = gr.Markdown(elem_id="quota-table")

    share_btn.click(share, [bar.dataset, person, role], message, api_name="share_dataset")
    bar.refresh_after(copy_btn.click(copy, [bar.dataset, copy_name], [bar.dataset, message], api_name="copy_dataset"))
    public_btn.click(set_public, [bar.dataset, public], message, api_name="set_public")
    model_btn.click(set_model_public, [bar.dataset, model, model_public], message, api_name="set_model_public")
    quota_btn.click(set_quota, [key, value], [message, quota_table], api_name="set_quota")
    return Panel(who, admin, quota_table)
