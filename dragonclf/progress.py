"""Progress reports and cancelling, shared by every long function.

A long function takes `progress: Callable[[float, str], None] | None` (fraction
0..1, a message) and `cancel: threading.Event | None`, and raises `Cancelled`
(or stops cleanly, keeping what is done) when the event is set.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from dragonclf.errors import DragonError

Progress = Callable[[float, str], None]


class Cancelled(DragonError):
    """The user pressed Stop; work done so far is kept."""


def report(progress: Progress | None, fraction: float, message: str) -> None:
    """Call `progress` (if any) with `fraction` clamped to [0, 1]."""
    if progress is not None:
        progress(min(max(fraction, 0.0), 1.0), message)


def scaled(progress: Progress | None, start: float, end: float) -> Progress:
    """A progress callback that maps 0..1 onto start..end of `progress`."""
    return lambda f, m: report(progress, start + (end - start) * f, m)


def is_set(cancel: threading.Event | None) -> bool:
    return cancel is not None and cancel.is_set()
