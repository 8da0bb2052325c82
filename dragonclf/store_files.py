"""Many processes, one dataset: who owns which temporary file, and what a crash leaves behind.

A part of `Store` (mixed in). The rules:

- Each open store that writes gets its own folder `.tmp/w-<token>/` and holds an
  exclusive flock on `.tmp/w-<token>.lock` for as long as it lives. The kernel
  drops the lock when the process ends, however it ends (SIGKILL included), so
  "can I take this lock?" is "is its writer dead?". Recovery touches only the
  leftovers of dead writers: their folders, and the pending rows they recorded
  (`images.writer`). A live collect in another process is never disturbed.
- File moves (ingest's rename, an edit's moves, a rescan's adoption, Empty
  trash's unlinks) run under one dataset-wide flock, `.files.lock`, so a rescan
  never sees a picture half way between folders, nor a new file before its row.
  Lock order everywhere: the store's thread lock, then the files lock, then
  SQLite's write lock; nothing waits for the files lock inside a transaction.
- Durability order: a file is fsynced, renamed, and its directory fsynced before
  the row that names it as active commits. A dead writer's pending row whose
  complete file reached its place (or its temp folder) is adopted, not deleted.
- Empty trash deletes the rows, then the files; a crash in between leaves files
  in `.trash/` that no row names, which the next open deletes (and reports).
- An edit that moves files (relabel, trash, restore, undo, redo, Empty trash, a
  label's rename, merge or delete: `layout.moves_files`) first writes a marker
  `moving-<id>` into its writer's folder, durably, and removes it once its files
  are where the manifest says. Opening a dataset runs
  the full check (one listing of every label folder and the trash: seconds at
  100,000 pictures) only when a dead writer left such a marker, or the manifest
  was last written by a version without markers; a clean open lists no folder.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import shutil
import sqlite3
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from dragonclf.errors import DragonError
from dragonclf.journal import TRASH
from dragonclf.layout import fsync_dir, write_durably

TMP = ".tmp"
FILES_LOCK = ".files.lock"
MOVING = "moving-"  # an edit's marker in its writer's folder, while its files may be out of place
RECOVERY = ("recovery", "markers-1")  # meta row: edits of this manifest leave markers (see `_moving`)
log = logging.getLogger(__name__)


class DiskFull(DragonError):
    """No space left where the dataset lives."""


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _process_gone(pid: str) -> bool:
    """Whether no process `pid` runs (a zombie counts as gone); unsure (not a number, not ours to ask): False."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (ValueError, OSError):
        return False
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


class StoreFiles:
    """Writer folders, the files lock and crash recovery; expects the Store's `root`, `_lock`, `_db`, `_tx`."""

    def _init_files(self) -> None:
        self._writer: str | None = None  # this store's token, once it has written
        self._writer_fd: int | None = None
        self._files_fd: int | None = None
        self._files_depth = 0

    def _close_files(self) -> None:
        for fd in (self._writer_fd, self._files_fd):
            if fd is not None:
                os.close(fd)  # releases the locks; our folder is now a dead writer's, for the next recovery
        self._writer_fd = self._files_fd = None

    # ---- the dataset-wide files lock ---------------------------------------------
    @contextmanager
    def _files(self, wait: bool = True):
        """Hold the files lock (re-entrant within this store): no other process moves files meanwhile.

        With `wait=False` it yields False instead of waiting when another process holds it.
        """
        with self._lock:
            if self._files_depth == 0:
                if self._files_fd is None:
                    self._files_fd = os.open(self.root / FILES_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(self._files_fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    yield False
                    return
            self._files_depth += 1
            try:
                yield True
            finally:
                self._files_depth -= 1
                if self._files_depth == 0:
                    fcntl.flock(self._files_fd, fcntl.LOCK_UN)

    # ---- this store's own temp folder ---------------------------------------------
    def _writer_dir(self) -> Path:
        """`.tmp/w-<token>/`, created (lock first) on the first write."""
        with self._lock:
            if self._writer is None:
                tmp = self.root / TMP
                tmp.mkdir(exist_ok=True)
                token = f"{os.getpid()}-{uuid.uuid4().hex[:10]}"
                # Locked under a private name, then named: no recoverer ever sees this lock unheld.
                fd = os.open(tmp / f".new-{token}", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.replace(tmp / f".new-{token}", tmp / f"w-{token}.lock")
                (tmp / f"w-{token}").mkdir()
                self._writer, self._writer_fd = token, fd
            return self.root / TMP / f"w-{self._writer}"

    def _write_tmp(self, norm) -> Path:
        tmp = self._writer_dir() / f"{norm.image_id}.{uuid.uuid4().hex[:8]}.part"
        try:
            write_durably(tmp, norm.jpeg)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def _forget_own_pending(self, image_id: str) -> None:
        """Undo this writer's unfinished add of `image_id` (its pending row and temp files), best effort."""
        try:
            if self._writer is not None:
                with self._tx() as db:
                    db.execute("DELETE FROM images WHERE id=? AND status='pending' AND writer=?", (image_id, self._writer))
                for part in self._writer_dir().glob(f"{image_id}.*.part"):
                    part.unlink(missing_ok=True)
        except (OSError, sqlite3.Error):
            pass  # the disk is still full: the row stays pending, and recovery finishes it after this process

    @contextmanager
    def _disk_full_is_a_message(self):
        """No space left (the file system or SQLite says so) -> DiskFull, a message; anything else as is."""
        try:
            yield
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise DiskFull(f"the disk holding dataset {self.name!r} is full; nothing more was stored. "
                           "Free some space and try again: what is stored is intact") from None
        except sqlite3.OperationalError as e:
            if "full" not in str(e):
                raise
            raise DiskFull(f"the disk holding dataset {self.name!r} is full (the manifest cannot grow); "
                           "free some space and try again: what is stored is intact") from None

    @contextmanager
    def _moving(self):
        """Around an edit's commit and its file moves: a durable marker that a crash leaves behind.

        Written and its folder entry fsynced before the edit commits, removed after its files
        moved. An edit refused by its own checks (a DragonError: raised inside its transaction,
        which rolls back) removes it; any other error leaves it, and once this process is gone
        the next open runs the full check.
        """
        marker = self._writer_dir() / f"{MOVING}{uuid.uuid4().hex[:12]}"
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        fsync_dir(marker.parent)
        try:
            yield
        except DragonError:
            marker.unlink(missing_ok=True)
            raise
        marker.unlink(missing_ok=True)  # not fsynced: a marker back from the dead costs one full check, no more

    def _place(self, tmp: Path, final: Path) -> None:
        """Rename a durable temp file into place and make the rename durable (call under `_files`)."""
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        fsync_dir(final.parent)

    # ---- recovery ------------------------------------------------------------------
    def _claim_if_dead(self, token: str) -> int | None:
        """A locked fd on `token`'s lock file when its writer is gone (None: alive, or ourselves)."""
        if token == self._writer:
            return None
        try:
            fd = os.open(self.root / TMP / f"w-{token}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # alive: its files are its own business
            return None
        return fd

    def recover(self, wait: bool = True, full: bool = False) -> dict:
        """Finish or roll back what dead writers left; safe while other processes work on the dataset.

        Returns what it did: adopted (pending rows whose complete file had reached disk),
        rolled_back, orphans (trash files of an interrupted Empty trash), writers cleaned and
        `full` (whether it listed every folder). A writer is alive while its lock is held; it
        takes the lock before it records anything. Files out of place are looked for (every
        folder listed) only when a dead writer left an edit's marker, the manifest predates
        markers, or `full` is asked for: a clean open of 100,000 pictures lists nothing.
        With `wait=False` (opening a dataset) it skips, reporting `busy`, while another process
        moves files: a `status` never waits for a long rescan elsewhere; the next open recovers.
        """
        report = {"adopted": [], "rolled_back": [], "orphans": [], "writers": 0, "busy": False, "full": False}
        tmp = self.root / TMP
        dead: dict[str, int] = {}  # token -> our fd holding its lock
        with self._files(wait) as held:
            if not held:
                report["busy"] = True
                return report
            try:
                tokens = {p.name[2:].removesuffix(".lock") for p in tmp.iterdir() if p.name.startswith("w-")} \
                    if tmp.is_dir() else set()
                rows = self._db.execute("SELECT id, folder, sha256, writer FROM images WHERE status='pending'").fetchall()
                for token in sorted(tokens | {r["writer"] for r in rows if r["writer"]}):
                    fd = self._claim_if_dead(token)
                    if fd is not None:
                        dead[token] = fd
                for r in rows:
                    if r["writer"] is None or r["writer"] in dead:  # (no writer: a version before writer folders)
                        self._finish_pending(r, tmp / f"w-{r['writer']}" if r["writer"] else None, report)
                marked = self._db.execute("SELECT value FROM meta WHERE key=?", RECOVERY[:1]).fetchone()
                legacy = marked is None or marked[0] != RECOVERY[1]
                if full or legacy or any(next((tmp / f"w-{t}").glob(f"{MOVING}*"), None) for t in dead):
                    # Before the dead writers' folders go: killed in here, their markers make the next open redo it.
                    report["orphans"] = self._finish_empty_trash()
                    self._sync_files()
                    report["full"] = True
                    if legacy:
                        with self._tx() as db:
                            db.execute("INSERT OR REPLACE INTO meta VALUES (?,?)", RECOVERY)
                for token in dead:
                    shutil.rmtree(tmp / f"w-{token}", ignore_errors=True)
                    (tmp / f"w-{token}.lock").unlink(missing_ok=True)
                    report["writers"] += 1
                if tmp.is_dir():
                    for p in tmp.iterdir():
                        if p.is_file() and p.name.endswith(".part"):  # temp files of versions before writer folders
                            p.unlink(missing_ok=True)
                        elif p.name.startswith(".new-") and _process_gone(p.name[5:].split("-")[0]):
                            p.unlink(missing_ok=True)  # a lock file its writer was killed before naming
            finally:
                for fd in dead.values():
                    os.close(fd)
        if any(report[k] for k in ("adopted", "rolled_back", "orphans")):
            log.info("dataset %r: recovered after a crash: %s", self.name,
                     {k: len(v) if isinstance(v, list) else v for k, v in report.items()})
        return report

    def _finish_pending(self, r, writer_dir: Path | None, report: dict) -> None:
        final = self.root / r["folder"] / f"{r['id']}.jpg"
        if _sha256(final) != r["sha256"] and writer_dir is not None and writer_dir.is_dir():
            for part in writer_dir.glob(f"{r['id']}.*.part"):
                if _sha256(part) == r["sha256"]:  # complete: it was fsynced before its row committed
                    self._place(part, final)
                    break
        if _sha256(final) == r["sha256"]:
            with self._tx() as db:
                db.execute("UPDATE images SET status='active', writer=NULL WHERE id=? AND status='pending'", (r["id"],))
                db.execute("INSERT INTO journal(batch, image_id, action, after_folder, after_status, after_kept, at)"
                           " VALUES (?,?,'add',?,'active',0,?)", (self._next_batch(db), r["id"], r["folder"], time.time()))
            report["adopted"].append(r["id"])
            return
        with self._tx() as db:
            db.execute("DELETE FROM images WHERE id=? AND status='pending'", (r["id"],))
        final.unlink(missing_ok=True)  # (a wrong file under that name: never a stored picture)
        report["rolled_back"].append(r["id"])

    def _finish_empty_trash(self) -> list[str]:
        """Delete `.trash/` files that no row names: what an interrupted Empty trash left."""
        trash = self.root / TRASH
        if not trash.is_dir():
            return []
        named = {r[0] for r in self._db.execute("SELECT id FROM images")}
        orphans = [p for p in trash.iterdir() if p.suffix == ".jpg" and p.stem not in named]
        for p in orphans:
            p.unlink(missing_ok=True)
        if orphans:
            fsync_dir(trash)
        return sorted(p.stem for p in orphans)
