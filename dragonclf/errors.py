"""Errors a person can read: the UI and the CLI show their message as is."""


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
