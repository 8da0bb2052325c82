"""The only copies of dataset images the browser can fetch, and their removal.

Images shown in the browser are hard-linked (copied across filesystems) into
SERVE_DIR, which Gradio serves as a static path: it hands out that very file
rather than a copy in its own cache, so removing our link takes the picture off
the web. Gradio never needs `allowed_paths` on the data root (which would also
expose manifests).

Deleted means gone: a served link whose source was deleted (its link count
fell to 1: Empty trash in this process or any other) is removed by `sweep`,
which runs right after Empty trash and on a schedule (every SWEEP_EVERY
seconds, from a daemon thread). A copy whose source path is gone, and any
served file not asked for in SERVE_TTL seconds, goes too.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr

from dragonclf.errors import DragonError

SERVE_DIR = Path(tempfile.gettempdir()) / f"dragonclf-serve-{os.getuid()}"
SWEEP_EVERY = 30.0  # seconds between scheduled sweeps
SERVE_TTL = 3600.0  # a served file nobody asked for in this long is removed (asking again renews it)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")

_copies: dict[str, Path] = {}  # served name -> source, for copies (a hard link knows its own link count)
_lock = threading.Lock()
_sweeper: threading.Thread | None = None

SERVE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
gr.set_static_paths([SERVE_DIR])  # served in place: no second copy in Gradio's cache


def servable(path: str | os.PathLike) -> str:
    """The served copy (a hard link where possible) of an image the app means to show."""
    src = Path(path)
    if src.suffix.lower() not in IMAGE_SUFFIXES:
        raise DragonError(f"refusing to serve {src.name}: not an image")
    _start_sweeper()
    SERVE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    # ids are content hashes: the same id may live in two datasets (or two homes); the folder's hash keeps them apart
    where = hashlib.sha256(str(src.parent.resolve()).encode()).hexdigest()[:12]
    dest = SERVE_DIR / f"{where}-{src.name}"
    try:
        with _lock:
            copied = _copies.get(dest.name) is not None
        if copied or os.path.samefile(src, dest):
            os.utime(dest)  # renews its time to live
            return str(dest)
    except FileNotFoundError:
        pass
    tmp = SERVE_DIR / f".{dest.name}.{threading.get_ident()}.part"
    try:
        os.link(src, tmp)
    except FileNotFoundError:
        raise DragonError(f"{src.name} is no longer in the dataset (moved or deleted meanwhile); refresh") from None
    except OSError:  # another filesystem: copy, and remember where from
        shutil.copyfile(src, tmp)
        with _lock:
            _copies[dest.name] = src
    os.replace(tmp, dest)
    os.utime(dest)  # its time to live starts now (a new hard link has the dataset file's own, maybe old, time)
    return str(dest)


def sweep(now: float | None = None) -> int:
    """Remove served files whose source is gone or that nobody asked for lately; return how many."""
    now = time.time() if now is None else now
    removed = 0
    try:
        entries = list(os.scandir(SERVE_DIR))
    except FileNotFoundError:
        return 0
    stats = []
    for e in entries:
        try:
            stats.append((e, e.stat(follow_symlinks=False)))
        except FileNotFoundError:
            continue
    served_links: dict[tuple[int, int], int] = {}  # inode -> how many of its links are ours
    for _e, st in stats:
        served_links[(st.st_dev, st.st_ino)] = served_links.get((st.st_dev, st.st_ino), 0) + 1
    for e, st in stats:
        with _lock:
            source = _copies.get(e.name)
        stale = now - st.st_mtime > SERVE_TTL
        if source is not None:
            gone = not source.exists()
        else:  # a hard link: when every link left is one of ours, the dataset's file was deleted
            gone = st.st_nlink <= served_links[(st.st_dev, st.st_ino)]
        if e.name.endswith(".part"):
            gone = now - st.st_mtime > 60  # a copy its writer abandoned
        if gone or stale:
            try:
                os.unlink(e.path)
                removed += 1
            except FileNotFoundError:
                pass
            with _lock:
                _copies.pop(e.name, None)
    return removed


def sweeper_running() -> bool:
    """Whether the scheduled sweep's thread is alive (started by the first serve)."""
    with _lock:
        return _sweeper is not None and _sweeper.is_alive()


def _start_sweeper() -> None:
    global _sweeper
    with _lock:
        if _sweeper is not None and _sweeper.is_alive():
            return

        def loop():
            while True:
                time.sleep(SWEEP_EVERY)
                try:
                    sweep()
                except OSError:
                    pass  # the next round tries again

        _sweeper = threading.Thread(target=loop, name="dragonclf-serve-sweeper", daemon=True)
        _sweeper.start()
