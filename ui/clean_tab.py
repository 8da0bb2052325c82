"""The Clean tab: queues of suspects, one card at a time, decisions by button or key.

Layout and thin handlers only; dragonclf.clean finds the suspects and applies
decisions (journalled in the store, so Undo/Redo work across sessions). The
queue lives in a per-browser-session gr.State keyed by dataset and kind, so it
survives switching tabs, labels or datasets and coming back.

Keys (when no text field has focus): 1-9 relabel to the Nth label, D trash,
K keep, U undo, Shift+U or R redo, arrows previous/next. The key handler only
clicks buttons by elem_id, so a browser test can press keys and an API client
can call the same events by name.
"""

from __future__ import annotations

import gradio as gr

from dragonclf import clean, modelstore
from dragonclf.errors import DragonError
from dragonclf.store import Store
from ui.common import download_dir, progress_adapter, servable, sweep, ui_errors
from ui.people import dataset_for, me, open_store

TITLE = "Clean"
QUEUES = [("Likely mislabels", "mislabel"), ("Top losses (fine-tuned model)", "top_loss"),
          ("Near-duplicates", "duplicate"), ("Label conflicts", "conflict"), ("Poor quality", "quality"),
          ("Trash", "trash"), ("Confusion-matrix cell", "cell")]
DIGITS = 9
GALLERY_MAX = 60  # a page: the browser gets one page of a queue at a time (gallery, table, selection)

KEYS_JS = """
if (!window.__dragonclfCleanKeys) {
  window.__dragonclfCleanKeys = true;
  document.addEventListener('keydown', (e) => {
    const panel = document.getElementById('clean-panel');
    if (!panel || panel.offsetParent === null) return;  // the Clean tab is not showing
    const t = e.target;
    if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT' || t.isContentEditable)) return;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    let id = null;
    if (/^[1-9]$/.test(e.key)) id = 'clean-digit-' + e.key;
    else if (e.key === 'd' || e.key === 'D') id = 'clean-trash';
    else if (e.key === 'k' || e.key === 'K') id = 'clean-keep';
    else if (e.key === 'U' || e.key === 'r' || e.key === 'R') id = 'clean-redo';
    else if (e.key === 'u') id = 'clean-undo';
    else if (e.key === 'ArrowRight' || e.key === 'ArrowDown') id = 'clean-next';
    else if (e.key === 'ArrowLeft' || e.key === 'ArrowUp') id = 'clean-prev';
    if (!id) return;
    const el = document.getElementById(id);
    const btn = el && (el.tagName === 'BUTTON' ? el : el.querySelector('button'));
    if (btn) { e.preventDefault(); btn.click(); }
  });
}
"""


# ---- session state: {"queues": {"<dataset>/<kind>": [suspect]}, "pos": {...}, "done": {dataset: {id: action}},
#      "snapshot": {dataset: snapshot}, "edits": {dataset: n}, "trash": {dataset: (offset, total)}}
# The trash queue holds one page of the store's trash (it can be the size of the dataset); other queues hold
# their suspects, and the view sends the page the current card is on.

def _new_state() -> dict:
    return {"queues": {}, "pos": {}, "done": {}, "snapshot": {}, "edits": {}, "trash": {}}


def _key(dataset: str, kind: str) -> str:
    return f"{dataset}/{kind}"


def _pending(state: dict, dataset: str, kind: str) -> list[dict]:
    if kind == "trash":  # read from the store after every decision: it is what is in the trash now
        return state["queues"].get(_key(dataset, kind), [])
    done = state["done"].get(dataset, {})
    return [s for s in state["queues"].get(_key(dataset, kind), []) if s["id"] not in done]


def _current(state: dict, dataset: str, kind: str) -> dict | None:
    items = _pending(state, dataset, kind)
    if not items:
        return None
    pos = min(state["pos"].get(_key(dataset, kind), 0), len(items) - 1)
    return items[pos]


def _store(dataset: str, action: str = "read") -> Store:
    return open_store(dataset, action)  # the permission check for the caller (ui/people.py)


def _fill_trash(state: dict, dataset: str, offset: int | None = None) -> None:
    """The page of the trash at `offset` (default: where the session is), newest first, read from the store."""
    key = _key(dataset, "trash")
    trash = state.setdefault("trash", {})
    offset = trash.get(dataset, (0, 0))[0] if offset is None else offset
    page = _store(dataset).page(status="trashed", offset=max(0, offset), limit=GALLERY_MAX)
    trash[dataset] = (page.offset, page.total)
    state["queues"][key] = clean.trash_suspects(page.rows)
    state["pos"][key] = min(state["pos"].get(key, 0), max(0, len(page.rows) - 1))


def _shown(state: dict, dataset: str, kind: str) -> tuple[list[dict], int, int]:
    """The page the current card is on: (its suspects, offset of the first, size of the whole queue)."""
    items = _pending(state, dataset, kind)
    if kind == "trash":
        offset, total = state.setdefault("trash", {}).get(dataset, (0, len(items)))
        return items, offset, total
    pos = min(state["pos"].get(_key(dataset, kind), 0), max(0, len(items) - 1))
    start = pos // GALLERY_MAX * GALLERY_MAX
    return items[start:start + GALLERY_MAX], start, len(items)


def _fill(state: dict, dataset: str, kind: str, progress=None) -> str:
    """Compute a queue (the trash view included); return a note for the person."""
    store = _store(dataset)
    if kind == "trash":
        _fill_trash(state, dataset, 0)
        state["pos"][_key(dataset, kind)] = 0
        return ""
    elif kind == "cell":
        return "Pick an actual and a predicted label below and press Show cell."
    else:
        found = clean.find_suspects(store, [kind], progress=progress)
        items, notes = found.items, found.notes
        if found.snapshot is not None:
            state["snapshot"][dataset] = found.snapshot
            state["edits"][dataset] = 0
    state["queues"][_key(dataset, kind)] = items
    state["pos"][_key(dataset, kind)] = 0
    state["done"].setdefault(dataset, {})
    for s in items:  # a fresh pass supersedes earlier marks for these images
        state["done"][dataset].pop(s["id"], None)
    if kind == "top_loss" and not items:
        model = clean.last_finetuned(dataset)
        notes.append("No fine-tuned model yet: train one in the Train tab to see its top losses." if model is None
                     else f"No top losses to review: the fine-tuned model {model['id']} gets every validation "
                          "image right. (Evaluate's Top losses tab lists the highest losses even when right.)")
    return " ".join(notes)


# ---- rendering ------------------------------------------------------------------

def _card(s: dict | None, n_left: int, labels: list[str]) -> str:
    keys = " · ".join(f"`{i + 1}` {lab}" for i, lab in enumerate(labels[:DIGITS]))
    hint = f"\n\nKeys: {keys} · `D` trash · `K` keep · `U` undo · `Shift+U`/`R` redo · `←` `→` move"
    if s is None:
        return "Nothing left in this queue. Press **Find suspects** to look again." + hint
    sug = f" → suggested **{s['suggested']}**" if s["suggested"] else ""
    src = s["source"] or "unknown"
    group = f"\n- cluster: `{s['group']}`" if s["group"] else ""
    return (f"**{s['label']}**{sug} · score {s['score']:.2f} · suggested action: **{s['action']}**\n\n"
            f"- {s['reason']}\n- source: {src}\n- id: `{s['id']}`{group}\n\n{n_left} left in this queue." + hint)


def _page_note(start: int, shown: int, total: int) -> str:
    if total <= shown:
        return ""
    pages = -(-total // GALLERY_MAX)
    return f" · showing {start + 1}-{start + shown} of {total} (page {start // GALLERY_MAX + 1} of {pages})"


def _view(state: dict, dataset: str, kind: str, message: str = ""):
    """Every output the tab shows, from the session state."""
    labels = [lab.display for lab in _store(dataset).labels()] if dataset else []
    items, start, total = _shown(state, dataset, kind) if dataset else ([], 0, 0)
    cur = _current(state, dataset, kind) if dataset else None
    gallery = []
    for s in items:
        try:
            thumb = servable(s["path"])
        except (DragonError, OSError):
            continue  # moved since the pass (another session): the card still says what to do
        caption = s["label"] + (f" → {s['suggested']}" if s["suggested"] else "") + f" · {s['score']:.2f}"
        gallery.append((thumb, caption))
    image = None
    if cur is not None:
        try:
            image = servable(cur["path"])
        except (DragonError, OSError):
            image = None
    queue = [{k: s[k] for k in ("id", "label", "suggested", "score", "reason", "action", "group", "source")}
             for s in items]
    choices = [(f"{s['id']} ({s['label']})", s["id"]) for s in items]
    edits = state["edits"].get(dataset, 0)
    refit_hint = f"{edits} edits since the last pass: **Refit quick model** shows what changed." if edits else ""
    counts = ", ".join(f"{_shown(state, dataset, k)[2]} {name.lower()}" for name, k in QUEUES
                       if _key(dataset, k) in state["queues"])
    summary = f"{dataset}: {counts}" if counts else "Press **Find suspects**."
    target = gr.update(choices=labels)
    summary += _page_note(start, len(items), total)
    return (state, gallery, image, _card(cur, total, labels), queue,
            gr.update(choices=choices, value=[]), "\n\n".join(x for x in (message, refit_hint) if x), summary, target)


# ---- handlers -------------------------------------------------------------------

@ui_errors(say=6, of=9)
def find(dataset: str, kind: str, state: dict | None, progress=gr.Progress()):
    state = state or _new_state()
    note = _fill(state, dataset, kind, progress_adapter(progress))
    return _view(state, dataset, kind, note)


@ui_errors(say=6, of=9)
def show(dataset: str, kind: str, state: dict | None):
    """Switch queue or dataset: show what the session has, computing only queues not seen yet."""
    state = state or _new_state()
    note = ""
    if dataset and _key(dataset, kind) not in state["queues"] and kind not in ("mislabel", "top_loss", "cell"):
        note = _fill(state, dataset, kind)  # cheap kinds fill at once; model-based ones wait for the button
    return _view(state, dataset, kind, note)


def _decide(state, dataset, kind, ids, action, label=None, create=False):
    store = _store(dataset, "edit")
    res = clean.decide(store, ids, action, label, create_label=bool(create), actor=me().id)
    done = state["done"].setdefault(dataset, {})
    for i in res.changed + res.unchanged:
        done[i] = action
    if res.changed:
        state["edits"][dataset] = state["edits"].get(dataset, 0) + 1
    if _key(dataset, "trash") in state["queues"]:
        _fill_trash(state, dataset)  # restored pictures leave the page, trashed ones join the trash
    return _view(state, dataset, kind, clean.describe(res, action))


def _current_or_error(state, dataset, kind) -> dict:
    _store(dataset, "edit")  # the caller may edit this dataset, before anything else is said
    cur = _current(state, dataset, kind)
    if cur is None:
        raise DragonError("No image selected: this queue is empty. Press Find suspects.")
    return cur


def _act(action):
    @ui_errors(say=6, of=9)
    def handler(dataset: str, kind: str, target: str, create: bool, state: dict | None):
        state = state or _new_state()
        cur = _current_or_error(state, dataset, kind)
        label = (target or cur["suggested"]) if action == "relabel" else None
        return _decide(state, dataset, kind, [cur["id"]], action, label, create)

    handler.__name__ = f"act_{action}"
    return handler


def _digit(n: int):
    @ui_errors(say=6, of=9)
    def handler(dataset: str, kind: str, state: dict | None):
        state = state or _new_state()
        labels = [lab.display for lab in _store(dataset).labels()]
        if n > len(labels):
            raise DragonError(f"There is no label number {n}: this dataset has {len(labels)}.")
        cur = _current_or_error(state, dataset, kind)
        return _decide(state, dataset, kind, [cur["id"]], "relabel", labels[n - 1])

    handler.__name__ = f"relabel_to_{n}"
    return handler


@ui_errors(say=6, of=9)
def bulk(action: str, dataset: str, kind: str, selection: list[str], target: str, create: bool, state: dict | None):
    state = state or _new_state()
    return _decide(state, dataset, kind, list(selection or []), action, target, create)


@ui_errors(say=6, of=9)
def trash_cluster(dataset: str, kind: str, state: dict | None):
    """Trash every image of the current card's duplicate cluster except the copy suggested to stay."""
    state = state or _new_state()
    cur = _current_or_error(state, dataset, kind)
    if not cur["group"]:
        raise DragonError("This card is not part of a duplicate cluster; open the Near-duplicates queue.")
    ids = [s["id"] for s in _pending(state, dataset, kind) if s["group"] == cur["group"] and s["action"] == "trash"]
    return _decide(state, dataset, kind, ids, "trash")


@ui_errors(say=6, of=9)
def move(step: int, dataset: str, kind: str, state: dict | None):
    state = state or _new_state()
    n = len(_pending(state, dataset, kind))
    if n:
        k = _key(dataset, kind)
        state["pos"][k] = (min(state["pos"].get(k, 0), n - 1) + step) % n
    return _view(state, dataset, kind)


@ui_errors(say=6, of=9)
def page_move(step: int, dataset: str, kind: str, state: dict | None):
    """The previous or next page of the queue (its first card becomes the current one)."""
    state = state or _new_state()
    k = _key(dataset, kind)
    if kind == "trash":
        offset, _total = state.setdefault("trash", {}).get(dataset, (0, 0))
        _fill_trash(state, dataset, offset + step * GALLERY_MAX)
        state["pos"][k] = 0
    else:
        n = len(_pending(state, dataset, kind))
        start = min(state["pos"].get(k, 0), max(0, n - 1)) // GALLERY_MAX * GALLERY_MAX
        state["pos"][k] = min(max(0, start + step * GALLERY_MAX), max(0, n - 1)) // GALLERY_MAX * GALLERY_MAX
    return _view(state, dataset, kind)


@ui_errors(say=6, of=9)
def pick(dataset: str, kind: str, state: dict | None, evt: gr.SelectData):
    state = state or _new_state()
    start = 0 if kind == "trash" else _shown(state, dataset, kind)[1]
    state["pos"][_key(dataset, kind)] = start + int(evt.index)
    return _view(state, dataset, kind)


def _stepper(fn, step: int):
    """A handler for `fn(step, ...)` (a named function, so Gradio gives it the caller)."""
    @ui_errors(say=6, of=9)
    def handler(dataset: str, kind: str, state: dict | None):
        return fn(step, dataset, kind, state)

    handler.__name__ = f"{fn.__name__}_{'next' if step > 0 else 'prev'}"
    return handler


def _bulk(action: str):
    @ui_errors(say=6, of=9)
    def handler(dataset: str, kind: str, selection: list[str], target: str, create: bool, state: dict | None):
        return bulk(action, dataset, kind, selection, target, create, state)

    handler.__name__ = f"bulk_{action}"
    return handler


def _walk(undo: bool):
    @ui_errors(say=6, of=9)
    def handler(dataset: str, kind: str, state: dict | None):
        state = state or _new_state()
        store = _store(dataset, "edit")
        res = store.undo(actor=me().id) if undo else store.redo(actor=me().id)  # the caller's own changes
        done = state["done"].setdefault(dataset, {})
        for i in res.changed:  # undone: back in the queue; redone: out again
            if undo:
                done.pop(i, None)
            else:
                done[i] = "redo"
        state["edits"][dataset] = state["edits"].get(dataset, 0) + 1
        if _key(dataset, "trash") in state["queues"]:
            _fill_trash(state, dataset)
        return _view(state, dataset, kind, clean.describe(res, "undo" if undo else "redo"))

    handler.__name__ = "undo" if undo else "redo"
    return handler


@ui_errors(say=6, of=9)
def empty_trash(dataset: str, confirm: bool, kind: str, state: dict | None):
    state = state or _new_state()
    store = _store(dataset, "destroy")
    n = store.count(status="trashed")
    if not confirm:
        raise DragonError(f"Emptying the trash deletes {n} images for good (no undo). Tick 'Yes, delete them' first.")
    deleted = store.empty_trash()
    sweep()  # their served copies go too: deleted means gone
    _fill_trash(state, dataset, 0)
    return _view(state, dataset, kind, f"Deleted {deleted} images for good.")


@ui_errors(say=1, of=3)
def refit(dataset: str, state: dict | None, progress=gr.Progress()):
    state = state or _new_state()
    store = _store(dataset)
    report = clean.refit_after_edits(store, state["snapshot"].get(dataset), progress=progress_adapter(progress))
    state["snapshot"][dataset] = report.pop("snapshot")
    state["edits"][dataset] = 0
    before = report["accuracy_before"]
    lines = [f"Quick model (cross-validated over {report['n_images']} images): accuracy "
             + (f"{before:.1%} → " if before is not None else "")
             + f"**{report['accuracy_after']:.1%}**; {report['relabelled']} relabelled, {report['removed']} removed."]
    if before is None:
        lines.append("No earlier pass in this session to compare with: press Find suspects (Likely mislabels) "
                     "before editing next time.")
    if report["flipped"]:
        lines.append(f"{len(report['flipped'])} predictions changed:")
        lines += [f"- `{f['id']}` ({f['label']}): {f['before']} → {f['after']}" for f in report["flipped"][:20]]
    else:
        lines.append("No prediction changed.")
    return state, "\n".join(lines), report


@ui_errors
def cell_choices(dataset: str):
    models = [m for m in modelstore.list_models(dataset_for(dataset)) if "error" not in m] if dataset else []
    labels = models[0]["labels"] if models else []
    return (gr.update(choices=[m["id"] for m in models], value=models[0]["id"] if models else None),
            gr.update(choices=labels), gr.update(choices=labels))


@ui_errors
def cell_labels(dataset: str, model: str):
    """The actual/predicted choices follow the model picked (two models can know different labels)."""
    models = modelstore.list_models(dataset_for(dataset)) if dataset and model else []
    labels = next((m["labels"] for m in models if m["id"] == model and "error" not in m), [])
    return gr.update(choices=labels), gr.update(choices=labels)


@ui_errors(say=6, of=10)
def show_cell(dataset: str, model: str, actual: str, predicted: str, state: dict | None):
    state = state or _new_state()
    if not model:
        raise DragonError("No model for this dataset yet: train one in the Train tab first.")
    if not actual or not predicted:
        raise DragonError("Pick the actual and the predicted label.")
    store = _store(dataset)
    items = clean.cell_images(store, modelstore.resolve(model, store.name), actual, predicted)
    state["queues"][_key(dataset, "cell")] = items
    state["pos"][_key(dataset, "cell")] = 0
    for s in items:
        state["done"].setdefault(dataset, {}).pop(s["id"], None)
    return _view(state, dataset, "cell", f"{len(items)} images: actual {actual!r}, predicted {predicted!r}.") + ("cell",)


@ui_errors
def export(dataset: str):
    return str(clean.export_dataset(_store(dataset), download_dir()))


# ---- layout ---------------------------------------------------------------------

def build(bar) -> None:
    state = gr.State(None)
    with gr.Column(elem_id="clean-panel"):
        gr.HTML("", js_on_load=KEYS_JS, elem_id="clean-keys", padding=False)
        with gr.Row(equal_height=True):
            kind = gr.Radio(QUEUES, value="mislabel", label="Queue", scale=4, elem_id="clean-kind")
            find_btn = gr.Button("Find suspects", variant="primary", scale=1, elem_id="clean-find")
        summary = gr.Markdown(elem_id="clean-summary")
        message = gr.Markdown(elem_id="clean-message")
        with gr.Row():
            with gr.Column(scale=3):
                gallery = gr.Gallery(label="Queue", columns=6, height=380, allow_preview=False,
                                     elem_id="clean-gallery")
                with gr.Row():
                    page_prev_btn = gr.Button("⇤ Previous page", size="sm", elem_id="clean-page-prev", scale=0)
                    page_next_btn = gr.Button("Next page ⇥", size="sm", elem_id="clean-page-next", scale=0)
            with gr.Column(scale=2):
                current = gr.Image(label="Current", type="filepath", interactive=False, height=260,
                                   elem_id="clean-current")
                card = gr.Markdown(elem_id="clean-card")
        with gr.Row(equal_height=True):
            prev_btn = gr.Button("← Previous", elem_id="clean-prev", scale=0)
            next_btn = gr.Button("Next →", elem_id="clean-next", scale=0)
            target = gr.Dropdown([], label="Relabel to (empty: the suggested label)", allow_custom_value=True,
                                 scale=2, elem_id="clean-target")
            create = gr.Checkbox(label="create the label", value=False, scale=1, elem_id="clean-create")
            relabel_btn = gr.Button("Relabel", elem_id="clean-relabel", scale=0)
            trash_btn = gr.Button("Trash (D)", variant="stop", elem_id="clean-trash", scale=0)
            keep_btn = gr.Button("Keep (K)", elem_id="clean-keep", scale=0)
            restore_btn = gr.Button("Restore", elem_id="clean-restore", scale=0)
            undo_btn = gr.Button("Undo (U)", elem_id="clean-undo", scale=0)
            redo_btn = gr.Button("Redo (R)", elem_id="clean-redo", scale=0)
        digit_btns = [gr.Button(f"{n}", visible="hidden", elem_id=f"clean-digit-{n}") for n in range(1, DIGITS + 1)]
        with gr.Accordion("Bulk actions", open=False, elem_id="clean-bulk"):
            selection = gr.CheckboxGroup([], label="Select images", elem_id="clean-selection")
            with gr.Row():
                bulk_btns = {a: gr.Button(f"{a.capitalize()} selected", elem_id=f"clean-bulk-{a}")
                             for a in ("relabel", "trash", "keep", "restore")}
                cluster_btn = gr.Button("Trash the cluster's extra copies", elem_id="clean-cluster")
        with gr.Accordion("Confusion-matrix cell", open=False, elem_id="clean-cell"):
            with gr.Row():
                # choices are filled per dataset; custom values let API callers name any model and label
                # (show_cell checks them: unknown ones are a message)
                model = gr.Dropdown([], label="Model", elem_id="clean-cell-model", allow_custom_value=True)
                actual = gr.Dropdown([], label="Actual", elem_id="clean-cell-actual", allow_custom_value=True)
                predicted = gr.Dropdown([], label="Predicted", elem_id="clean-cell-predicted", allow_custom_value=True)
                cell_btn = gr.Button("Show cell", elem_id="clean-cell-show")
        with gr.Accordion("After edits, trash and export", open=False, elem_id="clean-after"):
            with gr.Row():
                refit_btn = gr.Button("Refit quick model", elem_id="clean-refit")
                confirm = gr.Checkbox(label="Yes, delete them (no undo)", value=False, elem_id="clean-empty-confirm")
                empty_btn = gr.Button("Empty trash", variant="stop", elem_id="clean-empty")
                export_btn = gr.Button("Export dataset (zip)", elem_id="clean-export")
            refit_out = gr.Markdown(elem_id="clean-refit-result")
            refit_json = gr.JSON(visible=False)
            export_file = gr.File(label="Dataset zip", elem_id="clean-export-file")
        with gr.Accordion("Queue as data", open=False):
            queue_json = gr.JSON(elem_id="clean-queue")

    ds = bar.dataset
    outs = [state, gallery, current, card, queue_json, selection, message, summary, target]
    common = [ds, kind, state]
    bar.refresh_after(find_btn.click(find, common, outs, api_name="suspects"))
    kind.change(show, common, outs, api_name="queue")
    ds.change(show, common, outs, api_visibility="private")
    gallery.select(pick, common, outs, api_name="select")
    prev_btn.click(_stepper(move, -1), common, outs, api_name="prev")
    next_btn.click(_stepper(move, 1), common, outs, api_name="next")
    page_prev_btn.click(_stepper(page_move, -1), common, outs, api_name="prev_page")
    page_next_btn.click(_stepper(page_move, 1), common, outs, api_name="next_page")
    act_inputs = [ds, kind, target, create, state]
    for action, btn in (("relabel", relabel_btn), ("trash", trash_btn), ("keep", keep_btn), ("restore", restore_btn)):
        bar.refresh_after(btn.click(_act(action), act_inputs, outs, api_name=action))
    for n, btn in enumerate(digit_btns, start=1):
        bar.refresh_after(btn.click(_digit(n), common, outs, api_name=f"relabel_{n}"))
    for action, btn in bulk_btns.items():
        bar.refresh_after(btn.click(_bulk(action),
                                    [ds, kind, selection, target, create, state], outs, api_name=f"bulk_{action}"))
    bar.refresh_after(cluster_btn.click(trash_cluster, common, outs, api_name="trash_cluster"))
    bar.refresh_after(undo_btn.click(_walk(True), common, outs, api_name="undo"))
    bar.refresh_after(redo_btn.click(_walk(False), common, outs, api_name="redo"))
    bar.refresh_after(empty_btn.click(empty_trash, [ds, confirm, kind, state], outs, api_name="empty_trash"))
    refit_btn.click(refit, [ds, state], [state, refit_out, refit_json], api_name="refit")
    export_btn.click(export, ds, export_file, api_name="export_dataset")
    ds.change(cell_choices, ds, [model, actual, predicted], api_visibility="private")
    kind.change(cell_choices, ds, [model, actual, predicted], api_visibility="private")
    model.change(cell_labels, [ds, model], [actual, predicted], api_visibility="private")
    cell_btn.click(show_cell, [ds, model, actual, predicted, state], outs + [kind], api_name="cell")
