"""The Clean tab: queues of suspects, one card at a time, decisions by button or key.

Layout and thin handlers only; dragonclf.clean finds the suspects and applies
decisions (journalled in the store, so Undo/Redo work across sessions). The
queues live in a per-browser-session gr.State holding a `clean_session.CleanSession`
(keyed by dataset and kind), so they survive switching tabs, labels or datasets and coming back.

Keys (when no text field has focus): 1-9 relabel to the Nth label, D trash,
K keep, U undo, Shift+U or R redo, arrows previous/next. The key handler only
clicks buttons by elem_id, so a browser test can press keys and an API client
can call the same events by name.
"""

from __future__ import annotations

import gradio as gr

from dragonclf import clean, modelstore
from dragonclf.clean_session import MODEL_KINDS, PAGE, CleanSession
from dragonclf.errors import DragonError
from dragonclf.store import Store
from ui.common import download_dir, progress_adapter, servable, sweep, ui_errors
from ui.people import dataset_for, me, open_store

TITLE = "Clean"
QUEUES = [("Likely mislabels", "mislabel"), ("Top losses (fine-tuned model)", "top_loss"),
          ("Near-duplicates", "duplicate"), ("Label conflicts", "conflict"), ("Poor quality", "quality"),
          ("Trash", "trash"), ("Confusion-matrix cell", "cell")]
DIGITS = 9

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


def _session(state: CleanSession | None) -> CleanSession:
    return state if state is not None else CleanSession()


def _store(dataset: str, action: str = "read") -> Store:
    return open_store(dataset, action)  # the permission check for the caller (ui/people.py)


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
    pages = -(-total // PAGE)
    return f" · showing {start + 1}-{start + shown} of {total} (page {start // PAGE + 1} of {pages})"


def _view(session: CleanSession, dataset: str, kind: str, message: str = ""):
    """Every output the tab shows, from the session."""
    labels = [lab.display for lab in _store(dataset).labels()] if dataset else []
    items, start, total = session.shown(dataset, kind) if dataset else ([], 0, 0)
    cur = session.current(dataset, kind) if dataset else None
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
    edits = session.edits_since_pass(dataset)
    refit_hint = f"{edits} edits since the last pass: **Refit quick model** shows what changed." if edits else ""
    counts = ", ".join(f"{session.size(dataset, k)} {name.lower()}" for name, k in QUEUES if session.has(dataset, k))
    summary = f"{dataset}: {counts}" if counts else "Press **Find suspects**."
    target = gr.update(choices=labels)
    summary += _page_note(start, len(items), total)
    return (session, gallery, image, _card(cur, total, labels), queue,
            gr.update(choices=choices, value=[]), "\n\n".join(x for x in (message, refit_hint) if x), summary, target)


# ---- handlers -------------------------------------------------------------------

@ui_errors(say=6, of=9)
def find(dataset: str, kind: str, state: CleanSession | None, progress=gr.Progress()):
    session = _session(state)
    note = session.find(_store(dataset), dataset, kind, progress_adapter(progress))
    return _view(session, dataset, kind, note)


@ui_errors(say=6, of=9)
def show(dataset: str, kind: str, state: CleanSession | None):
    """Switch queue or dataset: show what the session has, computing only queues not seen yet."""
    session = _session(state)
    note = ""
    if dataset and not session.has(dataset, kind) and kind not in MODEL_KINDS:
        note = session.find(_store(dataset), dataset, kind)  # cheap kinds fill at once; model-based ones wait
    return _view(session, dataset, kind, note)


def _decide(session: CleanSession, dataset, kind, ids, action, label=None, create=False):
    store = _store(dataset, "edit")
    res = clean.decide(store, ids, action, label, create_label=bool(create), actor=me().id)
    session.decided(store, dataset, res, action)
    return _view(session, dataset, kind, clean.describe(res, action))


def _current_or_error(session: CleanSession, dataset, kind) -> dict:
    _store(dataset, "edit")  # the caller may edit this dataset, before anything else is said
    cur = session.current(dataset, kind)
    if cur is None:
        raise DragonError("No image selected: this queue is empty. Press Find suspects.")
    return cur


def _act(action):
    @ui_errors(say=6, of=9)
    def handler(dataset: str, kind: str, target: str, create: bool, state: CleanSession | None):
        session = _session(state)
        cur = _current_or_error(session, dataset, kind)
        label = (target or cur["suggested"]) if action == "relabel" else None
        return _decide(session, dataset, kind, [cur["id"]], action, label, create)

    handler.__name__ = f"act_{action}"
    return handler


def _digit(n: int):
    @ui_errors(say=6, of=9)
    def handler(dataset: str, kind: str, state: CleanSession | None):
        session = _session(state)
        labels = [lab.display for lab in _store(dataset).labels()]
        if n > len(labels):
            raise DragonError(f"There is no label number {n}: this dataset has {len(labels)}.")
        cur = _current_or_error(session, dataset, kind)
        return _decide(session, dataset, kind, [cur["id"]], "relabel", labels[n - 1])

    handler.__name__ = f"relabel_to_{n}"
    return handler


def _bulk(action: str):
    @ui_errors(say=6, of=9)
    def handler(dataset: str, kind: str, selection: list[str], target: str, create: bool, state: CleanSession | None):
        return _decide(_session(state), dataset, kind, list(selection or []), action, target, create)

    handler.__name__ = f"bulk_{action}"
    return handler


@ui_errors(say=6, of=9)
def trash_cluster(dataset: str, kind: str, state: CleanSession | None):
    """Trash every image of the current card's duplicate cluster except the copy suggested to stay."""
    session = _session(state)
    cur = _current_or_error(session, dataset, kind)
    if not cur["group"]:
        raise DragonError("This card is not part of a duplicate cluster; open the Near-duplicates queue.")
    return _decide(session, dataset, kind, session.cluster(dataset, kind, cur["group"]), "trash")


def _stepper(step: int, pages: bool = False):
    """Previous/next card, or previous/next page (a named handler, so Gradio gives it the caller)."""
    @ui_errors(say=6, of=9)
    def handler(dataset: str, kind: str, state: CleanSession | None):
        session = _session(state)
        if pages:  # the trash's pages are read from the store
            session.turn_page(_store(dataset) if kind == "trash" else None, dataset, kind, step)
        else:
            session.move(dataset, kind, step)
        return _view(session, dataset, kind)

    handler.__name__ = f"{'page_move' if pages else 'move'}_{'next' if step > 0 else 'prev'}"
    return handler


@ui_errors(say=6, of=9)
def pick(dataset: str, kind: str, state: CleanSession | None, evt: gr.SelectData):
    session = _session(state)
    session.select(dataset, kind, int(evt.index))
    return _view(session, dataset, kind)


def _walk(undo: bool):
    @ui_errors(say=6, of=9)
    def handler(dataset: str, kind: str, state: CleanSession | None):
        session = _session(state)
        store = _store(dataset, "edit")
        res = store.undo(actor=me().id) if undo else store.redo(actor=me().id)  # the caller's own changes
        session.walked(store, dataset, res, undo)
        return _view(session, dataset, kind, clean.describe(res, "undo" if undo else "redo"))

    handler.__name__ = "undo" if undo else "redo"
    return handler


@ui_errors(say=6, of=9)
def empty_trash(dataset: str, confirm: bool, kind: str, state: CleanSession | None):
    session = _session(state)
    store = _store(dataset, "destroy")
    n = store.count(status="trashed")
    if not confirm:
        raise DragonError(f"Emptying the trash deletes {n} images for good (no undo). Tick 'Yes, delete them' first.")
    deleted = store.empty_trash()
    sweep()  # their served copies go too: deleted means gone
    session.fill_trash(store, dataset, 0)
    return _view(session, dataset, kind, f"Deleted {deleted} images for good.")


@ui_errors(say=1, of=3)
def refit(dataset: str, state: CleanSession | None, progress=gr.Progress()):
    session = _session(state)
    report = clean.refit_after_edits(_store(dataset), session.snapshot(dataset), progress=progress_adapter(progress))
    session.refitted(dataset, report.pop("snapshot"))
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
    return session, "\n".join(lines), report


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
def show_cell(dataset: str, model: str, actual: str, predicted: str, state: CleanSession | None):
    session = _session(state)
    if not model:
        raise DragonError("No model for this dataset yet: train one in the Train tab first.")
    if not actual or not predicted:
        raise DragonError("Pick the actual and the predicted label.")
    store = _store(dataset)
    items = clean.cell_images(store, modelstore.resolve(model, store.name), actual, predicted)
    session.set_queue(dataset, "cell", items)
    message = f"{len(items)} images: actual {actual!r}, predicted {predicted!r}."
    return _view(session, dataset, "cell", message) + ("cell",)


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
    prev_btn.click(_stepper(-1), common, outs, api_name="prev")
    next_btn.click(_stepper(1), common, outs, api_name="next")
    page_prev_btn.click(_stepper(-1, pages=True), common, outs, api_name="prev_page")
    page_next_btn.click(_stepper(1, pages=True), common, outs, api_name="next_page")
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
