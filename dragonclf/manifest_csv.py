"""The manifest as CSV: one row per image with its provenance.

Written into dataset exports (and next to the bundled demo), read back when a
dataset folder arrives without its SQLite manifest, so provenance survives.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

from dragonclf.store import PROVENANCE_KEYS, Store

COLUMNS = ["id", "label", "path", "status", "split", "width", "height", "sha256", "phash", "split_key",
           *PROVENANCE_KEYS, "added_at"]
CSV_NAME = "manifest.csv"


def write_csv(store: Store, dest: Path, status: str | None = "active") -> Path:
    with open(dest, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in store.images(status=status):
            row = {k: getattr(r, k) for k in COLUMNS if k != "path"}
            row["path"] = r.path.relative_to(store.root).as_posix()
            w.writerow(row)
    return dest


def restore_rows(store: Store) -> int:
    """Rows from `manifest.csv` for the files that are present (used on first open)."""
    src = store.root / CSV_NAME
    if not src.exists():
        return 0
    n = 0
    with open(src, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        path = store.root / row["path"]
        if row.get("status", "active") != "active" or not path.is_file() or path.name != f"{row['id']}.jpg":
            continue
        lab = store.add_label(row["label"]) if row["label"] else None
        if lab is None or lab.folder != path.parent.name:
            continue  # the row does not match the folder it claims: rescan adopts the file instead
        with store._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO images(id, sha256, pixel_sha, phash, width, height, folder, status, split_key,"
                " kept, origin, source, query, engine, image_url, page_url, title, license, added_at)"
                " VALUES (?,?,NULL,?,?,?,?,'active',?,0,?,?,?,?,?,?,?,?,?)",
                (row["id"], row["sha256"], row["phash"], int(row["width"]), int(row["height"]), lab.folder,
                 float(row["split_key"]), *[row.get(k) or None for k in PROVENANCE_KEYS],
                 float(row.get("added_at") or time.time())),
            )
        n += 1
    return n
