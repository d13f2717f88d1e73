"""Each expectation is written once: GX reports on the definition that picks the rows to quarantine."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
from trailguard.quality.checks import DayBounds, incoming_frame
from trailguard.quality.expectations import BY_NAME, INCOMING, ROW_LEVEL, SUITES, TABLE_LEVEL, unexpected_rows
from trailguard.quality.suites import checkpoint, run_suite

START = datetime(2026, 11, 20, tzinfo=timezone.utc)
BOUNDS = DayBounds("2026-11-20", START, START + timedelta(days=1), START + timedelta(hours=12))


def incoming() -> pa.Table:
    """Rows breaking each row-level expectation, some twice, next to good ones."""
    ids = ["a", "b", "a", "a", None, "", "c", "d", "e", "f", "b", "g"]
    times = [
        START + timedelta(hours=1), START + timedelta(hours=2), START + timedelta(hours=3), START,
        START, START, None, START - timedelta(seconds=1), START + timedelta(days=1),
        BOUNDS.latest_allowed + timedelta(seconds=1), START + timedelta(hours=4), BOUNDS.latest_allowed,
    ]  # fmt: skip
    union = pa.table(
        {"eventID": pa.array(ids, pa.string()), "eventTime": pa.array(times, pa.timestamp("us", "UTC"))}
    )
    return incoming_frame(union)


def test_quarantine_picks_the_rows_gx_reports() -> None:
    frame = incoming()
    masks = unexpected_rows(frame, BOUNDS.parameters())
    results = run_suite("incoming", frame.to_pandas(), BOUNDS.parameters())

    assert list(masks) == list(ROW_LEVEL)
    counts = {name: int(mask.sum()) for name, mask in masks.items()}
    assert counts == {
        "eventID_not_null": 2,  # null and empty
        "eventID_unique": 3,  # the later copies: a twice, b once
        "eventTime_not_null": 1,
        "eventTime_in_day": 2,  # a second before the day, and its end (exclusive)
        "eventTime_not_future": 2,  # the day's end and a second past now + tolerance; the limit itself passes
    }
    for name in ROW_LEVEL:
        reported = results[name].result["unexpected_count"]
        if name == "eventID_unique":  # GX counts every copy of a duplicated id, the first ones included
            assert reported == counts[name] + 2
        else:
            assert reported == counts[name], name
        assert results[name].success is (counts[name] == 0)


def test_suites_are_built_once_from_the_definitions_with_parameters() -> None:
    assert checkpoint("incoming") is checkpoint("incoming")
    (validation,) = checkpoint("incoming").validation_definitions
    built = {e.meta["name"]: e for e in validation.suite.expectations}
    assert set(built) == {e.name for e in INCOMING}
    assert built["eventTime_in_day"].min_value == {"$PARAMETER": "day_start"}
    assert built["eventTime_not_future"].max_value == {"$PARAMETER": "latest_allowed"}
    names = [e.name for suite in SUITES.values() for e in suite]
    assert len(names) == len(set(names)) == len(BY_NAME)
    assert set(TABLE_LEVEL) == {"events_present", "rows_remaining", "errorCode_share", "row_count_vs_history",
                                "freshness", "flows_present", "flow_rows_remaining", "flow_nodata_share",
                                "flow_row_count_vs_history"}  # fmt: skip
