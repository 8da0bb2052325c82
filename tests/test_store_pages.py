"""Pages and counts of a large dataset: every picture exactly once, the counts the pages add up to."""

import random
import sqlite3

import pytest

from dragonclf.errors import DragonError
from dragonclf.store import Decision, Store

LABELS = ("Cats", "Dogs", "Fish")


@pytest.fixture
def big_store():
    """A real store with 3,000 rows; many arrive in the same second (ties on added_at)."""
    s = Store.open("big", create=True)
    folders = [s.add_label(name).folder for name in LABELS]
    rng = random.Random(3)
    statuses = ["active"] * 7 + ["trashed", "missing", "pending"]
    rows = [(f"{rng.getrandbits(64):016x}", folders[rng.randrange(3)], rng.choice(statuses), rng.random(),
             1000.0 + i // 7, rng.choice([None, "a red fox", "fox_den 100%"]), rng.randrange(2))
            for i in range(3000)]
    con = sqlite3.connect(s.db_path)
    with con:
        con.executemany("INSERT INTO images(id, folder, status, split_key, added_at, title, kept) VALUES (?,?,?,?,?,?,?)",
                        rows)
    con.close()
    return s


def all_pages(store, limit, **filters):
    seen, offset = [], 0
    while True:
        page = store.page(offset=offset, limit=limit, **filters)
        seen += [r.id for r in page.rows]
        if offset + limit >= page.total:
            return seen, page.total
        offset += limit


@pytest.mark.parametrize("filters", [
    {}, {"status": "trashed"}, {"status": None}, {"label": "Dogs"}, {"label": "Fish", "split": "valid"},
    {"split": "train", "kept": True}, {"text": "fox"}, {"text": "100%"}, {"text": "fox_"},
])
def test_paging_returns_every_picture_exactly_once(big_store, filters):
    ids, total = all_pages(big_store, 97, **filters)
    images_kw = {k: v for k, v in filters.items() if k in ("status", "label", "split")}
    want = big_store.images(**images_kw)
    if "kept" in filters:
        want = [r for r in want if r.kept == filters["kept"]]
    if "text" in filters:
        want = [r for r in want if filters["text"] in (r.title or "")]
    assert len(ids) == len(set(ids)) == total == big_store.count(**filters)
    assert sorted(ids) == sorted(r.id for r in want)
    assert ids == [r.id for r in sorted(want, key=lambda r: (r.added_at, r.id), reverse=True)]  # newest first
    assert total > 0


def test_pages_answer_what_a_view_shows(big_store):
    page = big_store.page(label="Cats", limit=50)
    assert len(page.rows) == 50 and all(r.label == "Cats" and r.status == "active" for r in page.rows)
    assert page.number == 1 and page.pages == -(-page.total // 50)
    assert page.describe() == f"1-50 of {page.total} (page 1 of {page.pages})"
    last = big_store.page(label="Cats", limit=50, offset=10**6)  # past the end: the last page
    assert last.number == page.pages and 0 < len(last.rows) <= 50
    assert sum(big_store.count(label=name) for name in LABELS) == big_store.count()
    assert {lab.display: lab.count for lab in big_store.labels()} == {n: big_store.count(label=n) for n in LABELS}
    counts = big_store.status_counts()
    assert counts["trashed"] == big_store.status()["trashed"] == big_store.count(status="trashed")
    assert Store.open("empty", create=True).page().describe() == "no pictures"


def test_bad_filters_are_messages(big_store):
    for kw in ({"status": "pending"}, {"split": "test"}, {"label": "Horses"}):
        with pytest.raises(DragonError):
            big_store.page(**kw)


def test_pages_and_counts_read_the_indexes_not_every_row(big_store):
    con = sqlite3.connect(big_store.db_path)
    plans = {
        "label page": "SELECT i.* FROM images i WHERE i.status = 'active' AND i.folder = 'x'"
                      " ORDER BY i.added_at DESC, i.id DESC LIMIT 48",
        "status page": "SELECT i.* FROM images i WHERE i.status = 'trashed' ORDER BY i.added_at DESC, i.id DESC LIMIT 48",
        "count": "SELECT COUNT(*) FROM images i WHERE i.status = 'active'",
    }
    for name, sql in plans.items():
        plan = " ".join(r[-1] for r in con.execute("EXPLAIN QUERY PLAN " + sql))
        assert "USING" in plan and "TEMP B-TREE" not in plan, (name, plan)


def test_near_duplicate_groups_count_active_pictures_only(photo_files):
    s = Store.open("nd", create=True)
    s.add_label("fishes")
    ids = [s.ingest(f.read_bytes(), "fishes").image_id for f in photo_files["fishes"][:3]]
    con = sqlite3.connect(s.db_path)
    with con:
        con.executemany("INSERT INTO near_dups VALUES (?,?,3)", [(ids[0], ids[1]), (ids[1], ids[2])])
    assert s.near_duplicate_groups() == [sorted(ids)]
    s.trash([ids[1]])
    assert s.near_duplicate_groups() == [] and s.status()["near_duplicate_groups"] == 0


def traced_plans(store, fn) -> list[list[str]]:
    """The query plans of the SELECTs `fn` runs on the store's connection."""
    seen = []
    store._db.set_trace_callback(seen.append)
    try:
        fn()
    finally:
        store._db.set_trace_callback(None)
    con = sqlite3.connect(store.db_path)
    return [[r[-1] for r in con.execute("EXPLAIN QUERY PLAN " + sql)] for sql in seen if sql.lstrip().startswith("SELECT")]


def test_near_duplicate_groups_walk_the_pairs_not_every_image(big_store):
    con = sqlite3.connect(big_store.db_path)
    ids = [r[0] for r in con.execute("SELECT id FROM images WHERE status='active' LIMIT 40")]
    with con:
        con.executemany("INSERT INTO near_dups VALUES (?,?,3)", list(zip(ids[::2], ids[1::2])))
    plans = traced_plans(big_store, big_store.near_duplicate_groups)
    assert plans and all(plan[0].startswith("SCAN n") for plan in plans), plans  # pairs outermost, images by key
    assert len(big_store.near_duplicate_groups()) == 20


def listed_on_open(name: str) -> tuple[set, Store]:
    """The folders `Store.open(name)` lists (by path), with the store it opened."""
    import os
    from pathlib import Path

    listed = set()
    with pytest.MonkeyPatch.context() as mp:
        for fn in ("scandir", "listdir"):
            real = getattr(os, fn)
            mp.setattr(os, fn, lambda p=".", _real=real: (isinstance(p, (str, Path)) and listed.add(Path(p)))
                       or _real(p))
        s = Store.open(name)
    return listed, s


def killed_editing(home, ids, kill_at: str) -> None:
    """A process that relabels `ids` to "b" in dataset "many" and is killed (SIGKILL's equivalent, os._exit)
    `before-commit` (its marker written, the transaction open) or `before-moves` (committed, no file moved)."""
    import os
    import subprocess
    import sys
    import textwrap

    from conftest import REPO

    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r})
        from dragonclf.store import Store
        s = Store.open("many")
        if {kill_at!r} == "before-commit":
            s._db.set_trace_callback(lambda sql: sql.startswith("UPDATE images SET folder") and os._exit(9))
        else:
            real = os.replace
            os.replace = lambda a, b: os._exit(9) if str(b).endswith(".jpg") else real(a, b)
        s.relabel({ids!r}, "b")
    """)
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "DRAGONCLF_HOME": str(home)},
                       capture_output=True, text=True)
    assert r.returncode == 9, r.stderr


def test_a_clean_open_lists_no_folder_and_an_open_after_a_killed_edit_finishes_its_moves(home, photo_files):
    """Opening a dataset lists its label folders (seconds at 100,000 pictures) only after a crash in an edit.

    An edit writes a marker before it commits and removes it after its files moved; an open that finds a dead
    writer's marker runs the full check (one listing per folder, not a check per file) and finishes the moves.
    """
    import os

    s = Store.open("many", create=True)
    s.add_label("a")
    s.add_label("b")
    first = s.ingest(photo_files["fishes"][0].read_bytes(), "a").image_id
    src = s.image(first).path
    con = sqlite3.connect(s.db_path)
    with con:
        for i in range(400):
            os.link(src, s.root / "a" / f"x{i:015d}.jpg")
            con.execute("INSERT INTO images(id, sha256, folder, status, split_key, added_at) VALUES (?,?,'a','active',"
                        "0.5,?)", (f"x{i:015d}", s.image(first).sha256, 2000.0 + i))
    con.close()
    s.relabel(["x000000000000399"], "b")  # an edit that finished
    with pytest.raises(DragonError):
        s.apply([Decision("no-such-picture", "trash")])  # and one refused: neither leaves a marker
    s.close()
    folders = {s.root, s.root / "a", s.root / "b", s.root / ".trash"}
    listed, s = listed_on_open("many")
    assert not listed & folders, listed
    s.close()

    killed_editing(home, ["x000000000000000"], "before-commit")  # marker written, nothing committed
    listed, s = listed_on_open("many")
    assert {s.root, s.root / "a"} <= listed  # the full check ran
    assert s.image("x000000000000000").label == "a" and s.image("x000000000000000").path.is_file()
    s.close()

    ids = ["x000000000000001", "x000000000000002", "x000000000000003"]
    killed_editing(home, ids, "before-moves")  # committed, files still in "a"
    assert all((s.root / "a" / f"{i}.jpg").is_file() for i in ids)
    listed, s = listed_on_open("many")
    assert {s.root, s.root / "a", s.root / "b"} <= listed
    assert all(s.image(i).label == "b" and s.image(i).path.is_file() for i in ids)
    assert not any((s.root / "a" / f"{i}.jpg").exists() for i in ids)
    s.close()
    listed, s = listed_on_open("many")  # finished: clean again
    assert not listed & folders, listed
    (s.root / "a" / "x000000000000004.jpg").unlink()
    assert s.rescan()["missing"] == ["x000000000000004"]  # a file removed by hand: found by a check, not an open
