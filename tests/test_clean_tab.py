"""The Clean tab through its API: a real app on a loopback port, driven by gradio_client sessions."""

from __future__ import annotations

import zipfile

import pytest

from clean_fixtures import pets, seed_home  # noqa: F401 - fixtures
from test_clean import plant_swaps

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

OUT = ("gallery", "current", "card", "queue", "selection", "message", "summary", "target")


def session(url) -> Client:
    return Client(url, verbose=False, download_files=False)


def call(client, api, *args) -> dict:
    return dict(zip(OUT, client.predict(*args, api_name=f"/{api}")))


def test_review_a_mislabel_queue_relabel_keep_trash_undo_redo(app_url, pets):
    truth = plant_swaps(pets)
    c = session(app_url)
    view = call(c, "suspects", "pets", "mislabel")
    queue = view["queue"]
    assert {s["id"] for s in queue[: len(truth)]} == set(truth)
    assert "suggested" in view["card"] and queue[0]["id"] in view["card"]
    first = queue[0]
    view = call(c, "relabel", "pets", "mislabel", "", False)  # empty target: the suggested label
    assert view["message"].startswith("1 relabelled.")
    assert pets.image(first["id"]).label == first["suggested"] == truth[first["id"]]
    assert first["id"] not in {s["id"] for s in view["queue"]}
    second = view["queue"][0]["id"]
    view = call(c, "keep", "pets", "mislabel", "", False)
    assert pets.image(second).kept and second not in {s["id"] for s in view["queue"]}
    third = view["queue"][0]["id"]
    view = call(c, "trash", "pets", "mislabel", "", False)
    assert pets.image(third).status == "trashed"
    view = call(c, "undo", "pets", "mislabel")
    assert view["message"].startswith("1 undone.") and pets.image(third).status == "active"
    assert third in {s["id"] for s in view["queue"]}  # back in the queue
    view = call(c, "redo", "pets", "mislabel")
    assert view["message"].startswith("1 redone.") and pets.image(third).status == "trashed"
    # refit: accuracy before and after the edits, and what flipped
    md, _report = c.predict("pets", api_name="/refit")
    assert "accuracy" in md and "→" in md and "1 relabelled, 1 removed" in md


def test_relabel_to_a_label_that_does_not_exist_offers_to_create_it(app_url, pets):
    c = session(app_url)
    call(c, "queue", "pets", "trash")
    pets.trash([pets.images()[0].id])
    call(c, "suspects", "pets", "trash")
    with pytest.raises(AppError, match=r"'Viserion' does not exist.*Create it\?"):
        call(c, "relabel", "pets", "trash", "Viserion", False)
    view = call(c, "relabel", "pets", "trash", "Viserion", True)
    assert view["message"].startswith("1 relabelled.") and "Viserion" in [lab.display for lab in pets.labels()]


def test_digit_shortcut_relabels_to_the_nth_label_and_arrows_move(app_url, pets):
    c = session(app_url)
    pets.trash([r.id for r in pets.images(label="tools")[:3]])
    view = call(c, "suspects", "pets", "trash")
    ids = [s["id"] for s in view["queue"]]
    assert len(ids) == 3 and ids[0] in view["card"]
    view = call(c, "next", "pets", "trash")
    assert ids[1] in view["card"]
    view = call(c, "prev", "pets", "trash")
    assert ids[0] in view["card"]
    view = call(c, "relabel_2", "pets", "trash")  # labels: fishes, monuments, renewable, tools
    assert pets.image(ids[0]).label == "monuments"
    with pytest.raises(AppError, match="no label number 9"):
        call(c, "relabel_9", "pets", "trash")


def test_queues_survive_switching_and_two_sessions_keep_their_own(app_url, pets):
    pets.trash([r.id for r in pets.images(label="fishes")[:4]])
    a, b = session(app_url), session(app_url)
    qa = call(a, "suspects", "pets", "trash")["queue"]
    qb = call(b, "suspects", "pets", "trash")["queue"]
    assert [s["id"] for s in qa] == [s["id"] for s in qb] and len(qa) == 4
    call(a, "restore", "pets", "trash", "", False)  # session A restores its current card
    call(b, "next", "pets", "trash")
    view_b = call(b, "restore", "pets", "trash", "", False)  # session B restores its second card
    assert view_b["message"].startswith("1 restored")
    assert len(pets.images(status="trashed")) == 2
    # A switches queue and comes back: its own queue, minus its own decision
    call(a, "queue", "pets", "quality")
    view_a = call(a, "queue", "pets", "trash")
    assert [s["id"] for s in view_a["queue"]] == [s["id"] for s in qa[1:]]
    # bulk: B restores the rest of its selection in one step (one already restored by A is "already so")
    rest = [s["id"] for s in call(b, "queue", "pets", "trash")["queue"]]
    view_b = dict(zip(OUT, b.predict("pets", "trash", rest, "", False, api_name="/bulk_restore")))
    assert "restored" in view_b["message"] and pets.images(status="trashed") == []
    assert pets.check()["ok"]


def test_empty_trash_needs_confirmation_and_export_gives_a_zip(app_url, pets):
    c = session(app_url)
    pets.trash([pets.images()[0].id])
    with pytest.raises(AppError, match="deletes 1 images for good"):
        c.predict("pets", False, "trash", api_name="/empty_trash")
    assert len(pets.images(status="trashed")) == 1
    view = dict(zip(OUT, c.predict("pets", True, "trash", api_name="/empty_trash")))
    assert view["message"].startswith("Deleted 1 images for good.") and pets.images(status="trashed") == []
    path = c.predict("pets", api_name="/export_dataset")
    path = path["path"] if isinstance(path, dict) else path
    with zipfile.ZipFile(path) as zf:
        assert "README.md" in zf.namelist() and len([n for n in zf.namelist() if n.endswith(".jpg")]) == 121


def test_errors_are_messages_not_tracebacks(app_url, pets):
    c = session(app_url)
    with pytest.raises(AppError, match="queue is empty"):
        call(c, "trash", "pets", "conflict", "", False)
    with pytest.raises(AppError, match="nothing to undo"):
        call(c, "undo", "pets", "mislabel")
