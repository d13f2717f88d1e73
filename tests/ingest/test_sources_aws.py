"""S3 and CloudWatch Logs sources against a real local server (moto in server mode, boto3 over HTTP)."""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import date, datetime, timedelta, timezone

from trailguard.ingest.ingestion import ingest
from trailguard.ingest.sources import CloudWatchLogsSource, S3Source, open_source
from trailguard.store.events import EventStore

from tests.ingest.test_ingest import assert_counts_add_up, record, stored_ids


def _key(account: str, region: str, day: str, n: int) -> str:
    y, m, d = day.split("-")
    return (
        f"trail/AWSLogs/{account}/CloudTrail/{region}/{y}/{m}/{d}/"
        f"{account}_CloudTrail_{region}_{y}{m}{d}T0{n}05Z_{uuid.uuid4().hex[:16]}.json.gz"
    )


def test_s3_bucket_in_aws_layout_with_pagination(aws_client, tmp_path):
    s3 = aws_client("s3")
    bucket = f"ct-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    n = 0
    for account in ("111122223333", "444455556666"):
        for region in ("us-east-1", "eu-west-1"):
            for day in ("2024-07-29", "2024-07-30"):
                for i in range(2):
                    events = [
                        record(f"{account}-{region}-{day}-{i}-{j}", time=f"{day}T0{i}:00:00Z")
                        for j in range(3)
                    ]
                    s3.put_object(
                        Bucket=bucket,
                        Key=_key(account, region, day, i),
                        Body=gzip.compress(json.dumps({"Records": events}).encode()),
                    )
                    n += 1
    s3.put_object(
        Bucket=bucket,
        Key="trail/AWSLogs/111122223333/CloudTrail-Digest/us-east-1/2024/07/30/d.json.gz",
        Body=gzip.compress(b"{}"),
    )
    s3.put_object(
        Bucket=bucket,
        Key="trail/AWSLogs/111122223333/CloudTrail/us-east-1/2024/07/30/broken.json.gz",
        Body=b"\x1f\x8bnot really",
    )

    store = EventStore(tmp_path / "data")
    source = S3Source(f"s3://{bucket}/trail", client=s3, page_size=2)  # pages of 2: pagination exercised
    summary = ingest(source, store)
    assert_counts_add_up(summary)
    assert (
        summary.objects,
        summary.objects_ingested,
        summary.objects_skipped,
        summary.objects_quarantined,
    ) == (n + 2, n, 1, 1)
    assert summary.new == n * 3 and len(set(stored_ids(store))) == n * 3

    # incremental: a day range lists only that day's prefixes; everything there was seen already
    again = ingest(
        S3Source(f"s3://{bucket}/trail", client=s3, page_size=2),
        store,
        start=date(2024, 7, 30),
        end=date(2024, 7, 30),
    )
    # (the digest folder is not listed at all: only CloudTrail/<region>/YYYY/MM/DD/ prefixes are)
    assert again.objects == again.objects_already_ingested == n // 2 + 1 and again.new == 0

    # a redelivered object (same events, new key) adds nothing
    s3.put_object(
        Bucket=bucket,
        Key=_key("111122223333", "us-east-1", "2024-07-30", 9),
        Body=gzip.compress(
            json.dumps(
                {"Records": [record("111122223333-us-east-1-2024-07-30-0-0", time="2024-07-30T00:00:00Z")]}
            ).encode()
        ),
    )
    third = ingest(
        S3Source(f"s3://{bucket}/trail", client=s3), store, start=date(2024, 7, 30), end=date(2024, 7, 30)
    )
    assert (third.objects_ingested, third.new, third.duplicates) == (1, 0, 1)


def test_cloudwatch_logs_group_with_pagination(aws_client, tmp_path):
    logs = aws_client("logs")
    group = f"aws-cloudtrail-logs-{uuid.uuid4().hex[:6]}"
    logs.create_log_group(logGroupName=group)
    # CloudWatch refuses log events older than 14 days: use the last few hours
    start_of_hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    base = int((start_of_hour - timedelta(hours=3)).timestamp() * 1000)
    day = (start_of_hour - timedelta(hours=3)).date()
    sent = []
    for stream in ("111122223333_CloudTrail_us-east-1", "111122223333_CloudTrail_us-east-1_2"):
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
        events = []
        for i in range(12):
            event_id = f"{stream}-{i}"
            sent.append(event_id)
            events.append({"timestamp": base + i * 600_000, "message": json.dumps(record(event_id))})
        events.append({"timestamp": base + 13 * 600_000, "message": "not json at all"})
        logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)

    store = EventStore(tmp_path / "data")
    source = CloudWatchLogsSource(f"cloudwatch://{group}", client=logs, page_size=5)
    summary = ingest(source, store, start=day, end=day + timedelta(days=1))
    assert_counts_add_up(summary)
    assert summary.new == len(sent) and summary.quarantined == 2
    assert sorted(stored_ids(store)) == sorted(sent)
    assert "not a JSON object" in store.read_quarantined_records().column("reason")[0].as_py()

    again = ingest(
        CloudWatchLogsSource(f"cloudwatch://{group}", client=logs, page_size=5),
        store,
        start=day,
        end=day + timedelta(days=1),
    )
    assert again.records == 0 and again.objects_already_ingested == again.objects > 0


def test_open_source_chooses_by_scheme(aws_client, tmp_path):
    assert isinstance(open_source("s3://b/p", client=aws_client("s3")), S3Source)
    assert isinstance(open_source("cloudwatch://g", client=aws_client("logs")), CloudWatchLogsSource)
    import pytest

    with pytest.raises(ValueError, match="unknown source"):
        open_source("ftp://x")
    with pytest.raises(FileNotFoundError):
        open_source(str(tmp_path / "missing"))
