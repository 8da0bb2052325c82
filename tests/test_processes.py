"""Several processes and threads on one dataset: nobody's open, rescan or read disturbs another's work."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from conftest import REPO
from dragonclf.store import Store


@pytest.fixture
def store(home, photo_files):
    s = Store.open("pets", create=True)
    for label in ("fishes", "tools"):
        s.add_label(label)
        for f in photo_files[label][:3]:
            assert s.ingest(f.read_bytes(), label, {"origin": "import", "source": str(f)}).outcome == "added"
    return s


def cli(home, *args, wait=True):
    cmd = [sys.executable, "-m", "dragonclf", *args]
    env = {**os.environ, "DRAGONCLF_HOME": str(home)}
    if not wait:
        return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)


def paused_ingest(home, tmp_path, photo):
    """A process that ingests `photo` under "tools" and stops just before renaming it into place."""
    code = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(REPO)!r})
        from dragonclf.store import Store
        real = os.replace
        def paused(a, b):
            if str(b).endswith(".jpg"):
                open({str(tmp_path / "paused")!r}, "w").close()
                while not os.path.exists({str(tmp_path / "go")!r}):
                    time.sleep(0.02)
            real(a, b)
        os.replace = paused
        r = Store.open("pets").ingest(open({str(photo)!r}, "rb").read(), "tools", {{"origin": "collect", "source": "web"}})
        print(r.outcome, r.image_id)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "DRAGONCLF_HOME": str(home)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not (tmp_path / "paused").exists():
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.02)
    return proc


def test_other_processes_opening_and_repairing_the_dataset_do_not_destroy_an_add_in_progress(store, home, tmp_path,
                                                                                             photo_files):
    """`status` and `check --repair` in other shells while a collect stores a picture: the picture is stored."""
    photo = photo_files["tools"][-1]
    writer = paused_ingest(home, tmp_path, photo)
    assert cli(home, "status", "--dataset", "pets").returncode == 0
    repair = cli(home, "check", "--dataset", "pets", "--repair", wait=False)  # waits for the writer's rename
    (tmp_path / "go").touch()
    out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    assert repair.wait(timeout=120) == 0, repair.stderr.read()
    outcome, image_id = out.split()
    assert outcome == "added"
    store.close()
    s = Store.open("pets")
    row = s.image(image_id)
    assert row.status == "active" and row.origin == "collect" and row.source == "web"
    assert hashlib.sha256(row.path.read_bytes()).hexdigest() == row.sha256
    assert s.check()["ok"] and not (s.root / ".adopted").exists()


def test_rescan_during_an_add_does_not_take_the_new_picture_for_a_stray_file(store, home, tmp_path, photo_files):
    """Rescan reads the known ids, then an add lands: the picture keeps its row and provenance."""
    photo = photo_files["fishes"][-1]
    started = threading.Event()
    real_labels = Store.labels
    procs = []

    def labels_then_an_add(self):
        if not started.is_set():  # rescan has read its known ids: another process adds a picture now
            started.set()
            code = textwrap.dedent(f"""
                import sys
                sys.path.insert(0, {str(REPO)!r})
                from dragonclf.store import Store
                r = Store.open("pets").ingest(open({str(photo)!r}, "rb").read(), "fishes", {{"origin": "collect"}})
                print(r.outcome, r.image_id)
            """)
            procs.append(subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                                          env={**os.environ, "DRAGONCLF_HOME": str(home)}))
            deadline = time.monotonic() + 8  # long enough for it to land, unless something holds it back
            while time.monotonic() < deadline and procs[0].poll() is None:
                row = self._db.execute("SELECT status FROM images WHERE source IS NULL AND origin='collect'").fetchone()
                if row is not None:
                    time.sleep(1.0)  # let it land its file if nothing holds it back
                    break
                time.sleep(0.05)
        return real_labels(self)

    Store.labels = labels_then_an_add
    try:
        report = store.rescan()
    finally:
        Store.labels = real_labels
    out, _ = procs[0].communicate(timeout=120)
    outcome, image_id = out.split()
    assert outcome == "added" and report["adopted"] == 0 and report["missing"] == []
    row = store.image(image_id)
    assert row.status == "active" and row.origin == "collect" and row.path.exists()
    assert not (store.root / ".adopted").exists() and store.check()["ok"]


def test_a_read_in_one_thread_never_sees_another_threads_uncommitted_rows(store):
    inside, done = threading.Event(), threading.Event()
    seen = []

    def writer():
        try:
            with store._tx() as db:
                db.execute("UPDATE images SET status='trashed' WHERE folder='fishes'")
                inside.set()
                done.wait(30)
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass

    t = threading.Thread(target=writer)
    t.start()
    assert inside.wait(30)
    seen.append(len(store.images(status="trashed")))
    seen.append(store.status()["trashed"])
    done.set()
    t.join()
    assert seen == [0, 0] and len(store.images(status="trashed")) == 0


def test_empty_trash_killed_between_rows_and_files_leaves_no_orphans(store, home):
    ids = [r.id for r in store.images(label="tools")]
    store.trash(ids)
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r})
        from dragonclf.store import Store
        s = Store.open("pets")
        real = os.unlink
        def die(p, *a, **k):
            if str(p).endswith(".jpg"):
                os._exit(9)  # killed after the rows were deleted, before the first file
            real(p, *a, **k)
        os.unlink = die
        from pathlib import Path
        Path.unlink = lambda self, missing_ok=False: die(str(self))
        s.empty_trash()
    """)
    assert subprocess.run([sys.executable, "-c", code], env={**os.environ, "DRAGONCLF_HOME": str(home)}).returncode == 9
    store.close()
    s = Store.open("pets")
    assert not any((s.root / ".trash").glob("*.jpg")) and len(s.images(status=None)) == 3
    assert s.check()["ok"]


def test_an_added_picture_is_durable_before_its_row_says_active(store, photo_files, monkeypatch):
    """The file and the folder entry of its rename are fsynced before the activating commit."""
    events = []
    real_fsync = os.fsync

    def spy(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    store._db.set_trace_callback(lambda sql: events.append(("sql", sql)))
    r = store.ingest(photo_files["tools"][-1].read_bytes(), "tools")
    store._db.set_trace_callback(None)
    activate = next(i for i, e in enumerate(events) if e[0] == "sql" and "SET status='active'" in e[1])
    commit = next(i for i, e in enumerate(events) if i > activate and e == ("sql", "COMMIT"))
    synced = [e[1] for e in events[:commit] if e[0] == "fsync"]
    assert any(p.endswith(".part") for p in synced), synced  # the data
    assert str(r.path.parent) in synced, synced  # the rename


def test_a_model_folder_is_on_disk_before_it_is_listed(home, monkeypatch):
    """Every file of a model and its folder are fsynced before the rename that makes it visible."""
    from dragonclf import modelstore

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
                        or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(("replace", str(b))) or real_replace(a, b))
    with modelstore.staging("pets", "m1") as tmp:
        (tmp / "model.onnx").write_bytes(b"onnx")
        (tmp / "model.json").write_text("{}")
    listed = events.index(("replace", str(modelstore.dataset_dir("pets") / "m1")))
    synced = {e[1] for e in events[:listed] if e[0] == "fsync"}
    assert {str(tmp / "model.onnx"), str(tmp / "model.json"), str(tmp)} <= synced, synced
    assert ("fsync", str(modelstore.dataset_dir("pets"))) in events[listed:]


def test_two_processes_storing_the_same_picture_at_once_store_it_once(store, photo_files, monkeypatch):
    """The second writer's row insert used to fail with a UNIQUE constraint error (the check ran before its
    transaction); now it answers "duplicate"."""
    data = photo_files["tools"][-1].read_bytes()
    other = Store(store.root, store.name)  # another process's store: its own locks and connections
    real = Store.near_duplicates_of
    raced = []

    def meanwhile(self, *a, **k):
        if self is store and not raced:
            raced.append(other.ingest(data, "fishes"))  # lands between our check and our insert
        return real(self, *a, **k)

    monkeypatch.setattr(Store, "near_duplicates_of", meanwhile)
    mine = store.ingest(data, "tools")
    other.close()
    assert raced[0].outcome == "added" and mine.outcome == "conflict" and mine.image_id == raced[0].image_id
    assert len([r for r in store.images() if r.id == mine.image_id]) == 1
    assert not list((store.root / ".tmp").rglob("*.part")) and store.check()["ok"]


def test_a_lock_file_left_by_a_writer_killed_before_naming_it_is_removed_and_a_live_ones_kept(store):
    """A writer creates its lock as `.tmp/.new-<pid>-<token>`, then names it: killed in between, the file is debris."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    tmp = store.root / ".tmp"
    tmp.mkdir(exist_ok=True)
    (tmp / f".new-{dead.stdout.strip()}-0123456789").touch()
    (tmp / f".new-{os.getpid()}-0123456789").touch()  # a live process (this one) about to name its lock
    store.close()
    Store.open("pets")
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith(".new-")) == [f".new-{os.getpid()}-0123456789"]
