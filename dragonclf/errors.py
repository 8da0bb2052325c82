"""Errors a person can read: the UI and the CLI show their message as is."""

import re

# An absolute POSIX path that is not part of a URL ("https://h/x") or a fraction ("1/2").
_ABS_PATH = re.compile(r"(?<![\w:/.~-])/[^\s'\"<>()\[\],;]+")


def without_paths(text: str) -> str:
    """`text` with every absolute path cut to its last part ("/srv/data/x/y.jpg" -> ".../y.jpg").

    What a server shows strangers must not map its disk; the server log keeps the full text.
    """
    def short(m: re.Match) -> str:
        tail = m.group(0).rstrip("/").rsplit("/", 1)[-1]
        return f".../{tail}" if tail else "..."

    return _ABS_PATH.sub(short, str(text))


class DragonError(Exception):
    """A failure with a message meant for the user (no traceback needed)."""


class Refused(DragonError):
    """An input we will not store, with a short machine-readable reason.

    `reason` is a stable slug (e.g. "not-an-image", "too-many-pixels") that
    reports count by; `detail` is the human sentence.
    """

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail or reason
        super().__init__(f"{reason}: {self.detail}" if detail else reason)
