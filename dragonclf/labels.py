"""Managing labels: rename, merge, delete; each one journalled batch that Undo and Redo walk.

A part of `Store` (mixed in). A label is a row of `labels` (its folder and the name people
see) and the pictures whose `folder` is that folder. An edit here commits, in one batch:

- a journal row per picture it moves (action "relabel", or "trash" for a deleted label), the
  same rows a Clean decision writes, so Undo/Redo put each picture back where it was;
- one *label row* (image id "", actions in `LABEL_ACTIONS`): the `labels` row before
  (`before_folder`, `before_label`) and after (`after_folder`, `after_label`); None is "no row".

then moves the files. Deleting a label moves its pictures to the trash (nothing is lost);
restoring one of them from the trash brings the label back ("revive-label"). Models trained
before keep the class names they were trained with (model.json lists them): retrain to use
the new names.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from dragonclf import split_keys
from dragonclf.errors import DragonError
from dragonclf.journal import LABEL_ROW, TRASH
from dragonclf.layout import fsync_dir, moves_files
from dragonclf.names import NameClash, clash_message, clean_display, folder_for, is_doc

MODELS_NOTE = "Models trained before keep the class names they were trained with; train again to use the new ones."


def forget_split_counts(db, *folders: str | None) -> None:
    """Pictures changed label wholesale: the labels' validation-split counts are counted again on next arrival."""
    for folder in {f for f in folders if f}:
        db.execute("DELETE FROM meta WHERE key=?", (split_keys.counts_key(folder),))


@dataclass
class LabelChange:
    """What a label edit did, in words, with its journal batch (one Undo step)."""

    batch: int | None
    message: str
    moved: int  # pictures moved to another folder or to the trash
    label: str | None  # the label's name afterwards (None: it is gone)


class LabelEdits:
    """Label edits; expects the Store's `_tx`, `_db`, `_lock`, `_files`, `root`, `label`, `_sync_files`."""

    # ---- the three edits -------------------------------------------------------------
    def rename_label(self, name: str, new: str, actor: str | None = None) -> LabelChange:
        """Give label `name` the name `new`; its pictures move to the new name's folder.

        Refused with a clear message: an invalid name, a name another label has (merge instead),
        a name whose folder another label has. A change of case or spacing that maps to the same
        folder only changes the name people see.
        """
        lab = self.label(name)
        new = clean_display(new)
        if new == lab.display:
            raise DragonError(f"label {lab.display!r} is already called that")
        folder = folder_for(new)
        taken = self._db.execute("SELECT folder, display FROM labels WHERE (display=? OR folder=?) AND folder != ?",
                                 (new, folder, lab.folder)).fetchone()
        if taken is not None and taken["display"] == new:
            raise DragonError(f"a label named {new!r} already exists in {self.name!r}; to put the pictures of "
                              f"{lab.display!r} into it, merge {lab.display!r} into {new!r}")
        if taken is not None:
            raise NameClash(clash_message(new, folder, taken["display"])
                            + f" (or merge {lab.display!r} into {taken['display']!r})")
        batch, ids = self._label_edit("rename-label", lab.display, lab.folder, (folder, new), "relabel", actor)
        self._tidy_folder(lab.folder, into=folder)
        how = f"{len(ids)} pictures moved to the folder {folder!r}" if folder != lab.folder else "same folder"
        return LabelChange(batch, f"Renamed label {lab.display!r} to {new!r} ({how}). {MODELS_NOTE}", len(ids), new)

    def merge_labels(self, source: str, into: str, actor: str | None = None) -> LabelChange:
        """Move every picture of label `source` into label `into` (which must exist); `source` is gone."""
        src = self.label(source)
        try:
            dst = self.label(into)
        except NameClash:
            raise
        except DragonError:
            raise DragonError(f"there is no label {into!r} to merge {src.display!r} into; "
                              f"to give {src.display!r} a new name, rename it") from None
        if dst.folder == src.folder:
            raise DragonError(f"cannot merge label {src.display!r} into itself")
        batch, ids = self._label_edit("merge-label", src.display, src.folder, None, "relabel", actor, dst.folder)
        self._tidy_folder(src.folder, into=dst.folder)
        return LabelChange(batch, f"Merged label {src.display!r} into {dst.display!r}: {len(ids)} pictures moved. "
                                  f"{MODELS_NOTE}", len(ids), dst.display)

    def delete_label(self, name: str, actor: str | None = None) -> LabelChange:
        """Remove label `name`; its pictures go to the trash (Undo, or restoring one, brings the label back)."""
        lab = self.label(name)
        batch, ids = self._label_edit("delete-label", lab.display, lab.folder, None, "trash", actor)
        left = self._tidy_folder(lab.folder, into=None)
        extra = (f" The folder {lab.folder!r} still holds {left} files the dataset does not know (put there by hand);"
                 " they were left where they are." if left else "")
        return LabelChange(batch, f"Deleted label {lab.display!r}: its {len(ids)} pictures are in the trash. Undo "
                                  f"brings them back.{extra}", len(ids), None)

    def forget_label_if_empty(self, name: str) -> bool:
        """Remove a label that has never held a picture (e.g. made by a collect whose search failed).

        Not journalled: making the label was not either. A label with any picture, in any state, stays.
        Conflicts recorded under it go too (those pictures are stored under other labels; the run's report
        counted them).
        """
        with self._lock, self._files():
            with self._tx() as db:
                row = db.execute("SELECT folder FROM labels WHERE display=?", (name,)).fetchone()
                if row is None or db.execute("SELECT 1 FROM images WHERE folder=? LIMIT 1", (row[0],)).fetchone():
                    return False
                db.execute("DELETE FROM labels WHERE folder=?", (row[0],))
                db.execute("DELETE FROM conflicts WHERE folder=?", (row[0],))  # pictures stored under other labels
            self._tidy_folder(row[0], into=None)
        return True

    # ---- one batch -------------------------------------------------------------------
    @moves_files  # committed, then the files move: a crash in between is finished on the next open
    def _label_edit(self, action: str, display: str, folder: str, after: tuple[str, str] | None, move: str,
                    actor: str | None, into: str | None = None) -> tuple[int, list[str]]:
        """Commit one label edit: pictures moved (`move` "relabel" to `into` or after's folder, or "trash"),
        the `labels` row replaced by `after` (or removed), one journal batch; then move the files."""
        target = into or (after[0] if after else None)
        with self._lock, self._files():
            with self._tx() as db:
                row = db.execute("SELECT display FROM labels WHERE folder=?", (folder,)).fetchone()
                if row is None or row["display"] != display:
                    raise DragonError(f"label {display!r} changed meanwhile (someone else edited it); look again")
                if db.execute("SELECT 1 FROM images WHERE folder=? AND status='pending' LIMIT 1", (folder,)).fetchone():
                    raise DragonError(f"pictures are being added to {display!r} right now (a collect or import); "
                                      "try again when it has finished")
                batch = self._next_batch(db)
                now = time.time()
                if move == "trash":
                    ids = [r[0] for r in db.execute("SELECT id FROM images WHERE folder=? AND status='active'",
                                                    (folder,))]
                    db.execute(
                        "INSERT INTO journal(batch, image_id, action, before_folder, after_folder, before_status,"
                        " after_status, before_kept, after_kept, at, actor) SELECT ?, id, 'trash', folder, folder,"
                        " 'active', 'trashed', kept, kept, ?, ? FROM images WHERE folder=? AND status='active'",
                        (batch, now, actor, folder))
                    db.execute("UPDATE images SET status='trashed' WHERE folder=? AND status='active'", (folder,))
                elif target != folder:
                    ids = [r[0] for r in db.execute("SELECT id FROM images WHERE folder=?", (folder,))]
                    db.execute(
                        "INSERT INTO journal(batch, image_id, action, before_folder, after_folder, before_status,"
                        " after_status, before_kept, after_kept, at, actor) SELECT ?, id, 'relabel', folder, ?,"
                        " status, status, kept, kept, ?, ? FROM images WHERE folder=?",
                        (batch, target, now, actor, folder))
                    db.execute("UPDATE images SET folder=? WHERE folder=?", (target, folder))
                else:
                    ids = []
                self._set_label(db, (folder, display), after)
                forget_split_counts(db, folder, target)
                db.execute(
                    "INSERT INTO journal(batch, image_id, action, before_folder, after_folder, before_label, after_label,"
                    " at, actor) VALUES (?,?,?,?,?,?,?,?,?)",
                    (batch, LABEL_ROW, action, folder, after[0] if after else None, display,
                     after[1] if after else None, now, actor))
                self._end_redo_chain(db, actor)
            if ids and move == "relabel" and self._move_whole_folder(folder, target):
                return batch, ids
            self._sync_files(ids)
        return batch, ids

    @staticmethod
    def _end_redo_chain(db, actor: str | None) -> None:
        """A new edit ends the redo chain (the editor's own, when we know who), as `apply` does."""
        if actor is None:
            db.execute("UPDATE journal SET undone=2 WHERE undone=1")
        else:
            db.execute("UPDATE journal SET undone=2 WHERE undone=1 AND actor IS ?", (actor,))

    # ---- the labels table, forwards and backwards ------------------------------------------
    def _set_label(self, db, now: tuple[str, str] | None, then: tuple[str, str] | None) -> None:
        """Replace the `labels` row `now` (folder, name) by `then`; None is no row. DragonError on a clash."""
        if now == then:
            return
        created = None
        if now is not None:
            row = db.execute("SELECT created_at FROM labels WHERE folder=? AND display=?", now).fetchone()
            if row is None:
                raise DragonError(f"the label {now[1]!r} has changed since (renamed, merged or deleted); "
                                  "change it back first")
            created = row["created_at"]
            db.execute("DELETE FROM labels WHERE folder=?", (now[0],))
        if then is not None:
            if db.execute("SELECT 1 FROM labels WHERE folder=? AND display=?", then).fetchone():
                return  # already there (brought back meanwhile)
            taken = db.execute("SELECT display FROM labels WHERE folder=? OR display=?", then).fetchone()
            if taken is not None:
                raise DragonError(f"the name {then[1]!r} (folder {then[0]!r}) is taken by the label "
                                  f"{taken['display']!r} now; rename that one first")
            db.execute("INSERT INTO labels VALUES (?,?,?)", (then[0], then[1], created or time.time()))
            if now is not None and now[0] != then[0]:  # a rename: conflicts recorded under the old folder follow it
                db.execute("UPDATE OR IGNORE conflicts SET folder=? WHERE folder=?", (then[0], now[0]))

    def _walk_labels(self, db, entries, undo: bool) -> list[str]:
        """Undo (or redo) the label rows of one batch, after its pictures; returns what changed, in words.

        Refuses (DragonError, nothing changes) when a label was changed since, or when a label would be
        removed while active pictures are still in its folder (added since).
        """
        said = []
        for j in entries:
            before = (j["before_folder"], j["before_label"]) if j["before_folder"] else None
            after = (j["after_folder"], j["after_label"]) if j["after_folder"] else None
            now, then = (after, before) if undo else (before, after)
            self._set_label(db, now, then)
            forget_split_counts(db, j["before_folder"], j["after_folder"])
            if now is not None and then is None and db.execute(
                    "SELECT 1 FROM images WHERE folder=? AND status IN ('active','pending') LIMIT 1", (now[0],)).fetchone():
                raise DragonError(f"label {now[1]!r} has pictures added since; move or trash them first")
            said.append(f"label {then[1]!r} is back" if now is None else
                        f"label {now[1]!r} is gone again" if then is None else
                        f"label {now[1]!r} is called {then[1]!r} again" if undo else
                        f"label {now[1]!r} is called {then[1]!r}")
        return said

    def _revive_labels(self, db, batch: int, ids: list[str], actor: str | None) -> None:
        """Pictures restored from the trash whose label was deleted (or merged away) bring it back."""
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            orphans = [r[0] for r in db.execute(
                f"SELECT DISTINCT folder FROM images WHERE status='active' AND id IN ({','.join('?' * len(chunk))})"
                " AND folder NOT IN (SELECT folder FROM labels)", chunk)]
            for folder in orphans:
                gone = db.execute("SELECT before_label FROM journal WHERE image_id=? AND before_folder=? AND"
                                  " after_folder IS NULL ORDER BY seq DESC LIMIT 1", (LABEL_ROW, folder)).fetchone()
                display = gone[0] if gone else folder
                self._set_label(db, None, (folder, display))
                db.execute("INSERT INTO journal(batch, image_id, action, after_folder, after_label, at, actor)"
                           " VALUES (?,?,'revive-label',?,?,?,?)", (batch, LABEL_ROW, folder, display, time.time(), actor))

    # ---- folders -------------------------------------------------------------------
    def _move_whole_folder(self, folder: str, target: str) -> bool:
        """Rename the folder itself when the target has no folder yet (one atomic step); False if it has one."""
        src, dst = self.root / folder, self.root / target
        try:
            if dst.is_dir():
                dst.rmdir()  # an empty leftover only; a folder with files raises and files move one by one
            os.rename(src, dst)
        except OSError:
            return False
        fsync_dir(self.root)
        return True

    def _tidy_folder(self, folder: str, into: str | None) -> int:
        """After an edit took a label's pictures away: move files the manifest does not know into `into`
        (the same pictures' new label), remove the folder when empty; returns how many files stay."""
        d = self.root / folder
        if not d.is_dir() or d.is_symlink() or self._db.execute("SELECT 1 FROM labels WHERE folder=?", (folder,)).fetchone():
            return 0
        with self._files():
            left = 0
            for p in list(d.iterdir()):
                dest = self.root / into / p.name if into else None
                if dest is not None and p.is_file() and not is_doc(p.name) and not dest.exists():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(p, dest)
                else:
                    left += 1
            if not left:
                try:
                    d.rmdir()
                except OSError:
                    return 0
        return left

    def _tidy_label_folders(self, entries) -> None:
        """After an undo or redo of label rows: remove the folders of labels that are gone, when empty."""
        for j in entries:
            for folder in (j["before_folder"], j["after_folder"]):
                if folder and folder != TRASH:
                    d = self.root / folder
                    if d.is_dir() and not any(d.iterdir()) and not self._db.execute(
                            "SELECT 1 FROM labels WHERE folder=?", (folder,)).fetchone():
                        try:
                            d.rmdir()
                        except OSError:
                            pass  # something arrived meanwhile: it stays
