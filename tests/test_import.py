"""Importing folders, zips and single files; hostile archives and trees."""

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO
from dragonclf.errors import DragonError
from dragonclf.importer import import_files, import_path
from dragonclf.store import Store


@pytest.fixture
def store():
    return Store.open("imp", create=True)


def test_folder_tree_import_counts_every_file(store, photos_dir):
    report = import_path(store, photos_dir)
    assert report.added == 122 and report.duplicates == 0
    assert sum(report.rejected.values()) == len([i for i in report.items if i["outcome"] == "refused"])
    again = import_path(store, photos_dir)
    assert again.added == 0 and again.duplicates == 122


def test_nested_folders_and_symlinks_are_refused_with_reasons(store, photo_files, tmp_path):
    src = tmp_path / "tree"
    (src / "cats" / "deeper").mkdir(parents=True)
    shutil.copy(photo_files["fishes"][0], src / "cats" / "a.webp")
    shutil.copy(photo_files["fishes"][1], src / "cats" / "deeper" / "b.webp")
    secret = tmp_path / "secret.webp"
    shutil.copy(photo_files["fishes"][2], secret)
    os.symlink(secret, src / "cats" / "link.webp")
    os.symlink(tmp_path, src / "linkdir")
    report = import_path(store, src)
    assert report.added == 1
    assert report.rejected == {"nested-folder": 1, "symlink": 2}
    assert [r.source for r in store.images()] == [str(src / "cats" / "a.webp")]


def make_zip(entries) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries:
            z.writestr(name, data)
    return buf.getvalue()


def test_zip_of_a_tree_is_imported_in_memory(store, photo_files, tmp_path):
    entries = [(f"photos/{label}/{f.name}", f.read_bytes()) for label in ("fishes", "tools") for f in photo_files[label][:3]]
    z = tmp_path / "photos.zip"
    z.write_bytes(make_zip(entries))
    report = import_path(store, z)
    assert report.added == 6 and {lab.display for lab in store.labels()} == {"fishes", "tools"}
    assert store.images()[0].source.startswith("photos.zip:photos/")


def test_zip_slip_absolute_paths_and_dotdot_labels_touch_nothing_outside(store, photo_files, tmp_path, home):
    good = photo_files["tools"][0].read_bytes()
    z = tmp_path / "evil.zip"
    z.write_bytes(make_zip([
        ("../../escape.webp", good), ("/etc/evil.webp", good), ("../x/y.webp", good),
        ("..\\win.webp", good), ("ok/fine.webp", good),
    ]))
    before = set(tmp_path.rglob("*"))
    report = import_path(store, z)
    assert report.added == 1 and report.rejected == {"unsafe-path": 4}
    new = set(tmp_path.rglob("*")) - before
    assert all(str(p).startswith(str(store.root)) for p in new)


def test_zip_bomb_entries_are_refused_before_inflating(store, tmp_path, monkeypatch):
    z = tmp_path / "bomb.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("cats/huge.jpg", b"\xff\xd8\xff" + b"\0" * 60_000_000)  # declares 60 MB
        zf.writestr("cats/ratio.jpg", b"\xff\xd8\xff" + b"\0" * 5_000_000)  # 5 MB from a few KB
    assert z.stat().st_size < 200_000
    report = import_path(store, z)
    assert report.added == 0 and report.rejected == {"too-many-bytes": 1, "zip-bomb": 1}
    # a whole archive that declares more than the total limit is refused outright
    from dragonclf import importer

    monkeypatch.setattr(importer, "ZIP_MAX_TOTAL", 10_000_000)
    with pytest.raises(DragonError, match="zip bomb"):
        import_path(store, z)
    assert store.images(status=None) == []


def test_single_uploads_go_into_the_chosen_label(store, photo_files, tmp_path):
    bad = tmp_path / "fake.jpg"
    bad.write_text("<html>nope</html>")
    report = import_files(store, [photo_files["fishes"][0], bad], "Drogon", names=["dragon.webp", "fake.jpg"])
    assert report.added == 1 and report.rejected == {"not-an-image": 1}
    row = store.images()[0]
    assert row.label == "Drogon" and row.origin == "upload" and row.source == "dragon.webp"


def test_single_file_without_label_is_a_clear_error(store, photo_files):
    with pytest.raises(DragonError, match="needs a label"):
        import_path(store, photo_files["fishes"][0])


def run_cli(*args, home):
    env = {**os.environ, "DRAGONCLF_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "dragonclf", *args], capture_output=True, text=True, env=env, cwd=REPO)


def test_cli_import_and_status_report_json(photos_dir, home):
    out = run_cli("import", str(photos_dir), "--dataset", "photos", "--json", home=home)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["added"] == 122 and result["duplicates"] == 0 and result["conflicts"] == 0
    assert set(result["rejected"]) <= {"not-an-image", "no-label"}
    out = run_cli("status", "--dataset", "photos", "--json", home=home)
    assert json.loads(out.stdout) == {"labels": {"fishes": 28, "monuments": 27, "renewable": 28, "tools": 39},
                                      "trashed": 0, "near_duplicate_groups": 0, "conflicts": 0}


def test_cli_errors_are_one_line_without_traceback(home):
    out = run_cli("status", "--dataset", "nope", "--json", home=home)
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "no dataset named 'nope'" in out.stderr
    assert "Traceback" not in out.stderr
    out = run_cli("status", home=home)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "--dataset" in out.stderr
    out = run_cli("import", "/does/not/exist", "--dataset", "x", home=home)
    assert out.returncode == 1 and "does not exist" in out.stderr


def test_an_exported_dataset_zip_imports_back_with_its_provenance(photo_files, tmp_path):
    from dragonclf.dataset_export import export_dataset

    src = Store.open("origin", create=True)
    for f in photo_files["fishes"][:3]:
        src.add_label("fish")
        src.ingest(f.read_bytes(), "fish", {"origin": "url", "source": f"http://x/{f.name}", "license": "Public"})
    exported = export_dataset(src, tmp_path / "origin.zip")
    dest = Store.open("copy", create=True)
    report = import_path(dest, exported)
    assert report.added == 3 and not report.rejected and "manifest.csv" in report.ignored
    assert {r.source for r in dest.images()} == {r.source for r in src.images()}
    assert {r.license for r in dest.images()} == {"Public"}
