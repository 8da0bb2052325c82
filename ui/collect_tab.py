"""Collect tab: classes one per line, images per class, filters; Start streams, Stop stops."""

from __future__ import annotations

import importlib
import os
import queue
import threading

import gradio as gr

from dragonclf.collect import collect_classes, combine
from dragonclf.search import query_variations
from dragonclf.store import Store
from ui.common import gen_errors, servable, ui_errors

TITLE = "Collect"
SLOTS = 8  # galleries shown, one per class
GALLERY_MAX = 40


def search_engine():
    """The search engine to use: DuckDuckGo, or `DRAGONCLF_SEARCH_ENGINE=module:factory` (tests, other engines)."""
    spec = os.environ.get("DRAGONCLF_SEARCH_ENGINE")
    if not spec:
        return None
    module, _, attr = spec.partition(":")
    factory = getattr(importlib.import_module(module), attr or "engine")
    return factory() if callable(factory) else factory


def parse_classes(text: str) -> list[tuple[str, str | None]]:
    """'label' or 'label: search query' per line."""
    classes = []
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        label, sep, q = line.partition(":")
        classes.append((label.strip(), q.strip() if sep and q.strip() else None))
    return classes


@ui_errors
def preview_queries(text: str) -> str:
    lines = [f"- **{label}**: " + ", ".join(f"`{q}`" for q in query_variations(label, q))
             for label, q in parse_classes(text)]
    return "Searches to run:\n" + "\n".join(lines) if lines else ""


def _summary(reports, running: str | None) -> str:
    rows = ["| class | stored | duplicates | conflicts | refused |", "|---|---|---|---|---|"]
    for r in reports:
        refused = ", ".join(f"{n} {k}" for k, n in sorted(r.refused.items())) or "0"
        rows.append(f"| {r.label} | {r.stored} | {r.duplicates} | {r.conflicts} | {refused} |")
    total = combine(reports) if reports else None
    head = f"Collecting **{running}**…" if running else ("Stopped." if total and total["cancelled"] else "Done.")
    if total:
        head += f" {total['stored']} stored in {total['seconds']:.0f} s."
    return head + "\n\n" + "\n".join(rows)


@gen_errors
def start(name: str, text: str, per_class: int, safesearch: str, size: str, type_image: str, layout: str,
          license_image: str, progress=gr.Progress()):
    """Run the collection in a worker thread; stream galleries and a summary while it goes."""
    classes = parse_classes(text)
    if not classes:
        raise gr.Error("Type at least one class name (one per line).")
    store = Store.open(name)
    cancel = threading.Event()
    filters = {"safesearch": safesearch, "size": size or None, "type_image": type_image or None,
               "layout": layout or None, "license_image": license_image or None}
    events: queue.Queue = queue.Queue()
    result: dict = {}

    def work():
        try:
            result["reports"] = collect_classes(
                store, classes, int(per_class), filters=filters, engine=search_engine(), cancel=cancel,
                progress=lambda f, m: events.put(("progress", f, m)),
                on_item=lambda label, item: events.put(("item", label, item)))
        except Exception as e:  # noqa: BLE001 - handed to the UI thread, which shows it
            result["error"] = e
        finally:
            events.put(("done", None, None))

    labels = [label for label, _ in classes]
    shown: dict[str, list] = {label: [] for label in labels}
    worker = threading.Thread(target=work, daemon=True, name="collect")
    worker.start()
    running = labels[0]
    try:
        yield [cancel, _summary([], running)] + _galleries(labels, shown)
        done = False
        while not done:
            try:
                kind, a, b = events.get(timeout=0.5)
            except queue.Empty:
                continue
            batch = [(kind, a, b)]
            while not events.empty():  # drain: one UI update per burst
                batch.append(events.get_nowait())
            for kind, a, b in batch:
                if kind == "progress":
                    progress(a, desc=b)
                    running = b.split(":")[0] if b else running
                elif kind == "item" and b.path and b.outcome in ("added",):
                    shown.setdefault(a, []).insert(0, (servable(b.path), b.title or b.url[-60:]))
                elif kind == "done":
                    done = True
            yield [cancel, _summary(result.get("reports", []), None if done else running)] + _galleries(labels, shown)
    finally:
        cancel.set()  # Stop, a closed tab or an error: the worker ends at its next check
    if "error" in result:
        raise result["error"]


def _galleries(labels, shown):
    out = []
    for i in range(SLOTS):
        if i < len(labels):
            out.append(gr.update(visible=True, label=labels[i], value=shown.get(labels[i], [])[:GALLERY_MAX]))
        else:
            out.append(gr.update(visible=False, value=[]))
    return out


def stop(cancel: threading.Event | None) -> str:
    if cancel is not None:
        cancel.set()
    return "Stopping… images already downloaded are kept; Start again continues where it stopped."


def build(bar) -> None:
    cancel = gr.State(None)
    with gr.Row():
        with gr.Column(scale=2):
            classes = gr.Textbox(label="Classes, one per line: `label` or `label: search query`", lines=4,
                                 placeholder="Drogon: Drogon dragon\nViserion: Viserion dragon", elem_id="collect-classes")
            queries = gr.Markdown()
        with gr.Column(scale=1):
            per_class = gr.Slider(5, 500, value=100, step=5, label="Images per class", elem_id="collect-per-class")
            with gr.Accordion("Search filters", open=False):
                safesearch = gr.Dropdown(["on", "moderate", "off"], value="moderate", label="Safe search")
                size = gr.Dropdown(["", "Small", "Medium", "Large", "Wallpaper"], value="", label="Size")
                type_image = gr.Dropdown(["", "photo", "clipart", "gif", "transparent", "line"], value="",
                                         label="Type")
                layout = gr.Dropdown(["", "Square", "Tall", "Wide"], value="", label="Layout")
                license_image = gr.Dropdown(["", "any", "Public", "Share", "ShareCommercially", "Modify",
                                             "ModifyCommercially"], value="", label="License")
            with gr.Row():
                start_btn = gr.Button("Start", variant="primary", elem_id="collect-start")
                stop_btn = gr.Button("Stop", variant="stop", elem_id="collect-stop")
    summary = gr.Markdown(elem_id="collect-summary")
    galleries = [gr.Gallery(visible=False, columns=10, height=220, elem_id=f"collect-gallery-{i}")
                 for i in range(SLOTS)]

    classes.change(preview_queries, classes, queries, api_visibility="private")
    run = start_btn.click(start, [bar.dataset, classes, per_class, safesearch, size, type_image, layout,
                                  license_image], [cancel, summary] + galleries, api_name="collect",
                          concurrency_limit=4, concurrency_id="collect")
    bar.refresh_after(run)
    # cancels= ends the stream at once; its `finally` sets the worker's event
    stop_btn.click(stop, cancel, summary, api_name="stop_collect", cancels=[run])
