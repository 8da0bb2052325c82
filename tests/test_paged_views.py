"""Views of a large dataset send the browser one page at a time, with counts; paging shows every picture once.

Through the running app's API (gradio_client), on the 122-photo dataset with more than a page in a view.
"""

from __future__ import annotations

import pytest
from PIL import ImageEnhance

from clean_fixtures import pets, seed_home  # noqa: F401 - fixtures
from test_clean import photo_bytes

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402

OUT = ("gallery", "current", "card", "queue", "selection", "message", "summary", "target")
PAGE = 60


def session(url) -> Client:
    return Client(url, verbose=False, download_files=False)


def call(client, api, *args) -> dict:
    return dict(zip(OUT, client.predict(*args, api_name=f"/{api}")))


def test_the_trash_view_shows_one_page_at_a_time_and_pages_through_all(app_url, pets):
    trashed = [r.id for r in pets.images()[:100]]
    pets.trash(trashed)
    c = session(app_url)
    first = call(c, "queue", "pets", "trash")
    assert len(first["queue"]) == len(first["gallery"]) == PAGE
    assert "showing 1-60 of 100 (page 1 of 2)" in first["summary"] and "100 left" in first["card"]
    second = call(c, "next_page", "pets", "trash")
    assert len(second["queue"]) == 40 and "showing 61-100 of 100" in second["summary"]
    ids = [s["id"] for s in first["queue"] + second["queue"]]
    assert len(set(ids)) == 100 and set(ids) == set(trashed)
    assert second["queue"][0]["id"] in second["card"]  # the page's first card is the current one
    view = call(c, "restore", "pets", "trash", "", False)  # on page 2: the page is read again
    assert view["message"].startswith("1 restored") and "showing 61-99 of 99" in view["summary"]
    assert pets.count(status="trashed") == 99 and len(view["queue"]) == 39
    back = call(c, "prev_page", "pets", "trash")
    assert [s["id"] for s in back["queue"]] == ids[:PAGE]
    assert call(c, "prev_page", "pets", "trash")["queue"] == back["queue"]  # no page before the first


def test_a_suspect_queue_longer_than_a_page_pages_with_the_current_card(app_url, pets, photo_files):
    """A slightly brighter copy of 48 photos: a queue of near-duplicates longer than a page; the card moves with it."""
    for label, files in photo_files.items():
        for f in files[:12]:
            pets.ingest(photo_bytes(f, lambda im: ImageEnhance.Brightness(im).enhance(1.05)), label)
    c = session(app_url)
    first = call(c, "queue", "pets", "duplicate")
    n = sum(len(g) for g in pets.near_duplicate_groups())
    assert PAGE < n <= 2 * PAGE and len(first["queue"]) == PAGE and f"showing 1-60 of {n}" in first["summary"]
    second = call(c, "next_page", "pets", "duplicate")
    assert len(second["queue"]) == n - PAGE and second["queue"][0]["id"] in second["card"]
    assert not {s["id"] for s in first["queue"]} & {s["id"] for s in second["queue"]}
    view = call(c, "prev", "pets", "duplicate")  # one card back: onto the last card of page 1
    assert first["queue"][-1]["id"] in view["card"] and len(view["queue"]) == PAGE


def test_the_label_gallery_pages_and_filters(app_url, pets):
    pets.relabel([r.id for r in pets.images() if r.label != "fishes"], "fishes")
    total = pets.count(label="fishes")
    assert total == 122
    c = session(app_url)
    pages = [c.predict("pets", "fishes", "", n, api_name="/gallery_page") for n in (1, 2, 3)]
    assert [len(g) for g, _, _ in pages] == [60, 60, 2] and [p for _, p, _ in pages] == [1, 2, 3]
    assert pages[0][2] == "1-60 of 122 (page 1 of 3)"
    captions = [cap for g, _, _ in pages for _, cap in ((x["image"], x["caption"]) for x in g)]
    assert len(set(captions)) == 122  # every picture once
    gallery, page, info = c.predict("pets", "fishes", "", 99, api_name="/gallery_page")  # past the end: the last
    assert page == 3 and len(gallery) == 2
    one = pets.images()[5]
    name = one.source.split("/")[-1]
    gallery, page, info = c.predict("pets", "fishes", name, 1, api_name="/gallery_page")
    assert len(gallery) == 1 and info.startswith("1-1 of 1")
    assert name in gallery[0]["caption"] and one.id in str(gallery[0]["image"])  # captioned by its source, served by id


def test_the_gallery_opens_on_all_labels_captioned_with_each_label(app_url, pets):
    from ui.dataset_bar import ALL_LABELS

    c = session(app_url)
    counts, labels, gallery, page, info = c.predict("pets", api_name="/dataset_status")
    assert labels["value"] == ALL_LABELS and labels["choices"][0] == ["All labels", ALL_LABELS]  # every picture first
    total = pets.count()
    assert info == f"1-{min(60, total)} of {total}" + (f" (page 1 of {-(-total // 60)})" if total > 60 else "")
    by_label = {r.label for r in pets.images()}
    shown = {x["caption"].split(" · ")[0] for x in gallery}
    assert shown <= by_label and len(shown) >= 2  # each caption starts with its picture's label
    pages = [c.predict("pets", ALL_LABELS, "", n, api_name="/gallery_page")[0] for n in range(1, -(-total // 60) + 1)]
    assert sum(len(g) for g in pages) == total
