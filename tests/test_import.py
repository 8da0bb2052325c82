"""Importing folders, zips and single files; hostile archives and trees."""

import io
import json
import os
import shutil
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from conftest import REPO
from dragonclf.errors import DragonError
from dragonclf.importer import import_files, import_path
from dragonclf.store import Store


@pytest.fixture
def store():
    return Store.open("imp", create=True)


def test_folder_tree_import_counts_every_file(store, photos_dir):
    images = {p for p in photos_dir.glob("*/*") if p.suffix in (".webp", ".jpg")}  # counted apart from the importer
    assert len(images) == 122
    report = import_path(store, photos_dir)
    assert report.added == 122 and report.duplicates == 0 and report.conflicts == 0 and report.rejected == {}
    assert {Path(i["source"]) for i in report.items} == images
    assert {r.source for r in store.images()} == {str(p) for p in images}
    counts = {d.name: len([p for p in images if p.parent == d]) for d in photos_dir.iterdir() if d.is_dir()}
    assert store.status()["labels"] == counts == {"fishes": 28, "monuments": 27, "renewable": 28, "tools": 39}
    # every README beside the images is listed as left out, none is counted as a refused image
    assert sorted(report.ignored) == sorted(str(p.relative_to(photos_dir)) for p in photos_dir.rglob("README*"))
    again = import_path(store, photos_dir)
    assert again.added == 0 and again.duplicates == 122 and again.rejected == {}


def test_hidden_files_and_documentation_are_ignored_and_listed(store, photo_files, tmp_path):
    src = tmp_path / "tree"
    (src / "cats").mkdir(parents=True)
    shutil.copy(photo_files["fishes"][0], src / "cats" / "a.webp")
    for name in ("cats/.DS_Store", "cats/.x", ".hidden", "cats/LICENSE.txt", "ATTRIBUTION.md", "manifest.csv",
                 "cats/README"):
        (src / name).write_text("not a picture")
    (src / "cats" / "notes.txt").write_text("a text file a person left here")
    report = import_path(store, src)
    assert report.added == 1 and report.rejected == {"not-an-image": 1}  # notes.txt: not a known document name
    assert sorted(report.ignored) == [".hidden", "ATTRIBUTION.md", "cats/.DS_Store", "cats/.x", "cats/LICENSE.txt",
                                      "cats/README", "manifest.csv"]
    assert "not images, left out" in report.summary()


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
    assert result == {"added": 122, "duplicates": 0, "conflicts": 0, "rejected": {}}
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


def _stored_zip(entries) -> bytearray:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries:
            z.writestr(name, data)
    return bytearray(buf.getvalue())


def _central_entry(raw: bytearray, name: str) -> int:
    """Offset of `name`'s central directory record."""
    at = raw.find(b"PK\x01\x02")
    while at != -1:
        n = int.from_bytes(raw[at + 28:at + 30], "little")
        if raw[at + 46:at + 46 + n] == name.encode():
            return at
        at = raw.find(b"PK\x01\x02", at + 4)
    raise AssertionError(f"{name} not in the zip")


def test_damaged_zip_entries_are_refused_and_the_good_ones_imported(store, photo_files, tmp_path, home):
    files = photo_files["tools"][:4]
    raw = _stored_zip([(f"tools/{f.name}", f.read_bytes()) for f in files])
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as z:
        infos = {i.filename: i for i in z.infolist()}
    # entry 1: a byte of its data flipped (the CRC no longer matches)
    bad_crc = infos[f"tools/{files[1].name}"]
    data_at = bad_crc.header_offset + 30 + len(bad_crc.filename) + len(bad_crc.extra)
    raw[data_at + 500] ^= 0xFF
    # entry 2: the central directory lies about its size (half of it)
    lying = _central_entry(raw, f"tools/{files[2].name}")
    half = (files[2].stat().st_size // 2).to_bytes(4, "little")
    raw[lying + 20:lying + 24] = half
    raw[lying + 24:lying + 28] = half
    z = tmp_path / "damaged.zip"
    z.write_bytes(bytes(raw))
    report = import_path(store, z)
    assert report.added == 2 and report.rejected == {"corrupt-zip-entry": 2}
    refused = sorted(i["source"] for i in report.items if i["outcome"] == "refused")
    assert refused == sorted(f"damaged.zip:tools/{f.name}" for f in files[1:3])
    assert {r.source for r in store.images()} == {f"damaged.zip:tools/{f.name}" for f in (files[0], files[3])}
    assert store.check()["ok"]
    # the CLI says the same, as JSON, with no traceback
    out = run_cli("import", str(z), "--dataset", "cli", "--json", home=home)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert json.loads(out.stdout) == {"added": 2, "duplicates": 0, "conflicts": 0, "rejected": {"corrupt-zip-entry": 2}}


def test_a_file_named_zip_that_is_no_zip_is_a_one_line_message(store, photo_files, tmp_path, home):
    fake = tmp_path / "holiday.zip"
    fake.write_bytes(b"<html>this was a download error page</html>")
    with pytest.raises(DragonError, match="holiday.zip is not a zip file"):
        import_path(store, fake, label="cats")
    cut = tmp_path / "cut.zip"  # a real zip cut short: its directory at the end is gone
    cut.write_bytes(make_zip([("cats/a.webp", photo_files["fishes"][0].read_bytes())])[:-30])
    with pytest.raises(DragonError, match="cut.zip is not a zip file"):
        import_path(store, cut)
    assert store.images(status=None) == []
    out = run_cli("import", str(fake), "--dataset", "cli", "--json", home=home)
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "holiday.zip is not a zip file" in out.stderr


def test_zip_entries_whose_headers_declare_gigabytes_are_refused_unread(store, photo_files, tmp_path):
    good = photo_files["tools"][0].read_bytes()
    raw = _stored_zip([("cats/a.jpg", b"\xff\xd8\xff" + b"\0" * 1000), ("cats/b.jpg", b"\xff\xd8\xff" + b"\0" * 1000),
                       ("cats/good.webp", good)])
    three_gb = (3 * 1024**3).to_bytes(4, "little")
    for name in ("cats/a.jpg", "cats/b.jpg"):  # both size fields of the central directory say 3 GiB
        at = _central_entry(raw, name)
        raw[at + 20:at + 24] = three_gb
        raw[at + 24:at + 28] = three_gb
    z = tmp_path / "bomb.zip"
    z.write_bytes(bytes(raw))
    with zipfile.ZipFile(z) as zf:
        assert zf.getinfo("cats/a.jpg").file_size == 3 * 1024**3  # what a reader is told
    tracemalloc.start()
    with pytest.raises(DragonError, match="declares 6.4 GB uncompressed: refused as a zip bomb"):
        import_path(store, z)
    assert tracemalloc.get_traced_memory()[1] < 50_000_000
    assert store.images(status=None) == []
    # one such entry stays under the whole-zip limit: it alone is refused, the good image comes in
    raw = _stored_zip([("cats/a.jpg", b"\xff\xd8\xff" + b"\0" * 1000), ("cats/good.webp", good)])
    at = _central_entry(raw, "cats/a.jpg")
    raw[at + 20:at + 24] = three_gb
    raw[at + 24:at + 28] = three_gb
    z.write_bytes(bytes(raw))
    tracemalloc.reset_peak()
    report = import_path(store, z)
    assert tracemalloc.get_traced_memory()[1] < 100_000_000
    tracemalloc.stop()
    assert report.added == 1 and report.rejected == {"too-many-bytes": 1}
    assert "3221 MB" in next(i["detail"] for i in report.items if i["outcome"] == "refused")


def label_tree(root: Path, files_by_folder: dict) -> Path:
    """root/<folder>/<photo> for each folder and its photos, as a person lays out an import."""
    for folder, files in files_by_folder.items():
        (root / folder).mkdir(parents=True)
        for f in files:
            shutil.copy(f, root / folder / f.name)
    return root


def test_two_folders_that_map_to_one_label_folder_are_not_merged(store, photo_files, tmp_path):
    src = label_tree(tmp_path / "tree", {"Cat": photo_files["fishes"][:2], "cat": photo_files["tools"][:3]})
    report = import_path(store, src)
    assert report.added == 2 and report.rejected == {"label-clash": 3}
    assert store.status()["labels"] == {"Cat": 2}
    assert {r.source for r in store.images()} == {str(src / "Cat" / f.name) for f in photo_files["fishes"][:2]}
    assert report.messages == ["files under 'cat' not imported: label 'cat' would share the folder 'cat' with the"
                               " label 'Cat'; use 'Cat' or choose another name"]
    assert report.messages[0] in report.summary()
    # the same in a zip
    z = tmp_path / "two.zip"
    z.write_bytes(make_zip([(f"cat/{f.name}", f.read_bytes()) for f in photo_files["renewable"][:2]]))
    report = import_path(store, z)
    assert report.added == 0 and report.rejected == {"label-clash": 2} and "'Cat'" in report.messages[0]
    # typing the label's own name (spaces tidied) reaches it
    report = import_files(store, [photo_files["monuments"][0]], "  Cat ")
    assert report.added == 1 and store.status()["labels"] == {"Cat": 3}


def test_cli_edits_relabel_trash_restore_undo_redo_export_and_empty_trash(photo_files, home, tmp_path):
    """Every editing command as a person types it: files move, the journal undoes, nothing is lost silently."""
    src = label_tree(tmp_path / "in", {"fish": photo_files["fishes"][:3], "tool": photo_files["tools"][:3]})
    assert run_cli("import", str(src), "--dataset", "d", home=home).returncode == 0
    store = Store.open("d")
    fish = [r.id for r in store.images(label="fish")]

    def labels():
        return {lab: Store.open("d").status()["labels"][lab] for lab in ("fish", "tool")}

    def cli_json(*args):
        out = run_cli(*args, "--dataset", "d", "--json", home=home)
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
        return json.loads(out.stdout)

    moved = cli_json("relabel", fish[0], "--to", "tool")
    assert moved["changed"] == [fish[0]] and labels() == {"fish": 2, "tool": 4}
    assert Store.open("d").image(fish[0]).path.parent.name == "tool"
    refused = run_cli("relabel", fish[1], "--to", "shark", "--dataset", "d", home=home)
    assert refused.returncode == 1 and "shark" in refused.stderr and "Traceback" not in refused.stderr
    assert cli_json("relabel", fish[1], "--to", "shark", "--create")["changed"] == [fish[1]]
    assert Store.open("d").image(fish[1]).label == "shark"

    assert cli_json("trash", fish[2])["changed"] == [fish[2]]
    trashed = Store.open("d").image(fish[2])
    assert trashed.status == "trashed" and trashed.path.exists() and ".trash" in trashed.path.parts
    assert cli_json("trash", fish[2])["unchanged"] == [fish[2]]  # twice is harmless
    assert cli_json("restore", fish[2])["changed"] == [fish[2]]
    assert Store.open("d").image(fish[2]).status == "active"

    cli_json("undo")  # the restore
    assert Store.open("d").image(fish[2]).status == "trashed"
    cli_json("redo")
    assert Store.open("d").image(fish[2]).status == "active"
    cli_json("undo")  # the restore
    cli_json("undo")  # the trash (trashing it twice changed nothing, so it left no step)
    assert Store.open("d").image(fish[2]).status == "active"
    cli_json("undo")  # the relabel to shark
    assert Store.open("d").image(fish[1]).label == "fish" and labels() == {"fish": 2, "tool": 4}

    out = cli_json("export-dataset", "--out", str(tmp_path / "d.zip"))
    with zipfile.ZipFile(out["zip"]) as z:
        names = z.namelist()
    assert "manifest.csv" in names and sum(n.endswith(".jpg") for n in names) == 6

    cli_json("trash", fish[2])
    refused = run_cli("empty-trash", "--dataset", "d", home=home)
    assert refused.returncode == 2 and "--yes" in refused.stderr and Store.open("d").image(fish[2]).path.exists()
    gone = Store.open("d").image(fish[2]).path
    done = run_cli("empty-trash", "--dataset", "d", "--yes", home=home)
    assert done.returncode == 0 and not gone.exists()
    assert len(Store.open("d").images(status=None)) == 5


def test_zip_listing_too_many_entries_is_refused_before_its_directory_is_parsed(store, tmp_path, monkeypatch):
    """zipfile builds a ZipInfo per entry on open: a huge central directory must be refused from its count."""
    from dragonclf import importer

    z = tmp_path / "many.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED) as zf:
        for i in range(70_000):  # over 65,535: the count lives in the zip64 record
            zf.writestr(f"cats/{i}.txt", b"")
    assert importer.zip_declared_entries(z) == 70_000
    monkeypatch.setattr(importer, "ZIP_MAX_ENTRIES", 60_000)
    monkeypatch.setattr(zipfile, "ZipFile", lambda *a, **k: pytest.fail("the central directory was parsed"))
    with pytest.raises(DragonError, match="70,000 entries"):
        import_path(store, z)
    assert store.images(status=None) == []
