"""The traps a newcomer fell into in the browser (issue 13), each driven in headless Chromium.

One browser for the module; every test has its own DRAGONCLF_HOME (conftest) and reloads the
page, so the app it talks to starts from the bundled demo each time. Screenshots of how each
test ended are kept in test-artifacts/newcomer/.
"""

from __future__ import annotations

import pytest

from browser import chromium_page, needs_chromium
from conftest import REPO
from dragonclf.store import Store

ARTIFACTS = REPO / "test-artifacts" / "newcomer"

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with chromium_page(height=1100, timeout_ms=30_000) as page:
        yield page


@pytest.fixture
def page(browser, app_url, request):
    browser.set_viewport_size({"width": 1400, "height": 1100})
    browser.goto(app_url)
    browser.wait_for_selector("#dataset-counts:has-text('images')")
    yield browser
    browser.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)


def create_dataset(page, name: str) -> None:
    page.fill("#new-dataset input, #new-dataset textarea", name)
    page.click("#create-dataset")
    page.wait_for_selector("#dataset-counts:has-text('no labels yet')")


def open_tab(page, title: str) -> None:
    page.get_by_role("tab", name=title).click()


def test_upload_box_clears_after_import_so_nothing_goes_in_twice(page, photo_files):
    create_dataset(page, "pets")
    page.click("#images-accordion >> text=Images and import")
    fish, tools = photo_files["fishes"][:3], photo_files["tools"][:3]
    page.set_input_files("#import-files input[type=file]", [str(f) for f in fish])
    page.fill("#import-label textarea", "fish")
    page.click("#import-btn")
    page.wait_for_selector("#import-result:has-text('fish')")
    first = page.inner_text("#import-result")
    assert "3 added to fish" in first, first
    # the box is empty again, ready for the next label's pictures
    page.wait_for_function("!document.querySelector('#import-files').innerText.includes('.webp')")
    page.set_input_files("#import-files input[type=file]", [str(f) for f in tools])
    page.fill("#import-label textarea", "tool")
    page.click("#import-btn")
    page.wait_for_selector("#import-result:has-text('to tool')")
    second = page.inner_text("#import-result")
    assert "3 added to tool" in second and "conflict" not in second.replace("0 label conflicts", ""), second
    assert Store.open("pets").status()["labels"] == {"fish": 3, "tool": 3}
    assert not Store.open("pets").conflicts()
