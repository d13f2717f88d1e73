"""The explore wing on a small demo store with hostile events planted: the activity tables equal a direct
computation over the events, the views add up, the static folder works offline and every planted payload
comes out escaped."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from trailguard.explore import activity as act
from trailguard.explore import render, views

from tests.explore.payloads import IMG_PAYLOAD, PAYLOAD, SVG_PAYLOAD


def _events(store, day: str) -> pd.DataFrame:
    return store.read_partition(day, columns=act.COLUMNS).to_pandas()


def test_aggregates_equal_a_direct_computation_over_the_events(store):
    from trailguard.model import enrich
    from trailguard.model.features import principal_of

    enricher = enrich.default_enricher()
    for day in store.dates():
        events = _events(store, day)
        rows = act.read_activity(store.root, [day])
        got = rows[rows["dim"] == "category"].astype({"principal": str, "value": str})
        assert int(got["events"].sum()) == len(events) == store.count_rows(day)

        principals = principal_of(events).astype(str)
        expected = principals.value_counts().sort_index()
        per_principal = got.groupby("principal")["events"].sum().sort_index()
        assert per_principal.to_dict() == expected.to_dict()

        categories = enrich.event_category(events).astype(str).value_counts()
        assert got.groupby("value")["events"].sum().to_dict() == categories.to_dict()

        apis = (
            events["eventSource"].str.split(".").str[0]
            + ":"
            + events["eventName"].str.slice(0, act.MAX_VALUE_CHARS)
        )
        api_rows = rows[rows["dim"] == "api"].astype({"principal": str, "value": str})
        direct = pd.DataFrame({"p": principals, "api": apis}).groupby("p")["api"].nunique().sort_index()
        assert api_rows.groupby("principal")["value"].nunique().sort_index().to_dict() == direct.to_dict()

        errors = events["errorCode"].notna() & (events["errorCode"] != "")
        assert int(rows.loc[rows["dim"] == "error", "events"].sum()) == int(errors.sum())

        geo = enricher.enrich(events["sourceIPAddress"], events["vpcEndpointId"])
        country_rows = rows[rows["dim"] == "country"].astype({"value": str})
        assert (
            country_rows.groupby("value")["events"].sum().to_dict()
            == geo["country"].astype(str).value_counts().to_dict()
        )

        console = events["eventName"] == "ConsoleLogin"
        no_mfa = console & events["responseElements.ConsoleLogin"].str.lower().eq("success") & ~events[
            "additionalEventData.MFAUsed"].fillna("").str.lower().eq("yes")  # fmt: skip
        logins = rows[rows["dim"] == "console"].astype({"value": str}).groupby("value")["events"].sum()
        assert int(logins.sum()) == int(console.sum())
        assert int(logins.get("success_no_mfa", 0)) == int(no_mfa.sum())


def test_a_rerun_rewrites_the_same_table(store):
    day = store.dates()[-1]
    path = act.activity_dir(store.root, day) / act.ACTIVITY_FILE
    before = act.read_activity(store.root, [day])
    act.write_day_activity(store, day)
    after = act.read_activity(store.root, [day])
    pd.testing.assert_frame_equal(before, after)
    assert [p.name for p in path.parent.iterdir()] == [act.ACTIVITY_FILE]


def test_activity_view_adds_up_and_filters(store):
    period = views.resolve_period(store.root)
    assert period.days == store.dates()  # the last 7 days of the store: here its 4 days
    view = views.activity_view(store.root, period)
    total = sum(store.count_rows(d) for d in store.dates())
    assert view["totals"]["events"] == total == sum(d["events"] for d in view["days"])
    assert sum(p["events"] for p in view["principals"]) == total
    first = act.read_activity(store.root, period.days[:1])
    assert view["new"]["baseline_days"] == 0  # nothing before the store's first day: all of it is new
    assert (
        view["new"]["days"][0]["principal"]["count"]
        == first.loc[first["dim"] == "category", "principal"].nunique()
    )
    hostile = f"arn:aws:iam::111122223333:user/{PAYLOAD}"
    mine = views.activity_view(store.root, period, principal=hostile)
    assert mine["totals"]["events"] == 6
    assert mine["console"]["success_no_mfa"] == 3
    assert {r["value"] for r in mine["top_errors"]} == {IMG_PAYLOAD}
    last = period.days[-1]
    assert mine["new"]["days"][-1]["principal"]["values"] == [hostile]
    account = views.activity_view(store.root, period, account="111122223333")
    assert account["totals"]["events"] == 6 and account["options"]["accounts"] == view["options"]["accounts"]
    assert last in {d["date"] for d in account["days"] if d["events"]}


def test_pca_view_labels_outliers_and_explains_variance(store):
    period = views.resolve_period(store.root)
    pca = views.pca_view(store.root, period)
    assert pca["principals"] == len(pca["points"]) > 10
    variance = [c["explained_variance"] for c in pca["components"]]
    assert 0 < variance[1] <= variance[0] and sum(variance) <= 1
    assert all(len(c["loadings"]) > 0 for c in pca["components"])
    outliers = [p for p in pca["points"] if p["outlier"]]
    assert outliers and min(p["distance"] for p in outliers) >= max(
        p["distance"] for p in pca["points"] if not p["outlier"]
    )


def test_bad_periods_are_one_line_errors(store):
    with pytest.raises(views.ViewError, match="not a date"):
        views.resolve_period(store.root, "2026-13-01")
    with pytest.raises(views.ViewError, match="is after"):
        views.resolve_period(store.root, "2026-11-20", "2026-11-01")
    with pytest.raises(views.ViewError, match="at most"):
        views.resolve_period(store.root, "2020-01-01", "2026-01-01")


class _Refs(HTMLParser):
    """Every URL a page would load or link to, every script and inline style or handler."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts = 0
        self.handlers: list[str] = []
        self.styles = 0
        self.csp: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.scripts += tag == "script"
        self.styles += "style" in attrs
        self.handlers += [k for k in attrs if k.startswith("on")]
        for key in ("src", "href", "action", "xlink:href"):
            if attrs.get(key):
                self.urls.append(attrs[key])
        if tag == "meta" and (attrs.get("http-equiv") or "").lower() == "content-security-policy":
            self.csp.append(attrs.get("content") or "")


def test_static_folder_is_offline_and_payloads_are_escaped(store, tmp_path):
    period = views.resolve_period(store.root)
    out = tmp_path / "site"
    written = render.write_static(store.root, out, period)
    pages = sorted(out.glob("*.html"))
    assert {"index.html", "activity.html", "pca.html", "quality.html", "models.html"} <= {
        p.name for p in pages
    }
    assert any(p.name.startswith("principal-") for p in pages) and written["missing_days"] == []
    for page in pages:
        text = page.read_text()
        refs = _Refs()
        refs.feed(text)
        assert refs.scripts == 0 and refs.handlers == [] and refs.styles == 0, page.name
        assert refs.csp == [render.META_CSP], page.name
        for url in refs.urls:
            assert not re.match(r"^(https?:)?//|^javascript:|^data:", url, re.I), (page.name, url)
            assert (out / url.split("?")[0]).exists(), (page.name, url)
        assert "url(" not in text and "@import" not in text
        assert PAYLOAD not in text and IMG_PAYLOAD not in text and SVG_PAYLOAD not in text, page.name
    activity = (out / "activity.html").read_text()
    assert re.search(r"user/&lt;script&gt;alert\((&quot;|&#34;)tg(&quot;|&#34;)\)&lt;/script&gt;", activity)
    assert re.search(r"(&quot;|&#34;)&gt;&lt;img src=x onerror=alert\(1\)&gt;", activity)
    css = (out / "explore.css").read_text()
    assert "http" not in css and "url(" not in css
    data = json.loads((out / "data" / "activity.json").read_text())
    assert data["totals"]["events"] == sum(store.count_rows(d) for d in store.dates())


def test_pages_of_a_longer_period_show_missing_days(store):
    end = date.fromisoformat(store.dates()[-1])
    period = views.Period(end - timedelta(days=9), end)
    view = views.activity_view(store.root, period)
    assert len(view["missing_days"]) == 10 - len(store.dates())
    html = render.render("activity", view, render.Links())
    assert f"No activity table for {len(view['missing_days'])} day(s)" in html
    assert np.isclose(view["totals"]["events"], sum(d["events"] for d in view["days"]))


def test_explore_command(store, tmp_path, capsys):
    from trailguard.cli import main

    out = tmp_path / "cli-site"
    assert main(["--data", str(store.root), "explore", "--out", str(out)]) == 0
    assert "pages, open" in capsys.readouterr().out
    assert (out / "index.html").exists() and (out / "pca.html").exists()
    assert not (store.root / "mlflow" / "mlflow.db").exists()  # reading the models creates no store
    assert main(["--data", str(store.root), "explore", "--from", "2026-11-20", "--to", "2026-11-01"]) == 2
    assert "is after" in capsys.readouterr().err
    assert main(["--data", str(tmp_path / "empty"), "explore"]) == 1
    assert "no events" in capsys.readouterr().err
