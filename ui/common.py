"""Helpers every tab shares: error handling, serving images, progress adapters."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
from pathlib import Path

import gradio as gr

from dragonclf.errors import DragonError, without_paths
from ui.serving import servable, sweep  # noqa: F401 - the tabs import them from here

log = logging.getLogger("dragonclf.ui")


def servable_file(path: str | os.PathLike, name: str | None = None) -> str:
    """A downloadable copy of a file the app produced (a model, an export zip)."""
    src = Path(path)
    out_dir = Path(tempfile.mkdtemp(prefix="dragonclf-dl-"))
    dest = out_dir / (name or src.name)
    shutil.copyfile(src, dest)
    return str(dest)


def ui_errors(fn):
    """Turn library errors into a readable gr.Error; never show a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except DragonError as e:
            raise gr.Error(without_paths(str(e))) from None
        except Exception as e:  # noqa: BLE001 - the UI must answer with a message, and we log the rest
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(without_paths(f"Something went wrong ({type(e).__name__}: {e}). "
                                         "The details are in the server log.")) from None

    return wrapper


def gen_errors(fn):
    """ui_errors for generator handlers (streaming progress)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            yield from fn(*args, **kwargs)
        except gr.Error:
            raise
        except DragonError as e:
            raise gr.Error(without_paths(str(e))) from None
        except Exception as e:  # noqa: BLE001
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(without_paths(f"Something went wrong ({type(e).__name__}: {e}). "
                                         "The details are in the server log.")) from None

    return wrapper


def progress_adapter(progress: gr.Progress):
    """dragonclf's plain `progress(fraction, message)` -> gr.Progress."""

    def report(fraction: float, message: str = "") -> None:
        progress(max(0.0, min(1.0, float(fraction))), desc=message)

    return report


def stream_work(work, cancel):
    """Run `work(progress, emit)` in a thread; yield ("progress", f, msg), ("event", x) and ("done", result).

    The generator handler that drives this turns each item into a UI update. A
    closed tab or Stop ends the generator; `finally` sets `cancel` so the work
    stops at its next check. An exception in the work is re-raised here.
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

    threading.Thread(target=run, daemon=True, name="ui-work").start()
    try:
        while True:
            try:
                item = events.get(timeout=0.5)
            except queue.Empty:
                yield ("tick",)
                continue
            if item[0] == "end":
                break
            yield item
    finally:
        cancel.set()
    if "error" in box:
        raise box["error"]
    yield ("done", box.get("result"))


def model_choices(dataset: str | None) -> list[tuple[str, str]]:
    """(caption, model id) for a dataset's finished models, newest first."""
    from dragonclf.modelstore import list_models

    if not dataset:
        return []
    out = []
    for m in list_models(dataset):
        if "error" in m:
            continue
        acc = m["metrics"].get("accuracy")
        acc_s = f" · accuracy {acc:.2f}" if isinstance(acc, (int, float)) else ""
        out.append((f"{m['id']} · {m['mode']} · {m['backbone']}{acc_s} · {m['created'][:16]}", m["id"]))
    return out


def model_dropdown_update(dataset: str | None, keep: str | None = None):
    choices = model_choices(dataset)
    ids = [c[1] for c in choices]
    return gr.update(choices=choices, value=keep if keep in ids else (ids[0] if ids else None))
