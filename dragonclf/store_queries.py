"""Reading a large dataset a page at a time: counts and pages straight from the indexes.

A part of `Store` (mixed in). A view of 100,000 pictures shows one page and a few
counts; nothing here reads every row to do that. Pages come newest first (the
order a person adds pictures in and wants to check them), ordered by
(added_at, id) so that paging returns every picture exactly once even when many
arrive in the same second. `images()` (every row) stays for the work that needs
all of them: training, exports.
"""

from __future__ import annotations

from dataclasses import dataclass

from dragonclf.config import IngestConfig
from dragonclf.errors import DragonError

# The ordering indexes behind pages and counts (created with the schema, see store.SCHEMA).
PAGE_INDEXES = """
CREATE INDEX IF NOT EXISTS images_status_added ON images(status, added_at, id);
CREATE INDEX IF NOT EXISTS images_folder_added ON images(folder, status, added_at, id);
"""
SPLITS = ("train", "valid")
STATUSES = ("active", "trashed", "missing")


@dataclass
class Page:
    rows: list  # ImageRow, newest first
    total: int  # pictures matching the filters, over all pages
    offset: int
    limit: int

    @property
    def number(self) -> int:
        """1-based page number."""
        return self.offset // self.limit + 1 if self.limit else 1

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.limit)) if self.limit else 1

    def describe(self) -> str:
        if not self.total:
            return "no pictures"
        last = min(self.offset + len(self.rows), self.total)
        return f"{self.offset + 1}-{last} of {self.total} (page {self.number} of {self.pages})"


class Queries:
    """Pages and counts; expects the Store's `_db`, `_row` and `label`."""

    def _where(self, status, label, split, text, kept, valid_share) -> tuple[str, list]:
        conds, args = [], []
        if status is None:
            conds.append("i.status != 'pending'")
        elif status in STATUSES:
            conds.append("i.status = ?")
            args.append(status)
        else:
            raise DragonError(f"unknown status {status!r} (use one of {', '.join(STATUSES)})")
        if label:
            conds.append("i.folder = ?")
            args.append(self.label(label).folder)
        if split is not None:
            if split not in SPLITS:
                raise DragonError(f"unknown split {split!r} (use train or valid)")
            conds.append("i.split_key < ?" if split == "valid" else "i.split_key >= ?")
            args.append(valid_share)
        if kept is not None:
            conds.append("i.kept = ?")
            args.append(1 if kept else 0)
        text = (text or "").strip()
        if text:
            like = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            conds.append("(i.id LIKE ? ESCAPE '\\' OR i.title LIKE ? ESCAPE '\\' OR i.source LIKE ? ESCAPE '\\'"
                         " OR i.query LIKE ? ESCAPE '\\')")
            args += [like] * 4
        return " AND ".join(conds), args

    def count(self, status: str | None = "active", label: str | None = None, split: str | None = None,
              text: str | None = None, kept: bool | None = None,
              valid_share: float = IngestConfig.valid_share) -> int:
        """How many pictures match (the same filters as `page`), counted in the index."""
        where, args = self._where(status, label, split, text, kept, valid_share)
        return self._db.execute(f"SELECT COUNT(*) FROM images i WHERE {where}", args).fetchone()[0]

    def page(self, status: str | None = "active", label: str | None = None, split: str | None = None,
             text: str | None = None, kept: bool | None = None, offset: int = 0, limit: int = 48,
             valid_share: float = IngestConfig.valid_share) -> Page:
        """One page of pictures, newest first, with the number that match.

        Filters: `status` (active, trashed, missing; None for all), `label` (a display name), `split`
        (train or valid at `valid_share`), `text` (in the id, title, source or query) and `kept`.
        An offset past the end gives the last page.
        """
        limit = max(1, int(limit))
        offset = max(0, int(offset))
        where, args = self._where(status, label, split, text, kept, valid_share)
        total = self._db.execute(f"SELECT COUNT(*) FROM images i WHERE {where}", args).fetchone()[0]
        if offset >= total:
            offset = max(0, (total - 1) // limit * limit)
        rows = self._db.execute(
            f"SELECT i.*, l.display FROM images i LEFT JOIN labels l ON l.folder = i.folder WHERE {where}"
            " ORDER BY i.added_at DESC, i.id DESC LIMIT ? OFFSET ?", [*args, limit, offset])
        return Page([self._row(r, valid_share) for r in rows], total, offset, limit)

    def status_counts(self) -> dict[str, int]:
        """Pictures per status (active, trashed, missing), from the index."""
        counts = dict.fromkeys(STATUSES, 0)
        for status in STATUSES:
            counts[status] = self._db.execute("SELECT COUNT(*) FROM images WHERE status = ?", (status,)).fetchone()[0]
        return counts


    def images_by_id(self, ids, valid_share: float = IngestConfig.valid_share) -> dict:
        """{id: ImageRow} for these ids (those that exist and are not pending), read by primary key."""
        ids = list(dict.fromkeys(ids))
        out = {}
        for i in range(0, len(ids), 500):  # SQLite's limit on bound parameters
            chunk = ids[i:i + 500]
            rows = self._db.execute(
                "SELECT i.*, l.display FROM images i LEFT JOIN labels l ON l.folder = i.folder"
                f" WHERE i.id IN ({','.join('?' * len(chunk))}) AND i.status != 'pending'", chunk)
            out.update((r["id"], self._row(r, valid_share)) for r in rows)
        return out
