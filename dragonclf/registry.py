"""The access registry: owners, display names, public flags, shares, quotas and visits, in SQLite.

One database under the root (`<root>/access.sqlite`); this module owns its SQL. The
rules that read it are in `dragonclf.access`; the limits in `dragonclf.quotas`.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from pathlib import Path

from dragonclf import config
from dragonclf.errors import DragonError
from dragonclf.names import check_dataset_name
from dragonclf.store import Store

DEPLOYMENT = "space"  # the owner of datasets the whole deployment owns (admins manage them)

SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets(
    name TEXT PRIMARY KEY, owner TEXT NOT NULL, display TEXT NOT NULL, public INT NOT NULL DEFAULT 0,
    created REAL, UNIQUE(owner, display));
CREATE TABLE IF NOT EXISTS shares(dataset TEXT, person TEXT, role TEXT, PRIMARY KEY(dataset, person));
CREATE TABLE IF NOT EXISTS models(dataset TEXT, model TEXT, public INT NOT NULL DEFAULT 0,
    PRIMARY KEY(dataset, model));
CREATE TABLE IF NOT EXISTS settings(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS usage(person TEXT, kind TEXT, at REAL);
CREATE INDEX IF NOT EXISTS usage_person ON usage(person, kind, at);
CREATE TABLE IF NOT EXISTS sessions(person TEXT PRIMARY KEY, last_seen REAL);
CREATE TABLE IF NOT EXISTS deleted(
    id TEXT PRIMARY KEY, name TEXT NOT NULL, owner TEXT NOT NULL, display TEXT NOT NULL,
    public INT NOT NULL DEFAULT 0, shares TEXT NOT NULL, models TEXT NOT NULL, deleted_by TEXT, at REAL);
CREATE TABLE IF NOT EXISTS changes(
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL, actor TEXT, action TEXT, name TEXT, other TEXT,
    undone INT NOT NULL DEFAULT 0);  -- dataset renames and deletes (manage.py): undone 1 once undone
"""


class Registry:
    """The access database under the root; safe to share between threads."""

    _lock = threading.Lock()
    _open: dict[Path, "Registry"] = {}

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA busy_timeout=30000")
        self.db.executescript(SCHEMA)
        self.write_lock = threading.RLock()

    @classmethod
    def here(cls) -> "Registry":
        path = config.home() / "access.sqlite"
        with cls._lock:
            reg = cls._open.get(path)
            if reg is None or not path.exists():
                reg = cls._open[path] = cls(path)
            return reg

    def run(self, sql: str, args=()) -> list[sqlite3.Row]:
        with self.write_lock:
            return self.db.execute(sql, args).fetchall()

    # ---- datasets --------------------------------------------------------------------
    def entry(self, name: str) -> sqlite3.Row | None:
        rows = self.run("SELECT * FROM datasets WHERE name=?", (name,))
        return rows[0] if rows else None

    def register(self, name: str, owner: str, display: str) -> None:
        self.run("INSERT OR REPLACE INTO datasets(name, owner, display, public, created) VALUES (?,?,?,0,?)",
                 (name, owner, display, time.time()))

    def forget(self, name: str) -> None:
        with self.write_lock:
            for table, col in (("datasets", "name"), ("shares", "dataset"), ("models", "dataset")):
                self.db.execute(f"DELETE FROM {table} WHERE {col}=?", (name,))

    def rename(self, name: str, new: str, display: str) -> None:
        """Dataset `name` is now the folder `new`, shown as `display`: its owner, shares and public models follow."""
        with self.write_lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.execute("UPDATE datasets SET name=?, display=? WHERE name=?", (new, display, name))
                for table, col in (("shares", "dataset"), ("models", "dataset")):
                    self.db.execute(f"UPDATE {table} SET {col}=? WHERE {col}=?", (new, name))
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def stash(self, name: str, deleted_id: str, by: str) -> None:
        """Dataset `name` was deleted (moved aside as `deleted_id`): keep its rows for a restore, free its name."""
        e = self.entry(name)
        shares = [dict(r) for r in self.run("SELECT person, role FROM shares WHERE dataset=?", (name,))]
        models = [dict(r) for r in self.run("SELECT model, public FROM models WHERE dataset=?", (name,))]
        self.run("INSERT INTO deleted VALUES (?,?,?,?,?,?,?,?,?)",
                 (deleted_id, name, e["owner"] if e else DEPLOYMENT, e["display"] if e else name,
                  e["public"] if e else 0, json.dumps(shares), json.dumps(models), by, time.time()))
        self.forget(name)

    def deleted_entries(self) -> list[sqlite3.Row]:
        """Deleted datasets that can be restored, newest first."""
        return self.run("SELECT * FROM deleted ORDER BY at DESC")

    def unstash(self, deleted_id: str, name: str, display: str) -> None:
        """A deleted dataset is back as `name`: its owner, display name, public flag, shares and models too."""
        e = self.run("SELECT * FROM deleted WHERE id=?", (deleted_id,))[0]
        with self.write_lock:
            if e["owner"] != DEPLOYMENT or e["public"] or display != name:
                self.run("INSERT OR REPLACE INTO datasets(name, owner, display, public, created) VALUES (?,?,?,?,?)",
                         (name, e["owner"], display, e["public"], time.time()))
            for s in json.loads(e["shares"]):
                self.run("INSERT OR REPLACE INTO shares VALUES (?,?,?)", (name, s["person"], s["role"]))
            for m in json.loads(e["models"]):
                self.run("INSERT OR REPLACE INTO models VALUES (?,?,?)", (name, m["model"], m["public"]))
            self.run("DELETE FROM deleted WHERE id=?", (deleted_id,))
            self.run("UPDATE changes SET undone=1 WHERE action='delete' AND other=?", (deleted_id,))  # nothing to undo

    def log_change(self, actor: str, action: str, name: str, other: str) -> None:
        self.run("INSERT INTO changes(at, actor, action, name, other) VALUES (?,?,?,?,?)",
                 (time.time(), actor, action, name, other))

    def last_change(self, actor: str) -> sqlite3.Row | None:
        """`actor`'s latest dataset rename or delete not yet undone."""
        rows = self.run("SELECT * FROM changes WHERE actor=? AND undone=0 AND action IN ('rename', 'delete')"
                        " ORDER BY seq DESC LIMIT 1", (actor,))
        return rows[0] if rows else None

    def mark_undone(self, seq: int) -> None:
        self.run("UPDATE changes SET undone=1 WHERE seq=?", (seq,))

    def shares(self, name: str) -> dict[str, str]:
        return {r["person"]: r["role"] for r in self.run("SELECT person, role FROM shares WHERE dataset=?", (name,))}

    def role_of(self, name: str, person: str) -> str | None:
        rows = self.run("SELECT role FROM shares WHERE dataset=? AND person=?", (name, person))
        return rows[0]["role"] if rows else None


def owner_of(name: str) -> str | None:
    """The identity id owning `name`, or None when the deployment owns it (admins and the local user)."""
    e = Registry.here().entry(name)
    return e["owner"] if e and e["owner"] != DEPLOYMENT else None


def display_name(name: str) -> str:
    e = Registry.here().entry(name)
    return e["display"] if e else name


def is_public(name: str) -> bool:
    e = Registry.here().entry(name)
    if e is None:
        return name == config.DEMO_DATASET  # the bundled demo is on show until an admin says otherwise
    return bool(e["public"])


def delete_dataset_files(name: str) -> None:
    """Remove a dataset, its models and its registry rows (idle scratch workspaces)."""
    try:  # drop this process's shared handle first, so no open connection points into the removed folder
        Store.open(name).close()
    except DragonError:
        pass  # a folder the store cannot open (half created, or already gone) is removed all the same below
    for root in (config.datasets_root(), config.models_root()):
        p = root / check_dataset_name(name)
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
    Registry.here().forget(name)

