"""The dataset store: manifest + folders, journal, undo/redo, rescan, crash recovery."""

import hashlib
import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO
from dragonclf.errors import DragonError
from dragonclf.store import Decision, Store, list_datasets


@pytest.fixture
def store(photo_files):
    s = Store.open("pets", create=True)
    for label in ("fishes", "tools"):
        s.add_label(label)
        for f in photo_files[label][:5]:
            assert s.ingest(f.read_bytes(), label, {"origin": "import", "source": str(f)}).outcome == "added"
    return s


def files_on_disk(s):
    return {p.relative_to(s.root).as_posix() for p in s.root.rglob("*.jpg")}


def manifest_paths(s):
    return {r.path.relative_to(s.root).as_posix() for r in s.images(status=None)}


def test_images_land_in_label_folders_with_manifest_rows(store, home):
    assert store.root == home / "datasets" / "pets"
    rows = store.images()
    assert len(rows) == 10
    assert all(r.path.exists() and r.path.parent.name == r.folder for r in rows)
    assert files_on_disk(store) == manifest_paths(store)
    assert rows[0].origin == "import" and rows[0].source.endswith(".webp")
    con = sqlite3.connect(store.db_path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_exact_duplicate_is_stored_once_and_second_label_is_a_conflict(store, photo_files):
    data = photo_files["fishes"][0].read_bytes()
    assert store.ingest(data, "fishes").outcome == "duplicate"
    res = store.ingest(data, "tools", {"source": "http://x/y.jpg"})
    assert res.outcome == "conflict"
    assert len(store.images()) == 10
    assert store.conflicts() == [{"image_id": res.image_id, "label": "fishes", "other_label": "tools",
                                  "source": "http://x/y.jpg"}]
    assert store.status()["conflicts"] == 1


def test_an_ingest_result_says_where_the_picture_is_stored(store, photo_files):
    fresh = photo_files["fishes"][5].read_bytes()
    added = store.ingest(fresh, "fishes")
    assert added.outcome == "added" and added.path == store.image(added.image_id).path and added.path.is_file()
    assert store.ingest(fresh, "fishes").path == added.path  # duplicate: the stored one
    assert store.ingest(fresh, "tools").path == added.path  # conflict: where it is stored
    store.trash([added.image_id])
    again = store.ingest(fresh, "fishes")
    assert again.outcome == "duplicate" and again.path == store.image(added.image_id).path and again.path.is_file()
    assert store.ingest(b"not an image", "fishes").path is None


def test_closing_a_second_instance_leaves_the_shared_one_open(store):
    """A second `Store` on the same folder (a second session) used to drop the shared one on close."""
    other = Store(store.root, store.name)
    other.close()
    assert Store.open("pets") is store
    assert len(store.images()) == 10


def test_close_all_makes_the_next_open_read_afresh(store):
    from dragonclf import store as store_mod

    store_mod.close_all()
    again = Store.open("pets")
    assert again is not store and len(again.images()) == 10
    with pytest.raises(sqlite3.ProgrammingError):
        store.images()  # the old one is closed


def test_label_or_create_finds_creates_and_never_merges_a_clash(store):
    assert store.label_or_create("fishes").folder == "fishes"
    assert store.label_or_create("Birds ").display == "Birds" and "Birds" in [lab.display for lab in store.labels()]
    with pytest.raises(DragonError, match="birds"):
        store.label_or_create("birds")  # "Birds" has that folder


def test_a_picture_whose_twin_is_trashed_is_a_duplicate_not_an_invisible_conflict(store, photo_files, tmp_path):
    from dragonclf.importer import import_files

    twin = store.images(label="fishes")[0]
    store.trash([twin.id])
    src = tmp_path / "again.webp"
    src.write_bytes(photo_files["fishes"][0].read_bytes())
    report = import_files(store, [src], "tools")
    assert (report.added, report.duplicates, report.conflicts) == (0, 1, 0)
    assert report.items[0]["detail"] == "already stored under 'fishes', in the trash; restore it to use it"
    assert store.conflicts() == [] and store.status()["conflicts"] == 0 and store.status()["trashed"] == 1
    assert len(store.images(status=None)) == 10  # stored nowhere a second time
    # restored, the picture is active under its own label and a new arrival under tools is a conflict again
    store.restore([twin.id])
    assert import_files(store, [src], "tools").conflicts == 1
    assert [(c["label"], c["other_label"]) for c in store.conflicts()] == [("fishes", "tools")]


def test_near_duplicates_are_recorded_not_dropped_and_share_a_split(store, photo_files):
    from PIL import Image
    import io

    im = Image.open(photo_files["fishes"][0]).convert("RGB")
    buf = io.BytesIO()
    im.crop((2, 2, im.width - 2, im.height - 2)).save(buf, "JPEG", quality=70)
    res = store.ingest(buf.getvalue(), "fishes")
    assert res.outcome == "added"
    groups = store.near_duplicate_groups()
    assert any(res.image_id in g for g in groups)
    group = next(g for g in groups if res.image_id in g)
    assert len({store.image(i).split for i in group}) == 1


def test_every_label_gets_its_share_of_validation_images_and_keeps_it(home, photo_files):
    store = Store.open("split", create=True)
    sizes = {"fishes": 8, "monuments": 10, "renewable": 14, "tools": 27}
    for label, n in sizes.items():
        store.add_label(label)
        for f in photo_files[label][:n]:
            assert store.ingest(f.read_bytes(), label).outcome == "added"
    rows = store.images()
    for share in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5):  # the Train tab's choices
        for label, n in sizes.items():
            valid = sum(1 for r in rows if r.label == label and r.split == "valid") if share == 0.2 else \
                sum(1 for r in rows if r.label == label and r.split_key < share)
            assert abs(valid - n * share) <= 1.0, (label, share, valid)  # within one picture
    # The split is fixed when an image arrives: later arrivals do not move earlier images.
    before = {r.id: r.split for r in store.images()}
    for f in photo_files["fishes"][8:20]:
        store.ingest(f.read_bytes(), "fishes")
    assert {i: store.image(i).split for i in before} == before


def test_trash_restore_relabel_undo_redo_move_files_and_lose_nothing(store):
    a, b = [r.id for r in store.images(label="fishes")[:2]]
    store.trash([a])
    assert store.image(a).status == "trashed" and store.image(a).path.parent.name == ".trash"
    assert store.trash([a]).unchanged == [a]  # trashing twice is harmless
    store.relabel([b], "tools")
    assert store.image(b).path.parent.name == "tools" and store.image(b).path.exists()
    store.undo()
    assert store.image(b).label == "fishes" and store.image(b).path.exists()
    store.undo()
    assert store.image(a).status == "active" and store.image(a).path.exists()
    with pytest.raises(DragonError, match="nothing to undo"):
        store.undo()
    store.redo()
    assert store.image(a).status == "trashed"
    store.redo()
    assert store.image(b).label == "tools"
    with pytest.raises(DragonError, match="nothing to redo"):
        store.redo()
    assert files_on_disk(store) == manifest_paths(store)
    assert len(store.images(status=None)) == 10


def test_relabel_to_missing_label_is_refused_unless_created(store):
    i = store.images()[0].id
    with pytest.raises(DragonError, match="does not exist"):
        store.relabel([i], "Viserion 🐉")
    store.relabel([i], "Viserion 🐉", create_labels=True)
    assert store.image(i).label == "Viserion 🐉" and store.image(i).path.parent.name == "viserion"


def test_a_name_whose_folder_belongs_to_another_label_is_refused_everywhere(store, photo_files):
    from dragonclf.collect import collect
    from dragonclf.names import NameClash

    store.add_label("Cat")
    ids = [r.id for r in store.images(label="fishes")[:2]]
    before = [(r.id, r.folder, r.status) for r in store.images(status=None)]
    clash = "label 'cat' would share the folder 'cat' with the label 'Cat'; use 'Cat' or choose another name"
    for create in (False, True):  # relabel (Clean tab, CLI): with or without creating labels
        with pytest.raises(NameClash) as err:
            store.apply([Decision(i, "relabel", "cat") for i in ids], create_labels=create)
        assert str(err.value) == clash
    with pytest.raises(NameClash, match="'Cat'"):
        store.ingest(photo_files["renewable"][0].read_bytes(), "CAT")
    with pytest.raises(NameClash, match="use 'Cat'"):  # collect resolves its label before any search
        collect(store, "cat", urls=["http://127.0.0.1:9/never-fetched.jpg"])
    assert [(r.id, r.folder, r.status) for r in store.images(status=None)] == before
    assert [lab.display for lab in store.labels()] == ["Cat", "fishes", "tools"] and not store.can_redo()
    # the label's own display name, as typed again (spaces tidied), finds it
    assert store.label(" Cat ").display == "Cat"
    assert store.relabel(ids, "Cat ", create_labels=True).changed == ids
    assert {r.label for r in store.images() if r.id in ids} == {"Cat"}
    assert store.add_label("Cat").folder == "cat" and len(store.labels()) == 3


def test_undo_skips_images_someone_else_changed_since(store):
    i = store.images()[0].id
    other = Store(store.root, store.name)  # a second session (own connection)
    store.relabel([i], "tools")
    other.trash([i])
    res = store.undo()  # undo the trash (the latest batch)
    assert res.changed == [i]
    res = store.undo()  # the relabel: still applies, since the trash was undone
    assert store.image(i).label == "fishes"
    other.close()


def test_empty_trash_is_the_only_delete(store):
    i = store.images()[0].id
    path = store.image(i).path
    store.trash([i])
    assert not path.exists() and store.image(i).path.exists()
    assert store.empty_trash() == 1
    assert len(store.images(status=None)) == 9
    with pytest.raises(DragonError):
        store.image(i)


def test_rescan_adopts_dropped_files_and_notices_removed_ones(store, photo_files):
    dropped = store.root / "tools" / "my photo.webp"
    dropped.write_bytes(photo_files["tools"][9].read_bytes())
    (store.root / "Grizzly Bear").mkdir()
    (store.root / "Grizzly Bear" / "bear.webp").write_bytes(photo_files["monuments"][0].read_bytes())
    (store.root / "tools" / "notes.txt").write_text("hello")
    gone = store.images(label="fishes")[0]
    gone.path.unlink()
    check = store.check()
    assert not check["ok"] and gone.id in check["missing"] and len(check["unknown_files"]) == 3
    report = store.rescan()
    assert report["adopted"] == 2 and report["rejected"] == {"not-an-image": 1}
    assert report["new_labels"] == ["Grizzly Bear"] and report["missing"] == [gone.id]
    assert store.image(gone.id).status == "missing"
    assert (store.root / ".adopted" / "tools" / "my photo.webp").exists()  # original kept aside
    assert (store.root / ".rejected" / "tools" / "notes.txt").exists()
    assert store.check()["ok"]
    assert {r.source for r in store.images(label="Grizzly Bear")} == {"Grizzly Bear/bear.webp"}


def test_a_picture_removed_by_hand_can_come_back(store, photo_files, tmp_path):
    rows = store.images(label="fishes")
    gone, put_back, trashed = rows[0], rows[1], rows[2]
    saved = put_back.path.read_bytes()
    store.trash([trashed.id])
    trashed_file = store.image(trashed.id).path
    trashed_saved = trashed_file.read_bytes()
    for p in (gone.path, put_back.path, trashed_file):
        p.unlink()
    assert sorted(store.rescan()["missing"]) == sorted([gone.id, put_back.id, trashed.id])
    assert {store.image(i).status for i in (gone.id, put_back.id, trashed.id)} == {"missing"}
    # (a) the same picture imported again is stored again, under the label it arrives with
    res = store.ingest(photo_files["fishes"][0].read_bytes(), "tools", {"origin": "upload", "source": "again.webp"})
    assert (res.outcome, res.image_id) == ("added", gone.id) and "removed by hand" in res.detail
    back = store.image(gone.id)
    assert back.status == "active" and back.label == "tools" and back.path.exists()
    assert back.source == gone.source  # the row keeps its provenance and split
    assert store.history(1)[0]["action"] == "back"
    assert store.ingest(photo_files["fishes"][0].read_bytes(), "tools").outcome == "duplicate"
    # (b, c) the very file put back by hand: check reports it, rescan takes it back where it lies
    put_back.path.write_bytes(saved)
    trashed_file.write_bytes(trashed_saved)
    check = store.check()
    assert not check["ok"] and check["found"] == sorted([put_back.id, trashed.id]) and check["unknown_files"] == []
    assert store.image(put_back.id).status == "missing"  # check without repair changes nothing
    report = store.check(repair=True)
    assert report["found"] == sorted([put_back.id, trashed.id]) and report["adopted"] == 0
    assert store.image(put_back.id).status == "active" and store.image(put_back.id).path == put_back.path
    assert store.image(trashed.id).status == "trashed"
    assert put_back.path.read_bytes() == saved and not (store.root / ".adopted").exists()
    assert store.check()["ok"] and files_on_disk(store) == manifest_paths(store)
    assert len(store.images(label="fishes")) == 3 and len(store.images(label="tools")) == 6


def test_a_different_picture_under_a_missing_ones_name_is_adopted_as_new(store, photo_files):
    gone = store.images(label="fishes")[0]
    gone.path.unlink()
    store.rescan()
    gone.path.write_bytes(photo_files["monuments"][3].read_bytes())  # not the stored bytes
    check = store.check()
    assert check["found"] == [] and check["unknown_files"] == [f"fishes/{gone.id}.jpg"]
    report = store.rescan()
    assert report["adopted"] == 1 and store.image(gone.id).status == "missing"
    assert (store.root / ".adopted" / "fishes" / f"{gone.id}.jpg").exists()
    assert store.check()["ok"]


def test_label_names(store):
    assert store.add_label("grizzly bear").folder == "grizzly_bear"
    assert store.add_label("Viserion 🐉").folder == "viserion"
    assert store.add_label("Drogon").display == "Drogon"
    for bad in ("", "   ", ".", "..", "a/b", "..\\x", "tab\there", "nul\x00", "zero\u200bwidth"):
        with pytest.raises(DragonError):
            store.add_label(bad)
    with pytest.raises(DragonError, match="share the folder"):
        store.add_label("VISERION")
    assert {p.name for p in store.root.iterdir()} >= {"grizzly_bear", "viserion", "drogon"}
    assert not (store.root.parent / "b").exists()


def test_hostile_dataset_names_are_refused(home):
    for bad in ("..", "../x", "/etc", "a/b", "", ".hidden", "x" * 80):
        with pytest.raises(DragonError):
            Store.open(bad, create=True)
    assert list(home.iterdir()) == [] or [p.name for p in home.iterdir()] == ["datasets"]


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(DragonError, match="no dataset named 'nope'"):
        Store.open("nope")


def _tree_state(root):
    """Files and their sizes/times; the repo's own manifest.sqlite is left out (an app run at the default root writes it)."""
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and not p.name.startswith("manifest.sqlite")}


def test_bundled_demo_is_available_whatever_the_root(home):
    bundled = REPO / "datasets" / "demo"
    untouched = _tree_state(bundled)
    assert "demo" in list_datasets()
    demo = Store.open("demo")
    assert demo.root == home / "datasets" / "demo"
    assert demo.status()["labels"] == {"fishes": 28, "monuments": 27, "renewable": 28, "tools": 39}
    unattributed = [r.source for r in demo.images() if not (r.license in ("Public Domain", "CC0-1.0") and r.page_url)]
    assert unattributed == ["gcompris-qt-data/tools/screwDriver.webp"]  # its upstream README names no source
    assert demo.check()["ok"]
    assert (demo.root / "manifest.sqlite").exists() and (demo.root / "fishes" / "README").exists()
    # Its validation split is balanced: each class within one picture of its share, at every offered share.
    for share in (0.1, 0.2, 0.3, 0.5):
        for label, n in demo.status()["labels"].items():
            valid = sum(1 for r in demo.images(label=label) if r.split_key < share)
            assert abs(valid - n * share) <= 1.0, (label, share, valid)
    assert _tree_state(bundled) == untouched  # the repo's copy is read, never written, from another root


def test_crash_in_the_middle_of_a_bulk_move_is_finished_on_next_open(store, home):
    """Kill a process after the manifest committed a bulk relabel but before its files moved."""
    ids = [r.id for r in store.images(label="fishes")]
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r})
        from dragonclf import store as m
        real = os.replace
        calls = []
        def dying_replace(a, b):
            calls.append(1)
            if len(calls) == 3:
                os._exit(9)  # killed mid-move
            real(a, b)
        s = m.Store.open("pets")
        os.replace = dying_replace
        s.relabel({ids!r}, "tools")
    """)
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "DRAGONCLF_HOME": str(home)})
    assert proc.returncode == 9
    store.close()
    reopened = Store.open("pets")
    assert all(reopened.image(i).label == "tools" and reopened.image(i).path.exists() for i in ids)
    assert reopened.check()["ok"] and len(reopened.images()) == 10


def test_crash_during_an_add_leaves_the_picture_whole_or_absent(store, home, photo_files):
    """Killed before its rename: the temp file was complete and its row committed, so recovery adopts it."""
    data = photo_files["monuments"][0].read_bytes()
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r})
        from dragonclf import store as m
        s = m.Store.open("pets")
        real = os.replace
        def die(a, b):
            if str(b).endswith(".jpg"):
                os._exit(9)  # killed just before the picture's rename
            real(a, b)
        os.replace = die
        s.ingest(open({str(photo_files['monuments'][0])!r}, 'rb').read(), "tools")
    """)
    assert subprocess.run([sys.executable, "-c", code], env={**os.environ, "DRAGONCLF_HOME": str(home)}).returncode == 9
    store.close()
    s = Store.open("pets")
    assert len(s.images(status=None)) == 11 and not list((s.root / ".tmp").iterdir())
    adopted = s.images(label="tools")[-1]
    assert hashlib.sha256(adopted.path.read_bytes()).hexdigest() == adopted.sha256
    assert s.check()["ok"]
    assert s.ingest(data, "tools").outcome == "duplicate"  # stored once, not twice


def test_keep_marks_are_journalled(store):
    i = store.images()[0].id
    store.apply([Decision(i, "keep")])
    assert store.image(i).kept
    store.undo()
    assert not store.image(i).kept
