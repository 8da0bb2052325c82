"""Editing a dataset: journalled decisions (relabel, trash, restore, keep), undo and redo.

A part of `Store` (mixed in): every edit commits the manifest first, in one batch
of journal rows, then moves files to match; `_sync_files` also finishes any move a
crash interrupted. Nothing leaves the store except through `empty_trash`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from dragonclf.errors import DragonError
from dragonclf.layout import fsync_dir, moves_files
from dragonclf.names import NameClash

TRASH = ".trash"
EDIT_ACTIONS = ("relabel", "trash", "restore", "keep", "unkeep")
# Journal rows about a label, not a picture (see labels.py): image id "", the labels row before and after.
LABEL_ROW = ""
LABEL_ACTIONS = ("rename-label", "merge-label", "delete-label", "revive-label")
UNDOABLE = EDIT_ACTIONS + LABEL_ACTIONS


@dataclass
class Decision:
    image_id: str
    action: str  # relabel | trash | restore | keep | unkeep
    label: str | None = None  # for relabel


@dataclass
class EditResult:
    batch: int | None
    changed: list[str]
    unchanged: list[str]  # already in the asked-for state (e.g. trashed twice)
    skipped: list[str]  # undo/redo only: changed by someone else since
    labels: list[str] = field(default_factory=list)  # undo/redo only: label changes, in words


class Journal:
    """Edits, undo/redo and file moves; expects the Store's `_tx`, `_db`, `root`, `label`, `_path`, `_candidates`
    and `_moving` (the marker a crash mid-edit leaves for the next open: `moves_files`, store_files)."""

    @staticmethod
    def _next_batch(db) -> int:
        return (db.execute("SELECT COALESCE(MAX(batch), 0) FROM journal").fetchone()[0] or 0) + 1

    @moves_files
    def apply(self, decisions: list[Decision], create_labels: bool = False, actor: str | None = None) -> EditResult:
        """Apply review decisions as one journalled batch (one undo step), recording who made it (`actor`)."""
        targets = {}
        for d in decisions:
            if d.action not in EDIT_ACTIONS:
                raise DragonError(f"unknown action {d.action!r} (use one of {', '.join(EDIT_ACTIONS)})")
            if d.action == "relabel":
                if not d.label:
                    raise DragonError("relabel needs a label")
                if create_labels:
                    targets[d.label] = self.label_or_create(d.label).folder  # "cat" when "Cat" exists: NameClash
                    continue
                try:
                    targets[d.label] = self.label(d.label).folder
                except NameClash:
                    raise  # "cat" when "Cat" exists: say so, never merge or create
                except DragonError:
                    raise DragonError(
                        f"label {d.label!r} does not exist; create it first (or relabel with create=True / --create)"
                    ) from None
        changed, unchanged = [], []
        with self._tx() as db:
            batch = self._next_batch(db)
            for d in decisions:
                r = db.execute("SELECT folder, status, kept FROM images WHERE id=?", (d.image_id,)).fetchone()
                if r is None or r["status"] == "pending":
                    raise DragonError(f"no image {d.image_id!r} in dataset {self.name!r}")
                before = (r["folder"], r["status"], r["kept"])
                folder, status, kept = before
                if d.action == "relabel":
                    folder = targets[d.label]
                elif d.action == "trash":
                    status = "trashed"
                elif d.action == "restore":
                    status = "active" if status != "missing" else status
                elif d.action == "keep":
                    kept = 1
                elif d.action == "unkeep":
                    kept = 0
                after = (folder, status, kept)
                if after == before:
                    unchanged.append(d.image_id)
                    continue
                db.execute("UPDATE images SET folder=?, status=?, kept=? WHERE id=?", (*after, d.image_id))
                db.execute(
                    "INSERT INTO journal(batch, image_id, action, before_folder, after_folder, before_status,"
                    " after_status, before_kept, after_kept, at, actor) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (batch, d.image_id, d.action, before[0], after[0], before[1], after[1], before[2], after[2], time.time(),
                     actor),
                )
                changed.append(d.image_id)
            if any(d.action == "restore" for d in decisions):
                self._revive_labels(db, batch, changed, actor)  # a deleted label comes back with its picture
            if changed:  # a new edit ends the redo chain (the editor's own, when we know who), as in every editor
                if actor is None:
                    db.execute("UPDATE journal SET undone=2 WHERE undone=1")
                else:
                    db.execute("UPDATE journal SET undone=2 WHERE undone=1 AND actor IS ?", (actor,))
        self._sync_files(changed)
        return EditResult(batch if changed else None, changed, unchanged, [])

    def relabel(self, ids, label: str, create_labels: bool = False) -> EditResult:
        return self.apply([Decision(i, "relabel", label) for i in ids], create_labels)

    def trash(self, ids) -> EditResult:
        return self.apply([Decision(i, "trash") for i in ids])

    def restore(self, ids) -> EditResult:
        return self.apply([Decision(i, "restore") for i in ids])

    def undo(self, actor: str | None = None) -> EditResult:
        """Revert the latest edit batch (`actor`'s own latest, when given). Rows changed since are skipped."""
        return self._walk(undo=True, actor=actor)

    def redo(self, actor: str | None = None) -> EditResult:
        return self._walk(undo=False, actor=actor)

    @moves_files
    def _walk(self, undo: bool, actor: str | None = None) -> EditResult:
        marks = ",".join(f"'{a}'" for a in UNDOABLE)
        mine = "" if actor is None else " AND actor IS ?"
        args = () if actor is None else (actor,)
        with self._tx() as db:
            if undo:
                batch = db.execute(f"SELECT MAX(batch) FROM journal WHERE undone=0 AND action IN ({marks}){mine}",
                                   args).fetchone()[0]
            else:
                batch = db.execute(f"SELECT MIN(batch) FROM journal WHERE undone=1 AND action IN ({marks}){mine}",
                                   args).fetchone()[0]
            if batch is None:
                raise DragonError("nothing to undo" if undo else "nothing to redo")
            entries = db.execute("SELECT * FROM journal WHERE batch=? ORDER BY seq", (batch,)).fetchall()
            if undo:
                entries = entries[::-1]
            label_rows = [j for j in entries if j["image_id"] == LABEL_ROW]
            entries = [j for j in entries if j["image_id"] != LABEL_ROW]
            changed, skipped = [], []
            for j in entries:
                old = ("before", "after") if undo else ("after", "before")
                want_now = (j[f"{old[1]}_folder"], j[f"{old[1]}_status"], j[f"{old[1]}_kept"])
                target = (j[f"{old[0]}_folder"], j[f"{old[0]}_status"], j[f"{old[0]}_kept"])
                r = db.execute("SELECT folder, status, kept FROM images WHERE id=?", (j["image_id"],)).fetchone()
                if r is None or (r["folder"], r["status"], r["kept"]) != want_now:
                    skipped.append(j["image_id"])
                    continue
                db.execute("UPDATE images SET folder=?, status=?, kept=? WHERE id=?", (*target, j["image_id"]))
                changed.append(j["image_id"])
            said = self._walk_labels(db, label_rows, undo)  # after the pictures: a label goes only when empty
            db.execute("UPDATE journal SET undone=? WHERE batch=?", (1 if undo else 0, batch))
        self._sync_files(changed)
        self._tidy_label_folders(label_rows)
        return EditResult(batch, changed, [], skipped, said)

    def can_undo(self) -> bool:
        marks = ",".join(f"'{a}'" for a in UNDOABLE)
        return self._db.execute(f"SELECT 1 FROM journal WHERE undone=0 AND action IN ({marks}) LIMIT 1").fetchone() is not None

    def can_redo(self) -> bool:
        return self._db.execute("SELECT 1 FROM journal WHERE undone=1 LIMIT 1").fetchone() is not None

    def history(self, limit: int = 50) -> list[dict]:
        rows = self._db.execute("SELECT * FROM journal ORDER BY seq DESC LIMIT ?", (limit,))
        return [dict(r) for r in rows]

    @moves_files
    def empty_trash(self) -> int:
        """Delete trashed images for good: the only way files ever leave the store.

        The rows go first, then the files (fsynced). A crash in between leaves trash files that no row
        names, and the edit's marker: the next open deletes them (`recover`), so nothing emptied ever comes back.
        """
        with self._files():
            with self._tx() as db:
                ids = [r[0] for r in db.execute("SELECT id FROM images WHERE status='trashed'")]
                for image_id in ids:
                    db.execute("DELETE FROM images WHERE id=?", (image_id,))
                    db.execute("DELETE FROM journal WHERE image_id=?", (image_id,))
                    db.execute("DELETE FROM near_dups WHERE a=? OR b=?", (image_id, image_id))
                    db.execute("DELETE FROM conflicts WHERE image_id=?", (image_id,))
            for image_id in ids:
                (self.root / TRASH / f"{image_id}.jpg").unlink(missing_ok=True)
            if ids and (self.root / TRASH).is_dir():
                fsync_dir(self.root / TRASH)
        return len(ids)

    # ---- files vs manifest -------------------------------------------------------
    def _present_files(self) -> set[tuple[str, str]]:
        """(folder, file name) of every file in the label folders and the trash (links followed, as exists() does)."""
        out = set()
        with os.scandir(self.root) as top:
            for d in top:
                if d.is_dir(follow_symlinks=False) and (not d.name.startswith(".") or d.name == TRASH):
                    with os.scandir(d.path) as files:
                        out.update((d.name, f.name) for f in files if f.is_file())
        return out

    def _sync_files(self, ids: list[str] | None = None) -> list[str]:
        """Move files to where the manifest says they belong; return ids whose file is nowhere.

        Runs under the files lock, so no other process moves a file meanwhile: a file is
        always where one of the candidates says, never "nowhere" in between.
        """
        if ids is not None and not ids:
            return []
        with self._files():
            sql = "SELECT id, folder, status FROM images WHERE status IN ('active','trashed')"
            if ids is None:
                rows = self._db.execute(sql).fetchall()
                present = self._present_files()  # one listing per folder, not a stat per image (100,000 at open)
                rows = [r for r in rows if (TRASH if r["status"] == "trashed" else r["folder"], f"{r['id']}.jpg")
                        not in present]  # only the ones not where the manifest says are looked at below
            else:  # the images of one edit: read by key, not the whole manifest
                wanted = list(dict.fromkeys(ids))
                rows = [r for i in range(0, len(wanted), 500) for r in self._db.execute(
                    f"{sql} AND id IN ({','.join('?' * len(wanted[i:i + 500]))})", wanted[i:i + 500])]
            lost, touched = [], set()
            for r in rows:
                target = self._path(r["id"], r["folder"], r["status"])
                if target.exists():
                    continue
                found = next((p for p in self._candidates(r["id"]) if p.exists()), None)
                if found is None:
                    lost.append(r["id"])
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(found, target)
                touched |= {found.parent, target.parent}
            for d in touched:
                fsync_dir(d)
        return lost

