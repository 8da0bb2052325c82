"""The Clean tab through its API: a real app on a loopback port, driven by gradio_client sessions."""

from __future__ import annotations

import zipfile

import pytest
from PIL import ImageEnhance

from browser import chromium_page, needs_chromium
from clean_fixtures import pets, seed_home  # noqa: F401 - fixtures
from test_clean import photo_bytes, plant_swaps

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


def test_trash_cluster_keeps_the_best_copy_and_one_undo_brings_the_rest_back(app_url, pets, photo_files):
    f = photo_files["fishes"][0]
    original = next(r.id for r in pets.images(label="fishes") if r.source.endswith(f.name))
    crop = pets.ingest(photo_bytes(f, lambda im: im.crop((4, 4, im.width - 4, im.height - 4))), "fishes").image_id
    bright = pets.ingest(photo_bytes(f, lambda im: ImageEnhance.Brightness(im).enhance(1.1)), "tools").image_id
    c = session(app_url)
    view = call(c, "queue", "pets", "duplicate")  # a cheap queue: filled on opening
    assert {s["id"] for s in view["queue"]} == {original, crop, bright}
    assert view["queue"][0]["id"] in view["card"] and "cluster" in view["card"]
    view = call(c, "trash_cluster", "pets", "duplicate")
    assert view["message"].startswith("2 moved to the trash")
    assert [pets.image(i).status for i in (original, crop, bright)].count("active") == 1
    call(c, "undo", "pets", "duplicate")  # the cluster was one step
    assert {pets.image(i).status for i in (original, crop, bright)} == {"active"}
    pets.trash([original])
    call(c, "suspects", "pets", "trash")  # a card outside any cluster
    with pytest.raises(AppError, match="not part of a duplicate cluster"):
        call(c, "trash_cluster", "pets", "trash")


def test_bulk_relabel_keep_and_trash_act_on_the_selection_as_one_step_each(app_url, pets):
    plant_swaps(pets)
    c = session(app_url)
    queue = [s["id"] for s in call(c, "suspects", "pets", "mislabel")["queue"]]
    picked = queue[:3]  # the selection offers the queue's images

    def bulk(action, ids, target=""):
        return dict(zip(OUT, c.predict("pets", "mislabel", ids, target, False, api_name=f"/bulk_{action}")))

    labels = {i: pets.image(i).label for i in picked}
    to = next(lab.display for lab in pets.labels() if lab.display not in {labels[i] for i in picked[:2]})
    view = bulk("relabel", picked[:2], to)
    assert view["message"].startswith("2 relabelled")
    assert {pets.image(i).label for i in picked[:2]} == {to}
    assert all(pets.image(i).path.parent.name == to for i in picked[:2])
    call(c, "undo", "pets", "mislabel")  # the whole bulk relabel was one step
    assert {i: pets.image(i).label for i in picked} == labels
    queue = [s["id"] for s in call(c, "suspects", "pets", "mislabel")["queue"]]
    bulk("keep", queue[:3])
    assert all(pets.image(i).kept for i in queue[:3])
    view = bulk("trash", queue[3:5])
    assert view["message"].startswith("2 moved to the trash")
    assert all(pets.image(i).status == "trashed" for i in queue[3:5])
    call(c, "undo", "pets", "mislabel")
    assert all(pets.image(i).status == "active" for i in queue[3:5]) and pets.check()["ok"]
    with pytest.raises(AppError, match="(?i)select"):
        bulk("trash", [])


def test_confusion_matrix_cell_lists_what_the_model_predicted_there(app_url, pets):
    from dragonclf import clean, features, modelstore

    plant_swaps(pets, n=12, seed=3)  # some mistakes for the off-diagonal cells
    features.fit_quick(pets)  # warm embeddings: seconds
    [model] = modelstore.list_models("pets")
    c = session(app_url)
    with pytest.raises(AppError, match="(?i)pick the actual"):
        c.predict("pets", model["id"], None, None, api_name="/cell")
    for bad in ("no-such-model", "../../../etc"):  # typed model names stay inside the models folder
        with pytest.raises(AppError) as err:
            c.predict("pets", bad, "tools", "tools", api_name="/cell")
        assert "Traceback" not in str(err.value) and "model" in str(err.value).lower()
    resolved = modelstore.resolve(model["id"], "pets")
    sizes = {}
    for actual, predicted in (("tools", "tools"), ("fishes", "tools"), ("tools", "fishes")):
        want = [s["id"] for s in clean.cell_images(pets, resolved, actual, predicted)]
        out = c.predict("pets", model["id"], actual, predicted, api_name="/cell")
        view = dict(zip(OUT, out))
        assert [s["id"] for s in view["queue"]] == want and out[-1] == "cell"
        assert view["message"].startswith(f"{len(want)} images: actual '{actual}'")
        valid = {r.id for r in pets.images(split="valid", label=actual)}
        assert set(want) <= valid
        sizes[actual, predicted] = len(want)
    assert sizes["tools", "tools"] >= 3  # the diagonal: the model gets most tools right


@needs_chromium
def test_in_a_browser_a_thumbnail_click_and_the_arrow_keys_move_the_card(app_url, pets):
    pets.trash([r.id for r in pets.images(label="tools")[:3]])
    order = [r.id for r in pets.page(status="trashed").rows]  # the Trash view shows a page, newest first
    with chromium_page() as page:
        page.goto(app_url)
        page.click("#dataset input")
        page.get_by_role("option", name="pets", exact=True).click()
        page.wait_for_selector("#dataset-counts:has-text('119 images')")  # 122 photos, 3 in the trash
        page.get_by_role("tab", name="Clean").click()
        page.locator("#clean-kind label", has_text="Trash").click()
        page.wait_for_selector(f"#clean-card:has-text('{order[0]}')")

        def card_shows(image_id):
            page.wait_for_selector(f"#clean-card:has-text('{image_id}')", timeout=20_000)

        page.locator("#clean-gallery img").nth(2).click()  # the third thumbnail
        card_shows(order[2])
        page.click("#clean-summary")  # keys go to the page, not an input
        page.keyboard.press("ArrowLeft")
        card_shows(order[1])
        page.keyboard.press("ArrowRight")
        card_shows(order[2])
        page.keyboard.press("ArrowRight")  # past the end: round to the first
        card_shows(order[0])
