"""Two people and a visitor in a real browser: each sees their own; a share is read-only; a copy is yours.

Alice and Bob sign in with passwords (standing in for "Sign in with Hugging Face"); a
visitor opens the same data served as a Space. Screenshots of each step are kept in
test-artifacts/people/.
"""

from __future__ import annotations

import shutil

import pytest

from browser import CHROMIUM, CHROMIUM_ARGS, needs_chromium, screenshot_step
from conftest import REPO
from people_fixtures import PASSWORDS

ARTIFACTS = REPO / "test-artifacts" / "people"

pytestmark = needs_chromium


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def open_as(browser, url: str, name: str | None):
    """A page in its own browser context (its own cookies), signed in as `name` (or a visitor)."""
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    if name:
        page.fill("input[name=username], input[type=text]", name)
        page.fill("input[type=password]", PASSWORDS[name])
        page.get_by_role("button", name="Login").click()
    page.wait_for_selector("#whoami:has-text('')")
    page.wait_for_selector("#dataset")
    return page


def step(page, name: str):
    return screenshot_step(page, name, ARTIFACTS)


def choices(page) -> list[str]:
    page.click("#dataset input")
    page.get_by_role("option").first.wait_for()
    texts = [t.strip() for t in page.get_by_role("option").all_inner_texts()]
    page.keyboard.press("Escape")
    return texts


def pick(page, caption: str) -> None:
    page.locator("#dataset input").fill("")  # the whole list, then the one option
    page.click("#dataset input")
    page.wait_for_timeout(300)  # the list settles (it is re-rendered as it opens)
    page.get_by_role("option", name=caption, exact=True).click()


def error_toast(page, text: str) -> None:
    """The refusal shows, as a toast or in the action's status line."""
    page.get_by_text(text).first.wait_for()
    for close in page.locator(".toast-close").all():
        try:
            close.click(timeout=2000)
        except Exception:  # noqa: BLE001 - it went by itself
            pass


def test_two_people_and_a_visitor(browser, people_world):
    w = people_world
    alice = open_as(browser, w.private_url, "alice")
    with step(alice, "01-alice-sees-her-dataset"):
        alice.wait_for_selector("#whoami:has-text('Signed in as alice')")
        assert "birds" in choices(alice)
        pick(alice, "birds")
        alice.wait_for_selector("#dataset-counts:has-text('12 images')")

    bob = open_as(browser, w.private_url, "bob")
    with step(bob, "02-bob-sees-only-his-own"):
        bob.wait_for_selector("#whoami:has-text('Signed in as bob')")
        assert not [c for c in choices(bob) if c.startswith("birds")]
        # typing Alice's folder name does not open it
        bob.fill("#dataset input", w.dataset)
        bob.keyboard.press("Enter")
        error_toast(bob, "No dataset named")
        assert "12 images" not in bob.inner_text("#dataset-counts")

    with step(bob, "03-bob-cannot-export-or-undo-hers"):
        bob.get_by_role("tab", name="Clean").click()
        bob.click("#clean-undo")
        error_toast(bob, "No dataset named")
        bob.click("#clean-after")
        bob.click("#clean-export")
        error_toast(bob, "No dataset named")
        bob.click("#clean-empty-confirm input")
        bob.click("#clean-empty")
        error_toast(bob, "No dataset named")

    with step(alice, "04-alice-shares-read-only"):
        alice.click("#access-accordion")
        alice.fill("#share-person input, #share-person textarea", "bob")
        alice.click("#share-btn")
        alice.wait_for_selector("#access-message:has-text('bob can look at it (read-only)')")

    with step(bob, "05-bob-views-but-cannot-edit"):
        bob.reload()
        bob.wait_for_selector("#whoami:has-text('Signed in as bob')")
        shared = next(c for c in choices(bob) if c.startswith("birds"))
        assert "read-only" in shared
        pick(bob, shared)
        bob.wait_for_selector("#dataset-counts:has-text('12 images')")
        bob.get_by_role("tab", name="Clean").click()
        bob.click("#clean-undo")
        error_toast(bob, "read-only")
        bob.click("#clean-after")
        bob.click("#clean-empty-confirm input")
        bob.click("#clean-empty")
        error_toast(bob, "Only the owner")

    with step(bob, "06-bob-trains-on-his-copy"):
        bob.click("#access-accordion")
        bob.fill("#copy-name input, #copy-name textarea", "mybirds")
        bob.click("#copy-btn")
        bob.wait_for_selector("#access-message:has-text('Copied 12 images')")
        bob.wait_for_selector("#dataset-counts:has-text('12 images')")
        bob.get_by_role("tab", name="Train").click()
        bob.click("#train-start")
        bob.wait_for_selector("#train-status:has-text('Done')", timeout=180_000)
        assert (w.home / "datasets" / "user.bob--mybirds").is_dir()

    visitor = open_as(browser, w.space_url, None)
    with step(visitor, "07-a-visitor-sees-the-demo-only"):
        visitor.wait_for_selector("#whoami:has-text('You are a visitor')")
        assert [c for c in choices(visitor) if c.startswith(("birds", "mybirds"))] == []
        visitor.fill("#new-dataset input, #new-dataset textarea", "mine")
        visitor.click("#create-dataset")
        error_toast(visitor, "sign in")
