"""The TrailGuard plugin inside Airflow's own API app (the api-server's FastAPI app, plugins loaded from
plugins/, the simple auth manager): no page or JSON without a login, every page and JSON with one, the
navigation entry listed, a strict CSP on every response, hostile paths refused."""

from __future__ import annotations

import json
import re

import pytest

pytestmark = [pytest.mark.slow]

PAGES = ("reports", "activity", "pca", "quality", "models")


@pytest.fixture(scope="module")
def client(airflow_db, tmp_path_factory):
    """Airflow's API app over a tiny data root with one day of activity, one report and one quality page."""
    import os

    from fastapi.testclient import TestClient
    from trailguard.ingest.normalise import normalise, rows_to_table
    from trailguard.store.events import EventStore

    root = tmp_path_factory.mktemp("plugin")
    data = root / "data"
    store = EventStore(data)
    rows = [normalise({"eventVersion": "1.09", "eventID": f"e{i}", "eventTime": f"2026-11-20T10:{i:02d}:00Z",
                       "eventSource": "s3.amazonaws.com", "eventName": "GetObject", "awsRegion": "us-east-1",
                       "sourceIPAddress": "203.0.113.9", "recipientAccountId": "111122223333",
                       "userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::111122223333:user/u{i % 4}"}}, "t")
            for i in range(20)]  # fmt: skip
    store.append_events(rows_to_table(rows), "t")
    from trailguard.explore.activity import write_day_activity

    write_day_activity(store, "2026-11-20")
    (data / "reports" / "2026-11-20").mkdir(parents=True)
    (data / "reports" / "2026-11-20" / "report.html").write_text(
        "<html><head></head><body>emailed</body></html>"
    )
    (data / "reports" / "2026-11-20" / "report.json").write_text(
        json.dumps({"summary": {"events_scored": 20}})
    )
    passwords = root / "passwords.json"
    passwords.write_text(json.dumps({"admin": "admin"}))
    env = {
        "TRAILGUARD_DATA": str(data),
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        # the API app signs its tokens with this; set here, whatever an earlier test left in Airflow's config
        "AIRFLOW__API_AUTH__JWT_SECRET": "trailguard-plugin-test-secret",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from airflow.api_fastapi.app import create_app, purge_cached_app

    try:
        purge_cached_app()
        with TestClient(create_app(), base_url="http://127.0.0.1") as test_client:
            yield test_client
    finally:
        purge_cached_app()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _token(client) -> str:
    response = client.post("/auth/token", json={"username": "admin", "password": "admin"})
    assert response.status_code == 201, response.text
    return response.json()["access_token"]


def test_nothing_is_reachable_without_a_login(client):
    client.cookies.clear()
    for name in PAGES:
        page = client.get(f"/trailguard/{name}", follow_redirects=False)
        assert page.status_code == 302, (name, page.status_code)
        assert "/auth/login" in page.headers["location"] and "trailguard" in page.headers["location"]
        api = client.get(f"/trailguard/api/{name}")
        assert api.status_code == 401, (name, api.status_code)
    for path in ("/trailguard/", "/trailguard/reports/2026-11-20", "/trailguard/static/explore.css",
                 "/trailguard/quality/2026-11-20", "/trailguard/api/activity?from=2026-11-20"):  # fmt: skip
        assert client.get(path, follow_redirects=False).status_code in (302, 401), path
    forged = client.get("/trailguard/api/activity", headers={"Authorization": "Bearer not-a-token"})
    assert forged.status_code in (401, 403)


def test_every_page_and_json_with_a_login(client):
    headers = {"Authorization": f"Bearer {_token(client)}"}
    for name in PAGES:
        page = client.get(f"/trailguard/{name}", headers=headers)
        assert page.status_code == 200, (name, page.text[:500])
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp and "frame-ancestors 'self'" in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert not re.search(r"<script|https?://(?!www\.w3\.org/2000/svg)", page.text), name
        assert client.get(f"/trailguard/api/{name}", headers=headers).status_code == 200
    activity = client.get("/trailguard/api/activity", headers=headers).json()
    assert activity["totals"]["events"] == 20 and activity["totals"]["principals"] == 4
    assert ">20</b> events" in client.get("/trailguard/activity", headers=headers).text
    emailed = client.get("/trailguard/reports/2026-11-20", headers=headers)
    assert emailed.status_code == 200 and "emailed" in emailed.text
    assert "sandbox" in emailed.headers["content-security-policy"]
    reports = client.get("/trailguard/api/reports", headers=headers).json()["reports"]
    assert [(r["date"], r["events_scored"]) for r in reports] == [("2026-11-20", 20)]


def test_bad_input_is_refused(client):
    headers = {"Authorization": f"Bearer {_token(client)}"}
    assert client.get("/trailguard/reports/..%2F..%2Fetc", headers=headers).status_code == 404
    assert client.get("/trailguard/investigations/.hidden", headers=headers).status_code == 404
    assert client.get("/trailguard/quality/2026-11-20%00", headers=headers).status_code == 404
    bad = client.get("/trailguard/activity", params={"from": "<script>"}, headers=headers)
    assert bad.status_code == 400 and "<script>" not in bad.text and "&lt;script&gt;" in bad.text
    assert client.get("/trailguard/api/pca", params={"to": "x"}, headers=headers).status_code == 400


def test_navigation_entry_is_listed(client):
    headers = {"Authorization": f"Bearer {_token(client)}"}
    plugins = client.get("/api/v2/plugins", headers=headers).json()["plugins"]
    mine = [p for p in plugins if p["name"] == "trailguard"]
    assert mine, [p["name"] for p in plugins]
    assert mine[0]["external_views"][0]["name"] == "TrailGuard"
    assert mine[0]["external_views"][0]["url_route"] == "trailguard"
    assert mine[0]["fastapi_apps"][0]["url_prefix"] == "/trailguard"
