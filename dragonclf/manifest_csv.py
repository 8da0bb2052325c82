"""The manifest as CSV: one row per image with its provenance.

Written into dataset exports (and next to the bundled demo); `Store.restore_manifest_csv`
reads it back when a dataset folder arrives without its SQLite manifest, so provenance survives.
"""

from __future__ import annotations

import csv
from pathlib import Path

from dragonclf.layout import MANIFEST_CSV, PROVENANCE_KEYS
from dragonclf.store import Store

COLUMNS = ["id", "label", "path", "status", "split", "width", "height", "sha256", "phash", "split_key",
           *PROVENANCE_KEYS, "added_at"]
CSV_NAME = MANIFEST_CSV


def write_csv(store: Store, dest: Path, status: str | None = "active") -> Path:
    with open(dest, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in store.images(status=status):
            row = {k: getattr(r, k) for k in COLUMNS if k != "path"}
            row["path"] = r.path.relative_to(store.root).as_posix()
            w.writerow(row)
    return dest
