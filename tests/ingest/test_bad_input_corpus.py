"""The bad-input corpus: broken or hostile CloudTrail files and records, each with its expected outcome.

Every case is a file in an AWS-layout folder that also holds valid records (or a valid neighbour file);
the test asserts the outcome (ingested, quarantined with a reason, skipped), that no valid record in the
same file was lost, and that validation of the day then flags what it should without losing rows.
"""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timedelta, timezone

import pytest
from trailguard.ingest.ingestion import ingest
from trailguard.ingest.sources import LocalFolderSource
from trailguard.quality.gate import validate_partition
from trailguard.store.events import EventStore, quarantine_name

from tests.ingest.test_ingest import KEY_DIR, record

DAY = "2024-07-30"
GOOD = [record("good-1"), record("good-2")]


def doc(records: list) -> bytes:
    return json.dumps({"Records": records}).encode()


def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"x": value}
    return value


FUTURE = (datetime.now(timezone.utc) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")

# name -> (file bytes, object outcome, reason fragment or None, eventIDs expected stored, records quarantined)
CASES = {
    "truncated_gzip": (gzip.compress(doc(GOOD))[:30], "quarantined", "gzip", set(), 0),
    "gzip_of_non_json": (gzip.compress(b"a,b,c\n1,2,3\n"), "quarantined", "not valid JSON", set(), 0),
    "utf8_bom": (b"\xef\xbb\xbf" + doc(GOOD), "ingested", "byte order mark", {"good-1", "good-2"}, 0),
    "invalid_utf8": (
        doc([*GOOD, record("u-1", userAgent="X")]).replace(b'"X"', b'"\xff\xfe"'),
        "ingested",
        "invalid UTF-8",
        {"good-1", "good-2", "u-1"},
        0,
    ),
    "json_array_of_records": (
        json.dumps(GOOD).encode(),
        "ingested",
        None,
        {"good-1", "good-2"},
        0,
    ),  # an export shape
    "json_array_of_numbers": (b"[1, 2]", "quarantined", "is a list", set(), 0),
    "records_not_a_list": (
        json.dumps({"Records": {"0": GOOD[0]}}).encode(),
        "quarantined",
        "Records is a object",
        set(),
        0,
    ),
    "record_not_an_object": (doc([*GOOD, "just text", 42]), "ingested", None, {"good-1", "good-2"}, 2),
    "missing_eventID": (
        doc([*GOOD, {k: v for k, v in record("x").items() if k != "eventID"}]),
        "ingested",
        None,
        {"good-1", "good-2"},
        1,
    ),
    "duplicate_eventID_different_content": (
        doc([*GOOD, record("good-1", eventName="DeleteTrail")]),
        "ingested",
        None,
        {"good-1", "good-2"},
        0,
    ),
    "eventTime_five_formats": (
        doc(
            [
                record("t1", time="2024-07-30T01:00:00Z"),
                record("t2", time="2024-07-30 02:00:00"),
                record("t3", time="2024-07-30 03:00:00.123"),
                record("t4", time="2024-07-30 04:00:00.123456789"),
                record("t5", time="2024-07-30T07:00:00+02:00"),
            ]
        ),
        "ingested",
        None,
        {"t1", "t2", "t3", "t4", "t5"},
        0,
    ),
    "eventTime_missing": (
        doc([*GOOD, {k: v for k, v in record("m").items() if k != "eventTime"}]),
        "ingested",
        None,
        {"good-1", "good-2"},
        1,
    ),
    "eventTime_in_future": (
        doc([*GOOD, record("future-1", time=FUTURE)]),
        "ingested",
        None,
        {"good-1", "good-2", "future-1"},
        0,
    ),
    "userAgent_5MB": (
        doc([*GOOD, record("big-1", userAgent="A" * (5 * 1024 * 1024))]),
        "ingested",
        None,
        {"good-1", "good-2", "big-1"},
        0,
    ),
    "requestParameters_depth_500": (
        doc([*GOOD, record("deep-1", requestParameters=nested(500))]),
        "ingested",
        None,
        {"good-1", "good-2", "deep-1"},
        0,
    ),
    "nan_and_huge_numbers": (
        doc([*GOOD, record("n-1")]).replace(
            b'"eventVersion": "1.09"',
            b'"eventVersion": NaN, "n": 1e999, "i": 123456789012345678901234567890',
            1,
        ),
        "ingested",
        None,
        {"good-1", "good-2", "n-1"},
        0,
    ),
    "html_script_in_userAgent": (
        doc([*GOOD, record("h-1", userAgent="<script>alert(1)</script>")]),
        "ingested",
        None,
        {"good-1", "good-2", "h-1"},
        0,
    ),
    "spreadsheet_formula": (
        doc([*GOOD, record("f-1", errorMessage='=HYPERLINK("http://evil","x")')]),
        "ingested",
        None,
        {"good-1", "good-2", "f-1"},
        0,
    ),
    "scrambled_region": (
        doc([*GOOD, record("r-1", awsRegion="apiso-northsouth-3r")]),
        "ingested",
        None,
        {"good-1", "good-2", "r-1"},
        0,
    ),
    "ipv6_and_service_source_ips": (
        doc(
            [
                record("ip-1", sourceIPAddress="2001:db8::1"),
                record("ip-2", sourceIPAddress="lambda.amazonaws.com"),
                record("ip-3", sourceIPAddress="AWS Internal"),
            ]
        ),
        "ingested",
        None,
        {"ip-1", "ip-2", "ip-3"},
        0,
    ),
    "empty_file": (b"", "quarantined", "empty file", set(), 0),
    "empty_gzip": (gzip.compress(b""), "quarantined", "empty", set(), 0),
    "plain_text": (b"this is not CloudTrail", "quarantined", "not valid JSON", set(), 0),
    "json_without_Records": (
        b'{"detail-type": "AWS API Call via CloudTrail"}',
        "quarantined",
        "no Records",
        set(),
        0,
    ),
    # issue 15, row 3: ids that differ only in bytes that are not UTF-8 stay two ids (kept escaped)
    "eventIDs_differ_only_in_invalid_utf8": (
        doc([*GOOD, record("id-A"), record("id-B")])
        .replace(b'"id-A"', b'"id-\xff"')
        .replace(b'"id-B"', b'"id-\xfe"'),
        "ingested",
        "invalid UTF-8",
        {"good-1", "good-2", "id-\\xff", "id-\\xfe"},
        0,
    ),
    # lone UTF-16 surrogates as JSON escapes (valid JSON, not storable as UTF-8): kept as escapes
    "lone_surrogate_escapes": (
        doc([*GOOD, record("s-1", userAgent="S")]).replace(b'"S"', b'"\\ud800"'),
        "ingested",
        None,
        {"good-1", "good-2", "s-1"},
        0,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_case_outcome_and_nothing_valid_lost(name, tmp_path):
    data, status, reason, expected_ids, rejected = CASES[name]
    src = tmp_path / "src"
    target = src / KEY_DIR / f"{name}.json"
    target.parent.mkdir(parents=True)
    target.write_bytes(data)
    neighbour = src / KEY_DIR / "neighbour.json.gz"
    neighbour.write_bytes(gzip.compress(doc([record(f"n-{name}")])))

    store = EventStore(tmp_path / "data")
    summary = ingest(LocalFolderSource(src), store)
    assert summary.objects == summary.objects_ingested + summary.objects_skipped + summary.objects_quarantined
    assert summary.records == summary.new + summary.duplicates + summary.quarantined
    entry = store.read_manifest().to_pandas().set_index("key").loc[f"{KEY_DIR}/{name}.json"]
    assert entry["status"] == status, entry["error"]
    if reason:
        assert reason in (entry["error"] or ""), entry["error"]
    stored = {
        i for d in store.dates() for i in store.read_partition(d, ["eventID"]).column("eventID").to_pylist()
    }
    assert stored == expected_ids | {f"n-{name}"}, "a valid record was lost or an invalid one stored"
    assert int(entry["records_quarantined"]) == rejected == store.read_quarantined_records().num_rows
    if status == "quarantined":
        kept = store.quarantine_dir / "objects" / quarantine_name(f"{KEY_DIR}/{name}.json")
        assert kept.read_bytes() == data


def test_digest_file_is_skipped(tmp_path):
    src = tmp_path / "src"
    digest = (
        src
        / "AWSLogs/111122223333/CloudTrail-Digest/us-east-1/2024/07/30/d_CloudTrail-Digest_us-east-1_t_us-east-1_20240730T010000Z.json.gz"
    )
    digest.parent.mkdir(parents=True)
    digest.write_bytes(gzip.compress(b'{"digestStartTime": "2024-07-30T00:00:00Z", "logFiles": []}'))
    summary = ingest(LocalFolderSource(src), EventStore(tmp_path / "data"))
    assert (summary.objects, summary.objects_skipped, summary.records) == (1, 1, 0)


def test_validation_flags_hostile_rows_without_losing_them(tmp_path):
    """The ingested corpus as one day: warnings for the odd values, the future event quarantined with its
    reason, every other row kept."""
    src = tmp_path / "src"
    (src / KEY_DIR).mkdir(parents=True)
    for name in (
        "scrambled_region",
        "ipv6_and_service_source_ips",
        "html_script_in_userAgent",
        "spreadsheet_formula",
    ):
        (src / KEY_DIR / f"{name}.json").write_bytes(CASES[name][0])
    store = EventStore(tmp_path / "data")
    ingest(LocalFolderSource(src), store)
    result = validate_partition(store, DAY)
    assert not result.critical_failed
    assert result.rows_in == result.rows_passed + result.rows_quarantined
    failing = {o.name for o in result.outcomes if not o.success}
    assert "awsRegion_known" in failing
    assert "sourceIPAddress_valid" not in failing  # IPv6, service names and AWS Internal are valid sources
    html = result.html_path.read_text()
    assert "<script>alert(1)" not in html
