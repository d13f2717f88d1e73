"""The static ``trailguard explore`` folder in a real browser (chromium through Playwright): every page
renders its numbers and charts, nothing leaves file://, no console error, the planted payloads stay text."""

from __future__ import annotations

import pytest
from trailguard.explore import render, views

from tests.explore.browser import Visit, check_page, chromium
from tests.explore.payloads import IMG_PAYLOAD, PAYLOAD

pytestmark = [pytest.mark.timeout(300)]


def test_static_pages_in_chromium(store, tmp_path):
    period = views.resolve_period(store.root)
    site = tmp_path / "site"
    written = render.write_static(store.root, site, period)
    total = sum(store.count_rows(d) for d in store.dates())
    with chromium() as browser:
        for name in written["pages"]:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            visit = Visit()
            visit.watch(page)
            page.goto((site / name).as_uri())
            page.wait_for_load_state("load")
            facts = check_page(page, visit, allowed_origin=None)
            page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
            if name == "activity.html":
                assert page.inner_text("#total-events") == f"{total:,}"
                assert facts["svgs"] >= 3
                assert PAYLOAD in facts["text"] and IMG_PAYLOAD in facts["text"]  # shown, as text
            if name == "pca.html":
                assert facts["svgs"] == 1 and "of the variance" in facts["text"]
                outlier = page.locator("svg a.outlier").first
                href = outlier.get_attribute("href")
                assert href.startswith("principal-") and (site / href).exists()
            page.close()
    assert (tmp_path / "activity.html.png").stat().st_size > 10_000
