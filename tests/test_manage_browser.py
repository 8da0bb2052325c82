"""Label and dataset management in headless Chromium (issue 13, trap 6): every step, then Undo.

A newcomer opens "Rename, merge or delete labels" under the dataset picker, renames a label to a
name with spaces, merges one label into another, deletes one (after the tick), renames and deletes
the dataset, and undoes each step; the folders on disk follow. Screenshots of every step are kept in
test-artifacts/manage/.
"""

from __future__ import annotations

import pytest

import fake_search
from browser import chromium_page, needs_chromium, screenshot_step
from conftest import REPO
from dragonclf import config
from dragonclf.importer import import_files
from dragonclf.store import Store, list_datasets
from httpserver import LoopbackServer, real_photos

ARTIFACTS = REPO / "test-artifacts" / "manage"

pytestmark = needs_chromium


@pytest.fixture
def page(app_url, home, photo_files):
    store = Store.open("pets", create=True)
    import_files(store, photo_files["fishes"][:4], "fish")
    import_files(store, photo_files["tools"][:4], "tool")
    with chromium_page(height=1100, timeout_ms=30_000) as page:
        page.goto(app_url)
        page.wait_for_selector("#dataset-counts:has-text('images')")
        pick(page, "#dataset", "pets")
        page.wait_for_selector("#dataset-counts:has-text('8 images')")
        yield page


def pick(page, elem: str, option: str) -> None:
    page.locator(f"{elem} input").fill("")  # the whole list, then the one option
    page.click(f"{elem} input")
    page.wait_for_timeout(300)  # the list settles (it is re-rendered as it opens)
    page.get_by_role("option", name=option, exact=True).click()


def says(page, text: str) -> None:
    page.wait_for_selector(f"#manage-message:has-text({text!r})")


def counts(page, text: str) -> None:
    page.wait_for_selector(f"#dataset-counts:has-text({text!r})")


def error_badges(page) -> int:
    return sum(1 for b in page.locator("[data-testid=status-tracker] .error").all() if b.is_visible())


def folders(name: str) -> set[str]:
    root = config.datasets_root() / name
    return {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}


def test_rename_merge_delete_a_label_and_the_dataset_each_undone(page):
    def step(name):
        return screenshot_step(page, name, ARTIFACTS)

    with step("01-open"):
        page.click("#manage-accordion >> text=Rename, merge or delete labels")
        page.wait_for_function("document.querySelector('#manage-label input').value === 'fish'")
    with step("02-rename-label"):
        page.fill("#manage-label-new textarea, #manage-label-new input", "Sea creatures")
        page.click("#manage-label-rename")
        says(page, "Renamed label 'fish' to 'Sea creatures'")
        counts(page, "Sea creatures")
        assert folders("pets") == {"sea_creatures", "tool"}
    with step("03-undo-rename"):
        page.click("#manage-undo")
        says(page, "is called 'fish' again")
        counts(page, "fish")
        assert folders("pets") == {"fish", "tool"}
    with step("04-merge"):
        pick(page, "#manage-label", "fish")
        pick(page, "#manage-merge-into", "tool")
        page.click("#manage-label-merge")
        says(page, "Merged label 'fish' into 'tool': 4 pictures moved")
        counts(page, "8 images: tool 8")
        assert folders("pets") == {"tool"}
    with step("05-undo-merge"):
        page.click("#manage-undo")
        says(page, "label 'fish' is back")
        counts(page, "fish 4")
    with step("06-delete-label-asks-first"):
        pick(page, "#manage-label", "tool")
        page.click("#manage-label-delete")
        says(page, "Tick 'Yes, delete' first")
        assert error_badges(page) == 0 and folders("pets") == {"fish", "tool"}
    with step("07-delete-label"):
        page.check("#manage-confirm input")
        page.click("#manage-label-delete")
        says(page, "its 4 pictures are in the trash")
        counts(page, "4 in trash")
        assert folders("pets") == {"fish"}
        assert not page.is_checked("#manage-confirm input")  # the tick is for one delete only
    with step("08-undo-delete-label"):
        page.click("#manage-undo")
        says(page, "label 'tool' is back")
        counts(page, "tool 4")
    with step("09-rename-dataset"):
        page.fill("#manage-dataset-new textarea, #manage-dataset-new input", "my pets")
        page.click("#manage-dataset-rename")
        says(page, "Renamed the dataset to my-pets")
        page.wait_for_function("document.querySelector('#dataset input').value === 'my-pets'")
        counts(page, "8 images")
        assert "my-pets" in list_datasets() and "pets" not in list_datasets()
    with step("10-undo-rename-dataset"):
        page.click("#manage-undo")
        says(page, "called 'pets' again")
        page.wait_for_function("document.querySelector('#dataset input').value === 'pets'")
        assert "pets" in list_datasets()
    with step("11-delete-dataset"):
        page.check("#manage-confirm input")
        page.click("#manage-dataset-delete")
        says(page, "Deleted pets")
        page.wait_for_function("document.querySelector('#dataset input').value !== 'pets'")
        assert "pets" not in list_datasets()
        page.click("#manage-deleted input")
        page.get_by_role("option").first.wait_for()
        assert page.get_by_role("option").first.inner_text().startswith("pets · deleted")
        page.keyboard.press("Escape")
    with step("12-undo-delete-dataset"):
        page.click("#manage-undo")
        says(page, "is back, with its pictures and models")
        page.wait_for_function("document.querySelector('#dataset input').value === 'pets'")
        counts(page, "8 images")
        assert Store.open("pets").check()["ok"] and error_badges(page) == 0
    with step("13-delete-then-restore"):
        page.check("#manage-confirm input")
        page.click("#manage-dataset-delete")
        says(page, "Deleted pets")
        pick(page, "#manage-deleted", page_option_starting(page, "#manage-deleted", "pets · deleted"))
        page.click("#manage-restore")
        says(page, "Restored pets")
        counts(page, "8 images")


def page_option_starting(page, elem: str, prefix: str) -> str:
    page.click(f"{elem} input")
    page.get_by_role("option").first.wait_for()
    found = next(t.strip() for t in page.get_by_role("option").all_inner_texts() if t.strip().startswith(prefix))
    page.keyboard.press("Escape")
    return found


def test_the_panel_fits_a_phone(page):
    page.set_viewport_size({"width": 390, "height": 844})
    page.click("#manage-accordion >> text=Rename, merge or delete labels")
    page.wait_for_selector("#manage-label-rename")
    page.wait_for_timeout(300)
    page.screenshot(path=str(ARTIFACTS / "phone.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 391


def test_a_failed_class_in_collect_is_said_in_words_and_leaves_no_label(page, monkeypatch):
    monkeypatch.setenv("DRAGONCLF_ALLOW_PRIVATE_URLS", "1")
    monkeypatch.setenv("DRAGONCLF_SEARCH_ENGINE", "fake_search:engine")
    with LoopbackServer() as server:
        paths = [server.add_file(f"/v/{i}{f.suffix}", f).split(str(server.port), 1)[1]
                 for i, f in enumerate(real_photos()[40:44])]  # monuments: not in pets yet
        fake_search.configure(server, {"Viserion": paths})  # nothing answers for Drogon
        page.fill("#collect-classes textarea", "Drogon\nViserion")
        page.fill("#collect-per-class input[type=number]", "5")
        page.click("#collect-start")
        page.wait_for_selector("#collect-summary:has-text('Done.')", timeout=60_000)
    summary = page.inner_text("#collect-summary")
    page.screenshot(path=str(ARTIFACTS / "collect-one-class-failed.png"), full_page=True)
    assert "1 of 2 classes could not be collected" in summary and "no images found for 'Drogon'" in summary
    assert "Traceback" not in summary and error_badges(page) == 0
    assert {lab.display: lab.count for lab in Store.open("pets").labels()} == {"Viserion": 4, "fish": 4, "tool": 4}
    page.wait_for_selector("#dataset-counts:has-text('Viserion')")
    assert "Drogon" not in page.inner_text("#dataset-counts")
