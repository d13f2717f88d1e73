"""VPC Flow Logs delivered to a CloudWatch Logs group, as source objects the flow ingestion reads.

Each log event's message is one flow record, its fields separated by spaces in the flow log's format (no
header: the format comes from the setting ``TRAILGUARD_FLOW_LOG_FORMAT``, else the default version 2). A
pseudo-object is one log stream's events of one UTC day (by the record's timestamp) that CloudWatch
received within one hour (its ``ingestionTime``): its text is the header line and the messages, so the
text reader checks it as it checks a file.

Why the ingestion hour: flow records carry no id, so ingestion is idempotent by object (key, size, etag).
An hour CloudWatch has finished receiving never changes, so a rerun skips it and late events land in a
later hour, a new object, never read twice. The hour still receiving (and ``settle`` after it) is listed
as skipped, to be read by a later run. Memory: one stream-day of events at a time, kept as their
message text, id and time only.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any

from trailguard.flows.logs import DEFAULT_FORMAT
from trailguard.ingest.sources import SourceObject

log = logging.getLogger(__name__)

SETTLE = timedelta(minutes=10)  # after an hour ends, CloudWatch may still be storing events received in it


class FlowLogGroupSource:
    """Flow records in a CloudWatch Logs group (``cloudwatch://group``), per stream, day and ingestion hour."""

    def __init__(
        self,
        uri: str,
        client: Any | None = None,
        *,
        log_format: str | None = None,
        page_size: int = 10_000,
        settle: timedelta = SETTLE,
        now: datetime | None = None,
    ) -> None:
        if not uri.startswith("cloudwatch://"):
            raise ValueError(f"not a CloudWatch Logs URI: {uri!r}")
        self.uri = uri.rstrip("/")
        self.group = uri[len("cloudwatch://") :].strip("/")
        if not self.group:
            raise ValueError(f"no log group in {uri!r}: use cloudwatch://log-group-name")
        self.fields = (log_format or DEFAULT_FORMAT).split()
        if client is None:
            import boto3

            client = boto3.client("logs")
        self.client = client
        self.page_size = page_size
        self.settle = settle
        self.now = now

    def _streams(self) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("describe_log_streams")
        for page in paginator.paginate(logGroupName=self.group):
            yield from page.get("logStreams", [])

    def _days(self, stream: dict[str, Any], start: date | None, end: date | None) -> list[date]:
        first, last = stream.get("firstEventTimestamp"), stream.get("lastEventTimestamp")
        low = start or (_day_of(first) if first is not None else None)
        high = end or (_day_of(last) if last is not None else None)
        if low is None or high is None:
            return []  # a stream without events
        return [low + timedelta(days=n) for n in range((high - low).days + 1)]

    def objects(
        self, start: date | None = None, end: date | None = None, prefix: str | None = None
    ) -> Iterator[SourceObject]:
        closed_before = (self.now or datetime.now(timezone.utc)) - self.settle
        for stream in sorted(self._streams(), key=lambda s: s.get("logStreamName", "")):
            name = stream.get("logStreamName", "")
            for day in self._days(stream, start, end):
                base = f"{self.uri}/{name}/{day.isoformat()}"
                if prefix and not (base.startswith(prefix) or prefix.startswith(base)):
                    continue
                yield from self._hours(name, day, base, closed_before)

    def _hours(self, stream: str, day: date, base: str, closed_before: datetime) -> Iterator[SourceObject]:
        begin = datetime.combine(day, datetime.min.time(), timezone.utc)
        hours: dict[datetime, list[tuple[int, str, bytes]]] = {}  # (timestamp, eventId, line): no dicts kept
        paginator = self.client.get_paginator("filter_log_events")
        pages = paginator.paginate(
            logGroupName=self.group,
            logStreamNames=[stream],
            startTime=_ms(begin),
            endTime=_ms(begin + timedelta(days=1)) - 1,
            PaginationConfig={"PageSize": self.page_size},
        )
        for page in pages:
            for event in page.get("events", []):
                received = event.get("ingestionTime", event.get("timestamp", 0))
                hour = datetime.fromtimestamp(received // 3_600_000 * 3600, tz=timezone.utc)
                entry = (
                    event.get("timestamp", 0),
                    str(event.get("eventId", "")),
                    _line(event.get("message", "")),
                )
                hours.setdefault(hour, []).append(entry)
        header = " ".join(self.fields).encode()
        for hour in sorted(hours):
            key = f"{base}/received={hour:%Y-%m-%dT%H}"
            events = sorted(hours.pop(hour))
            etag = "sha1:" + hashlib.sha1("\n".join(e[1] for e in events).encode()).hexdigest()
            if hour + timedelta(hours=1) > closed_before:
                yield SourceObject(
                    key=key,
                    size=0,
                    etag=etag,
                    fetch=_nothing,
                    is_file=False,
                    skip="CloudWatch is still receiving this hour's events: a later run reads it",
                )
                continue
            payload = header + b"\n" + b"\n".join(e[2] for e in events) + b"\n"
            del events
            yield SourceObject(
                key=key, size=len(payload), etag=etag, fetch=lambda p=payload: p, is_file=False
            )


def _line(message: Any) -> bytes:
    """One message as one line: a line break inside it would split a record (the reader then rejects it)."""
    text = message.encode("utf-8", "replace") if isinstance(message, str) else bytes(message or b"")
    return text.replace(b"\r", b" ").replace(b"\n", b" ").strip(b" ")


def _nothing() -> bytes:
    return b""


def _day_of(millis: int) -> date:
    return datetime.fromtimestamp(millis / 1000, tz=timezone.utc).date()


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def open_flow_source(uri: str, client: Any | None = None, *, log_format: str | None = None) -> Any:
    """The source of ``--kind flows``: a CloudWatch Logs group of flow logs (``cloudwatch://group``), else
    what :func:`trailguard.ingest.sources.open_source` opens (a folder, a file, ``s3://bucket/prefix``)."""
    from trailguard.ingest.sources import open_source

    if uri.startswith("cloudwatch://"):
        return FlowLogGroupSource(uri, client, log_format=log_format)
    return open_source(uri, client, service="vpcflowlogs")
