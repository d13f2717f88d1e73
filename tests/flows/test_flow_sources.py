"""Flow log sources beyond text files in a folder: CloudWatch Logs groups and the Parquet delivery (both on a
moto server over HTTP), and the format told from the content, not the name."""

from __future__ import annotations

import gzip
import io
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from trailguard import cli
from trailguard.flows.ingestion import FlowStore, decode_flow_object, ingest_flows
from trailguard.flows.logs import DEFAULT_FORMAT, FlowFileError, FlowLimits, format_flow_file
from trailguard.flows.sources import FlowLogGroupSource
from trailguard.ingest.sources import LocalFolderSource, S3Source

ACCOUNT = "123456789010"
T0 = 1767225600  # 2026-01-01T00:00:00Z
V2 = DEFAULT_FORMAT.split()
V5 = "version vpc-id subnet-id instance-id interface-id account-id type srcaddr dstaddr srcport dstport pkt-srcaddr pkt-dstaddr protocol bytes packets start end action tcp-flags log-status flow-direction".split()


def _v5(i: int, start: int = T0) -> str:
    return (
        f"5 vpc-01 subnet-01 i-0abc eni-0a {ACCOUNT} IPv4 10.0.1.5 198.51.100.{i % 250} {40000 + i} 443 "
        f"10.0.1.5 198.51.100.{i % 250} 6 {500 + i} 3 {start + i} {start + i + 60} ACCEPT 19 OK egress"
    )


# -- CloudWatch Logs ---------------------------------------------------------------------------------------
@pytest.fixture
def log_group(aws_client):
    """A log group of its own (the moto server lives for the session) with two streams; yields its client."""
    logs = aws_client("logs")
    logs.group = f"vpc-flows-{uuid.uuid4().hex[:8]}"
    logs.create_log_group(logGroupName=logs.group)
    for stream in ("eni-0a-all", "eni-0b-all"):
        logs.create_log_stream(logGroupName=logs.group, logStreamName=stream)
    return logs


def _put(logs, stream: str, messages: list[tuple[int, str]]) -> None:
    events = [{"timestamp": seconds * 1000, "message": text} for seconds, text in messages]
    logs.put_log_events(logGroupName=logs.group, logStreamName=stream, logEvents=events)


def test_cloudwatch_group_in_a_custom_format(log_group, tmp_path):
    """Messages in a custom v5 field order (the setting), one bad message rejected with its reason; a rerun
    skips every closed hour."""
    now = datetime.now(timezone.utc)
    start = int(now.timestamp()) // 86400 * 86400  # records of today, so CloudWatch keeps them
    _put(log_group, "eni-0a-all", [(start + i, _v5(i, start)) for i in range(30)])
    _put(log_group, "eni-0b-all", [(start + 5, _v5(99, start)), (start + 6, "5 vpc-01 truncated")])
    later = now + timedelta(hours=2)  # every hour CloudWatch received these in is closed by then
    source = FlowLogGroupSource(
        f"cloudwatch://{log_group.group}", log_group, log_format=" ".join(V5), now=later
    )
    root = tmp_path / "data"
    summary = ingest_flows(source, root)
    assert (summary.objects, summary.objects_ingested, summary.records) == (2, 2, 32)
    assert (summary.stored, summary.quarantined) == (31, 1)
    day = FlowStore(root).read_partition(datetime.fromtimestamp(start, timezone.utc).date())
    assert (
        set(day.column("instance_id").to_pylist()) == {"i-0abc"} and day.column("tcp_flags")[0].as_py() == 19
    )
    assert sorted(day.column("flow_direction").unique().to_pylist()) == ["egress"]
    rejected = FlowStore(root).read_quarantined_records().to_pylist()
    assert (
        rejected[0]["raw"] == "5 vpc-01 truncated"
        and "3 fields, the header names 22" in rejected[0]["reason"]
    )
    assert rejected[0]["source_key"].startswith(f"cloudwatch://{log_group.group}/eni-0b-all/")

    again = ingest_flows(source, root)
    assert (again.objects_already_ingested, again.stored) == (2, 0)


def test_cloudwatch_hour_still_receiving_is_left_for_a_later_run(log_group, tmp_path):
    start = int(datetime.now(timezone.utc).timestamp()) // 86400 * 86400
    _put(log_group, "eni-0a-all", [(start + i, _v5(i, start)) for i in range(3)])
    source = FlowLogGroupSource(f"cloudwatch://{log_group.group}", log_group, log_format=" ".join(V5))
    summary = ingest_flows(source, tmp_path / "data")
    assert (summary.objects, summary.objects_skipped, summary.stored) == (1, 1, 0)


def test_cloudwatch_default_format_from_the_cli(log_group, moto_server, tmp_path, monkeypatch, capsys):
    """``--kind flows --source cloudwatch://group`` with the default v2 format (no setting)."""
    start = int(datetime.now(timezone.utc).timestamp()) // 86400 * 86400
    line = f"2 {ACCOUNT} eni-0a 10.0.1.5 198.51.100.7 40000 443 6 3 500 {start} {start + 60} ACCEPT OK"
    _put(log_group, "eni-0a-all", [(start, line)])
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    data = str(tmp_path / "data")
    assert (
        cli.main(["--data", data, "ingest", "--source", f"cloudwatch://{log_group.group}", "--kind", "flows"])
        == 0
    )
    shown = capsys.readouterr()
    assert "1 listed: 0 ingested, 1 skipped" in shown.out  # the hour CloudWatch is still receiving
    assert shown.err.strip() == "1 hour(s) of the log group still receiving events: a later run reads them"


# -- Parquet delivery ----------------------------------------------------------------------------------------
PARQUET_TYPES = {  # as AWS writes them (Athena's table for the Parquet delivery)
    "version": pa.int32(), "account_id": pa.string(), "interface_id": pa.string(), "srcaddr": pa.string(),
    "dstaddr": pa.string(), "srcport": pa.int32(), "dstport": pa.int32(), "protocol": pa.int64(),
    "packets": pa.int64(), "bytes": pa.int64(), "start": pa.int64(), "end": pa.int64(), "action": pa.string(),
    "log_status": pa.string(), "vpc_id": pa.string(), "instance_id": pa.string(), "tcp_flags": pa.int32(),
    "flow_direction": pa.string(), "traffic_path": pa.int32(),
}  # fmt: skip


def parquet_file(rows: list[dict], types: dict[str, pa.DataType] = PARQUET_TYPES) -> bytes:
    table = pa.table({name: pa.array([r.get(name) for r in rows], kind) for name, kind in types.items()})
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="gzip")
    return sink.getvalue()


def _record(i: int, **changes) -> dict:
    return {
        "version": 5, "account_id": ACCOUNT, "interface_id": "eni-0a", "srcaddr": "10.0.1.5",
        "dstaddr": f"198.51.100.{i}", "srcport": 40000 + i, "dstport": 443, "protocol": 6, "packets": 3,
        "bytes": 500 + i, "start": T0 + 3600 * (i % 3), "end": T0 + 3600 * (i % 3) + 60, "action": "ACCEPT",
        "log_status": "OK", "vpc_id": "vpc-01", "instance_id": "i-0abc", "tcp_flags": 2,
        "flow_direction": "egress", "traffic_path": 8,
    } | changes  # fmt: skip


def _parquet_key(hour: int, name: str) -> str:
    return (
        f"AWSLogs/{ACCOUNT}/vpcflowlogs/us-east-1/2026/01/01/{hour:02d}/"
        f"{ACCOUNT}_vpcflowlogs_us-east-1_fl-0abc_20260101T{hour:02d}05Z_{name}.log.parquet"
    )


def test_parquet_delivery_with_hourly_partitions_from_s3(aws_client, tmp_path):
    s3 = aws_client("s3")
    s3.create_bucket(Bucket="flows")
    good = parquet_file([_record(i) for i in range(6)])
    mixed = parquet_file(
        [_record(10), _record(11, bytes=-5), _record(12, srcport=70000), _record(13, start=None)]
    )
    nodata = parquet_file([_record(20, srcaddr=None, dstaddr=None, srcport=None, dstport=None, protocol=None,
                                   packets=None, bytes=None, action=None, log_status="NODATA")])  # fmt: skip
    s3.put_object(Bucket="flows", Key="p/" + _parquet_key(0, "a1"), Body=good)
    s3.put_object(Bucket="flows", Key="p/" + _parquet_key(1, "a2"), Body=mixed)
    s3.put_object(Bucket="flows", Key="p/" + _parquet_key(2, "a3"), Body=nodata)
    s3.put_object(Bucket="flows", Key="p/" + _parquet_key(3, "a4"), Body=good[: len(good) - 100])  # truncated
    source = S3Source("s3://flows/p", client=s3, service="vpcflowlogs")
    root = tmp_path / "data"
    summary = ingest_flows(source, root, start=date(2026, 1, 1), end=date(2026, 1, 1))
    assert (summary.objects, summary.objects_ingested, summary.objects_quarantined) == (4, 3, 1)
    assert (summary.records, summary.stored, summary.nodata, summary.quarantined) == (11, 8, 1, 3)
    store = FlowStore(root)
    day = store.read_partition("2026-01-01")
    first = [r for r in day.to_pylist() if r["dstaddr"] == "198.51.100.0"][0]
    assert (first["version"], first["protocol"], first["instance_id"], first["traffic_path"]) == (
        5,
        6,
        "i-0abc",
        8,
    )
    assert first["start"] == datetime(2026, 1, 1, tzinfo=timezone.utc)
    reasons = {r["record_index"]: r["reason"] for r in store.read_quarantined_records().to_pylist()}
    assert reasons[2].startswith("bytes out of range") and reasons[3].startswith("srcport out of range")
    assert reasons[4].startswith("start is missing")
    assert ingest_flows(source, root).objects_already_ingested == 4


def test_parquet_with_odd_types_loses_only_the_bad_values():
    """A writer that stored ports as text and start as a timestamp: numbers are read, the rest rejected."""
    types = PARQUET_TYPES | {"srcport": pa.string(), "start": pa.timestamp("ms", tz="UTC")}
    rows = [_record(1, srcport="40001", start=datetime(2026, 1, 1, 0, 0, 5, tzinfo=timezone.utc)),
            _record(2, srcport="http", start=datetime(2026, 1, 1, tzinfo=timezone.utc))]  # fmt: skip
    decoded = decode_flow_object("k", parquet_file(rows, types))
    assert decoded.table.column("srcport").to_pylist() == [40001]
    assert decoded.table.column("start")[0].as_py() == datetime(2026, 1, 1, 0, 0, 5, tzinfo=timezone.utc)
    assert [(r["record_index"], r["reason"][:29]) for r in decoded.rejected] == [
        (2, "srcport is not a whole number")
    ]


def test_parquet_limits_are_read_from_the_footer():
    data = parquet_file([_record(i) for i in range(50)])
    with pytest.raises(FlowFileError, match="50 rows, over the limit of 10"):
        decode_flow_object("k", data, FlowLimits(max_records=10))
    big = parquet_file([_record(i % 250, bytes=i, srcport=i % 60000, start=T0 + i) for i in range(20000)])
    with pytest.raises(FlowFileError, match="uncompressed, over the"):  # a small file of large columns
        decode_flow_object("k", big, FlowLimits(max_file_bytes=len(big) + 1))
    not_flows = parquet_file([{"a": 1}], {"a": pa.int64()})
    with pytest.raises(FlowFileError, match="not a flow log file"):
        decode_flow_object("k", not_flows)


# -- the format from the content --------------------------------------------------------------------------
def test_format_is_told_from_content_not_name(tmp_path: Path):
    """A gzip named .log, plain text named .log.gz, Parquet gzipped, text without a header in the configured
    format: each read as what it is."""
    text = format_flow_file(V2, [(2, ACCOUNT, "eni-0a", "10.0.1.5", "198.51.100.7", 40000, 443, 6, 3, 500, T0,
                                  T0 + 60, "ACCEPT", "OK")])  # fmt: skip
    folder = tmp_path / "logs" / "AWSLogs" / ACCOUNT / "vpcflowlogs" / "us-east-1" / "2026" / "01" / "01"
    folder.mkdir(parents=True)
    (folder / "a_vpcflowlogs_1.log").write_bytes(gzip.compress(text))
    (folder / "a_vpcflowlogs_2.log.gz").write_bytes(text)
    (folder / "a_vpcflowlogs_3.log.parquet").write_bytes(gzip.compress(parquet_file([_record(1)])))
    (folder / "a_vpcflowlogs_4.log.gz").write_bytes(gzip.compress(text.split(b"\n", 1)[1]))  # no header
    summary = ingest_flows(LocalFolderSource(tmp_path / "logs"), tmp_path / "data")
    assert (summary.objects_ingested, summary.stored, summary.quarantined) == (4, 4, 0)
    notes = {
        m["key"].rsplit("vpcflowlogs", 1)[1]: m["error"]
        for m in FlowStore(tmp_path / "data").read_manifest().to_pylist()
    }
    assert "no header line" in notes["_4.log.gz"]


def test_hive_compatible_prefixes_are_filtered_by_day(tmp_path: Path):
    """``.../year=YYYY/month=MM/day=DD/hour=HH/``: the delivery day is read from the key, as in AWS's layout."""
    for day, hour in ((1, 0), (2, 5)):
        folder = (tmp_path / "logs" / f"AWSLogs/aws-account-id={ACCOUNT}/aws-service=vpcflowlogs/"
                  f"aws-region=us-east-1/year=2026/month=01/day={day:02d}/hour={hour:02d}")  # fmt: skip
        folder.mkdir(parents=True)
        rows = [_record(i, start=T0 + 86400 * (day - 1) + i) for i in range(3)]
        (
            folder / f"{ACCOUNT}_vpcflowlogs_us-east-1_fl-0a_202601{day:02d}T{hour:02d}05Z_h.log.parquet"
        ).write_bytes(parquet_file(rows))
    summary = ingest_flows(LocalFolderSource(tmp_path / "logs"), tmp_path / "data", start=date(2026, 1, 2))
    assert (summary.objects, summary.stored, summary.dates) == (1, 3, ["2026-01-02"])


def test_text_without_header_needs_a_usable_configured_format():
    body = b"10.0.1.5 1767225600 OK\n10.0.1.6 1767225660 NODATA\n"
    decoded = decode_flow_object("k", body, FlowLimits(log_format="srcaddr start log-status"))
    assert decoded.table.column("srcaddr").to_pylist() == ["10.0.1.5", "10.0.1.6"]
    with pytest.raises(FlowFileError, match="lacks start"):
        decode_flow_object("k", body, FlowLimits(log_format="srcaddr end log-status"))


def test_the_cloudtrail_opener_refuses_a_flow_log_group():
    """A group of flow logs read as CloudTrail would quarantine every hour: the opener says which to use."""
    from trailguard.flows.sources import open_flow_source
    from trailguard.ingest.sources import open_source

    with pytest.raises(ValueError, match="open_flow_source"):
        open_source("cloudwatch://vpc-flows", client=object(), service="vpcflowlogs")
    assert isinstance(open_flow_source("cloudwatch://vpc-flows", client=object()), FlowLogGroupSource)
