"""Normalisation of single records: every field may be missing, of the wrong type or hostile."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from trailguard.ingest.normalise import (
    MAX_FIELD_CHARS,
    RecordError,
    normalise,
    parse_event_time,
    rows_to_table,
)
from trailguard.store.schema import EVENT_COLUMNS

UTC = timezone.utc


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-07-30T21:31:21Z", datetime(2024, 7, 30, 21, 31, 21, tzinfo=UTC)),
        ("2024-07-30T21:31:21.123Z", datetime(2024, 7, 30, 21, 31, 21, 123000, tzinfo=UTC)),
        ("2024-07-30 21:31:21", datetime(2024, 7, 30, 21, 31, 21, tzinfo=UTC)),
        ("2024-07-30 21:31:21.123456789", datetime(2024, 7, 30, 21, 31, 21, 123456, tzinfo=UTC)),
        ("2024-07-30 21:31:21Z", datetime(2024, 7, 30, 21, 31, 21, tzinfo=UTC)),
        ("2024-07-30T23:31:21+02:00", datetime(2024, 7, 30, 21, 31, 21, tzinfo=UTC)),
        (1722375081, datetime(2024, 7, 30, 21, 31, 21, tzinfo=UTC)),
        (1722375081000, datetime(2024, 7, 30, 21, 31, 21, tzinfo=UTC)),
    ],
)
def test_event_time_formats(text, expected):
    assert parse_event_time(text) == expected


@pytest.mark.parametrize(
    "bad", [None, "", "redacted", "2024-13-45T00:00:00Z", True, float("nan"), {"a": 1}, "9" * 500]
)
def test_event_time_rejects_with_reason(bad):
    with pytest.raises(RecordError, match="eventTime"):
        parse_event_time(bad)


def test_minimal_record_gives_nulls_not_errors():
    row = normalise({"eventID": "e1", "eventTime": "2024-01-01T00:00:00Z"}, "k")
    assert set(row) == set(EVENT_COLUMNS)
    assert row["userIdentity.arn"] is None and row["readOnly"] is None and row["requestParameters"] is None
    assert row["source_key"] == "k"
    assert rows_to_table([row]).num_rows == 1


def test_wrong_types_and_hostile_values_are_kept_as_text():
    record = {
        "eventID": "e2",
        "eventTime": "2024-01-01T00:00:00Z",
        "userIdentity": "not an object",
        "userAgent": "<script>alert(1)</script>" + "A" * (5 * 1024 * 1024),
        "awsRegion": 42,
        "readOnly": "true",
        "managementEvent": "maybe",
        "requestParameters": {"big": 10**40},
        "responseElements": {"n": float("nan")},
        "errorMessage": '=HYPERLINK("http://evil")',
    }
    row = normalise(record, "k")
    assert row["userIdentity.type"] is None
    assert row["userAgent"].startswith("<script>") and len(row["userAgent"]) < MAX_FIELD_CHARS + 20
    assert row["awsRegion"] == "42"
    assert row["readOnly"] is True and row["managementEvent"] is None
    assert '"big":10000000000000000000000000000000000000000' in row["requestParameters"].replace(" ", "")
    assert row["responseElements"] == '{"n":null}'  # NaN became null: the text stays valid JSON
    assert len(row["raw"]) > 5 * 1024 * 1024  # the full record is kept in raw


def test_deeply_nested_parameters_are_kept():
    nested: dict = {}
    cursor = nested
    for _ in range(500):
        cursor["x"] = {}
        cursor = cursor["x"]
    row = normalise({"eventID": "e3", "eventTime": "2024-01-01T00:00:00Z", "requestParameters": nested}, "k")
    assert row["requestParameters"].count("{") == 501


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ([1, 2], "not a JSON object"),
        ({"eventTime": "2024-01-01T00:00:00Z"}, "eventID is missing"),
        ({"eventID": 5, "eventTime": "2024-01-01T00:00:00Z"}, "eventID is not a string"),
        ({"eventID": "e"}, "eventTime is missing"),
    ],
)
def test_unusable_records_raise_with_reason(record, reason):
    with pytest.raises(RecordError, match=reason):
        normalise(record, "k")


def test_files_decoded_together_equal_one_by_one():
    """Small files are put together into slices; each still gets exactly its own rows, and a file that
    needs record-by-record care (here: a record without eventID) does not spoil its neighbours."""
    import orjson
    from trailguard.ingest.normalise import file_to_table, files_to_tables

    def doc(start: int, count: int, broken: bool = False) -> bytes:
        records = [
            {
                "eventID": f"id-{start + i}",
                "eventTime": "2024-07-30T10:00:00Z",
                "eventName": f"N{i}",
                "userIdentity": {"type": "IAMUser", "arn": f"arn:{i}"},
                "requestParameters": {"i": i},
            }
            for i in range(count)
        ]
        if broken:
            del records[1]["eventID"]
        return orjson.dumps({"Records": records})

    documents = [
        (doc(0, 120), "a"),
        (doc(200, 300), "b"),
        (doc(600, 90, broken=True), "c"),
        (doc(800, 700), "d"),
        (b'{"Records": 5}', "e"),
        (doc(1600, 250), "f"),
        (doc(2000, 3), "g"),
    ]
    together = files_to_tables(documents)
    alone = [file_to_table(d, k) for d, k in documents]
    assert (
        [t is None for t in together]
        == [t is None for t in alone]
        == [False, False, True, False, True, False, False]
    )
    for mine, reference in zip(together, alone, strict=True):
        if reference is not None:
            assert mine.equals(reference)
    assert together[1].column("source_key").unique().to_pylist() == ["b"]


@pytest.mark.parametrize(
    "name", ["aws_docs_samples.ndjson", "stratus_red_team_detonations.ndjson", "panther_rule_tests.ndjson"]
)
def test_fast_columns_equal_normalise_on_public_records(name):
    """The whole-file path (typed decoding, columns converted at once) gives normalise()'s rows for real
    records; ``raw`` and the JSON columns keep the original text, so they are compared as JSON."""
    import orjson
    from trailguard.ingest.normalise import RecordError, files_to_tables, normalise, rows_to_table
    from trailguard.store.schema import JSON_FIELDS

    from tests.conftest import fixture_records

    def usable(record):
        try:
            normalise(record, "k")
        except RecordError:
            return False
        return True

    records = [r for r in fixture_records(name) if usable(r)]
    documents = [
        (orjson.dumps({"Records": records[i : i + 37]}), f"file-{i}") for i in range(0, len(records), 37)
    ]
    fast = files_to_tables(documents)
    assert sum(t is not None for t in fast) >= len(documents) // 2  # most files take the fast path
    for (document, key), table in zip(documents, fast, strict=True):
        if table is None:
            continue
        reference = rows_to_table([normalise(r, key) for r in orjson.loads(document)["Records"]])
        for column in table.column_names:
            mine, theirs = table.column(column).to_pylist(), reference.column(column).to_pylist()
            if column in (*JSON_FIELDS, "raw"):
                mine = [None if v is None else orjson.loads(v) for v in mine]
                theirs = [None if v is None else orjson.loads(v) for v in theirs]
            assert mine == theirs, column


@pytest.mark.parametrize(
    "time",
    [
        "0000-01-01T00:00:00Z",
        "2024-02-30T10:00:00Z",
        "2024-07-30T23:59:60Z",
        "2024-07-30T10:00:0éZ",
        "2024-07-30T10:00:00.123456789Z",
        "2024-07-30T10:00:00+02:00",
        "2024-07-30 10:00:00",
    ],
)
def test_odd_event_times_in_a_file_get_normalise_treatment(time):
    """A file whose eventTimes are not all the plain shape decides as normalise() does, record by record:
    the same time or the same rejection, never a silently wrong day."""
    import orjson
    from trailguard.ingest.normalise import RecordError, file_to_table, normalise

    records = [{"eventID": "a", "eventTime": "2024-07-30T10:00:00Z"}, {"eventID": "b", "eventTime": time}]
    table = file_to_table(orjson.dumps({"Records": records}), "k")
    try:
        expected = [normalise(r, "k")["eventTime"] for r in records]
    except RecordError:
        assert table is None  # the record-by-record path will reject it with the reason
    else:
        assert table is not None and table.column("eventTime").to_pylist() == expected
