"""Headless Debian Chromium through Playwright, for the tests that click through the app."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]

needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                    reason="Debian's chromium is not installed (bash test.sh installs it)")


@contextlib.contextmanager
def chromium_page(width: int = 1400, height: int = 1000, timeout_ms: int = 60_000):
    """A fresh browser page (waits time out after `timeout_ms`); the browser closes on leaving."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(timeout_ms)
            yield page
        finally:
            browser.close()


@contextlib.contextmanager
def screenshot_step(page, name: str, artifacts: Path):
    """Name a browser test's step in its failure and keep a screenshot of how the step ended."""
    artifacts.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except Exception as e:
        page.screenshot(path=str(artifacts / f"FAILED-{name}.png"), full_page=True)
        raise AssertionError(f"step '{name}' failed: {e}") from e
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)
