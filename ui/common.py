"""Helpers every tab shares: error handling, serving images, progress adapters."""

from __future__ import annotations

import functools
import inspect
import logging
import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr

from dragonclf.errors import DragonError, without_paths
from ui import people
from ui.serving import servable, sweep  # noqa: F401 - the tabs import them from here

log = logging.getLogger("dragonclf.ui")


DOWNLOADS = Path(tempfile.gettempdir()) / "dragonclf-downloads"
DOWNLOAD_TTL_S = 15 * 60  # an export stays this long for its download, then goes with the next export


def download_dir() -> Path:
    """A fresh folder for one download; folders older than DOWNLOAD_TTL_S are removed first."""
    DOWNLOADS.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for d in DOWNLOADS.iterdir():
        try:
            if now - d.stat().st_mtime > DOWNLOAD_TTL_S:
                shutil.rmtree(d, ignore_errors=True)
        except FileNotFoundError:  # another export removed it first
            pass
    return Path(tempfile.mkdtemp(dir=DOWNLOADS))


def _message(e: Exception, fn) -> str:
    if isinstance(e, gr.Error):
        return e.message
    if isinstance(e, DragonError):
        return without_paths(str(e))
    log.exception("unexpected error in %s", fn.__name__, exc_info=e)
    return without_paths(f"Something went wrong ({type(e).__name__}: {e}). The details are in the server log.")


def _from_browser() -> bool:
    """True when the running event came from the page (not gradio_client or MCP, which get errors raised)."""
    from gradio.context import LocalContext  # gradio sets it for every event it runs

    request = LocalContext.request.get(None)
    headers = getattr(request, "headers", None) or {}
    return bool(request) and headers.get("x-gradio-user") not in ("api", "mcp")


def _answer(message: str, say: int, of: int):
    """The outputs after an error: the message in the action's status, everything else as it was."""
    out = [gr.skip() for _ in range(of)]
    out[say] = f"⚠️ {message}"
    return out[0] if of == 1 else tuple(out)


def ui_errors(fn=None, *, say: int | None = None, of: int = 1):
    """One way to answer errors in every handler: a readable message, never a traceback.

    `@ui_errors(say=i, of=n)`: in the browser the message goes to output `i` of the handler's `n`
    (the status beside the action) and the other outputs keep what they showed, so no red "Error"
    badge covers an input or sits beside stale text. API callers still get the error raised.
    Bare `@ui_errors` raises it (a toast). Works for plain and generator (streaming) handlers.
    Every handler runs as the person who called it (ui/people.py: Gradio passes the request in).
    """
    if fn is None:
        return lambda f: ui_errors(f, say=say, of=of)

    def fail(e: Exception):
        message = _message(e, fn)
        if say is None or not _from_browser():
            raise gr.Error(message) from None
        return _answer(message, say, of)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                args, who = people.split_call(args)
                yield from people.steps_as(who, fn(*args, **kwargs))
            except Exception as e:  # noqa: BLE001 - the UI answers with a message; the rest is logged
                yield fail(e)

        people.with_identity(fn, gen_wrapper)
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            args, who = people.split_call(args)
            return people.run_as(who, lambda: fn(*args, **kwargs))
        except Exception as e:  # noqa: BLE001
            return fail(e)

    people.with_identity(fn, wrapper)
    return wrapper




def progress_adapter(progress: gr.Progress):
    """dragonclf's plain `progress(fraction, message)` -> gr.Progress."""

    def report(fraction: float, message: str = "") -> None:
        progress(max(0.0, min(1.0, float(fraction))), desc=message)

    return report


def stream_work(work, cancel, batched: bool = False, name: str = "ui-work"):
    """Run `work(progress, emit)` in a thread; yield ("progress", f, msg), ("event", x) and ("done", result).

    The generator handler that drives this turns each item into a UI update;
    with `batched` it yields lists instead: every item that arrived since the
    last one (one UI update per burst), the last list ending with ("done", result).
    A closed tab or Stop ends the generator; `finally` sets `cancel` so the work
    stops at its next check. An exception in the work is re-raised here. `name`
    names the worker thread.
    """
    import queue
    import threading

    events: queue.Queue = queue.Queue()
    box: dict = {}

    def run():
        try:
            box["result"] = work(lambda f, m="": events.put(("progress", f, m)), lambda x: events.put(("event", x)))
        except BaseException as e:  # noqa: BLE001 - handed to the UI thread, which shows it
            box["error"] = e
        finally:
            events.put(("end",))

    threading.Thread(target=run, daemon=True, name=name).start()
    ended = False
    try:
        while not ended:
            try:
                burst = [events.get(timeout=0.5)]
            except queue.Empty:
                if not batched:
                    yield ("tick",)
                continue
            while batched and burst[-1][0] != "end" and not events.empty():
                burst.append(events.get_nowait())
            ended = burst[-1][0] == "end"
            burst = [item for item in burst if item[0] != "end"]
            if ended and "error" not in box:
                burst.append(("done", box.get("result")))
            if batched:
                if burst:
                    yield burst
            else:
                yield from burst
    finally:
        cancel.set()
    if "error" in box:
        raise box["error"]


def model_choices(dataset: str | None) -> list[tuple[str, str]]:
    """(caption, model id) for a dataset's finished models, newest first."""
    from dragonclf.modelstore import list_models

    if not dataset:
        return []
    out = []
    for m in list_models(people.dataset_for(dataset, "read")):
        if "error" in m:
            continue
        acc = m["metrics"].get("accuracy")
        acc_s = f" · accuracy {acc:.2f}" if isinstance(acc, (int, float)) else ""
        out.append((f"{m['id']} · {m['mode']} · {m['backbone']}{acc_s} · {m['created'][:16]}", m["id"]))
    return out


@ui_errors
def model_dropdown_update(dataset: str | None, keep: str | None = None):
    choices = model_choices(dataset)
    ids = [c[1] for c in choices]
    return gr.update(choices=choices, value=keep if keep in ids else (ids[0] if ids else None))
