"""Collect tab: classes one per line, images per class, filters; Start streams, Stop stops."""

from __future__ import annotations

import threading

import gradio as gr

from dragonclf import quotas
from dragonclf.collect import CollectReport, collect_classes, combine
from dragonclf.search import query_variations, split_queries
from ui.common import log, servable, stream_work, ui_errors
from ui.people import me, open_store, sign_in

TITLE = "Collect"
SLOTS = 8  # galleries on the page; past that many classes the last one shows the rest together
GALLERY_MAX = 40


def parse_classes(text: str) -> list[tuple[str, str | None]]:
    """'label' or 'label: search query' per line."""
    classes = []
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        label, sep, q = line.partition(":")
        classes.append((label.strip(), q.strip() if sep and q.strip() else None))
    return classes


def parse_query_lines(text: str) -> dict[str, list[str]]:
    """The Queries box: 'label: query 1 | query 2 | ...' per line -> {label: [queries]}."""
    out: dict[str, list[str]] = {}
    for n, line in enumerate((text or "").splitlines(), 1):
        if not line.strip():
            continue
        label, sep, rest = line.partition(":")
        label = label.strip()
        if not sep or not label:
            raise gr.Error(f"Queries, line {n} ({line.strip()[:60]!r}): write it as `label: query 1 | query 2`.")
        if label in out:
            raise gr.Error(f"Queries: {label!r} has two lines; put all its searches on one line, separated by |.")
        queries = split_queries(rest)
        if not queries:
            raise gr.Error(f"Queries: no searches for {label!r}. Add one after the colon, or delete the line.")
        out[label] = queries
    return out


def plan(classes_text: str, queries_text: str) -> list[tuple[str, list[str] | str | None]]:
    """What Start collects: each class with its queries from the Queries box, or its default searches."""
    classes = parse_classes(classes_text)
    if not classes:
        raise gr.Error("Type at least one class name (one per line).")
    twice = sorted({label for label, _ in classes if [c for c, _ in classes].count(label) > 1})
    if twice:
        raise gr.Error(f"Classes: {', '.join(map(repr, twice))} listed twice; keep one line per class.")
    edited = parse_query_lines(queries_text)
    unknown = [label for label in edited if label not in {c for c, _ in classes}]
    if unknown:
        raise gr.Error(f"Queries name {', '.join(map(repr, unknown))}, which {'is' if len(unknown) == 1 else 'are'} "
                       "not in Classes: add it there, or delete its line in Queries.")
    return [(label, edited.get(label, q)) for label, q in classes]


@ui_errors
def suggest_queries(classes_text: str, queries_text: str) -> str:
    """Fill the Queries box: a line per class, suggesting lines for classes that have none.

    Nothing typed is lost: lines a person edited stay, even for a class no longer
    listed (Start then says so); only untouched suggestions of removed classes go.
    """
    classes = parse_classes(classes_text)
    names = {label for label, _ in classes}
    kept: dict[str, str] = {}
    stray: list[str] = []
    for line in (queries_text or "").splitlines():
        if not line.strip():
            continue
        label, sep, rest = line.partition(":")
        label, queries = label.strip(), split_queries(rest)
        if sep and label in names and label not in kept:
            kept[label] = line.strip()
        elif not (sep and label and queries and queries == query_variations(label, queries[0])):
            stray.append(line.rstrip())  # edited, or not in the expected form: left for the person to fix
    lines = [kept.get(label) or f"{label}: {' | '.join(query_variations(label, q))}" for label, q in classes]
    return "\n".join(lines + stray)


def gallery_groups(labels: list[str]) -> list[list[str]]:
    """The classes each gallery shows: one each, or, past SLOTS classes, the rest together in the last."""
    if len(labels) <= SLOTS:
        return [[label] for label in labels]
    return [[label] for label in labels[:SLOTS - 1]] + [labels[SLOTS - 1:]]


def _gallery_note(labels: list[str]) -> str:
    groups = gallery_groups(labels)
    if len(groups[-1]) < 2:
        return ""
    return (f"\n\n{len(labels)} classes, {SLOTS} galleries: every class is collected; the last gallery shows "
            f"the other {len(groups[-1])} together ({', '.join(groups[-1])}), each picture captioned with its class.")


def _summary(reports, running: str | None) -> str:
    """The table of classes so far; a class whose search failed says why, below it (the others went on)."""
    rows = ["| class | stored | duplicates | conflicts | refused |", "|---|---|---|---|---|"]
    for r in reports:
        if r.error:
            rows.append(f"| {r.label} | ⚠️ not collected (see below) | | | |")
            continue
        refused = ", ".join(f"{n} {k}" for k, n in sorted(r.refused.items())) or "0"
        rows.append(f"| {r.label} | {r.added} | {r.duplicates} | {r.conflicts} | {refused} |")
    total = combine(reports) if reports else None
    head = f"Collecting **{running}**…" if running else ("Stopped." if total and total["cancelled"] else "Done.")
    if total and running:
        head += f" {total['stored']} stored so far."
    elif total:
        head += f" {total['stored']} stored in {total['seconds']:.0f} s."
    failed = [r for r in reports if r.error]
    if failed and not running:
        head += f" {len(failed)} of {len(reports)} classes could not be collected; nothing was stored for them."
    problems = "".join(f"\n\n⚠️ **{r.label}**: {r.error}" for r in failed)
    return head + "\n\n" + "\n".join(rows) + problems


@ui_errors(say=1, of=2 + SLOTS)
def start(name: str, text: str, queries_text: str, per_class: int, safesearch: str, size: str, type_image: str,
          layout: str, license_image: str, progress=gr.Progress()):
    """Run the collection in a worker thread; stream galleries and a summary while it goes.

    Classes listed in the Queries box search exactly those queries; others search their default ones.
    """
    classes = plan(text, queries_text)
    who, store = me(), open_store(name, "edit")
    per_class, quota_note = quotas.cap_per_class(who, int(per_class), len(classes))
    quotas.check_collect(who)
    cancel = threading.Event()
    filters = {"safesearch": quotas.safesearch(who, safesearch, sign_in().public), "size": size or None, "type_image": type_image or None,
               "layout": layout or None, "license_image": license_image or None}

    def work(report, emit):
        return collect_classes(store, classes, int(per_class), filters=filters, cancel=cancel, progress=report,
                               on_item=lambda label, item: emit((label, item)))

    labels = [label for label, _ in classes]
    note = _gallery_note(labels) + (f"\n\n{quota_note}" if quota_note else "")
    shown: dict[str, list] = {label: [] for label in labels}  # label -> [(order, file, caption)]
    running = labels[0]
    live = {label: CollectReport(label) for label in labels}  # counts as items arrive; the reports replace them
    seq = 0  # arrival order: each gallery shows the newest first
    yield [cancel, _summary([live[labels[0]]], running) + note] + _galleries(labels, shown)
    for burst in stream_work(work, cancel, batched=True, name="collect"):  # one UI update per burst
        reports = None
        for event in burst:
            if event[0] == "progress":
                progress(event[1], desc=event[2])
                running = labels[min(int(event[1] * len(labels)), len(labels) - 1)]  # each class an equal share
            elif event[0] == "event":
                label, item = event[1]
                live[label].tally(item.outcome, item.reason)
                if item.outcome == "added" and item.path:
                    try:
                        picture = servable(item.path)
                    except OSError as e:  # moved or trashed meanwhile: it is stored all the same
                        log.warning("not showing %s in the Collect gallery: %s", item.path, e)
                        continue
                    seq += 1
                    shown[label].append((seq, picture, item.title or item.url[-60:]))
            elif event[0] == "done":
                reports = event[1] or []
        if reports is None:
            reports = [live[label] for label in labels[:labels.index(running) + 1]]
        finished = burst[-1][0] == "done"
        failed = {r.label for r in reports if r.error}  # said in the summary; no empty gallery for them
        yield [cancel, _summary(reports, None if finished else running) + note] + _galleries(labels, shown, failed)


def _galleries(labels, shown, failed=frozenset()):
    out = []
    groups = gallery_groups(labels)
    for i in range(SLOTS):
        if i >= len(groups) or (len(groups[i]) == 1 and groups[i][0] in failed):
            out.append(gr.update(visible=False, value=[]))
            continue
        group = groups[i]
        newest = sorted(((seq, label, f, cap) for label in group for seq, f, cap in shown.get(label, [])),
                        reverse=True)[:GALLERY_MAX]
        if len(group) == 1:
            value, title = [(f, cap) for _, _, f, cap in newest], group[0]
        else:
            value = [(f, f"{label} · {cap}") for _, label, f, cap in newest]
            title = f"Other classes: {', '.join(group)}"
        out.append(gr.update(visible=True, label=title, value=value))
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
            queries = gr.Textbox(label="Queries, one line per class: `label: query 1 | query 2 | …` (edit freely; "
                                       "Start searches exactly these; a class with no line here gets the suggestions)",
                                 lines=4, elem_id="collect-queries",
                                 placeholder="Filled in when you leave the Classes box, or press Suggest queries")
            suggest_btn = gr.Button("Suggest queries", size="sm", elem_id="collect-suggest")
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

    suggest_btn.click(suggest_queries, [classes, queries], queries, api_name="suggest_queries")
    # Also on leaving the box, not on every keystroke: a late reply must not undo an edit in Queries.
    classes.blur(suggest_queries, [classes, queries], queries, api_name="suggest_queries_on_blur",
                 api_visibility="private")
    run = start_btn.click(start, [bar.dataset, classes, queries, per_class, safesearch, size, type_image, layout,
                                  license_image], [cancel, summary] + galleries, api_name="collect",
                          concurrency_limit=4, concurrency_id="collect")
    bar.refresh_after(run)
    # cancels= ends the stream at once; its `finally` sets the worker's event
    stop_btn.click(stop, cancel, summary, api_name="stop_collect", cancels=[run])
