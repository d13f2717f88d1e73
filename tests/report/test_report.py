"""The daily report on a hand-made scores partition: grouping, ranking, files, and hostile values."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from trailguard.report.daily import (
    CSV_COLUMNS,
    TRUNCATED,
    ScoresNotFoundError,
    build_report,
    csv_cell,
    load_report,
    technique_url,
)

DAY = "2026-11-20"
START = datetime(2026, 11, 20, tzinfo=timezone.utc)
SCRIPT = "<script>alert(1)</script>"
IMG_PRINCIPAL = 'arn:aws:iam::111122223333:user/"><img src=x onerror=alert(1)>'
HUGE_AGENT = "Mozilla/5.0 " + "A" * (5 * 1024 * 1024)
FORMULAS = ('=HYPERLINK("http://evil","x")', "+cmd|' /C calc'!A0", "@SUM(1)", "-1+1", "\tTAB-prefixed")
FEEDBACK = ("Tell TrailGuard where it was wrong: trigger http://127.0.0.1:8080/dags/record_analyst_label/trigger "
            "or run `trailguard label EVENT_ID SCORE --verdict benign --note \"why\"`.")  # fmt: skip


def event(event_id: str, minute: int, score: float, **values) -> dict:
    """One scores row with the column contract's defaults."""
    row = {
        "eventID": event_id,
        "eventTime": START + timedelta(minutes=minute),
        "use_case": "api_call",
        "risk_score": score,
        "reasons": "routine call",
        "attack_technique": None,
        "model_name": "trailguard-api-call",
        "model_version": "3",
        "principal": "arn:aws:iam::111122223333:user/alice",
        "eventName": "DescribeInstances",
        "eventSource": "ec2.amazonaws.com",
        "awsRegion": "us-east-1",
        "account": "111122223333",
        "sourceIPAddress": "198.51.100.7",
        "country": "US",
        "asn": "AS16509",
        "userAgent": "aws-cli/2.15.0",
        "errorCode": None,
        "category": "read",
        "lf_score": 0.0,
        "anomaly_score": 0.1,
    }
    row.update(values)
    return row


def day_rows() -> list[dict]:
    """A day with a burst, a tampering call, a login from a new country, routine noise and hostile values."""
    rows = [
        event(f"burst-{i:03d}", 120 + i % 50, 72.0 + (5.0 if i == 137 else 0.0),
              principal="arn:aws:iam::111122223333:user/mallory", eventName="ListSecrets",
              eventSource="secretsmanager.amazonaws.com", errorCode="AccessDenied", sourceIPAddress="203.0.113.66",
              reasons="200 AccessDenied calls in 10 minutes", attack_technique="T1580", category="discovery")
        for i in range(200)
    ]  # fmt: skip
    rows.append(
        event(
            "stop-1",
            200,
            96.0,
            eventName="StopLogging",
            eventSource="cloudtrail.amazonaws.com",
            principal="arn:aws:iam::111122223333:user/mallory",
            attack_technique="T1562.008",
            reasons="CloudTrail logging stopped; by a user who never did it before",
            category="defense_evasion",
        )
    )
    rows.append(
        event(
            "login-1",
            300,
            88.0,
            use_case="console_login",
            eventName="ConsoleLogin",
            eventSource="signin.amazonaws.com",
            country="KP",
            sourceIPAddress="175.45.176.1",
            model_name="trailguard-console-login",
            model_version="2",
            attack_technique="T1078.004",
            reasons="console login from a new country (KP); no MFA",
            category="login",
        )
    )
    rows.append(
        event(
            "hostile-ua",
            400,
            85.0,
            userAgent=SCRIPT,
            eventName="GetSecretValue",
            reasons=f"unusual user agent {SCRIPT}",
            attack_technique="javascript:alert(1)",
        )
    )
    rows.append(
        event(
            "hostile-arn",
            410,
            84.0,
            principal=IMG_PRINCIPAL,
            eventName="CreateAccessKey",
            reasons=f"new access key for {IMG_PRINCIPAL}",
            attack_technique="T1098.001",
        )
    )
    for i, text in enumerate(FORMULAS):
        rows.append(
            event(
                f"formula-{i}",
                500 + i,
                80.0 - i,
                principal=text,
                eventName=text,
                reasons=text,
                sourceIPAddress=f"192.0.2.{i}",
            )
        )
    rows.append(
        event(
            "huge-ua",
            600,
            79.0,
            userAgent=HUGE_AGENT,
            eventName="PutBucketPolicy",
            sourceIPAddress="198.51.100.8",  # another source than crlf-1 ten minutes later: its own finding
            reasons="bucket made public; agent " + HUGE_AGENT[:20000],
        )
    )
    rows.append(
        event(
            "crlf-1",
            610,
            99.0,
            eventName="DeleteTrail\r\nBcc: victim@example.com\r\nX-Evil: 1",
            eventSource="cloudtrail.amazonaws.com",
            reasons="trail deleted\r\nX-Injected: yes",
        )
    )
    rows += [event(f"noise-{i}", 15 * i, 5.0 + i % 30, principal=f"arn:aws:iam::111122223333:user/u{i}",
                   account="444455556666" if i % 2 else "111122223333", awsRegion="eu-west-1" if i % 3 else "us-east-1")
             for i in range(30)]  # fmt: skip
    return rows


def write_scores(root: Path, rows: list[dict], day: str = DAY) -> Path:
    folder = root / "scores" / f"date={day}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "scores.parquet"
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def write_quality(root: Path, day: str = DAY) -> Path:
    folder = root / "quality" / f"date={day}"
    folder.mkdir(parents=True, exist_ok=True)
    result = {"date": day, "status": "warning", "rows_in": 248, "rows_passed": 246, "rows_quarantined": 2}
    (folder / "result.json").write_text(json.dumps(result))
    page = folder / "index.html"
    page.write_text("<!DOCTYPE html><html><body><h1>TrailGuard data quality</h1></body></html>")
    return page


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    write_scores(root, day_rows())
    write_quality(root)
    return root, build_report(root, DAY, top_k=12, feedback_hint=FEEDBACK)


class Elements(HTMLParser):
    """Every start tag with its attributes, and the page's text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse_html(text: str) -> Elements:
    parser = Elements()
    parser.feed(text)
    parser.close()
    return parser


def test_burst_is_one_row_with_count_and_top_k_in_rank_order(built):
    root, report = built
    top = report.top_events
    assert list(top["rank"]) == list(range(1, 13))
    assert list(top["finding_score"]) == sorted(top["finding_score"], reverse=True)
    assert (top["finding_score"] >= top["risk_score"]).all() and top["finding_id"].str.fullmatch(
        r"F-[0-9a-f]{16}"
    ).all()
    assert top["eventID"].tolist()[:3] == ["crlf-1", "stop-1", "login-1"]
    burst = top[top["eventName"] == "ListSecrets"]
    assert len(burst) == 1
    row = burst.iloc[0]
    assert row["count"] == 200 and row["eventID"] == "burst-137" and row["risk_score"] == 77.0
    assert (row["first_seen"], row["last_seen"]) == ("2026-11-20T02:00:00Z", "2026-11-20T02:49:00Z")
    assert not top["eventID"].str.startswith("burst-").sum() > 1
    assert report.summary["events_scored"] == 200 + 4 + len(FORMULAS) + 2 + 30
    assert report.summary["high_risk_events"] == 200 + 4 + len(FORMULAS) + 2
    assert report.summary["high_risk_findings"] == 1 + 4 + len(FORMULAS) + 2
    assert report.summary["by_use_case"]["top"] == [["api_call", 240], ["console_login", 1]]
    assert {m["model_name"]: m["model_version"] for m in report.models} == {
        "trailguard-api-call": "3", "trailguard-console-login": "2"}  # fmt: skip
    assert report.quality["status"] == "warning" and report.quality["rows_quarantined"] == 2


def test_min_score_filters_groups(tmp_path):
    write_scores(tmp_path, day_rows())
    report = build_report(tmp_path, DAY, top_k=50, min_score=90)
    assert report.top_events["eventID"].tolist() == ["crlf-1", "stop-1"]
    assert report.quality is None and "not validated" in report.text()


def test_files_written_and_csv_neutralised(built):
    root, report = built
    folder = root / "reports" / DAY
    assert {p.name for p in folder.iterdir()} == {
        "report.html",
        "top_events.csv",
        "report.json",
        "chart.png",
        "findings.json",
    }
    with (folder / "top_events.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    assert [r["eventID"] for r in rows] == report.top_events["eventID"].tolist()
    assert [int(r["rank"]) for r in rows] == list(range(1, 13))
    assert (
        float(rows[0]["risk_score"]) == 99.0
        and next(r for r in rows if r["eventID"] == "login-1")["count"] == "1"
    )
    burst = next(r for r in rows if r["eventName"] == "ListSecrets")
    assert (
        burst["count"] == "200" and len(burst["event_ids"].split()) == 200 and burst["tactics"] == "discovery"
    )
    assert {r["finding_id"] for r in rows} == {
        f["finding_id"] for f in json.loads((folder / "findings.json").read_text())["findings"][:12]
    }
    for i, text in enumerate(FORMULAS):
        row = next(r for r in rows if r["eventID"] == f"formula-{i}")
        for column in ("principal", "eventName", "reasons"):
            assert row[column] == "'" + text, (column, row[column])
    for row in rows:
        for value in row.values():
            assert not value.startswith(("=", "+", "@", "\t", "\r")), value
            assert len(value) < 2100
    huge = next(r for r in rows if r["eventID"] == "huge-ua")
    assert huge["userAgent"].endswith(TRUNCATED) and huge["reasons"].endswith(TRUNCATED)
    assert (folder / "top_events.csv").stat().st_size < 50_000
    assert (folder / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    document = json.loads((folder / "report.json").read_text())
    assert document["date"] == DAY and document["generated_at"].endswith("Z")
    assert [e["eventID"] for e in document["top_events"]] == [r["eventID"] for r in rows]
    assert document["summary"]["events_scored"] == report.summary["events_scored"]
    assert document["quality"]["page"] == f"quality/date={DAY}/index.html"
    assert {m["use_case"] for m in document["models"]} == {"api_call", "console_login"}


def test_csv_cell_rules():
    assert csv_cell(12.5) == 12.5 and csv_cell(3) == 3 and csv_cell(None) == ""
    assert csv_cell("-1+1") == "'-1+1" and csv_cell("  =1") == "'  =1" and csv_cell("\rX") == "'\rX"
    assert csv_cell("arn:aws:iam::1:user/bob") == "arn:aws:iam::1:user/bob"


def test_html_escapes_every_attacker_value(built):
    root, report = built
    text = (root / "reports" / DAY / "report.html").read_text(encoding="utf-8")
    page = parse_html(text)
    tags = [tag for tag, _ in page.tags]
    assert "script" not in tags
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    assert len(images) == 1 and images[0]["src"].startswith("data:image/png;base64,")
    for tag, attrs in page.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        if tag == "a":
            assert attrs["href"].startswith(("https://attack.mitre.org/techniques/", "http://127.0.0.1:8080/",
                                             "../../quality/")), attrs  # fmt: skip
    shown = "".join(page.text)
    assert SCRIPT in shown and IMG_PRINCIPAL in shown  # shown as text
    assert "&lt;script&gt;" in text and "javascript:alert(1)" not in [a.get("href") for _, a in page.tags]
    assert 'href="https://attack.mitre.org/techniques/T1562/008/"' in text
    assert 'href="https://attack.mitre.org/techniques/T1580/"' in text
    assert TRUNCATED in shown and len(text) < 400_000
    assert "Content-Security-Policy" in text
    assert 'href="../../quality/date=2026-11-20/index.html"' in text
    assert "record_analyst_label/trigger" in text and "200 AccessDenied calls in 10 minutes" in shown


def test_page_has_a_strict_csp_and_the_mail_part_none(built):
    _, report = built
    csp = "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">"
    assert csp in report.html_path.read_text(encoding="utf-8")
    mail = report.render_html(image_src="cid:chart@localhost", for_email=True)
    assert "Content-Security-Policy" not in mail and 'src="cid:chart@localhost"' in mail
    assert "page attached" in mail and "quality page</a>" not in mail


def test_text_and_lines_are_clean_and_bounded(built):
    _, report = built
    text = report.text()
    assert all(ch == "\n" or ch >= " " for ch in text)
    assert "DeleteTrail Bcc: victim@example.com X-Evil: 1" in text
    assert "CloudTrail logging stopped" in text and "(+199 more)" in text and TRUNCATED in text
    assert "trailguard label crlf-1 SCORE" in text and "record_analyst_label" in text
    assert len(text) < 60_000
    lines = report.lines()
    assert lines[0].startswith("report 2026-11-20: 241 events scored")
    assert any("#1" in line and "trail deleted" in line for line in lines)
    assert all("\r" not in line and "\n" not in line for line in lines)


def test_load_report_gives_the_same_report(built):
    root, report = built
    loaded = load_report(root, DAY)
    assert loaded.csv_bytes() == (root / "reports" / DAY / "top_events.csv").read_bytes()
    assert loaded.text() == report.text()
    assert loaded.quality_page == root / "quality" / f"date={DAY}" / "index.html"


def test_missing_scores_say_what_to_run(tmp_path):
    with pytest.raises(ScoresNotFoundError, match=r"trailguard score --date 2026-11-21"):
        build_report(tmp_path, "2026-11-21")
    with pytest.raises(FileNotFoundError, match=r"trailguard report --date 2026-11-21"):
        load_report(tmp_path, "2026-11-21")


def test_empty_scores_give_an_empty_report(tmp_path):
    path = write_scores(tmp_path, [event("x", 1, 10.0)])
    pd.read_parquet(path).iloc[0:0].to_parquet(path, index=False)
    report = build_report(tmp_path, DAY)
    assert report.top_events.empty and report.summary["events_scored"] == 0
    assert "No events at or above the minimum score" in report.html_path.read_text()
    assert io.BytesIO(report.chart_png).read(4) == b"\x89PNG"


def test_technique_links_only_for_valid_ids():
    assert technique_url("T1078") == "https://attack.mitre.org/techniques/T1078/"
    assert technique_url("T1098.001") == "https://attack.mitre.org/techniques/T1098/001/"
    for bad in ("javascript:alert(1)", "T1078/../x", "T10781", "T1098.01", None, 1078):
        assert technique_url(bad) is None
