"""Playwright driving Debian's Chromium (Playwright's own browser download is not reachable here).

Tests that use `chromium_page` skip with a reason when Playwright or a chromium binary is missing (a
fresh machine running `make test`; .ci/run installs chromium with apt)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser")


def chromium_path() -> str | None:
    """The real chromium binary (Debian's /usr/bin/chromium is a shell wrapper around it)."""
    for name in CANDIDATES:
        found = name if os.path.isabs(name) and os.access(name, os.X_OK) else shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture
def browser() -> Iterator[object]:
    """A headless Chromium through Playwright, with every request to the network refused."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    exe = chromium_path()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


def offline_page(browser: object, outside: list[str], viewport: tuple[int, int] = (1200, 800)) -> object:
    """A new page whose requests to anything but file:// and 127.0.0.1 are aborted and noted in `outside`."""
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})  # type: ignore[attr-defined]

    def route(r: object) -> None:
        url = r.request.url  # type: ignore[attr-defined]
        if url.startswith(("file://", "data:", "blob:", "http://127.0.0.1")):
            r.continue_()  # type: ignore[attr-defined]
        else:
            outside.append(url)
            r.abort()  # type: ignore[attr-defined]

    page.route("**/*", route)
    return page


def wait_until(page: object, expression: str, timeout_ms: int = 30_000) -> None:
    """Poll a JavaScript expression until it is truthy. Not Playwright's wait_for_function: when it has to
    poll, that evaluates its predicate inside the page, which a page with a strict Content-Security-Policy
    (the review page: no 'unsafe-eval') refuses, so it failed only when the machine was slow.
    page.evaluate runs through the debugging protocol, which the policy does not govern."""
    import time

    deadline = time.monotonic() + timeout_ms / 1000
    while not page.evaluate(expression):  # type: ignore[attr-defined]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_ms} ms waiting for {expression}")
        page.wait_for_timeout(100)  # type: ignore[attr-defined]


def shot(page: object, path: Path) -> None:
    """A small PNG screenshot (docs)."""
    page.screenshot(path=str(path))  # type: ignore[attr-defined]
