"""Adding pictures to a store: normalise, write durably, record, journal.

A part of `Store` (mixed in). A new image is written to this writer's own temp
folder, recorded as "pending", renamed into its label folder, then marked
active; a crash leaves either nothing or a pending row that the next open rolls
back or adopts (`store_files.recover`). A picture already stored is a
duplicate (same label) or a conflict (another label); a row marked missing
takes its picture back. Near-duplicates share their group's split key.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from dragonclf import phash_index, split_keys
from dragonclf.config import IngestConfig
from dragonclf.errors import DragonError, Refused
from dragonclf.layout import PROVENANCE_KEYS, read_regular_file


@dataclass
class Label:
    """A label: its display name, its folder, and (from `Store.labels`) its active images."""

    display: str
    folder: str
    count: int = 0


@dataclass
class IngestResult:
    outcome: str  # added | duplicate | conflict | refused
    image_id: str | None = None
    reason: str | None = None  # refusal slug
    detail: str | None = None  # a sentence for people
    notes: tuple[str, ...] = ()
    path: Path | None = None  # where the picture is stored (added, duplicate, conflict); None when refused


@dataclass(kw_only=True)
class Tally:
    """What became of pictures offered to a store, counted: the one tally collect, import and rescan keep."""

    added: int = 0
    duplicates: int = 0  # the same pixels already stored under that label (a collect: or the same URL twice)
    conflicts: int = 0  # the same pixels already stored under another label
    refused: Counter = field(default_factory=Counter)  # reason slug -> count

    def tally(self, outcome: str, reason: str | None = None) -> None:
        """Count one outcome (added, duplicate, conflict, refused); others (a collect's skipped,
        unfinished) are not counted here."""
        if outcome == "added":
            self.added += 1
        elif outcome == "duplicate":
            self.duplicates += 1
        elif outcome == "conflict":
            self.conflicts += 1
        elif outcome == "refused":
            self.refused[reason or "unreadable"] += 1


# The columns of an image row, as `_insert_image` writes them.
IMAGE_COLUMNS = ("id", "sha256", "pixel_sha", "phash", "width", "height", "folder", "status", "split_key", "kept",
                 *PROVENANCE_KEYS, "added_at", "writer")


class Adding:
    """A part of `Store` (mixed in): `ingest`, `ingest_file`, `near_duplicates_of`."""

    @staticmethod
    def _insert_image(db, row: dict, if_new: bool = False) -> bool:
        """Write one image row in transaction `db`: the only INSERT INTO images (ingest and the manifest-CSV
        restore both write through it). `row` maps IMAGE_COLUMNS to values; those left out are NULL (`kept` 0).
        An id already stored raises sqlite3.IntegrityError, or with `if_new` is left as it is (False)."""
        unknown = set(row) - set(IMAGE_COLUMNS)
        if unknown:
            raise ValueError(f"not columns of an image row: {sorted(unknown)}")
        values = [row.get(c, 0 if c == "kept" else None) for c in IMAGE_COLUMNS]
        verb = "INSERT OR IGNORE" if if_new else "INSERT"
        return db.execute(f"{verb} INTO images({', '.join(IMAGE_COLUMNS)}) VALUES ({','.join('?' * len(values))})",
                          values).rowcount == 1

    def ingest(self, data: bytes, label: str, provenance: dict | None = None, cfg: IngestConfig = IngestConfig()) -> IngestResult:
        """Normalise and store one image under `label`. Bad bytes -> outcome "refused"."""
        from dragonclf.ingest import normalise  # numpy, Pillow, imagehash: reading the store needs none of them

        lab = self.label(label)
        try:
            norm = normalise(data, cfg)
        except Refused as r:
            return IngestResult("refused", None, r.reason, r.detail)
        return self._store(norm, lab, provenance or {}, cfg)

    def ingest_file(self, path: Path, label: str, provenance: dict | None = None,
                    cfg: IngestConfig = IngestConfig()) -> IngestResult:
        """`ingest` a regular file's bytes (read bounded, links not followed); an unreadable file is "refused"."""
        try:
            data = read_regular_file(path, cfg.max_bytes)
        except Refused as r:
            return IngestResult("refused", None, r.reason, r.detail)
        return self.ingest(data, label, provenance, cfg)

    def _store(self, norm, lab: Label, provenance: dict, cfg: IngestConfig) -> IngestResult:
        with self._lock, self._disk_full_is_a_message():
            try:
                return self._store_locked(norm, lab, provenance, cfg)
            except BaseException:
                self._forget_own_pending(norm.image_id)  # a failed add leaves nothing (a live writer is never recovered)
                raise

    def _store_locked(self, norm, lab: Label, provenance: dict, cfg: IngestConfig) -> IngestResult:
        image_id = norm.image_id
        notes = tuple(norm.notes)
        prov = {k: (None if provenance.get(k) is None else str(provenance.get(k))) for k in PROVENANCE_KEYS}
        row = self._db.execute("SELECT folder, status FROM images WHERE id=?", (image_id,)).fetchone()
        if row is not None and row["status"] == "pending":
            stored = self._path(image_id, row["folder"], "active")
            return IngestResult("duplicate", image_id, "duplicate", "being stored by another process right now",
                                notes, stored)
        if row is not None and row["status"] == "missing":
            return self._bring_back(norm, lab, row["folder"], notes)
        if row is not None:
            stored = self._path(image_id, row["folder"], row["status"])
            if row["folder"] == lab.folder:
                where = " (in the trash)" if row["status"] == "trashed" else ""
                return IngestResult("duplicate", image_id, "duplicate", f"already stored{where}", notes, stored)
            if row["status"] == "trashed":
                # Someone already put this picture in the trash: a duplicate of that decision,
                # not a conflict (the Clean tab lists conflicts between active images only).
                return IngestResult(
                    "duplicate", image_id, "duplicate",
                    f"already stored under {self._display(row['folder'])!r}, in the trash; restore it to use it", notes,
                    stored,
                )
            with self._tx() as db:
                db.execute(
                    "INSERT OR IGNORE INTO conflicts VALUES (?,?,?,?)", (image_id, lab.folder, prov["source"], time.time())
                )
            stored_as = self._display(row["folder"])
            return IngestResult("conflict", image_id, "conflict", f"already stored under {stored_as!r}", notes, stored)
        tmp = self._write_tmp(norm)  # durable in this writer's own folder before any row names it
        sha256 = hashlib.sha256(norm.jpeg).hexdigest()
        near = self.near_duplicates_of(norm.phash, cfg.near_dup_distance)
        now = time.time()
        try:
            with self._tx() as db:
                _label_still_there(db, lab)
                # Near-duplicates stay on the same side of the validation split; others are spread per label.
                split_key = near[0][2] if near else _spread_key(db, lab.folder)
                self._insert_image(db, dict(
                    id=image_id, sha256=sha256, pixel_sha=norm.pixel_sha, phash=norm.phash, width=norm.width,
                    height=norm.height, folder=lab.folder, status="pending", split_key=split_key, **prov,
                    added_at=now, writer=self._writer))
        except sqlite3.IntegrityError:  # another process stored this very picture since we looked
            tmp.unlink(missing_ok=True)
            return self._store_locked(norm, lab, provenance, cfg)  # now a duplicate or a conflict
        final = self._path(image_id, lab.folder, "active")
        with self._files(), self._tx() as db:
            self._place(tmp, final)  # renamed and its folder fsynced before the row says "active"
            db.execute("UPDATE images SET status='active', writer=NULL WHERE id=?", (image_id,))
            for other, dist, _ in near:
                a, b = sorted((image_id, other))
                db.execute("INSERT OR IGNORE INTO near_dups VALUES (?,?,?)", (a, b, dist))
            batch = self._next_batch(db)
            db.execute(
                "INSERT INTO journal(batch, image_id, action, after_folder, after_status, after_kept, at)"
                " VALUES (?,?,'add',?,'active',0,?)",
                (batch, image_id, lab.folder, now),
            )
        return IngestResult("added", image_id, None, None, notes, final)

    def _bring_back(self, norm, lab: Label, was_in: str, notes: tuple) -> IngestResult:
        """The picture of a row marked missing (its file removed by hand) arrives again: store it again.

        The file goes into the label it arrives under; the row keeps its id, provenance
        and split, and the journal records the return. A crash between the rename and
        the commit leaves the file in place, which the next rescan takes back.
        """
        image_id = norm.image_id
        tmp = self._write_tmp(norm)
        final = self._path(image_id, lab.folder, "active")
        with self._files(), self._tx() as db:
            now = db.execute("SELECT status FROM images WHERE id=?", (image_id,)).fetchone()
            if now is None or now["status"] != "missing":  # another process brought it back meanwhile
                tmp.unlink(missing_ok=True)
                return IngestResult("duplicate", image_id, "duplicate", "already stored again meanwhile", notes)
            _label_still_there(db, lab)
            self._place(tmp, final)
            db.execute("UPDATE images SET folder=?, status='active', sha256=? WHERE id=?",
                       (lab.folder, hashlib.sha256(norm.jpeg).hexdigest(), image_id))
            db.execute(
                "INSERT INTO journal(batch, image_id, action, before_folder, after_folder, before_status, after_status, at)"
                " VALUES (?,?,'back',?,?,'missing','active',?)",
                (self._next_batch(db), image_id, was_in, lab.folder, time.time()),
            )
        return IngestResult("added", image_id, None, "stored again: its file had been removed by hand", notes, final)

    def near_duplicates_of(self, phash: str, max_distance: int = IngestConfig.near_dup_distance) -> list[tuple[str, int, float]]:
        """Stored images (active or trashed) within `max_distance` bits: (id, distance, split key), closest first.

        Looked up through the per-band indexes (see phash_index), so the cost does not grow with the dataset.
        """
        sql = "SELECT rowid, id, phash, split_key, status FROM images"
        if phash_index.indexable(phash):
            radius = phash_index.band_radius(max_distance)
            parts, args = [], []
            for k, band in enumerate(phash_index.bands(phash)):
                values = phash_index.neighbours(band, radius)
                # INDEXED BY: with a status condition the planner would rather walk the status index (every row)
                parts.append(f"{sql} INDEXED BY images_phash_b{k} WHERE {phash_index.band_sql(k)}"
                             f" IN ({','.join('?' * len(values))})")
                args += values
            rows = self._db.execute(" UNION ".join(parts), args)
        else:  # a hash of another size: compare with every stored one
            rows = self._db.execute(sql)
        out = []
        for r in rows:
            if r["status"] in ("active", "trashed") and r["phash"] and len(r["phash"]) == len(phash):
                d = phash_index.distance(phash, r["phash"])
                if d <= max_distance:
                    out.append((r["rowid"], r["id"], d, r["split_key"]))
        return [(i, d, key) for _, i, d, key in sorted(out, key=lambda t: (t[2], t[0]))]  # ties: oldest first


def _label_still_there(db, lab: Label) -> None:
    """Inside the add's transaction: the label looked up before is still there (not renamed, merged or
    deleted by another process meanwhile, see labels.py), so no picture lands in a folder no label owns."""
    if db.execute("SELECT 1 FROM labels WHERE folder=?", (lab.folder,)).fetchone() is None:
        raise DragonError(f"label {lab.display!r} was renamed, merged or deleted meanwhile; nothing was stored. "
                          "Choose the label again")


def _spread_key(db, folder: str) -> float:
    """The split key of the next image to arrive in a label (`split_keys`: its share of validation within one).

    The label's bucket counts are kept in `meta` (a scan of a label of 50,000 rows per picture would slow
    ingest as the label grows); a label from before they were kept is counted once from its keys.
    """
    counter = split_keys.counts_key(folder)
    row = db.execute("SELECT value FROM meta WHERE key=?", (counter,)).fetchone()
    if row:
        counts = json.loads(row[0])
    else:
        rows = db.execute("SELECT split_key FROM images WHERE folder=?", (folder,))
        counts = split_keys.histogram(r[0] for r in rows)
    offset = int(hashlib.sha256(folder.encode()).hexdigest()[:8], 16) / 2**32
    key = split_keys.next_key(counts, offset)
    db.execute("INSERT OR REPLACE INTO meta VALUES (?,?)", (counter, json.dumps(counts)))
    return key
