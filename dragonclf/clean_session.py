"""One person's Clean queues in one session: what the Clean tab remembers between clicks.

A `CleanSession` holds, per dataset and kind of suspect, the queue found by the
last pass and the position of the current card; the images decided on (they
leave every queue of that dataset); the out-of-fold snapshot of the last
mislabel pass (what Refit compares with) and the edits since; and which page of
the trash is shown. It survives switching tabs, labels or datasets and coming
back. Queues of suspects are kept whole and shown a page (`PAGE` cards) at a
time; the trash queue holds one page of the store's trash (which can be the
size of the dataset), read again after every decision.

Nothing here decides: decisions go through `clean.decide` and the store's
journal; the session only records what they changed.
"""

from __future__ import annotations

from dragonclf import clean
from dragonclf.store import EditResult, Store

PAGE = 60  # cards per page: the browser gets one page of a queue at a time
MODEL_KINDS = ("mislabel", "top_loss", "cell")  # queues that wait for a button (a pass over a model)


class CleanSession:
    """Queues, positions and decisions of one session, per (dataset, kind)."""

    def __init__(self) -> None:
        self.queues: dict[tuple[str, str], list[dict]] = {}
        self.positions: dict[tuple[str, str], int] = {}
        self.done: dict[str, dict[str, str]] = {}  # dataset -> {image id: action}
        self.snapshots: dict[str, dict] = {}  # dataset -> the last mislabel pass (for Refit)
        self.edits: dict[str, int] = {}  # dataset -> edits since that pass
        self.trash_pages: dict[str, tuple[int, int]] = {}  # dataset -> (offset, total) of the trash shown

    # ---- reading -------------------------------------------------------------------
    def has(self, dataset: str, kind: str) -> bool:
        """Whether this session has a queue of `kind` for `dataset` (found, or filled on showing)."""
        return (dataset, kind) in self.queues

    def kinds(self, dataset: str) -> list[str]:
        return [k for d, k in self.queues if d == dataset]

    def pending(self, dataset: str, kind: str) -> list[dict]:
        """The queue without the images decided on (the trash page is read afresh after every decision)."""
        queue = self.queues.get((dataset, kind), [])
        if kind == "trash":
            return queue
        done = self.done.get(dataset, {})
        return [s for s in queue if s["id"] not in done]

    def position(self, dataset: str, kind: str) -> int:
        """The current card's index in `pending` (0 when the queue is empty)."""
        return min(self.positions.get((dataset, kind), 0), max(0, len(self.pending(dataset, kind)) - 1))

    def current(self, dataset: str, kind: str) -> dict | None:
        items = self.pending(dataset, kind)
        return items[self.position(dataset, kind)] if items else None

    def shown(self, dataset: str, kind: str) -> tuple[list[dict], int, int]:
        """The page the current card is on: (its suspects, offset of the first, size of the whole queue)."""
        items = self.pending(dataset, kind)
        if kind == "trash":
            offset, total = self.trash_pages.get(dataset, (0, len(items)))
            return items, offset, total
        start = self.position(dataset, kind) // PAGE * PAGE
        return items[start:start + PAGE], start, len(items)

    def size(self, dataset: str, kind: str) -> int:
        """How many cards the whole queue has (the trash: all of the dataset's trash)."""
        return self.shown(dataset, kind)[2]

    def cluster(self, dataset: str, kind: str, group: str) -> list[str]:
        """Ids of the pending cards of duplicate cluster `group` suggested for the trash."""
        return [s["id"] for s in self.pending(dataset, kind) if s["group"] == group and s["action"] == "trash"]

    def edits_since_pass(self, dataset: str) -> int:
        return self.edits.get(dataset, 0)

    def snapshot(self, dataset: str) -> dict | None:
        return self.snapshots.get(dataset)

    # ---- filling -------------------------------------------------------------------
    def set_queue(self, dataset: str, kind: str, items: list[dict]) -> None:
        """A fresh queue, from its first card; it supersedes earlier decisions on these images."""
        self.queues[(dataset, kind)] = items
        self.positions[(dataset, kind)] = 0
        done = self.done.setdefault(dataset, {})
        for s in items:
            done.pop(s["id"], None)

    def find(self, store: Store, dataset: str, kind: str, progress=None) -> str:
        """Compute the queue of `kind` (the trash view included); return a note for the person."""
        if kind == "trash":
            self.fill_trash(store, dataset, 0)
            self.positions[(dataset, kind)] = 0
            return ""
        if kind == "cell":
            return "Pick an actual and a predicted label below and press Show cell."
        found = clean.find_suspects(store, [kind], progress=progress)
        if found.snapshot is not None:
            self.refitted(dataset, found.snapshot)
        self.set_queue(dataset, kind, found.items)
        notes = found.notes
        if kind == "top_loss" and not found.items:
            model = clean.last_finetuned(dataset)
            notes.append("No fine-tuned model yet: train one in the Train tab to see its top losses." if model is None
                         else f"No top losses to review: the fine-tuned model {model['id']} gets every validation "
                              "image right. (Evaluate's Top losses tab lists the highest losses even when right.)")
        return " ".join(notes)

    def fill_trash(self, store: Store, dataset: str, offset: int | None = None) -> None:
        """The page of the trash at `offset` (default: where the session is), newest first, read from the store."""
        offset = self.trash_pages.get(dataset, (0, 0))[0] if offset is None else offset
        page = store.page(status="trashed", offset=max(0, offset), limit=PAGE)
        self.trash_pages[dataset] = (page.offset, page.total)
        self.queues[(dataset, "trash")] = clean.trash_suspects(page.rows)
        key = (dataset, "trash")
        self.positions[key] = min(self.positions.get(key, 0), max(0, len(page.rows) - 1))

    def refitted(self, dataset: str, snapshot: dict) -> None:
        """A new pass to compare later edits with: the edit count starts again."""
        self.snapshots[dataset] = snapshot
        self.edits[dataset] = 0

    # ---- after an edit -------------------------------------------------------------
    def decided(self, store: Store, dataset: str, res: EditResult, action: str) -> None:
        """Images decided on leave the queues; the trash page, if shown, is read again."""
        done = self.done.setdefault(dataset, {})
        for i in res.changed + res.unchanged:
            done[i] = action
        if res.changed:
            self.edits[dataset] = self.edits.get(dataset, 0) + 1
        self._refresh_trash(store, dataset)

    def walked(self, store: Store, dataset: str, res: EditResult, undo: bool) -> None:
        """After Undo the images come back into their queues; after Redo they leave them again."""
        done = self.done.setdefault(dataset, {})
        for i in res.changed:
            if undo:
                done.pop(i, None)
            else:
                done[i] = "redo"
        self.edits[dataset] = self.edits.get(dataset, 0) + 1
        self._refresh_trash(store, dataset)

    def _refresh_trash(self, store: Store, dataset: str) -> None:
        if self.has(dataset, "trash"):
            self.fill_trash(store, dataset)  # restored pictures leave the page, trashed ones join it

    # ---- moving --------------------------------------------------------------------
    def move(self, dataset: str, kind: str, step: int) -> None:
        """The previous (-1) or next (+1) card, round the queue."""
        n = len(self.pending(dataset, kind))
        if n:
            self.positions[(dataset, kind)] = (self.position(dataset, kind) + step) % n

    def turn_page(self, store: Store | None, dataset: str, kind: str, step: int) -> None:
        """The previous or next page of the queue; its first card becomes the current one (`store`: for the trash)."""
        key = (dataset, kind)
        if kind == "trash":
            offset = self.trash_pages.get(dataset, (0, 0))[0]
            self.fill_trash(store, dataset, offset + step * PAGE)
            self.positions[key] = 0
            return
        n = len(self.pending(dataset, kind))
        start = self.position(dataset, kind) // PAGE * PAGE
        self.positions[key] = min(max(0, start + step * PAGE), max(0, n - 1)) // PAGE * PAGE

    def select(self, dataset: str, kind: str, index: int) -> None:
        """The card at `index` on the page shown becomes the current one."""
        start = 0 if kind == "trash" else self.shown(dataset, kind)[1]
        self.positions[(dataset, kind)] = start + int(index)
