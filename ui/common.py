"""Helpers every tab shares: error handling, serving images, progress adapters."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
from pathlib import Path

import gradio as gr

from dragonclf.errors import DragonError

log = logging.getLogger("dragonclf.ui")

# Images shown in the browser are linked into this folder first, so Gradio never
# needs `allowed_paths` on the data root (which would also expose manifests).
SERVE_DIR = Path(tempfile.gettempdir()) / "dragonclf-serve"


def servable(path: str | os.PathLike) -> str:
    """A copy (hard link where possible) of an image the app means to show, in the temp dir."""
    src = Path(path)
    if src.suffix.lower() not in (".jpg", ".jpeg", ".png", ".webp"):
        raise DragonError(f"refusing to serve {src.name}: not an image")
    SERVE_DIR.mkdir(parents=True, exist_ok=True)
    # names are content ids in the store, but two datasets may hold the same id: keep the parent too
    dest = SERVE_DIR / f"{src.parent.name}-{src.name}"
    if not dest.exists():
        tmp = dest.with_suffix(".part")
        try:
            os.link(src, tmp)
        except OSError:  # another filesystem: copy
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    return str(dest)


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
            raise gr.Error(str(e)) from None
        except Exception as e:  # noqa: BLE001 - the UI must answer with a message, and we log the rest
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(f"Something went wrong ({type(e).__name__}: {e}). The details are in the server log.") from None

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
            raise gr.Error(str(e)) from None
        except Exception as e:  # noqa: BLE001
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(f"Something went wrong ({type(e).__name__}: {e}). The details are in the server log.") from None

    return wrapper


def progress_adapter(progress: gr.Progress):
    """dragonclf's plain `progress(fraction, message)` -> gr.Progress."""

    def report(fraction: float, message: str = "") -> None:
        progress(max(0.0, min(1.0, float(fraction))), desc=message)

    return report
