"""The Clean tab's per-session state, on its own: queues, positions, pages, decisions, undo, the trash page.

A real store in this test's home; decisions go through `clean.decide` and the store's journal, as in the tab.
"""

from __future__ import annotations

import pytest

from conftest import jpeg_bytes
from dragonclf import clean
from dragonclf.clean_session import PAGE, CleanSession
from dragonclf.store import Store


def solid_pictures(store: Store, label: str, n: int, start: int = 0) -> list[str]:
    """`n` distinct solid-colour pictures under `label`; their ids, oldest first."""
    store.label_or_create(label)
    ids = []
    for k in range(start, start + n):
        res = store.ingest(jpeg_bytes((k % 16 * 16, k // 16 * 32, 90)), label)
        assert res.outcome == "added", res
        ids.append(res.image_id)
    return ids


def cards(store: Store, ids: list[str], group: str | None = None) -> list[dict]:
    """Review cards for these images, as a pass would give them (keep suggested unless grouped)."""
    rows = store.images_by_id(ids)
    return [{"id": i, "path": str(rows[i].path), "label": rows[i].label, "suggested": None, "score": 0.5,
             "reason": "test", "action": "trash" if group else "keep", "group": group, "source": None} for i in ids]


@pytest.fixture
def store() -> Store:
    return Store.open("shelf", create=True)


def test_a_decision_takes_an_image_out_of_every_queue_of_its_dataset_and_undo_brings_it_back(store):
    ids = solid_pictures(store, "red", 4)
    s = CleanSession()
    s.set_queue("shelf", "mislabel", cards(store, ids))
    s.set_queue("shelf", "quality", cards(store, ids[:2]))
    s.set_queue("other", "mislabel", [{"id": ids[0]}])  # another dataset's queue is its own
    assert s.current("shelf", "mislabel")["id"] == ids[0] and s.edits_since_pass("shelf") == 0

    res = clean.decide(store, [ids[0]], "keep")
    s.decided(store, "shelf", res, "keep")
    assert [c["id"] for c in s.pending("shelf", "mislabel")] == ids[1:]
    assert [c["id"] for c in s.pending("shelf", "quality")] == ids[1:2]
    assert [c["id"] for c in s.pending("other", "mislabel")] == [ids[0]]
    assert s.current("shelf", "mislabel")["id"] == ids[1] and s.edits_since_pass("shelf") == 1
    assert sorted(s.kinds("shelf")) == ["mislabel", "quality"]

    s.walked(store, "shelf", store.undo(), undo=True)
    assert [c["id"] for c in s.pending("shelf", "mislabel")] == ids
    s.walked(store, "shelf", store.redo(), undo=False)
    assert ids[0] not in [c["id"] for c in s.pending("shelf", "mislabel")]
    assert s.edits_since_pass("shelf") == 3

    s.set_queue("shelf", "mislabel", cards(store, ids))  # a fresh pass shows every image again
    assert len(s.pending("shelf", "mislabel")) == 4 and s.position("shelf", "mislabel") == 0


def test_an_unchanged_image_leaves_the_queue_but_is_not_an_edit(store):
    ids = solid_pictures(store, "red", 2)
    clean.decide(store, [ids[0]], "keep")
    s = CleanSession()
    s.set_queue("shelf", "quality", cards(store, ids))
    s.decided(store, "shelf", clean.decide(store, [ids[0]], "keep"), "keep")  # already kept: nothing changed
    assert [c["id"] for c in s.pending("shelf", "quality")] == ids[1:]
    assert s.edits_since_pass("shelf") == 0


def test_moving_wraps_round_and_pages_hold_page_cards():
    s = CleanSession()
    queue = [{"id": f"img{k:03d}", "group": None, "action": "keep"} for k in range(2 * PAGE + 5)]
    s.set_queue("d", "duplicate", queue)
    s.move("d", "duplicate", -1)
    assert s.current("d", "duplicate")["id"] == queue[-1]["id"]  # before the first: the last
    s.move("d", "duplicate", 1)
    assert s.current("d", "duplicate")["id"] == "img000"
    shown, start, total = s.shown("d", "duplicate")
    assert (len(shown), start, total) == (PAGE, 0, 2 * PAGE + 5) and s.size("d", "duplicate") == 2 * PAGE + 5

    s.turn_page(None, "d", "duplicate", 1)
    assert s.current("d", "duplicate") == queue[PAGE] and s.shown("d", "duplicate")[1] == PAGE
    s.turn_page(None, "d", "duplicate", 1)
    shown, start, _ = s.shown("d", "duplicate")
    assert start == 2 * PAGE and len(shown) == 5
    s.turn_page(None, "d", "duplicate", 1)  # past the last page: stays on it
    assert s.shown("d", "duplicate")[1] == 2 * PAGE
    s.select("d", "duplicate", 3)  # the fourth card of the page shown
    assert s.current("d", "duplicate") == queue[2 * PAGE + 3]
    s.turn_page(None, "d", "duplicate", -5)  # before the first page: the first
    assert s.current("d", "duplicate") == queue[0]


def test_an_empty_queue_has_no_current_card_and_moving_is_harmless():
    s = CleanSession()
    assert s.current("d", "quality") is None and s.shown("d", "quality") == ([], 0, 0)
    s.move("d", "quality", 1)
    s.turn_page(None, "d", "quality", 1)
    assert s.position("d", "quality") == 0 and not s.has("d", "quality")


def test_the_cluster_is_the_pending_copies_suggested_for_the_trash(store):
    ids = solid_pictures(store, "red", 3)
    group = cards(store, ids, group="g1")
    group[0]["action"] = "keep"  # the copy suggested to stay
    s = CleanSession()
    s.set_queue("shelf", "duplicate", group + cards(store, solid_pictures(store, "red", 1, start=50)))
    assert s.cluster("shelf", "duplicate", "g1") == ids[1:]
    s.decided(store, "shelf", clean.decide(store, [ids[1]], "trash"), "trash")
    assert s.cluster("shelf", "duplicate", "g1") == ids[2:]


def test_the_trash_queue_is_a_page_of_the_store_read_again_after_each_decision(store):
    ids = solid_pictures(store, "red", PAGE + 3)
    store.trash(ids)
    s = CleanSession()
    assert s.find(store, "shelf", "trash") == ""
    shown, start, total = s.shown("shelf", "trash")
    assert (len(shown), start, total) == (PAGE, 0, PAGE + 3)
    assert {c["action"] for c in shown} == {"restore"}
    newest = s.current("shelf", "trash")["id"]
    assert newest == ids[-1]  # newest first

    s.decided(store, "shelf", clean.decide(store, [newest], "restore"), "restore")
    shown, _, total = s.shown("shelf", "trash")
    assert total == PAGE + 2 and newest not in {c["id"] for c in shown}

    s.turn_page(store, "shelf", "trash", 1)
    shown, start, total = s.shown("shelf", "trash")
    assert start == PAGE and len(shown) == 2 and s.position("shelf", "trash") == 0
    s.select("shelf", "trash", 1)
    assert s.current("shelf", "trash")["id"] == shown[1]["id"]
    store.empty_trash()
    s.fill_trash(store, "shelf", 0)
    assert s.shown("shelf", "trash") == ([], 0, 0) and s.current("shelf", "trash") is None


def test_cheap_queues_are_found_from_the_store_and_a_pass_resets_the_edit_count(store):
    ids = solid_pictures(store, "red", 2)
    store.label_or_create("blue")
    copy = store.ingest(jpeg_bytes((0, 0, 90)), "blue")  # the first picture again, under another label
    assert copy.outcome == "conflict"
    s = CleanSession()
    assert s.find(store, "shelf", "cell").startswith("Pick an actual")  # waits for its own button
    assert not s.has("shelf", "cell")
    s.find(store, "shelf", "conflict")
    assert [c["id"] for c in s.pending("shelf", "conflict")] == [ids[0]]
    s.decided(store, "shelf", clean.decide(store, [ids[0]], "trash"), "trash")
    assert s.edits_since_pass("shelf") == 1 and s.pending("shelf", "conflict") == []
    s.refitted("shelf", {"pass": 1})
    assert s.edits_since_pass("shelf") == 0 and s.snapshot("shelf") == {"pass": 1}
