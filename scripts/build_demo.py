"""Build datasets/demo/ from ../shared/datasets/photos (run once; the result is committed).

Each photo goes through the normal import path; its attribution (author, source
page, license) is read from the folder's README and kept as provenance. The
output is the store's own layout plus manifest.csv (no SQLite file: that is
rebuilt from the CSV on first open).
"""

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SRC = Path(sys.argv[1] if len(sys.argv) > 1 else REPO.parent / "shared" / "datasets" / "photos")
DEST = REPO / "datasets" / "demo"


def attributions(readme: Path) -> dict[str, dict]:
    """file name -> {author, page, license} from a Debian-copyright-like README."""
    out = {}
    for block in re.split(r"\n\s*\n", readme.read_text(encoding="utf-8")):
        fields = dict(re.findall(r"^(Copyright|Source|License):\s*(.+)$", block, flags=re.M))
        files = re.search(r"^Files:\s*\n?(.+)$", block, flags=re.M | re.S)
        for name in (files.group(1).split() if files else []):
            out[name] = fields
    return out


def main():
    os.environ["DRAGONCLF_HOME"] = tempfile.mkdtemp()
    sys.path.insert(0, str(REPO))
    from dragonclf.manifest_csv import write_csv
    from dragonclf.store import Store

    store = Store.open("demo-build", create=True)
    for folder in sorted(p for p in SRC.iterdir() if p.is_dir()):
        credits = attributions(folder / "README")
        label = store.add_label(folder.name)
        for f in sorted(folder.glob("*.webp")):
            a = credits.get(f.name, {})
            res = store.ingest(f.read_bytes(), label.display, {
                "origin": "import", "source": f"gcompris-qt-data/{folder.name}/{f.name}",
                "page_url": a.get("Source"), "license": a.get("License"),
                "title": f"{f.stem} by {a['Copyright']}" if a.get("Copyright") else f.stem,
            })
            assert res.outcome == "added", (f, res)
    if DEST.exists():
        shutil.rmtree(DEST)
    DEST.mkdir(parents=True)
    for folder in sorted(p for p in SRC.iterdir() if p.is_dir()):
        shutil.copytree(store.root / folder.name, DEST / folder.name)
        shutil.copy(folder / "README", DEST / folder.name / "README")
    write_csv(store, DEST / "manifest.csv")
    (DEST / "README.md").write_text(
        "# demo: 122 public-domain / CC0 photos in 4 classes\n\n"
        "fishes, monuments, renewable (dams, solar panels, windmills), tools. From the Debian package\n"
        "`gcompris-qt-data` (the photos of its categorization activity). Each label folder's README names,\n"
        "per original file, its author, Wikimedia Commons source page and license; `manifest.csv` keeps the\n"
        "same per stored image (columns title, page_url, license). Built by `scripts/build_demo.py`.\n",
        encoding="utf-8")
    print(store.status())


if __name__ == "__main__":
    main()
