"""The TrailGuard pages in the real Airflow UI of `make up` (scripts/stack.py), in chromium.

The data root is filled first with the library functions the DAGs call (demo logs with script payloads
planted, ingest, validation and activity tables, training into the data root's MLflow store, scoring and
the report of the last day); then the stack starts on it. The browser logs in through Airflow's own login
page, opens each TrailGuard page (directly and inside the Airflow UI's navigation entry), and checks: the
numbers are the data root's, charts render, no console error, no request to another host, the payloads
stay text. Screenshots go to the test's temporary folder; TRAILGUARD_SCREENSHOTS=docs/img also copies one
per page there (how the README's images were made).
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import timedelta
from pathlib import Path

import pytest

from tests.explore.browser import Visit, check_page, chromium, require_browser
from tests.explore.payloads import PAYLOAD
from tests.test_stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1500)]

PAGES = ("reports", "activity", "pca", "quality", "models")


def _fill(root: Path) -> dict:
    """The demo pipeline on a small organisation, in this process (the DAGs call the same functions)."""
    from trailguard.demo import generator
    from trailguard.explore.activity import write_day_activity
    from trailguard.ingest.ingestion import ingest
    from trailguard.ingest.normalise import normalise, rows_to_table
    from trailguard.ingest.sources import LocalFolderSource
    from trailguard.model.scoring import score_day
    from trailguard.model.training import train
    from trailguard.quality.gate import validate_partition
    from trailguard.report.daily import build_report
    from trailguard.store.events import EventStore

    demo = generator.generate(root / "logs", days=4, events=4_000, bad_files=False)
    store = EventStore(root / "data")
    ingest(LocalFolderSource(root / "logs" / "AWSLogs"), store)
    hostile = [normalise({
        "eventVersion": "1.09", "eventID": f"hostile-{i}", "eventTime": f"{demo.end}T09:{i:02d}:00Z",
        "eventSource": "iam.amazonaws.com", "eventName": "CreateAccessKey", "eventType": "AwsApiCall",
        "sourceIPAddress": "203.0.113.9", "userAgent": PAYLOAD, "awsRegion": "us-east-1",
        "recipientAccountId": "111122223333", "errorCode": '"><img src=x onerror=alert(1)>' if i < 2 else None,
        "userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::111122223333:user/{PAYLOAD}"},
    }, "test") for i in range(5)]  # fmt: skip
    store.append_events(rows_to_table(hostile), "hostile")
    for day in store.dates():
        validate_partition(store, day)
        write_day_activity(store, day)
    last = demo.end.isoformat()
    train(store, until=demo.end - timedelta(days=1))
    score_day(store, last)
    build_report(store.root, last)
    return {"last": last, "events": sum(store.count_rows(d) for d in store.dates()), "days": store.dates()}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    require_browser()
    root = tmp_path_factory.mktemp("explore-stack")
    stack = Stack(root)
    stack.filled = _fill(root)
    result = stack.script("up")
    try:
        assert result.returncode == 0, f"make up failed:\n{result.stdout}\n{result.stderr}"
        stack.remember_processes()
        yield stack
    finally:
        stack.remember_processes()
        stack.script("down")
        assert not stack.leftovers(), stack.leftovers()


def _login(page, base: str) -> None:
    """Airflow's own login form (simple auth manager), as a person fills it."""
    page.goto(f"{base}/trailguard/activity")
    page.wait_for_url("**/auth/login**", timeout=60_000)
    page.locator("input:not([type=password]):not([type=hidden])").first.fill("admin")
    page.locator("input[type=password]").fill("admin")
    page.locator("input[type=password]").press("Enter")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(c["name"] == "_token" for c in page.context.cookies()):
        page.wait_for_timeout(500)
    assert any(c["name"] == "_token" for c in page.context.cookies()), (
        "the login did not set Airflow's session"
    )


def test_pages_in_the_airflow_ui(stack, tmp_path):
    import httpx

    base = stack.airflow
    for name in PAGES:  # nothing without a login, against the real api-server
        assert httpx.get(f"{base}/trailguard/api/{name}").status_code == 401
        assert httpx.get(f"{base}/trailguard/{name}", follow_redirects=False).status_code == 302
    shots = Path(os.environ["TRAILGUARD_SCREENSHOTS"]) if os.environ.get("TRAILGUARD_SCREENSHOTS") else None
    filled = stack.filled
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1366, "height": 900})
        page = context.new_page()
        _login(page, base)
        for name in PAGES:
            page = context.new_page()
            visit = Visit()
            visit.watch(page)
            response = page.goto(f"{base}/trailguard/{name}")
            assert response.status == 200, (name, response.status)
            assert "default-src 'none'" in response.headers["content-security-policy"]
            page.wait_for_load_state("load")
            facts = check_page(page, visit, allowed_origin=base)
            page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
            if shots:
                shots.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(tmp_path / f"{name}.png", shots / f"explore-{name}.png")
            if name == "reports":
                assert filled["last"] in facts["text"]
            if name == "activity":
                assert page.inner_text("#total-events") == f"{filled['events']:,}"
                assert facts["svgs"] >= 3 and PAYLOAD in facts["text"]
            if name == "pca":
                assert facts["svgs"] == 1 and page.locator("svg a.outlier").count() >= 1
            if name == "quality":
                assert all(day in facts["text"] for day in filled["days"])
            if name == "models":
                assert "Champion: " in facts["text"] and "average_precision" in facts["text"]
            page.close()

        # the report as it was emailed, from the reports list
        page = context.new_page()
        visit = Visit()
        visit.watch(page)
        page.goto(f"{base}/trailguard/reports")
        page.locator("#reports a").first.click()
        page.wait_for_load_state("load")
        assert f"/trailguard/reports/{filled['last']}" in page.url
        assert visit.dialogs == [] and visit.foreign_requests(base) == []
        page.close()

        # the navigation entry: the pages inside the Airflow UI
        page = context.new_page()
        page.goto(f"{base}/plugin/trailguard")
        frame = page.frame_locator("iframe")
        frame.locator("h1").first.wait_for(timeout=60_000)
        assert "Reports" in frame.locator("h1").first.inner_text()
        page.screenshot(path=str(tmp_path / "airflow-nav.png"))
        if shots:
            shutil.copyfile(tmp_path / "airflow-nav.png", shots / "explore-in-airflow.png")
        context.close()
