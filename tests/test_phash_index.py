"""Near-duplicate lookup through the band index finds exactly what comparing with every stored hash finds."""

import random
import sqlite3

import pytest

from dragonclf import phash_index
from dragonclf.store import Store


def synthetic_hashes(n_centres=400, per_centre=8, seed=7):
    """Clusters of 64-bit hashes: a random centre and copies with 0 to 14 bits flipped (many near the threshold)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n_centres):
        centre = rng.getrandbits(64)
        out.append(centre)
        for _ in range(per_centre - 1):
            h = centre
            for bit in rng.sample(range(64), rng.randint(0, 14)):
                h ^= 1 << bit
            out.append(h)
    # hashes of smooth synthetic pictures share long runs of bits: crowded bands too
    out += [rng.getrandbits(16) for _ in range(200)]
    return [f"{h:016x}" for h in out]


@pytest.fixture
def hashed_store():
    """A real store with 3,400 rows (a few missing or pending: never matches) under two labels."""
    s = Store.open("hashes", create=True)
    s.add_label("a")
    s.add_label("b")
    hashes = synthetic_hashes()
    statuses = ["active"] * 8 + ["trashed", "missing"]
    rows = [(f"{i:016x}", h, "ab"[i % 2], statuses[i % 10], (i * 0.618) % 1) for i, h in enumerate(hashes)]
    rows.append(("pending0000000000", hashes[0], "a", "pending", 0.5))
    con = sqlite3.connect(s.db_path)
    with con:
        con.executemany("INSERT INTO images(id, phash, folder, status, split_key) VALUES (?,?,?,?,?)", rows)
    con.close()
    return s, rows


def brute_force(rows, query, max_distance):
    found = [(rid, phash_index.distance(query, h), key) for rid, h, _, status, key in rows
             if status in ("active", "trashed") and phash_index.distance(query, h) <= max_distance]
    return sorted(found, key=lambda t: (t[1], t[0]))


@pytest.mark.parametrize("max_distance", [0, 3, 6, 7, 10, 13])
def test_index_matches_equal_brute_force(hashed_store, max_distance):
    store, rows = hashed_store
    queries = [h for _, h, *_ in rows[::10]] + synthetic_hashes(n_centres=30, per_centre=1, seed=99)
    crowded = 0
    for q in queries:
        got = store.near_duplicates_of(q, max_distance)
        want = brute_force(rows, q, max_distance)
        assert sorted(got, key=lambda t: (t[1], t[0])) == want, q
        assert [d for _, d, _ in got] == sorted(d for _, d, _ in got)  # closest first
        crowded += len(got) >= 2
    assert crowded >= 20  # the clusters do give queries several matches, not only themselves


def test_the_lookup_uses_the_band_indexes(hashed_store):
    """The statement the store runs reads each band's index, never a walk over every row (e.g. by status)."""
    store, rows = hashed_store
    seen = []
    store._db.set_trace_callback(seen.append)
    store.near_duplicates_of(rows[5][1], 6)
    store._db.set_trace_callback(None)
    con = sqlite3.connect(store.db_path)
    plan = [r[-1] for r in con.execute("EXPLAIN QUERY PLAN " + seen[-1])]
    searches = [p for p in plan if p.startswith(("SEARCH", "SCAN"))]
    assert searches == [f"SEARCH images USING INDEX images_phash_b{k} (<expr>=?)" for k in range(phash_index.BANDS)]


def test_band_neighbours_are_every_value_within_the_radius():
    for radius in (0, 1, 2):
        values = phash_index.neighbours("a5f0", radius)
        assert len(values) == len(set(values)) == sum(
            1 for v in range(1 << 16) if (v ^ 0xA5F0).bit_count() <= radius)
        assert all(len(v) == 4 and v == v.lower() for v in values)


def test_a_hash_of_another_size_falls_back_to_comparing_all(hashed_store):
    store, rows = hashed_store
    assert store.near_duplicates_of("abc", 6) == []  # not comparable with 64-bit hashes: no match, no error
    assert not phash_index.indexable("ABCDEF0123456789") and phash_index.indexable(rows[0][1])


def test_ingested_near_duplicates_are_found_through_the_index(photo_files):
    """Real pictures: a photo and a slightly brighter copy are recorded as near-duplicates."""
    import io

    from PIL import Image, ImageEnhance

    s = Store.open("real", create=True)
    s.add_label("fishes")
    src = photo_files["fishes"][0]
    assert s.ingest(src.read_bytes(), "fishes").outcome == "added"
    buf = io.BytesIO()
    ImageEnhance.Brightness(Image.open(src).convert("RGB")).enhance(1.05).save(buf, "JPEG", quality=92)
    assert s.ingest(buf.getvalue(), "fishes").outcome == "added"
    assert len(s.near_duplicate_groups()) == 1
