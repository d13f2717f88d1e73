"""The daily report, its email and the quality page show the day's evidence integrity, as its own section."""

from __future__ import annotations

import sys
from pathlib import Path

from test_integrity import DAY, NOW, Trail, _ring
from trailguard.ingest.sources import LocalFolderSource
from trailguard.integrity.day import verify_day
from trailguard.integrity.findings import integrity_section
from trailguard.report.daily import build_report, load_report
from trailguard.report.mail import default_subject

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
from test_report import day_rows, write_scores  # noqa: E402 - the report tests' scores partition


def _tampered(tmp_path, key) -> Trail:
    trail = Trail(tmp_path, key, hours=4)
    trail.path(trail.logs[1][0]).unlink()
    trail.edit_json(trail.logs[2][1], lambda doc: doc["Records"].clear())
    verify_day(tmp_path / "data", LocalFolderSource(tmp_path / "logs"), DAY, _ring(key), now=NOW)
    return trail


def test_integrity_section_lists_missing_and_modified_files_as_high_risk(tmp_path, key):
    trail = _tampered(tmp_path, key)
    section = integrity_section(tmp_path / "data", DAY)
    assert section["status"] == "tampered" and section["header"].startswith("Evidence integrity: TAMPERED")
    found = {(f["status"], f["object"], f["attack_technique"], f["high_risk"]) for f in section["findings"]}
    assert found == {
        ("log_file_missing", trail.logs[1][0], "T1070", True),
        ("log_file_modified", trail.logs[2][1], "T1565.001", True),
    }
    assert integrity_section(tmp_path / "other", DAY) is None


def test_report_and_email_show_the_integrity_header_and_findings(tmp_path, key):
    trail = _tampered(tmp_path, key)
    write_scores(tmp_path / "data", day_rows(), DAY.isoformat())
    report = build_report(tmp_path / "data", DAY)
    html = report.html_path.read_text()
    assert "Evidence integrity: TAMPERED" in html and "CloudTrail log file deleted after delivery" in html
    assert trail.logs[1][0] in html and "T1565.001" in html
    text = report.text()
    assert "Evidence integrity: TAMPERED" in text and trail.logs[2][1] in text
    assert "CloudTrail evidence TAMPERED" in default_subject(report)
    assert load_report(tmp_path / "data", DAY).integrity == report.integrity  # the mail task reads it back
    assert list(report.top_events.columns) == list(load_report(tmp_path / "data", DAY).top_events.columns)


def test_a_day_never_verified_says_how_to_check_it(tmp_path):
    write_scores(tmp_path / "data", day_rows(), DAY.isoformat())
    report = build_report(tmp_path / "data", DAY)
    assert "Evidence integrity: not checked (run `trailguard verify --date 2026-11-20`)" in report.text()


def test_the_quality_page_shows_the_days_integrity(tmp_path, key):
    from trailguard.ingest.ingestion import ingest
    from trailguard.quality.gate import validate_partition
    from trailguard.store.events import EventStore

    trail = _tampered(tmp_path, key)
    store = EventStore(tmp_path / "data")
    ingest(LocalFolderSource(tmp_path / "logs"), store)
    result = validate_partition(store, DAY)
    page = result.html_path.read_text()
    assert "Evidence integrity: TAMPERED" in page and trail.logs[1][0] in page
