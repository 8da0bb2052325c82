"""Managing labels and datasets (issue 13, trap 6), with real files, real SQLite and real processes.

Labels: rename (spaces become a safe folder), merge, delete (pictures to the trash), each one Undo
step; clear refusals that change nothing. Datasets: rename and delete for the owner only, deleted
ones kept and restorable with their models. Collect: a failed search leaves no empty label, says
what happened in words, and the next class goes on.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from app_fixtures import free_port
from conftest import REPO
from dragonclf import access, config, manage
from dragonclf.collect import collect, collect_classes
from dragonclf.errors import DragonError
from dragonclf.identity import LOCAL, Identity
from dragonclf.importer import import_files
from dragonclf.journal import Decision
from dragonclf.registry import Registry
from dragonclf.search import SearchResult
from dragonclf.store import Store, close_all, list_datasets
from httpserver import LoopbackServer, real_photos

ALICE = Identity("user:alice", "alice", "user")
BOB = Identity("user:bob", "bob", "user")
OLGA = Identity("user:olga", "olga", "user", is_admin=True)
VISITOR = Identity("anon:tab1", "visitor", "anon")


def zoo(photo_files, name="zoo", n=3) -> Store:
    store = Store.open(name, create=True)
    import_files(store, photo_files["fishes"][:n], "fish")
    import_files(store, photo_files["tools"][:n], "tool")
    return store


def where(store) -> dict[str, list[str]]:
    """Label -> sorted ids of its active pictures, each checked to be on disk where its row says."""
    out = {}
    for r in store.images():
        assert r.path.is_file() and r.path.parent.name == store.label(r.label).folder, r
        out.setdefault(r.label, []).append(r.id)
    return {k: sorted(v) for k, v in out.items()}


def folders(store) -> set[str]:
    return {p.name for p in store.root.iterdir() if p.is_dir() and not p.name.startswith(".")}


# ---- labels ------------------------------------------------------------------------

def test_rename_moves_pictures_to_a_safe_folder_and_undo_redo_walk_it(photo_files):
    store = zoo(photo_files)
    before = where(store)
    trashed = before["fish"][0]
    store.trash([trashed])
    change = store.rename_label("fish", "Sea creatures", actor=LOCAL.id)
    assert change.label == "Sea creatures" and change.moved == 3 and "train again" in change.message
    assert store.label("Sea creatures").folder == "sea_creatures"
    assert folders(store) == {"sea_creatures", "tool"}
    assert where(store)["Sea creatures"] == before["fish"][1:]
    assert store.image(trashed).label == "Sea creatures"  # a trashed picture follows its label
    assert store.check()["ok"]

    res = store.undo(actor=LOCAL.id)
    assert res.labels == ["label 'Sea creatures' is called 'fish' again"] and len(res.changed) == 3
    assert folders(store) == {"fish", "tool"} and where(store) == {"fish": before["fish"][1:], "tool": before["tool"]}
    store.redo(actor=LOCAL.id)
    assert folders(store) == {"sea_creatures", "tool"} and store.check()["ok"]

    # a change of case only: the same folder, no picture moves
    change = store.rename_label("tool", "Tool", actor=LOCAL.id)
    assert change.moved == 0 and store.label("Tool").folder == "tool" and where(store)["Tool"] == before["tool"]
    store.restore([trashed])
    assert len(where(store)["Sea creatures"]) == 3 and store.check()["ok"]


@pytest.mark.parametrize("new, message", [
    ("tool", "already exists.*merge 'fish' into 'tool'"),
    ("TOOL!", "would share the folder 'tool' with the label 'tool'.*merge"),
    ("fish", "already called that"),
    ("a/b", "cannot contain '/'"),
    ("   ", "cannot be empty"),
    ("x" * 80, "longer than 64"),
])
def test_renames_that_cannot_be_done_say_why_and_change_nothing(photo_files, new, message):
    store = zoo(photo_files)
    before, batches = where(store), len(store.history())
    with pytest.raises(DragonError, match=message):
        store.rename_label("fish", new)
    assert where(store) == before and folders(store) == {"fish", "tool"} and len(store.history()) == batches
    with pytest.raises(DragonError, match="does not exist"):
        store.rename_label("whale", "orca")


def test_merge_moves_every_picture_and_undo_splits_them_again(photo_files):
    store = zoo(photo_files)
    before = where(store)
    with pytest.raises(DragonError, match="no label 'whale' to merge 'fish' into.*rename"):
        store.merge_labels("fish", "whale")
    with pytest.raises(DragonError, match="into itself"):
        store.merge_labels("fish", "fish")
    change = store.merge_labels("fish", "tool", actor=LOCAL.id)
    assert change.moved == 3 and [lab.display for lab in store.labels()] == ["tool"]
    assert where(store) == {"tool": sorted(before["fish"] + before["tool"])} and folders(store) == {"tool"}
    res = store.undo(actor=LOCAL.id)
    assert res.labels == ["label 'fish' is back"] and where(store) == before and store.check()["ok"]


def test_delete_sends_pictures_to_the_trash_and_a_restored_picture_brings_the_label_back(photo_files):
    store = zoo(photo_files)
    before = where(store)
    change = store.delete_label("fish", actor=LOCAL.id)
    assert change.label is None and change.moved == 3 and "trash" in change.message
    assert [lab.display for lab in store.labels()] == ["tool"] and store.status()["trashed"] == 3
    assert all((store.root / ".trash" / f"{i}.jpg").is_file() for i in before["fish"])
    assert folders(store) == {"tool"} and store.check()["ok"]

    store.apply([Decision(before["fish"][0], "restore")], actor=LOCAL.id)  # from the trash, as Clean does
    assert where(store)["fish"] == [before["fish"][0]]  # the label is back, with its own name
    assert store.undo(actor=LOCAL.id).labels == ["label 'fish' is gone again"]
    assert "fish" not in [lab.display for lab in store.labels()]
    res = store.undo(actor=LOCAL.id)  # the delete itself
    assert res.labels == ["label 'fish' is back"] and where(store) == before and store.check()["ok"]


def test_redo_of_a_delete_is_refused_when_pictures_arrived_since(photo_files):
    store = zoo(photo_files)
    store.delete_label("fish")
    store.undo()
    import_files(store, photo_files["fishes"][3:4], "fish")
    before = where(store)
    with pytest.raises(DragonError, match="pictures added since"):
        store.redo()
    assert where(store) == before and store.check()["ok"]


def test_a_rename_interrupted_before_its_files_moved_is_finished_on_the_next_open(photo_files, home):
    store = zoo(photo_files)
    ids = where(store)["fish"]
    close_all()
    code = ("import os\nfrom dragonclf.store import Store\ns = Store.open('zoo')\n"
            "os.rename = lambda a, b: os._exit(9)\n"  # the process dies after the commit, before the folder moves
            "s.rename_label('fish', 'goldfish')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "DRAGONCLF_HOME": str(home)})
    assert r.returncode == 9, r.stderr
    assert (home / "datasets" / "zoo" / "fish").is_dir() and not (home / "datasets" / "zoo" / "goldfish").exists()
    again = Store.open("zoo")
    assert where(again)["goldfish"] == ids and again.check()["ok"]


def test_cli_label_rename_merge_delete_and_undo(photo_files, home):
    zoo(photo_files)
    close_all()

    def cli(*args, ok=True):
        r = subprocess.run([sys.executable, "-m", "dragonclf", *args], cwd=REPO, capture_output=True, text=True,
                           timeout=120, env={**os.environ, "DRAGONCLF_HOME": str(home)})
        assert (r.returncode == 0) == ok, r.stderr
        assert "Traceback" not in r.stderr
        return r

    out = json.loads(cli("label", "rename", "fish", "Sea creatures", "--dataset", "zoo", "--json").stdout)
    assert out["label"] == "Sea creatures" and out["moved"] == 3
    assert "already exists" in cli("label", "rename", "tool", "Sea creatures", "--dataset", "zoo", ok=False).stderr
    assert "Merged label 'tool' into 'Sea creatures'" in cli("label", "merge", "tool", "Sea creatures",
                                                             "--dataset", "zoo").stdout
    assert "in the trash" in cli("label", "delete", "Sea creatures", "--dataset", "zoo").stdout
    assert Store.open("zoo").status()["trashed"] == 6
    for _ in range(3):
        cli("undo", "--dataset", "zoo")
    close_all()
    store = Store.open("zoo")
    assert {lab.display: lab.count for lab in store.labels()} == {"fish": 3, "tool": 3} and store.check()["ok"]


# ---- datasets ----------------------------------------------------------------------

def test_owner_renames_deletes_and_restores_a_dataset_with_its_models(photo_files):
    store = access.create_dataset(ALICE, "birds")
    import_files(store, photo_files["fishes"][:3], "fish")
    model = config.models_root() / store.name / "m1"
    model.mkdir(parents=True)
    (model / "model.json").write_text(json.dumps({"dataset": store.name, "labels": ["fish"]}))
    access.share(ALICE, "birds", "bob", "edit")

    for who, name in ((BOB, "birds"), (VISITOR, "user.alice--birds"), (BOB, "user.alice--birds")):
        with pytest.raises(access.Denied):
            manage.rename_dataset(who, name, "mine")
        with pytest.raises(access.Denied):
            manage.delete_dataset(who, name)
    assert "user.alice--birds" in list_datasets()

    new = manage.rename_dataset(ALICE, "birds", "sea birds")
    assert new == "user.alice--sea-birds" and "user.alice--birds" not in list_datasets()
    assert json.loads((config.models_root() / new / "m1" / "model.json").read_text())["dataset"] == new
    assert access.role(BOB, new) == "edit" and len(Store.open(new).images()) == 3  # shares follow
    assert manage.undo_dataset_change(ALICE) == ("user.alice--birds", "Undone: the dataset is called 'birds' again.")
    assert "user.alice--birds" in list_datasets()

    deleted = manage.delete_dataset(ALICE, "birds")
    assert "user.alice--birds" not in list_datasets() and not (config.models_root() / "user.alice--birds").exists()
    assert [d["id"] for d in manage.deleted_datasets(ALICE)] == [deleted]
    assert manage.deleted_datasets(BOB) == [] and [d["id"] for d in manage.deleted_datasets(OLGA)] == [deleted]
    with pytest.raises(access.Denied):
        manage.restore_dataset(BOB, deleted)
    with pytest.raises(DragonError, match="No dataset named"):
        access.check(ALICE, "birds", "read")
    name, said = manage.undo_dataset_change(ALICE)
    assert name == "user.alice--birds" and "back" in said
    assert len(Store.open(name).images()) == 3 and access.role(BOB, name) == "edit"
    assert (config.models_root() / name / "m1" / "model.json").is_file() and manage.deleted_datasets(ALICE) == []

    # gone for good only on purpose
    deleted = manage.delete_dataset(OLGA, name)  # an admin may
    assert "gone for good" in manage.purge_deleted(ALICE, deleted)
    assert not any((config.datasets_root() / ".deleted").iterdir()) and manage.deleted_datasets(ALICE) == []


def test_dataset_names_clashes_and_the_demo_are_clear_refusals(photo_files):
    Store.open("a", create=True)
    Store.open("b", create=True)
    with pytest.raises(DragonError, match="already a dataset named 'b'"):
        manage.rename_dataset(LOCAL, "a", "b")
    with pytest.raises(DragonError, match="not allowed"):
        manage.rename_dataset(LOCAL, "a", "no/slash")
    with pytest.raises(DragonError, match="bundled demo cannot be deleted"):
        manage.delete_dataset(LOCAL, "demo")
    deleted = manage.delete_dataset(LOCAL, "a")
    Store.open("a", create=True)
    with pytest.raises(DragonError, match="exists now"):
        manage.restore_dataset(LOCAL, deleted)
    assert manage.restore_dataset(LOCAL, deleted, as_name="a again") == "a-again"
    assert "a-again" in list_datasets() and Registry.here().entry("a-again") is None  # the Space's own, as before


def test_cli_dataset_rename_delete_restore(photo_files, home):
    zoo(photo_files)
    close_all()
    env = {**os.environ, "DRAGONCLF_HOME": str(home)}

    def cli(*args):
        r = subprocess.run([sys.executable, "-m", "dragonclf", *args], cwd=REPO, capture_output=True, text=True,
                           timeout=120, env=env)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        return r.stdout

    assert "renamed zoo to my-zoo" in cli("dataset", "rename", "zoo", "my zoo")
    assert "restore it with: dataset restore my-zoo~" in cli("dataset", "delete", "my-zoo", "--yes")
    listed = json.loads(cli("dataset", "deleted", "--json"))
    assert [d["name"] for d in listed] == ["my-zoo"]
    assert "restored my-zoo" in cli("dataset", "restore", listed[0]["id"])
    assert "called 'zoo' again" in cli("dataset", "undo")
    assert "zoo" in list_datasets() and len(Store.open("zoo").images()) == 6


# ---- collect -----------------------------------------------------------------------

class RefusingOneClass:
    """Search results on the loopback server; a query for 'Drogon' meets a real refused connection."""

    name = "fake"

    def __init__(self, server, paths):
        self.server, self.paths, self.closed = server, paths, free_port()

    def images(self, query, *, max_results, filters):
        if query.lower().startswith("drogon"):
            socket.create_connection(("127.0.0.1", self.closed), timeout=2).close()
        return [SearchResult(self.server.url(p), None, f"{query} {i}", None, None, self.name)
                for i, p in enumerate(self.paths[:max_results])]


def test_a_failed_search_leaves_no_label_says_why_and_the_next_class_goes_on(monkeypatch):
    monkeypatch.setenv("DRAGONCLF_ALLOW_PRIVATE_URLS", "1")
    with LoopbackServer() as server:
        paths = [server.add_file(f"/v{i}.webp", f).split(str(server.port), 1)[1] for i, f in enumerate(real_photos()[:3])]
        again = [server.add_file(f"/again{i}.webp", f).split(str(server.port), 1)[1]
                 for i, f in enumerate(real_photos()[:3])]  # the same pictures at other addresses
        store = Store.open("dragons", create=True)
        reports = collect_classes(store, [("Drogon", None), ("Viserion", None)], 3, engine=RefusingOneClass(server, paths))
        twice = collect(store, "Rhaegal", engine=RefusingOneClass(server, again), max_images=3)
    assert reports[0].label == "Drogon" and reports[0].stored == 0
    assert "Could not search fake for 'Drogon': the connection was refused" in reports[0].error
    assert "Errno" not in reports[0].error and "ConnectionRefused" not in reports[0].error
    assert reports[1].stored == 3 and reports[1].error is None
    assert {lab.display: lab.count for lab in store.labels()} == {"Viserion": 3}
    assert twice.conflicts == 3 and twice.stored == 0 and store.conflicts() == []  # stored under Viserion already
    assert folders(store) == {"viserion"}
    with pytest.raises(DragonError, match="the connection was refused"):  # one class alone: the error itself
        collect(store, "Drogon", engine=RefusingOneClass(server, paths))
    assert [lab.display for lab in store.labels()] == ["Viserion"]
    store.add_label("Drogon")  # a label someone made stays, even empty
    collect_classes(store, [("Drogon", None)], 3, engine=RefusingOneClass(server, paths))
    assert [lab.display for lab in store.labels()] == ["Drogon", "Viserion"]


def test_a_picture_for_a_label_renamed_meanwhile_is_refused_and_leaves_nothing(photo_files, monkeypatch):
    """An add that looked its label up just before another process renamed it stores nothing in the old folder."""
    store = zoo(photo_files)
    stale = store.label("fish")
    store.rename_label("fish", "goldfish")
    with monkeypatch.context() as m:  # its own context: undoing it leaves the test's home alone
        m.setattr(Store, "label", lambda self, name: stale)  # the lookup happened before the rename
        with pytest.raises(DragonError, match="renamed, merged or deleted meanwhile"):
            store.ingest(photo_files["fishes"][5].read_bytes(), "fish")
    assert not (store.root / "fish").exists() and len(store.images(status=None)) == 6
    assert not list((store.root / ".tmp").rglob("*.part")) and store.check()["ok"]
