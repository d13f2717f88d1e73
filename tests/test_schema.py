"""Normalisation of single records: every field may be missing, of the wrong type or hostile."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from trailguard.schema import (
    EVENT_COLUMNS,
    MAX_FIELD_CHARS,
    RecordError,
    normalise,
    parse_event_time,
    rows_to_table,
)

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


@pytest.mark.parametrize("bad", [None, "", "redacted", "2024-13-45T00:00:00Z", True, float("nan"), {"a": 1}, "9" * 500])
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
        "errorMessage": "=HYPERLINK(\"http://evil\")",
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
