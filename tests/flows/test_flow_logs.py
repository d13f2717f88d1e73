"""Reading VPC Flow Log files: every format variant, NODATA/SKIPDATA, and hostile input."""

from __future__ import annotations

import gzip

import pyarrow as pa
import pytest
from trailguard.flows.ingestion import decode_flow_object
from trailguard.flows.logs import (
    DEFAULT_FORMAT,
    FLOW_SCHEMA,
    FlowFileError,
    format_flow_file,
    is_flow_log_key,
    read_flow_text,
)

V2 = DEFAULT_FORMAT.split()
V5 = (
    "flow-direction traffic-path pkt-dst-aws-service pkt-src-aws-service sublocation-id sublocation-type az-id "
    "region pkt-dstaddr pkt-srcaddr type tcp-flags instance-id subnet-id vpc-id log-status action end start bytes "
    "packets protocol dstport srcport dstaddr srcaddr interface-id account-id version"
).split()
ACCEPT = (
    2,
    "123456789010",
    "eni-0a1b2c3d",
    "203.0.113.12",
    "10.0.1.5",
    49152,
    22,
    6,
    20,
    4249,
    1767225600,
    1767225660,
    "ACCEPT",
    "OK",
)


def test_default_v2_file_gives_typed_columns():
    decoded = read_flow_text("k", format_flow_file(V2, [ACCEPT]))
    assert decoded.table.schema == FLOW_SCHEMA
    row = decoded.table.to_pylist()[0]
    assert row["srcaddr"] == "203.0.113.12" and row["dstport"] == 22 and row["bytes"] == 4249
    assert row["start"].isoformat() == "2026-01-01T00:00:00+00:00" and row["action"] == "ACCEPT"
    assert row["vpc_id"] is None and row["source_key"] == "k"
    assert decoded.rejected == [] and decoded.lines_read == 1


def test_custom_v5_field_order_maps_every_field():
    values = dict(zip(V2, ACCEPT, strict=True)) | {
        "flow-direction": "ingress", "traffic-path": None, "pkt-dst-aws-service": None,
        "pkt-src-aws-service": "S3", "sublocation-id": None, "sublocation-type": None, "az-id": "use1-az1",
        "region": "us-east-1", "pkt-dstaddr": "10.0.1.5", "pkt-srcaddr": "203.0.113.12", "type": "IPv4",
        "tcp-flags": 19, "instance-id": "i-0abc", "subnet-id": "subnet-01", "vpc-id": "vpc-01",
    }  # fmt: skip
    decoded = read_flow_text("k", format_flow_file(V5, [tuple(values[f] for f in V5)]))
    row = decoded.table.to_pylist()[0]
    assert (row["instance_id"], row["vpc_id"], row["tcp_flags"], row["flow_direction"]) == (
        "i-0abc",
        "vpc-01",
        19,
        "ingress",
    )
    assert row["pkt_src_aws_service"] == "S3" and row["traffic_path"] is None and row["dstport"] == 22
    assert decoded.rejected == []


def test_nodata_and_skipdata_are_records_not_errors():
    rows = [
        ACCEPT,
        (
            2,
            "123456789010",
            "eni-0a1b2c3d",
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            1767225600,
            1767225660,
            None,
            "NODATA",
        ),
        (
            2,
            "123456789010",
            "eni-0a1b2c3d",
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            1767225600,
            1767225660,
            None,
            "SKIPDATA",
        ),
    ]
    decoded = read_flow_text("k", format_flow_file(V2, rows))
    assert decoded.table.column("log_status").to_pylist() == ["OK", "NODATA", "SKIPDATA"]
    assert decoded.table.column("bytes").to_pylist() == [4249, None, None]
    assert decoded.rejected == []


def test_bad_lines_are_rejected_with_line_number_and_reason_the_rest_kept():
    text = format_flow_file(V2, [ACCEPT])
    text += (
        b"2 123456789010 eni-1 1.2.3.4 10.0.0.1 99999 22 6 1 10 1767225600 1767225660 ACCEPT OK\n"  # line 3
    )
    text += b"2 123456789010 eni-1 1.2.3.4 10.0.0.1 1 22 6 1 -10 1767225600 1767225660 ACCEPT OK\n"  # line 4
    text += (
        b"2 123456789010 eni-1 2001:db8::1 fd00::5 1 22 6 x 10 1767225600 1767225660 ACCEPT OK\n"  # line 5
    )
    text += b"2 123456789010 eni-1 2001:db8::1 fd00::5 1 443 6 3 900 1767225600 1767225660 ACCEPT OK\n"  # 6 IPv6 fine
    text += b"2 123456789010 eni-1 " + b"A" * 5000 + b" 1 22 6 1 10 1767225600 1767225660 ACCEPT OK\n"  # 7
    text += b"2 123456789010 eni-1 1.2.3.4 10.0.0.1 1 22 6 1 99999999999999999999 1767225600 1767225660 ACCEPT OK\n"
    text += b"2 123456789010 eni-1 1.2.3.4 10.0.0.1 1 22"  # a truncated last line (line 9)
    decoded = read_flow_text("k", text)
    reasons = {r["record_index"]: r["reason"] for r in decoded.rejected}
    assert sorted(reasons) == [3, 4, 5, 7, 8, 9]
    assert reasons[3].startswith("srcport out of range") and reasons[4].startswith("bytes out of range")
    assert reasons[5].startswith("packets is not a whole number") and "byte limit" in reasons[7]
    assert reasons[8].startswith("bytes is not a whole number") and "truncated" in reasons[9]
    assert decoded.table.column("srcaddr").to_pylist() == ["203.0.113.12", "2001:db8::1"]
    assert decoded.lines_read == 8


def test_an_out_of_range_value_on_the_fast_path_still_names_its_line():
    text = format_flow_file(V2, [ACCEPT, (*ACCEPT[:5], 70000, *ACCEPT[6:]), ACCEPT])
    decoded = read_flow_text("k", text)
    assert [(r["record_index"], r["reason"][:21]) for r in decoded.rejected] == [(3, "srcport out of range ")]
    assert decoded.table.num_rows == 2 and decoded.lines_read == 3


def test_truncated_gzip_and_non_flow_files_are_file_errors():
    data = gzip.compress(format_flow_file(V2, [ACCEPT] * 100))
    with pytest.raises(FlowFileError, match="gzip"):
        decode_flow_object("k", data[: len(data) // 2])
    with pytest.raises(FlowFileError, match="empty"):
        decode_flow_object("k", b"")
    with pytest.raises(FlowFileError, match="not a flow log"):
        decode_flow_object("k", b'{"Records": []}\n')
    with pytest.raises(FlowFileError, match="twice"):
        decode_flow_object("k", b"start start log-status\n")


def test_unknown_fields_are_noted_and_ignored():
    decoded = read_flow_text("k", format_flow_file([*V2, "ecs-cluster-name"], [(*ACCEPT, "prod")]))
    assert decoded.table.num_rows == 1 and "ecs-cluster-name" in (decoded.note or "")


def test_flow_log_keys_recognised():
    key = "AWSLogs/123456789010/vpcflowlogs/us-east-1/2026/01/01/123456789010_vpcflowlogs_us-east-1_fl-0a_20260101T0005Z_ab12.log.gz"
    assert is_flow_log_key(key) and is_flow_log_key("s3://b/" + key)
    assert not is_flow_log_key("AWSLogs/123456789010/CloudTrail/us-east-1/2026/01/01/x.json.gz")


def test_a_big_file_stays_on_the_fast_path_and_matches_the_row_count():
    rows = [ACCEPT] * 50_000
    decoded = read_flow_text("k", format_flow_file(V2, rows))
    assert decoded.table.num_rows == 50_000
    assert pa.compute.sum(decoded.table.column("bytes")).as_py() == 4249 * 50_000
