"""What the dataset store's parts share (store, journal, rescan, CSV manifest): names and the bounded file read."""

from __future__ import annotations

import functools
import os
import stat

from dragonclf.errors import Refused

MANIFEST_CSV = "manifest.csv"  # the manifest as CSV, in exports and beside the bundled demo
PROVENANCE_KEYS = ("origin", "source", "query", "engine", "image_url", "page_url", "title", "license")


def read_regular_file(path, max_bytes: int) -> bytes:
    """The bytes of a regular file, read without following links and bounded; `Refused` otherwise."""
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            raise Refused("symlink", "symbolic links are not followed")
        if not stat.S_ISREG(st.st_mode):
            raise Refused("not-a-file", "not a regular file")
        if st.st_size > max_bytes:
            raise Refused("too-many-bytes", f"{st.st_size / 1e6:.1f} MB is over the limit")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            return f.read(max_bytes + 1)
    except OSError as e:
        raise Refused("unreadable", f"could not read the file ({e.strerror or e})") from None


def fsync_dir(path) -> None:
    """Make a rename or unlink inside the folder `path` durable (its entry, not only the file's data)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path, data: bytes) -> None:
    """Write `data` to `path` and fsync it."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def moves_files(method):
    """Decorates a Store method that commits an edit and then moves files: it runs inside the store's
    `_moving()` (store_files), so a crash before its files are in place makes the next open look for them."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self._moving():
            return method(self, *args, **kwargs)
    return run
