"""The dataset store: a folder per label plus a SQLite manifest that never loses an image.

Layout (the one fastai, torchvision's ImageFolder and people already know):

    datasets/<name>/<label folder>/<id>.jpg     active images
    datasets/<name>/.trash/<id>.jpg             trashed images (restorable)
    datasets/<name>/manifest.sqlite             rows, provenance, journal (WAL)

Rules that keep it safe:
- the manifest is the truth about where a file belongs: an edit commits the
  manifest first, then moves files; `_sync_files` finishes any move a crash
  interrupted, on the next open;
- a new image is written to `.tmp/`, recorded as "pending", renamed into place,
  then marked active; a crash leaves either nothing or a pending row that the
  next open rolls back;
- nothing is deleted except by `empty_trash`; every edit is journalled in
  batches that `undo`/`redo` walk.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dragonclf import config
from dragonclf.config import IngestConfig
from dragonclf.errors import DragonError
from dragonclf.journal import EDIT_ACTIONS, TRASH, Decision, EditResult, Journal  # noqa: F401 - re-exported
from dragonclf.labels import LabelChange, LabelEdits  # noqa: F401 - LabelChange re-exported
from dragonclf.layout import MANIFEST_CSV, PROVENANCE_KEYS  # noqa: F401 - re-exported
from dragonclf.names import NameClash, check_dataset_name, clash_message, clean_display, folder_for
from dragonclf.rescan import Rescan
from dragonclf.store_files import StoreFiles
from dragonclf.store_ingest import Adding, IngestResult, Label, Tally  # noqa: F401 - re-exported
from dragonclf.store_queries import PAGE_INDEXES, Page, Queries  # noqa: F401 - Page re-exported

MANIFEST = "manifest.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS labels(
    folder TEXT PRIMARY KEY, display TEXT NOT NULL UNIQUE, created_at REAL);
CREATE TABLE IF NOT EXISTS images(
    id TEXT PRIMARY KEY, sha256 TEXT, pixel_sha TEXT, phash TEXT, width INT, height INT,
    folder TEXT NOT NULL, status TEXT NOT NULL, split_key REAL NOT NULL, kept INT NOT NULL DEFAULT 0,
    origin TEXT, source TEXT, query TEXT, engine TEXT, image_url TEXT, page_url TEXT,
    title TEXT, license TEXT, added_at REAL, writer TEXT);
CREATE INDEX IF NOT EXISTS images_folder ON images(folder, status);
CREATE INDEX IF NOT EXISTS images_phash_b0 ON images(substr(phash, 1, 4));
CREATE INDEX IF NOT EXISTS images_phash_b1 ON images(substr(phash, 5, 4));
CREATE INDEX IF NOT EXISTS images_phash_b2 ON images(substr(phash, 9, 4));
CREATE INDEX IF NOT EXISTS images_phash_b3 ON images(substr(phash, 13, 4));
CREATE TABLE IF NOT EXISTS journal(
    seq INTEGER PRIMARY KEY AUTOINCREMENT, batch INT NOT NULL, image_id TEXT NOT NULL,
    action TEXT NOT NULL, before_folder TEXT, after_folder TEXT, before_status TEXT,
    after_status TEXT, before_kept INT, after_kept INT, at REAL,
    undone INT NOT NULL DEFAULT 0, actor TEXT,  -- 0 done, 1 undone (redo-able), 2 undone and superseded
    before_label TEXT, after_label TEXT);  -- label rows (labels.py): the label's name before and after
CREATE INDEX IF NOT EXISTS journal_batch ON journal(batch);
CREATE TABLE IF NOT EXISTS conflicts(
    image_id TEXT, folder TEXT, source TEXT, at REAL, PRIMARY KEY(image_id, folder));
CREATE TABLE IF NOT EXISTS near_dups(a TEXT, b TEXT, distance INT, PRIMARY KEY(a, b));
CREATE TABLE IF NOT EXISTS urls(url TEXT PRIMARY KEY, outcome TEXT, reason TEXT, at REAL);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
"""


@dataclass
class ImageRow:
    id: str
    path: Path
    label: str
    folder: str
    sha256: str
    phash: str
    width: int
    height: int
    split: str
    split_key: float
    status: str
    kept: bool
    origin: str | None
    source: str | None
    query: str | None
    engine: str | None
    image_url: str | None
    page_url: str | None
    title: str | None
    license: str | None
    added_at: float


def list_datasets() -> list[str]:
    """Datasets under the root, plus the bundled demo (installed on first open)."""
    names = set()
    root = config.datasets_root()
    if root.is_dir():
        names = {p.name for p in root.iterdir() if (p / MANIFEST).exists()}
    if (config.BUNDLED_DATASETS / config.DEMO_DATASET).is_dir():
        names.add(config.DEMO_DATASET)
    return sorted(names)


_open_lock = threading.Lock()
_open_stores: dict[Path, "Store"] = {}


def close_all(under: Path | None = None) -> None:
    """Close every open store (those under `under` only, when given): the next `Store.open` reads afresh."""
    with _open_lock:
        stores = [s for s in _open_stores.values() if under is None or s.root.is_relative_to(under)]
    for s in stores:
        s.close()


class Store(Adding, Journal, LabelEdits, Rescan, Queries, StoreFiles):
    """One dataset: its folders and its manifest. Safe to share between threads and processes.

    Each thread reads through its own SQLite connection (WAL: a read sees only
    committed rows, never another thread's open transaction); writes queue on
    the store's lock and SQLite's (BEGIN IMMEDIATE, 30 s busy timeout).
    """

    def __init__(self, root: Path, name: str):
        self.root = root
        self.name = name
        self.db_path = root / MANIFEST
        self._lock = threading.RLock()
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._closed = False
        self._init_files()
        db = self._db
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA + PAGE_INDEXES)
        if "actor" not in {r[1] for r in db.execute("PRAGMA table_info(journal)")}:  # manifests before 'actor'
            db.execute("ALTER TABLE journal ADD COLUMN actor TEXT")
        for column in ("before_label", "after_label"):  # manifests before label edits
            if column not in {r[1] for r in db.execute("PRAGMA table_info(journal)")}:
                db.execute(f"ALTER TABLE journal ADD COLUMN {column} TEXT")
        if "writer" not in {r[1] for r in db.execute("PRAGMA table_info(images)")}:  # manifests before writer folders
            db.execute("ALTER TABLE images ADD COLUMN writer TEXT")
        self._inode = os.stat(self.db_path).st_ino

    def same_manifest(self) -> bool:
        """Whether the manifest this store opened is still the one at its path (not deleted, moved, replaced)."""
        try:
            return os.stat(self.db_path).st_ino == self._inode
        except FileNotFoundError:
            return False

    @property
    def _db(self) -> sqlite3.Connection:
        """This thread's connection to the manifest."""
        db = getattr(self._local, "db", None)
        if db is None:
            if self._closed:
                raise DragonError(f"dataset {self.name!r} was closed")
            db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
            with self._lock:
                self._conns.append(db)
        return db

    # ---- opening -----------------------------------------------------------------
    @classmethod
    def open(cls, name: str, create: bool = False) -> "Store":
        """Open dataset `name` under the root; `create=True` makes it if missing."""
        name = check_dataset_name(name)
        root = config.datasets_root() / name
        with _open_lock:
            cached = _open_stores.get(root)
            if cached is not None and cached.same_manifest():
                return cached
            fresh = not (root / MANIFEST).exists()
            if fresh:
                bundled = config.BUNDLED_DATASETS / name
                if name == config.DEMO_DATASET and bundled.is_dir():
                    if bundled.resolve() != root.resolve():
                        # What ships (photos, manifest.csv), not a manifest the app wrote when run in place.
                        shutil.copytree(bundled, root, dirs_exist_ok=True,
                                        ignore=shutil.ignore_patterns(MANIFEST + "*", ".tmp", ".files.lock"))
                elif not create and not root.is_dir():
                    known = ", ".join(list_datasets()) or "none yet"
                    raise DragonError(f"no dataset named {name!r} (datasets: {known}); create it first")
                root.mkdir(parents=True, exist_ok=True)
            store = cls(root, name)
            store.recover(wait=False)
            if fresh:
                store.restore_manifest_csv()  # bundled datasets ship a CSV manifest
                store.rescan()
            _open_stores[root] = store
            return store

    def close(self) -> None:
        """Close this store's connections; `Store.open` then opens a fresh one (another instance is left open)."""
        with _open_lock:
            if _open_stores.get(self.root) is self:
                del _open_stores[self.root]
        with self._lock:
            self._closed = True
            for db in self._conns:
                db.close()
            self._conns.clear()
            self._close_files()

    @contextmanager
    def held_still(self):
        """For moving or deleting the whole dataset: hold its files lock; refuse while pictures are being added."""
        with self._lock, self._files():
            if self._db.execute("SELECT 1 FROM images WHERE status='pending' LIMIT 1").fetchone():
                self.recover()  # a stopped writer's leftovers are finished first
            if self._db.execute("SELECT 1 FROM images WHERE status='pending' LIMIT 1").fetchone():
                raise DragonError(f"pictures are being added to {self.name!r} right now (a collect or import); "
                                  "try again when it has finished")
            yield

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the manifest file (so a plain copy of the file holds every row)."""
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @contextmanager
    def _tx(self):
        """One write transaction (BEGIN IMMEDIATE: writers queue, readers go on)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ---- labels ------------------------------------------------------------------
    def labels(self) -> list[Label]:
        rows = self._db.execute(
            "SELECT l.folder, l.display, COUNT(i.id) AS n FROM labels l LEFT JOIN images i "
            "ON i.folder = l.folder AND i.status = 'active' GROUP BY l.folder ORDER BY l.display COLLATE NOCASE"
        ).fetchall()
        return [Label(r["display"], r["folder"], r["n"]) for r in rows]

    def label(self, name: str) -> Label:
        """A label by its display name (tidied as `clean_display` does); DragonError if there is none.

        A name that is not a label but maps to an existing label's folder (e.g. "cat"
        when "Cat" exists) is a `NameClash`, never silently the other label.
        """
        row = self._db.execute("SELECT folder, display FROM labels WHERE display=?", (name,)).fetchone()
        if row is None:
            try:
                tidy = clean_display(name)
                folder = folder_for(tidy)
            except DragonError:
                tidy = folder = None
            if tidy is not None:
                row = self._db.execute("SELECT folder, display FROM labels WHERE display=?", (tidy,)).fetchone()
            if row is None and folder is not None:
                taken = self._db.execute("SELECT folder, display FROM labels WHERE folder=?", (folder,)).fetchone()
                if taken is not None:
                    raise NameClash(clash_message(tidy, folder, taken["display"]))
        if row is None:
            raise DragonError(f"label {name!r} does not exist in {self.name!r}; create it first")
        return Label(row["display"], row["folder"])

    def add_label(self, display: str) -> Label:
        """Create a label (or return it if this exact name exists)."""
        display = clean_display(display)
        folder = folder_for(display)
        with self._tx() as db:
            row = db.execute("SELECT display FROM labels WHERE folder=?", (folder,)).fetchone()
            if row is not None:
                if row["display"] == display:
                    return Label(display, folder)
                raise NameClash(clash_message(display, folder, row["display"]))
            db.execute("INSERT INTO labels VALUES (?,?,?)", (folder, display, time.time()))
        (self.root / folder).mkdir(parents=True, exist_ok=True)
        return Label(display, folder)

    def label_or_create(self, name: str) -> Label:
        """The label called `name`, created when there is none (a `NameClash` is never merged)."""
        try:
            return self.label(name)
        except NameClash:
            raise
        except DragonError:
            return self.add_label(name)

    # ---- paths -------------------------------------------------------------------
    def _path(self, image_id: str, folder: str, status: str) -> Path:
        if status == "trashed":
            return self.root / TRASH / f"{image_id}.jpg"
        return self.root / folder / f"{image_id}.jpg"

    def _candidates(self, image_id: str) -> list[Path]:
        """Where a picture's file may be: every label folder, folders of labels renamed or deleted (a move a
        crash interrupted), the trash."""
        folders = {r["folder"] for r in self._db.execute("SELECT folder FROM labels")}
        with os.scandir(self.root) as entries:
            folders |= {d.name for d in entries if not d.name.startswith(".") and d.is_dir(follow_symlinks=False)}
        return [self.root / f / f"{image_id}.jpg" for f in sorted(folders)] + [self.root / TRASH / f"{image_id}.jpg"]

    def _display(self, folder: str) -> str:
        row = self._db.execute("SELECT display FROM labels WHERE folder=?", (folder,)).fetchone()
        return row["display"] if row else folder

    # ---- reading -----------------------------------------------------------------
    def images(self, status: str | None = "active", label: str | None = None, split: str | None = None,
               valid_share: float = IngestConfig.valid_share) -> list[ImageRow]:
        """Images in the manifest (status None: all but pending), oldest first."""
        sql = "SELECT i.*, l.display FROM images i LEFT JOIN labels l ON l.folder = i.folder WHERE i.status != 'pending'"
        args: list = []
        if status is not None:
            sql += " AND i.status = ?"
            args.append(status)
        if label is not None:
            sql += " AND i.folder = ?"
            args.append(self.label(label).folder)
        rows = [self._row(r, valid_share) for r in self._db.execute(sql + " ORDER BY i.added_at, i.id", args)]
        if split is not None:
            rows = [r for r in rows if r.split == split]
        return rows

    def image(self, image_id: str) -> ImageRow:
        r = self._db.execute(
            "SELECT i.*, l.display FROM images i LEFT JOIN labels l ON l.folder = i.folder WHERE i.id=?", (image_id,)
        ).fetchone()
        if r is None or r["status"] == "pending":
            raise DragonError(f"no image {image_id!r} in dataset {self.name!r}")
        return self._row(r)

    def _row(self, r: sqlite3.Row, valid_share: float = IngestConfig.valid_share) -> ImageRow:
        return ImageRow(
            id=r["id"], path=self._path(r["id"], r["folder"], r["status"]), label=r["display"] or r["folder"],
            folder=r["folder"], sha256=r["sha256"], phash=r["phash"], width=r["width"], height=r["height"],
            split="valid" if r["split_key"] < valid_share else "train", split_key=r["split_key"],
            status=r["status"], kept=bool(r["kept"]), added_at=r["added_at"],
            **{k: r[k] for k in PROVENANCE_KEYS},
        )

    def status(self) -> dict:
        labels = {lab.display: lab.count for lab in self.labels()}
        trashed = self._db.execute("SELECT COUNT(*) FROM images WHERE status='trashed'").fetchone()[0]
        return {
            "labels": labels,
            "trashed": trashed,
            "near_duplicate_groups": len(self.near_duplicate_groups()),
            "conflicts": len(self.conflicts()),
        }

    def conflicts(self) -> list[dict]:
        """Images that arrived under a second label: the same picture, two answers."""
        rows = self._db.execute(
            "SELECT c.image_id, c.folder AS other, c.source, i.folder FROM conflicts c JOIN images i ON i.id = c.image_id"
            " WHERE i.status = 'active' AND i.folder != c.folder ORDER BY c.at"
        )
        return [
            {"image_id": r["image_id"], "label": self._display(r["folder"]), "other_label": self._display(r["other"]),
             "source": r["source"]}
            for r in rows
        ]

    def near_duplicate_groups(self) -> list[list[str]]:
        """Clusters (size >= 2) of active images whose perceptual hashes are close."""
        parent: dict[str, str] = {}

        def find(x):
            while parent.setdefault(x, x) != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        pairs = self._db.execute(  # only the recorded pairs are read, never every image
            # CROSS JOIN keeps this order (pairs, then each side by primary key): left to itself the planner
            # may walk the status index of both sides, pairs x pairs of images.
            "SELECT n.a, n.b FROM near_dups n CROSS JOIN images x ON x.id = n.a CROSS JOIN images y ON y.id = n.b"
            " WHERE x.status = 'active' AND y.status = 'active'")
        for a, b in pairs:
            parent[find(a)] = find(b)
        groups: dict[str, list[str]] = {}
        for x in list(parent):
            groups.setdefault(find(x), []).append(x)
        return sorted((sorted(g) for g in groups.values() if len(g) > 1), key=len, reverse=True)

    def seen_url(self, url: str) -> bool:
        return self._db.execute("SELECT 1 FROM urls WHERE url=?", (url,)).fetchone() is not None

    def mark_url(self, url: str, outcome: str, reason: str | None = None) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO urls VALUES (?,?,?,?)", (url, outcome, reason, time.time()))

    def record_stored_urls(self) -> int:
        """Mark "added" the URLs of images a collect stored but was killed before it could record the URL."""
        with self._tx() as db:
            return db.execute(
                "INSERT OR IGNORE INTO urls SELECT source, 'added', NULL, ? FROM images"
                " WHERE origin='url' AND COALESCE(source, '') != '' AND status != 'pending'", (time.time(),)
            ).rowcount

    def url_outcomes(self) -> dict[str, tuple[str, str | None]]:
        return {r[0]: (r[1], r[2]) for r in self._db.execute("SELECT url, outcome, reason FROM urls")}
