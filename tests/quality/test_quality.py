"""The data-quality gate: tiny partitions built from CloudTrail-shaped records, plus the public fixtures.

The GX context is built once per process (trailguard.quality caches it), so only the first test pays for
importing Great Expectations.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from trailguard.ingest import normalise
from trailguard.quality.gate import (
    QUARANTINE_SCHEMA,
    ExpectationOutcome,
    QualityResult,
    is_scorable,
    known_regions,
    read_quality_status,
    validate_partition,
)
from trailguard.store.events import EventStore, write_parquet_atomic
from trailguard.store.schema import EVENT_SCHEMA

from tests.conftest import FIXTURES

DAY = "2026-11-20"
NOW = datetime(2026, 11, 21, 1, 0, tzinfo=timezone.utc)  # the day is over: freshness is judged at its end

NULLABLE = pa.schema([f.with_nullable(True) for f in EVENT_SCHEMA])


def record(n: int, time: str = f"{DAY}T23:00:00Z", **fields: object) -> dict:
    """A plausible CloudTrail management event; ``fields`` override top-level keys."""
    rec = {
        "eventVersion": "1.09",
        "eventID": f"00000000-0000-4000-8000-{n:012d}",
        "eventTime": time,
        "eventSource": "ec2.amazonaws.com",
        "eventName": "DescribeInstances",
        "eventType": "AwsApiCall",
        "awsRegion": "us-east-1",
        "sourceIPAddress": "203.0.113.10",
        "userAgent": "aws-cli/2.15.0",
        "userIdentity": {
            "type": "IAMUser",
            "arn": "arn:aws:iam::111122223333:user/alice",
            "accountId": "111122223333",
        },
        "readOnly": True,
        "managementEvent": True,
        "recipientAccountId": "111122223333",
    }
    rec.update(fields)
    return rec


def clean_records(count: int = 4) -> list[dict]:
    return [record(i, time=f"{DAY}T{20 + i % 4:02d}:{i % 60:02d}:00Z") for i in range(count)]


def rows_of(records: list[dict], source: str = "test") -> list[dict]:
    return [normalise.normalise(r, source) for r in records]


def store_day(root: Path, records: list[dict], day: str = DAY, source: str = "test") -> EventStore:
    store = EventStore(root)
    store.rewrite_partition(day, normalise.rows_to_table(rows_of(records, source)))
    return store


def write_raw_partition(store: EventStore, rows: list[dict], day: str = DAY) -> Path:
    """A part file the normaliser could never produce (null ids...), written as is."""
    return write_parquet_atomic(
        pa.Table.from_pylist(rows, schema=NULLABLE), store.partition_dir(day) / "part-raw.parquet"
    )


def outcome(result: QualityResult, name: str) -> ExpectationOutcome:
    return next(o for o in result.outcomes if o.name == name)


def failed(result: QualityResult) -> set[str]:
    return {o.name for o in result.outcomes if not o.success}


def partition(store: EventStore, day: str = DAY) -> pa.Table:
    return store.read_partition(day)


def quarantined(store: EventStore, day: str = DAY) -> pa.Table:
    files = sorted((store.quarantine_dir / f"date={day}").glob("rows-*.parquet"))
    return (
        pa.concat_tables([pq.read_table(f, schema=QUARANTINE_SCHEMA) for f in files])
        if files
        else QUARANTINE_SCHEMA.empty_table()
    )


# -- the gate ---------------------------------------------------------------------------------------------


def test_clean_partition_passes(tmp_path: Path) -> None:
    store = store_day(tmp_path, clean_records())
    result = validate_partition(store, DAY, now=NOW)

    assert result.status == "passed", result.summary_lines()
    assert not result.critical_failed
    assert (result.rows_in, result.rows_passed, result.rows_quarantined) == (4, 4, 0)
    assert failed(result) == set()
    assert outcome(result, "row_count_vs_history").detail == "not checked: no earlier partitions in the store"
    assert {o.severity for o in result.outcomes} == {"critical", "warning"}
    assert is_scorable(store, DAY)
    assert not store.quarantine_dir.exists()
    assert partition(store).num_rows == 4


def test_duplicate_event_id_quarantines_the_later_copy(tmp_path: Path) -> None:
    records = [*clean_records(3), record(0, time=f"{DAY}T10:00:00Z", eventName="TerminateInstances")]
    store = EventStore(tmp_path)
    table = pa.concat_tables(
        [
            normalise.rows_to_table(rows_of(records[:3], "first.json")),
            normalise.rows_to_table(rows_of(records[3:], "second.json")),
        ]
    )
    store.rewrite_partition(DAY, table)

    result = validate_partition(store, DAY, now=NOW)

    assert result.status == "warning" and not result.critical_failed
    assert (result.rows_in, result.rows_passed, result.rows_quarantined) == (4, 3, 1)
    dup = outcome(result, "eventID_unique")
    assert not dup.success and dup.severity == "critical"
    assert dup.unexpected_count == 2  # both rows share the id; only the later one moves
    assert dup.sample == [records[0]["eventID"]]
    moved = quarantined(store)
    assert moved.column("quarantine_reason").to_pylist() == ["eventID_unique"]
    assert moved.column("eventName").to_pylist() == ["TerminateInstances"]
    assert moved.column("run_id").to_pylist() == [result.run_id]
    assert result.quarantine_path == store.quarantine_dir / f"date={DAY}" / f"rows-{result.run_id}.parquet"
    kept = partition(store)
    assert sorted(kept.column("eventID").to_pylist()) == sorted(r["eventID"] for r in records[:3])
    assert kept.filter(pc.equal(kept["eventID"], records[0]["eventID"]))["eventName"].to_pylist() == [
        "DescribeInstances"
    ]
    assert is_scorable(store, DAY)


def test_event_from_another_day_is_quarantined(tmp_path: Path) -> None:
    store = EventStore(tmp_path)
    rows = rows_of([*clean_records(), record(99, time="2026-11-19T23:59:59Z")])
    store.rewrite_partition(DAY, normalise.rows_to_table(rows))

    result = validate_partition(store, DAY, now=NOW)

    assert outcome(result, "eventTime_in_day").unexpected_count == 1
    assert outcome(result, "eventTime_in_day").sample == ["2026-11-19T23:59:59+00:00"]
    assert quarantined(store).column("quarantine_reason").to_pylist() == ["eventTime_in_day"]
    assert quarantined(store).column("eventID").to_pylist() == [record(99)["eventID"]]
    assert (result.rows_passed, result.rows_quarantined, result.status) == (4, 1, "warning")


def test_future_event_is_quarantined(tmp_path: Path) -> None:
    now = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
    records = [record(i, time=f"{DAY}T11:{i:02d}:00Z") for i in range(3)]
    records.append(record(50, time=f"{DAY}T12:04:00Z"))  # within the clock-skew tolerance
    records.append(record(51, time=f"{DAY}T18:00:00Z"))
    store = store_day(tmp_path, records)

    result = validate_partition(store, DAY, now=now)

    assert quarantined(store).column("eventID").to_pylist() == [record(51)["eventID"]]
    assert quarantined(store).column("quarantine_reason").to_pylist() == ["eventTime_not_future"]
    assert (result.rows_passed, result.rows_quarantined) == (4, 1)
    assert not result.critical_failed


def test_null_and_empty_event_ids_are_quarantined(tmp_path: Path) -> None:
    store = EventStore(tmp_path)
    rows = rows_of(clean_records())
    rows[1]["eventID"] = None
    rows[2]["eventID"] = ""
    rows[3]["eventTime"] = None
    write_raw_partition(store, rows)

    result = validate_partition(store, DAY, now=NOW)

    moved = quarantined(store)
    assert sorted(moved.column("quarantine_reason").to_pylist()) == [
        "eventID_not_null",
        "eventID_not_null",
        "eventTime_not_null",
    ]
    assert outcome(result, "eventID_not_null").unexpected_count == 2
    assert (result.rows_in, result.rows_passed, result.rows_quarantined) == (4, 1, 3)
    assert partition(store).column("eventID").to_pylist() == [rows[0]["eventID"]]


def test_row_breaking_two_expectations_names_both(tmp_path: Path) -> None:
    now = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
    store = store_day(tmp_path, [record(1, time=f"{DAY}T11:00:00Z"), record(2, time="2026-11-21T03:00:00Z")])

    validate_partition(store, DAY, now=now)

    assert quarantined(store).column("quarantine_reason").to_pylist() == [
        "eventTime_in_day,eventTime_not_future"
    ]


def test_scrambled_region_warns_and_keeps_the_row(tmp_path: Path) -> None:
    store = store_day(
        tmp_path, [*clean_records(), record(7, awsRegion="apiso-northsouth-3r"), record(8, awsRegion=None)]
    )

    result = validate_partition(store, DAY, now=NOW)

    region = outcome(result, "awsRegion_known")
    assert (region.success, region.severity, region.unexpected_count) == (False, "warning", 2)
    assert region.sample == ["apiso-northsouth-3r", "<missing>"]
    assert result.status == "warning" and not result.critical_failed
    assert (result.rows_passed, result.rows_quarantined) == (6, 0)
    assert is_scorable(store, DAY)


def test_real_new_regions_are_known() -> None:
    regions = known_regions()
    for region in (
        "mx-central-1",
        "ap-southeast-7",
        "ap-east-2",
        "ca-west-1",
        "il-central-1",
        "cn-northwest-1",
        "us-gov-west-1",
        "eu-south-2",
        "ap-southeast-5",
    ):
        assert region in regions
    assert "apiso-northsouth-3r" not in regions
    assert "aws-global" not in regions


def test_ipv6_and_service_names_are_valid_source_addresses(tmp_path: Path) -> None:
    good = [
        "2001:db8::1",
        "::ffff:192.0.2.1",
        "fe80::1%eth0",
        "ec2.amazonaws.com",
        "AWS Internal",
        "192.0.2.10",
    ]
    store = store_day(tmp_path, [record(i, sourceIPAddress=ip) for i, ip in enumerate(good)])

    result = validate_partition(store, DAY, now=NOW)

    assert outcome(result, "sourceIPAddress_valid").success
    assert result.status == "passed", result.summary_lines()


def test_malformed_source_addresses_warn(tmp_path: Path) -> None:
    bad = ["1.2.3.999", "010.1.1.1", "evil.example.com", "2001:db8::zz", "AWS internal"]
    store = store_day(
        tmp_path, [*clean_records(), *(record(10 + i, sourceIPAddress=ip) for i, ip in enumerate(bad))]
    )

    result = validate_partition(store, DAY, now=NOW)

    source = outcome(result, "sourceIPAddress_valid")
    assert (source.success, source.unexpected_count) == (False, 5)
    assert sorted(source.sample) == sorted(bad)
    assert result.rows_passed == 9


def test_unknown_sources_types_and_identities_warn(tmp_path: Path) -> None:
    store = store_day(
        tmp_path,
        [
            *clean_records(),
            record(10, eventSource="ec2.example.com"),
            record(11, eventType="AwsMadeUpEvent"),
            record(12, userIdentity={"type": "Martian"}),
            record(13, userIdentity=None),  # Insights events carry no userIdentity: allowed
        ],
    )

    result = validate_partition(store, DAY, now=NOW)

    assert failed(result) == {"eventSource_amazonaws", "eventType_known", "userIdentity.type_known"}
    assert outcome(result, "eventSource_amazonaws").sample == ["ec2.example.com"]
    assert outcome(result, "eventType_known").sample == ["AwsMadeUpEvent"]
    assert outcome(result, "userIdentity.type_known").sample == ["Martian"]
    assert result.status == "warning"


def test_hostile_strings_are_escaped_in_html_and_logs(tmp_path: Path) -> None:
    script = "<script>alert(1)</script>"
    hostile = [
        record(10, awsRegion=script),
        record(11, sourceIPAddress='"><img src=x onerror=alert(2)>'),
        record(12, eventType="x\nFAIL critical forged line"),
    ]
    store = store_day(tmp_path, [*clean_records(), *hostile])

    result = validate_partition(store, DAY, now=NOW)

    page = result.html_path.read_text(encoding="utf-8")
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in page
    assert all("\n" not in line for line in result.summary_lines())
    assert any("'x\\nFAIL critical forged line'" in line for line in result.summary_lines())


def test_long_samples_are_clipped(tmp_path: Path) -> None:
    store = store_day(tmp_path, [*clean_records(), record(10, awsRegion="r" * 5000)])

    result = validate_partition(store, DAY, now=NOW)

    (sample,) = outcome(result, "awsRegion_known").sample
    assert sample == "r" * 80 + "…"
    assert len(result.result_path.read_text()) < 20_000


def test_counts_add_up_and_a_rerun_is_idempotent(tmp_path: Path) -> None:
    store = EventStore(tmp_path)
    rows = rows_of(
        [*clean_records(6), record(0, time=f"{DAY}T01:00:00Z"), record(40, time="2026-11-22T00:00:00Z")]
    )
    rows.append({**rows[1], "eventID": None})
    write_raw_partition(store, rows)

    first = validate_partition(store, DAY, now=NOW)
    files_after_first = store.partition_files(DAY)
    second = validate_partition(store, DAY, now=NOW)

    for result in (first, second):
        assert result.rows_in == len(rows) == result.rows_passed + result.rows_quarantined
        assert (result.rows_passed, result.rows_quarantined) == (6, 3)
    assert partition(store).num_rows + quarantined(store).num_rows == len(rows)
    assert len(list((store.quarantine_dir / f"date={DAY}").glob("rows-*.parquet"))) == 1
    assert second.quarantine_path is None
    assert store.partition_files(DAY) == files_after_first  # nothing rewritten the second time
    assert second.status == first.status == "warning"
    strip = [(o.name, o.success, o.unexpected_count, o.sample) for o in first.outcomes]
    assert [(o.name, o.success, o.unexpected_count, o.sample) for o in second.outcomes] == strip
    assert read_quality_status(store, DAY)["rows_quarantined_this_run"] == 0


def test_rows_already_in_quarantine_are_not_copied_twice(tmp_path: Path) -> None:
    """A run that died after writing quarantine but before rewriting leaves the rows in both places."""
    original = normalise.rows_to_table(rows_of([*clean_records(), record(9, time="2026-11-19T08:00:00Z")]))
    store = EventStore(tmp_path)
    store.rewrite_partition(DAY, original)
    validate_partition(store, DAY, now=NOW)
    store.rewrite_partition(DAY, original)  # as if the rewrite never happened

    result = validate_partition(store, DAY, now=NOW)

    assert quarantined(store).num_rows == 1
    assert partition(store).num_rows == 4
    assert (result.rows_in, result.rows_passed, result.rows_quarantined) == (5, 4, 1)


@pytest.mark.parametrize(
    ("damage", "failing", "sample"),
    [
        (lambda t: t.drop_columns(["awsRegion"]), "schema_columns", ["awsRegion"]),
        (
            lambda t: t.set_column(1, "eventTime", pc.cast(t["eventTime"], pa.int64())),
            "schema_types",
            ["eventTime: int64 (expected timestamp[UTC])"],
        ),
        (
            lambda t: t.set_column(0, "eventID", pa.array(range(t.num_rows))),
            "schema_types",
            ["eventID: int64 (expected string)"],
        ),
    ],
)
def test_schema_failure_fails_the_partition_and_rewrites_nothing(tmp_path, damage, failing, sample) -> None:
    store = EventStore(tmp_path)
    bad = damage(normalise.rows_to_table(rows_of([*clean_records(), record(9, time="2026-11-19T08:00:00Z")])))
    path = write_parquet_atomic(bad, store.partition_dir(DAY) / "part-broken.parquet")
    before = path.read_bytes()

    result = validate_partition(store, DAY, now=NOW)

    assert result.status == "failed" and result.critical_failed
    assert failing in failed(result)
    assert outcome(result, failing).sample == sample
    assert store.partition_files(DAY) == [path] and path.read_bytes() == before
    assert not store.quarantine_dir.exists()
    assert (result.rows_in, result.rows_passed, result.rows_quarantined) == (5, 5, 0)
    assert not is_scorable(store, DAY)


def test_extra_columns_and_large_strings_are_accepted(tmp_path: Path) -> None:
    table = normalise.rows_to_table(rows_of(clean_records()))
    table = table.set_column(2, "eventVersion", pc.cast(table["eventVersion"], pa.large_string()))
    table = table.append_column("p_log_type", pa.array(["AWS.CloudTrail"] * table.num_rows))
    store = EventStore(tmp_path)
    write_parquet_atomic(table, store.partition_dir(DAY) / "part-foreign.parquet")

    result = validate_partition(store, DAY, now=NOW)

    assert result.status == "passed", result.summary_lines()
    assert "extra columns ignored: p_log_type" in outcome(result, "schema_columns").detail


def test_volume_drop_against_history_warns(tmp_path: Path) -> None:
    store = EventStore(tmp_path)
    for back in range(1, 9):
        day = (datetime(2026, 11, 20) - timedelta(days=back)).date().isoformat()
        store.rewrite_partition(
            day,
            normalise.rows_to_table(
                rows_of([record(back * 100 + i, time=f"{day}T12:00:00Z") for i in range(20)])
            ),
        )
    store.rewrite_partition(DAY, normalise.rows_to_table(rows_of(clean_records(3))))

    result = validate_partition(store, DAY, now=NOW)

    volume = outcome(result, "row_count_vs_history")
    assert (volume.success, volume.severity) == (False, "warning")
    assert "3 rows; median of 7 earlier partitions 20, allowed 10..40" in volume.detail
    assert result.status == "warning" and is_scorable(store, DAY)

    loose = validate_partition(store, DAY, now=NOW, volume_band=(0.1, 2.0))
    assert outcome(loose, "row_count_vs_history").success


def test_freshness_today_uses_now(tmp_path: Path) -> None:
    store = store_day(tmp_path, [record(i, time=f"{DAY}T0{i}:00:00Z") for i in range(1, 5)])  # newest 04:00

    late = validate_partition(store, DAY, now=datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc))
    fresh = validate_partition(store, DAY, now=datetime(2026, 11, 20, 5, 0, tzinfo=timezone.utc))
    lenient = validate_partition(
        store, DAY, now=datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc), allowed_lateness_hours=6
    )

    assert not outcome(late, "freshness").success and late.status == "warning"
    assert "at or after 2026-11-20T07:00:00+00:00" in outcome(late, "freshness").detail
    assert outcome(fresh, "freshness").success
    assert outcome(lenient, "freshness").success


def test_error_share_out_of_bounds_warns(tmp_path: Path) -> None:
    records = [record(10 + i, errorCode="AccessDenied", errorMessage="denied") for i in range(3)]
    store = store_day(tmp_path, [*records, *clean_records(1)])

    result = validate_partition(store, DAY, now=NOW)

    assert failed(result) == {"errorCode_share"}
    assert "75.0%" in outcome(result, "errorCode_share").detail


def test_result_json_and_html_are_written_and_parseable(tmp_path: Path) -> None:
    store = store_day(tmp_path, [*clean_records(), record(7, awsRegion="apiso-northsouth-3r")])

    result = validate_partition(store, DAY, now=NOW)

    folder = tmp_path / "quality" / f"date={DAY}"
    assert result.result_path == folder / "result.json" and result.html_path == folder / "index.html"
    saved = json.loads(result.result_path.read_text(encoding="utf-8"))
    assert saved == read_quality_status(store, DAY)
    assert json.loads((folder / f"result-{result.run_id}.json").read_text()) == saved
    assert (saved["status"], saved["rows_in"], saved["rows_passed"], saved["rows_quarantined"]) == (
        "warning",
        5,
        5,
        0,
    )
    assert saved["seconds"] >= 0 and saved["run_id"] == result.run_id
    by_name = {o["name"]: o for o in saved["outcomes"]}
    assert set(by_name["awsRegion_known"]) == {
        "name",
        "column",
        "severity",
        "success",
        "unexpected_count",
        "unexpected_percent",
        "sample",
        "detail",
    }
    assert by_name["awsRegion_known"]["unexpected_percent"] == pytest.approx(20.0)
    assert len(result.summary_lines()) == len(result.outcomes) + 1

    parser = _Cells()
    parser.feed(result.html_path.read_text(encoding="utf-8"))
    assert "awsRegion_known" in parser.cells and "apiso-northsouth-3r" in parser.cells
    assert parser.title.startswith(f"Data quality {DAY}: warning")


def test_empty_or_missing_day_fails_with_a_message(tmp_path: Path) -> None:
    store = EventStore(tmp_path)
    assert read_quality_status(store, DAY) is None
    assert not is_scorable(store, DAY)

    missing = validate_partition(store, DAY, now=NOW)
    store.rewrite_partition("2026-11-21", EVENT_SCHEMA.empty_table())
    empty = validate_partition(store, "2026-11-21", now=NOW)

    for result, day in ((missing, DAY), (empty, "2026-11-21")):
        assert result.status == "failed" and result.critical_failed
        assert outcome(result, "events_present").detail == f"no events for {day}: ingest first"
        assert (result.rows_in, result.rows_passed, result.rows_quarantined) == (0, 0, 0)
        assert read_quality_status(store, day)["status"] == "failed"
        assert not is_scorable(store, day)


def test_every_row_quarantined_fails(tmp_path: Path) -> None:
    store = store_day(
        tmp_path, [record(1, time="2026-11-19T10:00:00Z"), record(2, time="2026-11-19T11:00:00Z")]
    )

    result = validate_partition(store, DAY, now=NOW)

    assert result.status == "failed"
    assert failed(result) == {"eventTime_in_day", "rows_remaining"}
    assert (result.rows_in, result.rows_passed, result.rows_quarantined) == (2, 0, 2)
    assert validate_partition(store, DAY, now=NOW).status == "failed"


def test_a_later_append_makes_the_verdict_stale(tmp_path: Path) -> None:
    store = store_day(tmp_path, clean_records())
    validate_partition(store, DAY, now=NOW)
    assert is_scorable(store, DAY)

    store.append_events(normalise.rows_to_table(rows_of([record(77)])), run_id="later")

    assert not is_scorable(store, DAY)


def test_bad_date_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        validate_partition(EventStore(tmp_path), "20/11/2026")


class _Cells(HTMLParser):
    """Text of every table cell and the title of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[str] = []
        self.title = ""
        self._tag = ""

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self._tag = tag

    def handle_data(self, data: str) -> None:
        if self._tag == "title":
            self.title += data
        elif self._tag in ("td", "code"):
            self.cells.append(data)


# -- public CloudTrail records -----------------------------------------------------------------------------


@pytest.mark.skipif(
    not FIXTURES.is_dir(),
    reason=f"public CloudTrail fixtures not found at {FIXTURES} "
    "(they live in ../shared beside the project; a fresh clone elsewhere has none)",
)
def test_public_fixtures_validate_without_losing_rows(tmp_path: Path) -> None:
    rows, rejected = [], 0
    for path in sorted(FIXTURES.glob("*.ndjson")):
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = {k: v for k, v in json.loads(line).items() if not k.startswith("_")}
            try:
                rows.append(normalise.normalise(rec, path.name))
            except normalise.RecordError:
                rejected += 1
    table = normalise.rows_to_table(rows)
    days = pc.strftime(table["eventTime"], format="%Y-%m-%d")
    store = EventStore(tmp_path)
    for day in sorted(set(days.to_pylist())):
        store.rewrite_partition(day, table.filter(pc.equal(days, day)))

    results = {day: validate_partition(store, day, now=NOW) for day in store.dates()}

    # no row lost: every row is in its partition or in quarantine, and each day's counts add up
    assert sum(r.rows_in for r in results.values()) == table.num_rows == len(rows)
    assert all(r.rows_in == r.rows_passed + r.rows_quarantined for r in results.values())
    kept = pa.concat_tables([store.read_partition(day) for day in results])
    moved = pa.concat_tables([quarantined(store, day) for day in results])
    key = ("source_key", "eventID", "eventTime")

    def keys(t: pa.Table) -> Counter:
        return Counter(zip(*(t.column(c).to_pylist() for c in key), strict=True))

    assert keys(kept) + keys(moved) == keys(table)
    assert not any(r.critical_failed for r in results.values())

    # only eventIDs reused across samples (Panther's "1", ids copied between sources) are quarantined
    assert set(moved.column("quarantine_reason").to_pylist()) == {"eventID_unique"}
    assert Counter(moved.column("source_key").to_pylist())["stratus_red_team_detonations.ndjson"] == 1

    # Stratus' scrambled regions: a warning counting exactly the kept rows whose region is not real
    stratus = kept.filter(pc.equal(kept["source_key"], "stratus_red_team_detonations.ndjson"))
    assert stratus.num_rows == 309
    assert not set(stratus.column("awsRegion").to_pylist()) & known_regions()
    for day, result in results.items():
        regions = store.read_partition(day, columns=["awsRegion"]).column("awsRegion").to_pylist()
        unknown = sum(1 for r in regions if r not in known_regions())
        region = outcome(result, "awsRegion_known")
        assert (region.unexpected_count, region.success, region.severity) == (
            unknown,
            unknown == 0,
            "warning",
        )
    stratus_days = set(pc.strftime(stratus["eventTime"], format="%Y-%m-%d").to_pylist())
    assert {d for d, r in results.items() if not outcome(r, "awsRegion_known").success} >= stratus_days
    assert all(results[d].status == "warning" for d in stratus_days)
    assert sum(outcome(r, "awsRegion_known").unexpected_count for r in results.values()) >= 309

    # source addresses: the vectorised check agrees with Python's ipaddress (Stratus zero-pads octets)
    for day, result in results.items():
        addresses = (
            store.read_partition(day, columns=["sourceIPAddress"]).column("sourceIPAddress").to_pylist()
        )
        invalid = sum(1 for a in addresses if not _valid_source(a))
        assert outcome(result, "sourceIPAddress_valid").unexpected_count == invalid, day
    assert any("211.9.016.253" in outcome(r, "sourceIPAddress_valid").sample for r in results.values())


def _valid_source(address: str | None) -> bool:
    if address is None:
        return False
    if address == "AWS Internal" or re.fullmatch(r"[a-z0-9][a-z0-9.-]*\.amazonaws\.com", address):
        return True
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True
