"""Importing a person's own images: a folder tree, a zip of one, or single files.

A tree is `<label>/<images>`. Folders deeper than that are not walked (each is
counted as "nested-folder"), symbolic links are never followed ("symlink"), and
a zip is read entry by entry in memory, never extracted: unsafe paths
("unsafe-path"), links and entries that would inflate past the limits
("zip-bomb") are refused before a byte of them is decoded.
"""

from __future__ import annotations

import os
import stat
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from dragonclf.config import IngestConfig
from dragonclf.errors import DragonError
from dragonclf.layout import PROVENANCE_KEYS
from dragonclf.names import NameClash, clean_display, is_doc
from dragonclf.store import IngestResult, Label, Store, Tally

ZIP_MAX_TOTAL = 4 * 1024**3  # declared uncompressed size of a whole zip
ZIP_MAX_RATIO = 200  # compressed -> uncompressed; real photos hardly compress at all
ZIP_MAX_ENTRIES = 100_000  # zipfile parses the whole central directory into memory: cap it before that


def zip_declared_entries(path: Path) -> int | None:
    """How many entries a zip's end-of-central-directory record declares (zip64 included); None if unreadable.

    Read from the last 64 KiB of the file, before `zipfile` builds a ZipInfo for every
    entry: a 50 MB central directory can list a million names.
    """
    import struct

    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            tail_at = max(0, size - 65536 - 22)
            f.seek(tail_at)
            tail = f.read()
            at = tail.rfind(b"PK\x05\x06")
            if at < 0 or len(tail) - at < 22:
                return None
            total = struct.unpack("<H", tail[at + 10:at + 12])[0]
            loc = tail[at - 20:at] if at >= 20 else b""
            if total == 0xFFFF and loc[:4] == b"PK\x06\x07":  # zip64: the real count is further back
                f.seek(struct.unpack("<Q", loc[8:16])[0])
                rec = f.read(56)
                if rec[:4] == b"PK\x06\x06":
                    return struct.unpack("<Q", rec[32:40])[0]
            return total
    except OSError:
        return None


@dataclass
class ImportReport(Tally):
    """An import's tally (its JSON calls the refused "rejected"), what became of each file, and notes."""

    items: list[dict] = field(default_factory=list)  # one per file: source, label, outcome, reason
    ignored: list[str] = field(default_factory=list)  # documentation beside the images (README, manifest.csv), hidden files
    messages: list[str] = field(default_factory=list)  # sentences for people, once each (e.g. two folders, one label)

    @property
    def rejected(self) -> Counter:
        """The tally's `refused`, in the word an import's report uses."""
        return self.refused

    def count(self, source: str, label: str | None, res: IngestResult) -> None:
        self.tally(res.outcome, res.reason)
        self.items.append({"source": source, "label": label, "outcome": res.outcome, "reason": res.reason,
                           "detail": res.detail, "id": res.image_id})

    def refuse(self, source: str, label: str | None, reason: str, detail: str) -> None:
        self.count(source, label, IngestResult("refused", None, reason, detail))

    def tell(self, message: str) -> None:
        if message not in self.messages:
            self.messages.append(message)

    def as_dict(self) -> dict:
        return {"added": self.added, "duplicates": self.duplicates, "conflicts": self.conflicts,
                "rejected": dict(sorted(self.refused.items()))}

    def summary(self) -> str:
        parts = [f"{self.added} added", f"{self.duplicates} duplicates", f"{self.conflicts} label conflicts"]
        if self.refused:
            parts.append("refused: " + ", ".join(f"{n} {r}" for r, n in sorted(self.refused.items())))
        if self.ignored:
            parts.append(f"not images, left out: {', '.join(self.ignored)}")
        return "; ".join(parts + self.messages)

    def where(self) -> list[str]:
        """What went where, a line per label: '3 added to fish (1 duplicate)'."""
        by_label: dict[str, Counter] = {}
        for item in self.items:
            by_label.setdefault(item["label"] or "(no label)", Counter())[item["outcome"]] += 1
        lines = []
        for label, n in by_label.items():
            others = [f"{n[k]} {word}" for k, word in (("duplicate", "already there"), ("conflict", "label conflicts"),
                                                        ("refused", "refused")) if n[k]]
            lines.append(f"{n['added']} added to {label}" + (f" ({', '.join(others)})" if others else ""))
        return lines


Progress = Callable[[float, str], None]


def import_path(store: Store, src: str | os.PathLike, label: str | None = None, cfg: IngestConfig = IngestConfig(),
                progress: Progress | None = None, cancel=None) -> ImportReport:
    """Import a folder tree, a zip, or one image file. `label` puts everything under one label."""
    src = Path(src)
    if src.is_symlink():
        raise DragonError(f"{src} is a symbolic link; import the real folder or file")
    if not src.exists():
        raise DragonError(f"{src} does not exist")
    if src.is_file() and zipfile.is_zipfile(src):
        return import_zip(store, src, label, cfg, progress, cancel)
    if src.is_file() and src.suffix.lower() == ".zip":
        raise DragonError(f"{src.name} is not a zip file (damaged, cut short, or another kind of file); nothing imported")
    if src.is_file():
        if not label:
            raise DragonError("importing a single file needs a label")
        return import_files(store, [src], label, cfg=cfg, origin="import")
    return import_folder(store, src, label, cfg, progress, cancel)


def _plan_folder(src: Path, label: str | None, report: ImportReport) -> list[tuple[Path, str]]:
    """(file, label) pairs to import from a folder; refusals are counted on the way."""
    plan = []
    entries = sorted(src.iterdir())
    for e in entries:
        if _left_out(e, src, report):
            continue
        if e.is_symlink():
            report.refuse(str(e), label, "symlink", "symbolic links are not followed")
        elif e.is_file():
            if label:
                plan.append((e, label))
            else:
                report.refuse(str(e), None, "no-label", "files at the top of a tree need a label folder (or --label)")
        elif e.is_dir():
            if label:
                report.refuse(str(e), label, "nested-folder", "folders inside a label folder are not imported")
                continue
            try:
                name = clean_display(e.name)
            except DragonError as err:
                report.refuse(str(e), None, "bad-label-name", str(err))
                continue
            for f in sorted(e.iterdir()):
                if _left_out(f, src, report):
                    continue
                if f.is_symlink():
                    report.refuse(str(f), name, "symlink", "symbolic links are not followed")
                elif f.is_dir():
                    report.refuse(str(f), name, "nested-folder", "folders inside a label folder are not imported")
                elif f.is_file():
                    plan.append((f, name))
    return plan


def _left_out(p: Path, top: Path, report: ImportReport) -> bool:
    """Hidden files and documentation (README, LICENSE, manifest.csv) are not images: listed as ignored."""
    if p.name.startswith(".") or (is_doc(p.name) and not p.is_dir()):
        report.ignored.append(str(p.relative_to(top)))
        return True
    return False


def _label_or_refuse(store: Store, name: str, source: str, report: ImportReport) -> Label | None:
    """The label for `name`, created if new; None (file refused) when its folder belongs to another label."""
    try:
        return store.label_or_create(name)
    except NameClash as err:
        report.refuse(source, name, "label-clash", str(err))
        report.tell(f"files under {name!r} not imported: {err}")
        return None


def import_folder(store, src: Path, label=None, cfg=IngestConfig(), progress=None, cancel=None) -> ImportReport:
    report = ImportReport()
    plan = _plan_folder(src, label, report)
    for i, (path, name) in enumerate(plan):
        if cancel is not None and cancel.is_set():
            break
        lab = _label_or_refuse(store, name, str(path), report)
        if lab is None:
            continue
        res = store.ingest_file(path, lab.display, {"origin": "import", "source": str(path)}, cfg)
        report.count(str(path), lab.display, res)
        if progress:
            progress((i + 1) / len(plan), f"{i + 1}/{len(plan)} files: {report.summary()}")
    return report


def import_files(store: Store, paths, label: str, cfg=IngestConfig(), origin: str = "upload",
                 names: list[str] | None = None) -> ImportReport:
    """Single files (e.g. browser uploads) into one label. `names`: what to record as their source."""
    lab = store.label_or_create(label)
    report = ImportReport()
    for i, p in enumerate(paths):
        source = names[i] if names else str(p)
        res = store.ingest_file(Path(p), lab.display, {"origin": origin, "source": source}, cfg)
        report.count(source, lab.display, res)
    return report


def _zip_entry_problem(info: zipfile.ZipInfo, cfg: IngestConfig) -> tuple[str, str] | None:
    name = info.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]) or "\\" in name:
        return "unsafe-path", f"{name!r} points outside the archive"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "symlink", "links inside a zip are not followed"
    if info.file_size > cfg.max_bytes:
        return "too-many-bytes", f"declares {info.file_size / 1e6:.0f} MB, over the limit"
    if info.compress_size and info.file_size / info.compress_size > ZIP_MAX_RATIO and info.file_size > 1_000_000:
        return "zip-bomb", f"inflates {info.file_size // max(info.compress_size, 1)}x"
    return None


def import_zip(store, src: Path, label=None, cfg=IngestConfig(), progress=None, cancel=None) -> ImportReport:
    report = ImportReport()
    declared_entries = zip_declared_entries(src)
    if declared_entries is not None and declared_entries > ZIP_MAX_ENTRIES:
        raise DragonError(f"{src.name} lists {declared_entries:,} entries (the limit is {ZIP_MAX_ENTRIES:,}); "
                          "split it into smaller zips. Nothing imported")
    try:
        zf = zipfile.ZipFile(src)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise DragonError(f"{src.name} is not a readable zip ({e}); nothing imported") from None
    with zf:
        if len(zf.infolist()) > ZIP_MAX_ENTRIES:  # a record that understated its count
            raise DragonError(f"{src.name} holds more than {ZIP_MAX_ENTRIES:,} entries; split it. Nothing imported")
        infos = [i for i in zf.infolist() if not i.is_dir()]
        declared = sum(i.file_size for i in infos)
        if declared > ZIP_MAX_TOTAL:
            raise DragonError(f"{src.name} declares {declared / 1e9:.1f} GB uncompressed: refused as a zip bomb")
        entries = []
        for info in infos:
            problem = _zip_entry_problem(info, cfg)
            if problem:
                report.refuse(f"{src.name}:{info.filename}", None, *problem)
                continue
            parts = PurePosixPath(info.filename).parts
            if any(p.startswith(".") or p == "__MACOSX" for p in parts):
                report.ignored.append(info.filename)  # hidden files and macOS resource forks: never images
                continue
            entries.append((info, parts))
        # A zip of a single folder that holds the label folders: look inside it.
        tops = {parts[0] for _, parts in entries if len(parts) > 1}
        if not label and len(tops) == 1 and all(len(p) >= 3 or is_doc(p[-1]) for _, p in entries if len(p) > 1):
            entries = [(i, p[1:]) for i, p in entries if len(p) > 1]
        # Our own dataset export: manifest.csv carries each image's provenance; keep it.
        provenance = _manifest_provenance(zf, entries, cfg)
        kept = []
        for info, parts in entries:
            if is_doc(parts[-1]) and len(parts) <= (1 if label else 2):
                report.ignored.append("/".join(parts))
            else:
                kept.append((info, parts))
        entries = kept
        for n, (info, parts) in enumerate(entries):
            if cancel is not None and cancel.is_set():
                break
            source = f"{src.name}:{info.filename}"
            if label:
                if len(parts) != 1:
                    report.refuse(source, label, "nested-folder", "with a label, only files at the top are imported")
                    continue
                name = label
            else:
                if len(parts) != 2:
                    reason = "no-label" if len(parts) == 1 else "nested-folder"
                    report.refuse(source, None, reason, "expected <label>/<image> inside the zip")
                    continue
                try:
                    name = clean_display(parts[0])
                except DragonError as err:
                    report.refuse(source, None, "bad-label-name", str(err))
                    continue
            data, problem = _read_entry(zf, info, cfg)
            if problem:
                report.refuse(source, name, *problem)
                continue
            lab = _label_or_refuse(store, name, source, report)
            if lab is None:
                continue
            prov = provenance.get("/".join(parts)) or {"origin": "import", "source": source}
            res = store.ingest(data, lab.display, prov, cfg)
            report.count(source, lab.display, res)
            if progress:
                progress((n + 1) / len(entries), f"{n + 1}/{len(entries)} entries: {report.summary()}")
    return report


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cfg: IngestConfig) -> tuple[bytes, tuple[str, str] | None]:
    """One entry's bytes, or a refusal when it is damaged (bad CRC, lying sizes), encrypted or unsupported."""
    try:
        with zf.open(info) as f:
            return f.read(cfg.max_bytes + 1), None  # never trust the declared size alone
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        return b"", ("corrupt-zip-entry", f"this entry of the zip is damaged ({e})")
    except (RuntimeError, NotImplementedError) as e:  # encrypted, or a compression method zipfile lacks
        return b"", ("unreadable-zip-entry", f"this entry of the zip cannot be read ({e})")


def _manifest_provenance(zf: zipfile.ZipFile, entries, cfg: IngestConfig) -> dict[str, dict]:
    """path -> provenance from a top-level manifest.csv (written by our dataset export)."""
    import csv
    import io


    info = next((i for i, parts in entries if parts == ("manifest.csv",)), None)
    if info is None:
        return {}
    data, problem = _read_entry(zf, info, cfg)
    if problem:
        return {}  # a damaged manifest: the images still come in, with the zip as their source
    text = data.decode("utf-8", errors="replace")
    out = {}
    for row in csv.DictReader(io.StringIO(text)):
        if row.get("path"):
            out[row["path"]] = {k: row.get(k) or None for k in PROVENANCE_KEYS}
    return out
