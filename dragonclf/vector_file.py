"""A compact on-disk store of vectors by key: float16 rows in one file, memory-mapped; keys in SQLite.

For embedding caches of 100,000 images: 1,280 float16 features are 2.5 KB a row
(256 MB for 100,000, half of float32), read back by mapping the file, not by
decoding one blob per row. Rows are only ever appended: new keys go at the end
(incremental), the vectors are written and fsynced before the keys that name
them commit, so a crash leaves at worst unnamed rows at the end (skipped), never
a key pointing at missing data. Appends from several processes queue on an flock.

    vf = VectorFile(folder, dim=1280)
    vf.add(["sha-a", "sha-b"], vectors)          # keys already present are left as they are
    found, X = vf.get(["sha-a", "sha-c"])        # found: bool per key; X: float32 rows of the found ones
    vf.get(keys, out=X)                          # or into the rows of an (N, dim) array, one per key
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from dragonclf.errors import DragonError

DATA, KEYS, LOCK = "vectors.f16", "keys.sqlite", "append.lock"


class VectorFile:
    def __init__(self, folder: str | os.PathLike, dim: int):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dim = int(dim)
        self.row_bytes = 2 * self.dim
        self._db = sqlite3.connect(self.folder / KEYS, timeout=60, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS rows(key TEXT PRIMARY KEY, row INTEGER NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT)")
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('dim', ?)", (str(self.dim),))
        stored = int(self._db.execute("SELECT value FROM meta WHERE key='dim'").fetchone()[0])
        if stored != self.dim:
            raise DragonError(f"{self.folder} holds {stored}-feature vectors, not {self.dim}")

    def close(self) -> None:
        self._db.close()

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM rows").fetchone()[0]

    def _rows(self, keys: list[str]) -> dict[str, int]:
        if len(keys) > 20_000:  # most of the table: one pass over it beats thousands of IN lookups
            wanted = set(keys)
            return {k: r for k, r in self._db.execute("SELECT key, row FROM rows") if k in wanted}
        found = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            found.update(self._db.execute(
                f"SELECT key, row FROM rows WHERE key IN ({','.join('?' * len(chunk))})", chunk).fetchall())
        return found

    def missing(self, keys) -> list[str]:
        """The keys (in order, once each) that have no vector yet."""
        keys = list(dict.fromkeys(keys))
        have = self._rows(keys)
        return [k for k in keys if k not in have]

    @contextmanager
    def _appending(self):
        fd = os.open(self.folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel if this process dies
            yield
        finally:
            os.close(fd)

    def add(self, keys, vectors: np.ndarray) -> int:
        """Append the vectors of keys not stored yet; returns how many were added."""
        keys = list(keys)
        vectors = np.asarray(vectors)
        if vectors.shape != (len(keys), self.dim):
            raise DragonError(f"expected {len(keys)} x {self.dim} vectors, got {vectors.shape}")
        with self._appending():
            new = {}
            have = self._rows(keys)
            for key, vec in zip(keys, vectors):
                if key not in have and key not in new:
                    new[key] = vec
            if not new:
                return 0
            path = self.folder / DATA
            with open(path, "ab") as f:
                start = f.tell() // self.row_bytes  # rows an interrupted append left unnamed are skipped
                f.seek(start * self.row_bytes)
                f.truncate()
                f.write(np.stack(list(new.values())).astype("<f2").tobytes())
                f.flush()
                os.fsync(f.fileno())  # the data is on disk before any key names it
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT INTO rows VALUES (?, ?)", [(k, start + i) for i, k in enumerate(new)])
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return len(new)

    def get(self, keys, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(found: bool per key, float32 vectors of the found keys in key order), read through a memory map.

        With `out` ((len(keys), dim) float32), each found key's vector is written into its own row of
        `out` instead (the others are left as they are) and `out` is returned: no second copy of 100,000 rows.
        """
        keys = list(keys)
        have = self._rows(list(dict.fromkeys(keys)))
        found = np.array([k in have for k in keys], dtype=bool)
        rows = np.array([have[k] for k in keys if k in have], dtype=np.int64)
        at = np.flatnonzero(found) if out is not None else np.arange(len(rows))
        if out is None:
            out = np.empty((len(rows), self.dim), np.float32)
        elif out.shape != (len(keys), self.dim):
            raise DragonError(f"expected a {len(keys)} x {self.dim} array to fill, got {out.shape}")
        if not len(rows):
            return found, out
        size = (self.folder / DATA).stat().st_size // self.row_bytes
        data = np.memmap(self.folder / DATA, dtype="<f2", mode="r", shape=(size, self.dim))
        for i in range(0, len(rows), 8192):  # in slices, into contiguous rows: no float16 copy of the whole
            out[at[i:i + 8192]] = data[rows[i:i + 8192]]
        del data
        return found, out
