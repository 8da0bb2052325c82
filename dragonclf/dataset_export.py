"""Export a dataset as one zip: the label folders, manifest.csv with provenance, and a dataset card.

The zip opens as the layout every tool knows (`<label folder>/<id>.jpg` at the
top, so fastai's `ImageDataLoaders.from_folder` or torchvision's ImageFolder
read it as is, and `python -m dragonclf import` takes it back). The card
(README.md) lists labels, counts, where the images came from and their
licenses where known: web images keep their owners' rights, and whoever
shares the dataset needs to see that.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse

from dragonclf.manifest_csv import CSV_NAME, COLUMNS, write_csv
from dragonclf.store import ImageRow, Store

CARD_NAME = "README.md"


def _origin(row: ImageRow) -> str:
    url = row.page_url or row.image_url
    if url:
        return urlparse(url).netloc or url
    if row.engine:
        return f"search ({row.engine})"
    return row.origin or "unknown"


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def dataset_card(store: Store, rows: list[ImageRow]) -> str:
    """The README.md of an export: labels, counts, sources, licenses."""
    per_label: dict[str, Counter] = {}
    for r in rows:
        per_label.setdefault(r.label, Counter())[r.split] += 1
    folders = {lab.display: lab.folder for lab in store.labels()}
    label_rows = [[lab, folders.get(lab, ""), c["train"] + c["valid"], c["train"], c["valid"]]
                  for lab, c in sorted(per_label.items())]
    sources = Counter(_origin(r) for r in rows).most_common()
    licenses = Counter(r.license or "unknown" for r in rows).most_common()
    queries = Counter(r.query for r in rows if r.query).most_common()
    unknown = sum(1 for r in rows if not r.license)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"# {store.name}",
        f"An image classification dataset exported by dragonclf on {now}: "
        f"{len(rows)} images in {len(per_label)} labels, one folder per label.",
        "## Labels",
        _table(["label", "folder", "images", "train", "valid"], label_rows),
        "The train/valid split is fixed per image (near-duplicates share a side); see the `split` column of "
        f"`{CSV_NAME}`.",
        "## Where the images came from",
        _table(["source", "images"], [[s, n] for s, n in sources]),
    ]
    if queries:
        parts += ["Search queries:", _table(["query", "images"], [[q, n] for q, n in queries])]
    parts += [
        "## Licenses",
        _table(["license", "images"], [[lic, n] for lic, n in licenses]),
        (f"{unknown} images have no known license: they belong to their owners; check each one (its source "
         f"is in `{CSV_NAME}`) before you redistribute them." if unknown else
         "Every image has a recorded license; attribution details are in the manifest."),
        "## Files",
        "- `<label folder>/<id>.jpg`: the images (JPEG, at most 512 px on the longest side); `<id>` is the "
        "hash of the decoded pixels.",
        f"- `{CSV_NAME}`: one row per image: " + ", ".join(f"`{c}`" for c in COLUMNS) + ".",
    ]
    return "\n\n".join(parts) + "\n"


def export_dataset(store: Store, dest: str | os.PathLike | None = None) -> Path:
    """Write `<dest>` (a .zip path, or a folder to hold `<name>.zip`) and return its path.

    Only active images are exported. Written to a temp name, then renamed, so
    a half-written zip never looks finished.
    """
    dest = Path(dest) if dest is not None else Path.cwd()
    if dest.suffix.lower() != ".zip":
        dest.mkdir(parents=True, exist_ok=True)
        dest = dest / f"{store.name}.zip"
    dest.parent.mkdir(parents=True, exist_ok=True)
    rows = store.images()
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    try:
        with tempfile.TemporaryDirectory() as work:
            csv_path = write_csv(store, Path(work) / CSV_NAME)
            # JPEGs do not compress further: store them, deflate only the text files
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
                for r in rows:
                    zf.write(r.path, f"{r.folder}/{r.id}.jpg")
                zf.write(csv_path, CSV_NAME, compress_type=zipfile.ZIP_DEFLATED)
                zf.writestr(CARD_NAME, dataset_card(store, rows), compress_type=zipfile.ZIP_DEFLATED)
                original = store.root / "README.md"
                if original.is_file():  # attribution that came with the dataset (e.g. the bundled demo)
                    zf.write(original, "ATTRIBUTION.md", compress_type=zipfile.ZIP_DEFLATED)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
