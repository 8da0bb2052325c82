"""The whole journey in a real browser (Playwright driving Debian's Chromium, headless).

Create a dataset, collect two classes from the fake search engine (real photos
over a loopback server, one planted mislabel), clean it with the keyboard, fit
the quick model, fine-tune one epoch, evaluate, predict an upload. A screenshot
of each step is kept in test-artifacts/journey/; a failure names its step.
"""

from __future__ import annotations

import shutil
import time

import pytest

import fake_search
from browser import chromium_page, needs_chromium, screenshot_step
from conftest import REPO
from dragonclf.store import Store
from httpserver import LoopbackServer

ARTIFACTS = REPO / "test-artifacts" / "journey"

pytestmark = needs_chromium


@pytest.fixture
def browser_page(app_url):
    shutil.rmtree(ARTIFACTS, ignore_errors=True)  # only this run's screenshots
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with chromium_page(height=1100) as page:
        yield page


@pytest.fixture
def web(monkeypatch, photo_files):
    """Fish and tool photos on a loopback server; one tool photo is planted among the fish."""
    monkeypatch.setenv("DRAGONCLF_ALLOW_PRIVATE_URLS", "1")
    monkeypatch.setenv("DRAGONCLF_SEARCH_ENGINE", "fake_search:engine")
    with LoopbackServer() as server:
        def serve(prefix, files):
            return [server.add_file(f"/{prefix}/{i}{f.suffix}", f).split(str(server.port), 1)[1]
                    for i, f in enumerate(files)]

        fish = serve("fish", photo_files["fishes"][:9]) + serve("planted", photo_files["tools"][-1:])
        tools = serve("tool", photo_files["tools"][:10])
        fake_search.configure(server, {"fish": fish, "tool": tools})
        yield server.url("/planted/0.webp")


def step(page, name: str):
    return screenshot_step(page, name, ARTIFACTS)


def open_tab(page, title: str) -> None:
    page.get_by_role("tab", name=title).click()


def test_the_whole_journey(browser_page, app_url, web, photo_files):
    page = browser_page
    planted_url = web

    with step(page, "01-open"):
        page.goto(app_url)
        page.wait_for_selector("#dataset-counts:has-text('122 images')")

    with step(page, "02-create-dataset"):
        page.fill("#new-dataset input, #new-dataset textarea", "dragons")
        page.click("#create-dataset")
        page.wait_for_selector("#dataset-counts:has-text('no labels yet')")
        assert Store.open("dragons").labels() == []

    with step(page, "03-collect"):
        open_tab(page, "Collect")
        page.fill("#collect-classes textarea", "fish\ntool")
        page.fill("#collect-per-class input[type=number]", "10")
        page.keyboard.press("Tab")
        page.click("#collect-start")
        page.wait_for_selector("#collect-summary:has-text('Done.')", timeout=120_000)
        page.wait_for_selector("#collect-gallery-0 img")
        assert page.locator("#collect-gallery-0 img").count() >= 5
        status = Store.open("dragons").status()
        assert status["labels"] == {"fish": 10, "tool": 10}, status
        planted = next(r for r in Store.open("dragons").images(label="fish") if r.source == planted_url)

    with step(page, "04-quick-model"):
        open_tab(page, "Train")
        page.click("#train-start")
        page.wait_for_selector("#train-status:has-text('Done')", timeout=180_000)
        assert "validation accuracy" in page.inner_text("#train-status")

    if (REPO / "ui" / "clean_tab.py").exists():
        with step(page, "05-clean-with-keyboard"):
            clean_journey(page, planted.id)

    with step(page, "06-fine-tune-one-epoch"):
        open_tab(page, "Train")
        page.get_by_text("Fine-tune (fastai)").click()
        page.fill("#train-epochs input", "1")
        page.keyboard.press("Tab")
        # what the chosen setting costs, for this dataset's training pictures (measured figures, settings.py)
        page.wait_for_selector("#train-tradeoff:has-text('Accurate: 224 px, 1 epoch, ~')")
        assert "points less" in page.inner_text("#train-tradeoff")
        page.click("#train-start")
        # the quick model's "Done" is still showing until the first update: wait for this run's own
        page.wait_for_selector("#train-status:has-text('Done'):has-text('finetune model')", timeout=300_000)
        assert page.locator("#train-epochs-table tbody tr").count() >= 1  # the epoch row arrived

    with step(page, "07-evaluate"):
        open_tab(page, "Evaluate")
        page.locator("#tab-evaluate button", has_text="Models").click()
        page.wait_for_timeout(1000)
        page.click("#eval-run")
        page.wait_for_selector("#eval-summary:has-text('validation images')", timeout=120_000)
        page.wait_for_selector("#eval-cm img, #eval-cm svg, #eval-cm canvas")
        assert page.locator("#eval-per-class").inner_text().count("fish") >= 1

    with step(page, "08-predict"):
        open_tab(page, "Predict")
        page.set_input_files("#predict-image input[type=file]", str(photo_files["fishes"][-1]))
        page.wait_for_selector("#predict-label:has-text('fish'), #predict-label:has-text('tool')", timeout=60_000)
        text = page.inner_text("#predict-label")
        assert "%" in text or "fish" in text


def clean_journey(page, planted_id: str) -> None:
    """The planted tool photo tops the mislabel queue; D trashes it, K keeps it (u undoes each, bringing it
    back to the card); its digit relabels it to tool, u undoes, Shift+U redoes."""
    store = Store.open("dragons")
    digit = str([lab.display for lab in store.labels()].index("tool") + 1)
    open_tab(page, "Clean")
    page.click("#clean-find")
    page.wait_for_selector(f"#clean-card:has-text('{planted_id}')", timeout=120_000)
    page.click("#clean-summary")  # focus the page, not an input, so keys reach the shortcuts

    def becomes(field, want):
        deadline = time.time() + 20
        while time.time() < deadline:
            if getattr(Store.open("dragons").image(planted_id), field) == want:
                return
            time.sleep(0.2)
        raise AssertionError(f"{planted_id}'s {field} is {getattr(Store.open('dragons').image(planted_id), field)}, "
                             f"not {want}")

    page.keyboard.press("d")
    becomes("status", "trashed")
    page.wait_for_selector("#clean-message:has-text('moved to the trash')")
    page.keyboard.press("u")
    becomes("status", "active")
    page.wait_for_selector(f"#clean-card:has-text('{planted_id}')")  # back in the queue, on the card
    page.keyboard.press("k")
    becomes("kept", True)
    page.keyboard.press("u")
    becomes("kept", False)
    page.wait_for_selector(f"#clean-card:has-text('{planted_id}')")
    page.keyboard.press(digit)
    becomes("label", "tool")
    page.wait_for_selector("#clean-message:has-text('relabelled')")
    page.keyboard.press("u")
    becomes("label", "fish")
    page.keyboard.press("Shift+U")
    becomes("label", "tool")
    assert Store.open("dragons").image(planted_id).path.parent.name == "tool"
