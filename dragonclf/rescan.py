"""Folders vs manifest: adopt files a person dropped in by hand, notice files removed by hand,
take back rows from a `manifest.csv` shipped beside the folders."""

from __future__ import annotations

import csv
import hashlib
import shutil
import time
from pathlib import Path

from dragonclf.config import IngestConfig

from dragonclf.errors import DragonError
from dragonclf.journal import TRASH
from dragonclf.layout import MANIFEST_CSV, PROVENANCE_KEYS
from dragonclf.names import is_doc
from dragonclf.store_ingest import Tally


class Rescan:
    """A part of `Store` (mixed in): `rescan`, `check`, `adopt_file`, `restore_manifest_csv`."""

    def adopt_file(self, path: Path, label: str, cfg: IngestConfig = IngestConfig()):
        """Take in a file a person dropped into a label folder; keep the original aside.

        The original goes to `.adopted/` (or `.rejected/` when refused) unless it already is the
        stored file. Returns the `IngestResult`.
        """
        rel = str(path.relative_to(self.root))
        res = self.ingest_file(path, label, {"origin": "manual", "source": rel}, cfg)
        if path.exists() and not (path.suffix == ".jpg" and res.image_id == path.stem and res.outcome == "added"):
            aside = self.root / (".rejected" if res.outcome == "refused" else ".adopted") / path.parent.name / path.name
            aside.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), str(aside))
        return res

    def restore_manifest_csv(self) -> int:
        """Rows from `manifest.csv` (as `manifest_csv.write_csv` writes it) for the files that are present.

        Used when a dataset folder arrives without its SQLite manifest, so provenance and splits
        survive. A row whose file is absent, or in another folder than its label's, is skipped:
        `rescan` adopts such files instead. Returns the number of rows taken back.
        """
        src = self.root / MANIFEST_CSV
        if not src.exists():
            return 0
        with open(src, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        n = 0
        for row in rows:
            path = self.root / row["path"]
            if row.get("status", "active") != "active" or not path.is_file() or path.name != f"{row['id']}.jpg":
                continue
            lab = self.add_label(row["label"]) if row["label"] else None
            if lab is None or lab.folder != path.parent.name:
                continue
            with self._tx() as db:
                self._insert_image(db, dict(
                    id=row["id"], sha256=row["sha256"], phash=row["phash"], width=int(row["width"]),
                    height=int(row["height"]), folder=lab.folder, status="active", split_key=float(row["split_key"]),
                    **{k: row.get(k) or None for k in PROVENANCE_KEYS},
                    added_at=float(row.get("added_at") or time.time())), if_new=True)
            n += 1
        return n

    def rescan(self, repair: bool = True) -> dict:
        """Compare folders with the manifest (see `_rescan`), under the files lock: safe during a collect or
        import in this or another process, which never has a file in a label folder without its row."""
        with self._files():
            if repair:
                self.recover(full=True)  # what killed writers left, first (and any file out of place)
            return self._rescan(repair)

    def _rescan(self, repair: bool) -> dict:
        """Compare folders with the manifest.

        Adopts image files a person dropped into a label folder (or a new folder,
        which becomes a label), and marks images whose file was removed by hand as
        missing, and takes back a missing image whose very file is in a label
        folder (or the trash) again ("found"). With `repair=False` it only reports. Originals of adopted files
        go to `.adopted/`, unreadable ones to `.rejected/`: nothing is deleted.
        """
        report = {"adopted": 0, "duplicates": 0, "conflicts": 0, "rejected": {}, "missing": [], "moved": 0,
                  "new_labels": [], "unknown_files": [], "found": []}
        tally = Tally()  # what became of the files adopted
        known = {r[0] for r in self._db.execute("SELECT id FROM images WHERE status != 'missing'")}
        missing = {r[0]: r[1] for r in self._db.execute("SELECT id, sha256 FROM images WHERE status='missing'")}
        label_by_folder = {lab.folder: lab for lab in self.labels()}
        back: dict[str, tuple[str | None, str]] = {}  # missing id -> (folder or None for the trash, status)

        def came_back(p: Path, folder: str | None, status: str) -> bool:
            """A file removed by hand is here again, the very bytes stored: its row takes it back."""
            if p.suffix != ".jpg" or p.stem not in missing or p.stem in back or not p.is_file() or p.is_symlink():
                return False
            if hashlib.sha256(p.read_bytes()).hexdigest() != missing[p.stem]:
                return False  # another picture under that name: adopted like any dropped file
            back[p.stem] = (folder, status)
            return True

        trash = self.root / TRASH
        if trash.is_dir() and not trash.is_symlink():
            for p in sorted(trash.iterdir()):
                came_back(p, None, "trashed")
        for d in sorted(self.root.iterdir()):
            if d.name.startswith(".") or not d.is_dir() or d.is_symlink():
                continue
            files = sorted(p for p in d.iterdir() if not p.name.startswith(".") and not is_doc(p.name))
            if d.name in label_by_folder:
                files = [p for p in files if not came_back(p, d.name, "active")]
            loose = [p for p in files if not (p.suffix == ".jpg" and p.stem in known)]
            if loose:  # rows may have arrived since `known` was read (a row is committed before its file lands)
                now_known = self._known_ids([p.stem for p in loose if p.suffix == ".jpg"])
                loose = [p for p in loose if not (p.suffix == ".jpg" and p.stem in now_known)]
            if not loose:
                continue
            report["unknown_files"] += [str(p.relative_to(self.root)) for p in loose]
            if not repair:
                continue
            lab = label_by_folder.get(d.name)
            if lab is None:
                try:
                    lab = self.add_label(d.name)
                except DragonError as e:
                    tally.refused["bad-label-name"] += len(loose)
                    report.setdefault("messages", []).append(str(e))
                    continue
                report["new_labels"].append(lab.display)
            for p in loose:
                adopted = self.adopt_file(p, lab.display)
                tally.tally(adopted.outcome, adopted.reason)
        report.update(adopted=tally.added, duplicates=tally.duplicates, conflicts=tally.conflicts,
                      rejected=dict(tally.refused), found=sorted(back))
        if repair and back:
            with self._tx() as db:
                batch = self._next_batch(db)
                for image_id, (folder, status) in sorted(back.items()):
                    r = db.execute("SELECT folder, status FROM images WHERE id=?", (image_id,)).fetchone()
                    if r is None or r["status"] != "missing":
                        continue  # changed meanwhile (e.g. the same bytes were imported again)
                    folder = folder or r["folder"]
                    db.execute("UPDATE images SET folder=?, status=? WHERE id=?", (folder, status, image_id))
                    db.execute(
                        "INSERT INTO journal(batch, image_id, action, before_folder, after_folder, before_status,"
                        " after_status, at) VALUES (?,?,'found',?,?,'missing',?,?)",
                        (batch, image_id, r["folder"], folder, status, time.time()),
                    )
        # files removed by hand, or moves a crash interrupted
        before = {r[0]: r[1] for r in self._db.execute("SELECT id, folder FROM images WHERE status IN ('active','trashed')")}
        lost = self._sync_files() if repair else [
            i for i, f in before.items() if not any(p.exists() for p in self._candidates(i))
        ]
        report["missing"] = lost
        if repair and lost:
            with self._tx() as db:
                batch = self._next_batch(db)
                for image_id in lost:
                    r = db.execute("SELECT folder, status FROM images WHERE id=?", (image_id,)).fetchone()
                    db.execute("UPDATE images SET status='missing' WHERE id=?", (image_id,))
                    db.execute(
                        "INSERT INTO journal(batch, image_id, action, before_folder, after_folder, before_status,"
                        " after_status, at) VALUES (?,?,'missing',?,?,?,'missing',?)",
                        (batch, image_id, r["folder"], r["folder"], r["status"], time.time()),
                    )
        return report

    def _known_ids(self, ids: list[str]) -> set[str]:
        out = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            out |= {r[0] for r in self._db.execute(
                f"SELECT id FROM images WHERE status != 'missing' AND id IN ({','.join('?' * len(chunk))})", chunk)}
        return out

    def check(self, repair: bool = False) -> dict:
        """Report (or, with repair, fix) drift between folders and manifest."""
        report = self.rescan(repair=repair)
        report["ok"] = not report["unknown_files"] and not report["missing"] and not report["found"]
        return report
