"""Every event of the app x {owner, another person, an anonymous visitor, the admin}, through the wire.

Each event is called by index (fn_index), the way the browser calls it, so unnamed and
private events are in the matrix too; inputs are made from the page's own components.
Another person and a visitor get a clear refusal and never Alice's data, and her
dataset is exactly as it was; Alice and the admin are not refused.
"""

from __future__ import annotations

import json
import re
import sqlite3

import pytest

from people_fixtures import SECRET_LABELS, Caller

REFUSAL = ("No dataset named", "read-only", "Only the owner", "Only the Space owner", "Sign in", "sign in",
           "Visitors", "visitor")
# Events whose allowed path trains or searches for a while: their refusals are checked; their allowed path
# is the subject of test_app_api / test_clean_tab / test_collect_tab.
HEAVY = {"train", "lr_find", "refit", "suspects", "collect", "evaluate", "preview_augmentation"}
NO_DATASET = {"suggest_queries", "suggest_queries_on_blur", "stop_collect", "stop_train", "whoami", "set_quota",
              "tradeoff_note",  # a general note; a dataset the caller may not read counts as unknown
              "_check_login_status", "dataset_choices", "create_dataset",  # lists or makes the caller's own dataset (refused to visitors: see below)
              "unnamed"}


@pytest.fixture
def world(people_world):
    return people_world


def events(config) -> list[dict]:
    return [d for d in config["dependencies"] if d.get("backend_fn")]


def inputs_for(caller: Caller, dep: dict, world) -> list:
    """Values for an event's inputs: Alice's dataset, her model, a real photo, the page's defaults otherwise."""
    comps = {c["id"]: c for c in caller.config["components"]}
    special = {"dataset": world.dataset, "new-dataset": "newone", "collect-classes": "cat", "share-person": "bob",
               "share-role": "remove",  # the owner's and admin's calls leave nothing shared
               "copy-name": "copy1", "public-model": world.model, "clean-target": SECRET_LABELS[1],
               "predict-model": world.model, "eval-model": world.model, "clean-cell-model": world.model,
               "clean-cell-actual": SECRET_LABELS[0], "clean-cell-predicted": SECRET_LABELS[1],
               "clean-empty-confirm": True, "public-check": False, "public-model-check": False,
               "gallery-label": SECRET_LABELS[0], "clean-kind": "trash", "quota-value": 5}
    values = []
    for cid in dep["inputs"]:
        c = comps[cid]
        props = c.get("props", {})
        kind = c["type"]
        if props.get("elem_id") in special:
            values.append(special[props["elem_id"]])
        elif kind == "state":
            values.append(None)
        elif kind in ("image", "file"):
            f = caller.upload(world.photo)
            values.append([f] if kind == "file" and props.get("file_count") == "multiple" else f)
        elif kind == "checkboxgroup":
            values.append([])  # Gradio checks choices; an empty selection still reaches the handler
        elif kind == "textbox":
            values.append(props.get("value") or "")
        else:
            values.append(props.get("value"))
    return values


def dataset_state(world) -> list:
    db = sqlite3.connect(world.home / "datasets" / world.dataset / "manifest.sqlite")
    try:
        rows = db.execute("SELECT id, folder, status, kept FROM images ORDER BY id").fetchall()
        journal = db.execute("SELECT COUNT(*) FROM journal WHERE action != 'add'").fetchone()
        return [rows, journal]
    finally:
        db.close()


def leaks(world, output) -> list[str]:
    text = json.dumps(output, default=str)
    return [s for s in (*world.image_ids, *SECRET_LABELS) if s in text]


def dataset_input(caller) -> int:
    return next(c["id"] for c in caller.config["components"] if c.get("props", {}).get("elem_id") == "dataset")


def base_name(dep) -> str:
    """The event's api name without Gradio's _1, _2 for the same function wired twice."""
    return re.sub(r"_\d+$", "", dep.get("api_name") or "")


def name_of(dep) -> str:
    return dep.get("api_name") or f"#{dep['id']}"


@pytest.mark.parametrize("who", ["bob", "anonymous"])
def test_another_person_and_a_visitor_are_refused_everywhere_and_see_nothing(world, who):
    caller = Caller(world.space_url) if who == "anonymous" else Caller(world.private_url, "bob")
    before = dataset_state(world)
    touched = []
    for dep in events(caller.config):
        ok, out = caller.call(dep["id"], inputs_for(caller, dep, world), {"index": 0, "value": None})
        assert not leaks(world, out), (name_of(dep), out)
        if base_name(dep) in NO_DATASET or dataset_input(caller) not in dep["inputs"]:
            continue  # not about one dataset (its answer was still checked for leaks)
        touched.append(name_of(dep))
        assert not ok, f"{who} was allowed {name_of(dep)}: {str(out)[:300]}"
        assert any(r in str(out) for r in REFUSAL), (name_of(dep), out)
    assert dataset_state(world) == before  # nothing of Alice's changed
    names = set(touched)
    assert {"export_dataset", "bulk_relabel", "bulk_trash", "trash", "undo", "redo", "empty_trash", "import_files",
            "collect", "train", "export_model", "predict", "share_dataset", "set_public", "label_gallery",
            "rename_label", "merge_label", "delete_label", "rename_dataset", "delete_dataset", "manage_undo"} <= names
    assert any(n.startswith("#") or n == "model_dropdown_update" for n in names)  # private events are in it
    caller.close()


@pytest.mark.parametrize("who", ["alice", "olga"])
def test_the_owner_and_the_admin_are_not_refused(world, who):
    caller = Caller(world.private_url, who)
    for dep in events(caller.config):
        if dep.get("api_name") in HEAVY | NO_DATASET | {"empty_trash", "copy_dataset", "create_dataset"}:
            continue
        ok, out = caller.call(dep["id"], inputs_for(caller, dep, world), {"index": 0, "value": None})
        if who == "alice" and dep.get("api_name") in ("set_public", "set_model_public"):
            assert not ok and "Only the Space owner" in out  # making things public is the admin's call
        elif not ok:
            assert not any(r in str(out) for r in REFUSAL), (who, name_of(dep), out)
    caller.close()


def test_a_visitor_can_look_at_the_demo_and_predict_with_a_public_model(world):
    olga = Caller(world.private_url, "olga")
    anon = Caller(world.space_url)
    dep = {d["api_name"]: d for d in events(anon.config) if d.get("api_name")}
    admin = {d["api_name"]: d for d in events(olga.config) if d.get("api_name")}  # a server of its own
    predict = inputs_for(anon, dep["predict"], world)  # a photo, Alice's dataset and model, the defaults
    ok, out = anon.call(dep["predict"]["id"], predict)
    assert not ok and "No dataset named" in out
    ok, out = olga.call(admin["set_model_public"]["id"], [world.dataset, world.model, True])
    assert ok, out
    ok, out = anon.call(dep["predict"]["id"], predict)
    assert ok and set(c["label"] for c in out[0]["confidences"]) == set(SECRET_LABELS)
    ok, out = anon.call(dep["export_model"]["id"], [world.dataset, world.model, "onnx"])
    assert not ok and "No dataset named" in out  # predicting is not exporting
    ok, out = anon.call(dep["dataset_status"]["id"], ["demo"])
    assert ok and "images" in out[0]
    ok, out = anon.call(dep["rescan"]["id"], ["demo"])
    assert not ok and "read-only for visitors" in out
    ok, out = anon.call(dep["create_dataset"]["id"], ["mine"])
    assert not ok and "sign in" in out.lower()
    ok, out = olga.call(admin["set_model_public"]["id"], [world.dataset, world.model, False])
    assert ok


def test_quota_refusal_is_clear_and_harms_nothing(world):
    olga, bob = Caller(world.private_url, "olga"), Caller(world.private_url, "bob")
    dep = {d["api_name"]: d for d in events(olga.config) if d.get("api_name")}
    assert olga.call(dep["set_quota"]["id"], ["images_per_person", 1])[0]
    ok, out = bob.call(dep["set_quota"]["id"], ["images_per_person", 10**6])
    assert not ok and "Only the Space owner" in out
    ok, out = bob.call(dep["create_dataset"]["id"], ["bobs"])
    assert ok, out
    files = [bob.upload(world.photo), bob.upload(world.photo)]
    ok, out = bob.call(dep["import_files"]["id"], ["bobs", files, "x"])
    assert not ok and "Quota reached" in out and "ask the Space owner" in out
    before = dataset_state(world)
    alice = Caller(world.private_url, "alice")
    ok, out = alice.call(dep["dataset_status"]["id"], [world.dataset])
    assert ok and "12 images" in out[0]  # others are unaffected
    assert dataset_state(world) == before
    assert olga.call(dep["set_quota"]["id"], ["images_per_person", 2000])[0]


def test_the_dataset_view_says_who_made_the_last_edit(world, monkeypatch):
    from dragonclf.journal import Decision
    from dragonclf.store import Store

    monkeypatch.setenv("DRAGONCLF_HOME", str(world.home))
    store = Store.open(world.dataset)
    store.apply([Decision(world.image_ids[0], "keep")], actor="user:alice")
    alice = Caller(world.private_url, "alice")
    dep = {d["api_name"]: d for d in events(alice.config) if d.get("api_name")}
    ok, out = alice.call(dep["dataset_status"]["id"], [world.dataset])
    assert ok and "last edit: keep by alice" in out[0]
    store.close()


def test_a_collaborator_may_edit_labels_but_only_the_owner_renames_or_deletes_the_dataset(world):
    alice, bob = Caller(world.private_url, "alice"), Caller(world.private_url, "bob")
    dep = {base_name(d): d for d in events(alice.config) if d.get("api_name")}
    assert alice.call(dep["share_dataset"]["id"], [world.dataset, "bob", "edit"])[0]
    before = dataset_state(world)
    try:
        ok, out = bob.call(dep["rename_dataset"]["id"], [world.dataset, "bobs now"])
        assert not ok and "Only the owner" in out, out
        ok, out = bob.call(dep["delete_dataset"]["id"], [world.dataset, True])
        assert not ok and "Only the owner" in out, out
        # label edits are edits: allowed to a collaborator (this one is refused for its name, not for who asks)
        ok, out = bob.call(dep["rename_label"]["id"], [world.dataset, SECRET_LABELS[0], SECRET_LABELS[1]])
        assert not ok and "already exists" in out and not any(r in out for r in REFUSAL), out
        assert dataset_state(world) == before and (world.home / "datasets" / world.dataset).is_dir()
    finally:
        assert alice.call(dep["share_dataset"]["id"], [world.dataset, "bob", "remove"])[0]
        alice.close()
        bob.close()
