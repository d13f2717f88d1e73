"""Playwright driving the Debian ``chromium`` package (browser downloads are not possible here): open a
TrailGuard page and collect what a reviewer checks by eye, so the tests can assert it.

Skips, saying how to get it, where chromium or playwright is absent.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def require_browser() -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(
            "chromium not found: install it with `apt-get install chromium` (or `make install-test` as root)"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("the playwright package is not installed: run `make install-test`")


@contextmanager
def chromium() -> Iterator[object]:
    """A headless chromium (the system one, no sandbox: tests may run as root)."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Visit:
    """What happened while a page loaded: console errors, uncaught errors, dialogs (a payload that ran
    would open one), every request's URL."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def watch(self, page) -> None:
        page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        page.on("request", lambda r: self.requests.append(r.url))

        def dialog(d) -> None:
            self.dialogs.append(d.message)
            d.dismiss()

        page.on("dialog", dialog)

    def foreign_requests(self, allowed_origin: str | None) -> list[str]:
        """Requests to anything but ``allowed_origin`` (scheme://host:port), or, for files, anything not file:."""
        out = []
        for url in self.requests:
            parts = urlsplit(url)
            if url.startswith("data:"):
                continue
            if allowed_origin is None:
                if parts.scheme != "file":
                    out.append(url)
            elif f"{parts.scheme}://{parts.netloc}" != allowed_origin:
                out.append(url)
        return out


def check_page(page, visit: Visit, *, allowed_origin: str | None) -> dict:
    """The assertions every TrailGuard page must pass; returns the DOM facts for page-specific checks."""
    facts = page.evaluate(
        """() => ({
            scripts: document.querySelectorAll('script').length,
            handlers: [...document.querySelectorAll('*')].filter(e => [...e.attributes].some(a => a.name.startsWith('on'))).length,
            injected_images: document.querySelectorAll('img[src="x"]').length,
            svgs: document.querySelectorAll('svg.chart').length,
            text: document.body.innerText,
            title: document.title,
        })"""
    )
    assert facts["scripts"] == 0 and facts["handlers"] == 0 and facts["injected_images"] == 0, facts
    assert visit.dialogs == [], visit.dialogs
    assert visit.page_errors == [], visit.page_errors
    assert visit.console_errors == [], visit.console_errors
    assert visit.foreign_requests(allowed_origin) == [], visit.foreign_requests(allowed_origin)
    return facts
