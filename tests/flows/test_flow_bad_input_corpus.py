"""The bad-input corpus for VPC Flow Logs: broken or hostile files and lines, each with its expected outcome.

Every case is a file in an AWS-layout folder beside a valid neighbour; the test asserts the outcome (ingested,
quarantined with a reason), that every line read is either stored or rejected with its reason (nothing
lost), that a quarantined file's own bytes are kept, and that the day's validation then flags what the reader
lets through (an unknown action, an address that is not one) without losing rows. Bombs are refused
within the configured memory (a ``trailguard ingest --kind flows`` child process, its peak RSS measured).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from trailguard.flows.ingestion import FlowStore, ingest_flows
from trailguard.flows.logs import DEFAULT_FORMAT, FlowLimits
from trailguard.flows.quality import validate_flows
from trailguard.ingest.sources import LocalFolderSource

DAY = "2026-01-01"
T0 = 1767225600  # 2026-01-01T00:00:00Z
ACCOUNT = "123456789010"
FOLDER = f"AWSLogs/{ACCOUNT}/vpcflowlogs/us-east-1/2026/01/01"
HEADER = DEFAULT_FORMAT.encode()
V5_HEADER = (DEFAULT_FORMAT + " vpc-id subnet-id instance-id tcp-flags type pkt-srcaddr pkt-dstaddr").encode()


def line(i: int = 0, *, src: str = "10.0.1.5", dst: str = "198.51.100.7", **fields: object) -> bytes:
    values = {
        "version": 2, "account": ACCOUNT, "eni": "eni-0a", "src": src, "dst": dst, "sport": 40000 + i,
        "dport": 443, "proto": 6, "packets": 3, "bytes": 500 + i, "start": T0 + i, "end": T0 + i + 60,
        "action": "ACCEPT", "status": "OK",
    } | fields  # fmt: skip
    return " ".join(str(v) for v in values.values()).encode()


def text(*lines: bytes, header: bytes = HEADER) -> bytes:
    return b"\n".join([header, *lines]) + b"\n"


GOOD = [line(1), line(2)]
V5_LINE = line(3, version=5) + b" vpc-01 subnet-01 i-0abc 19 IPv4 10.0.1.5 198.51.100.7"


def parquet(rows: list[dict]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink, compression="gzip")
    return sink.getvalue()


PARQUET_ROW = {"version": 2, "account_id": ACCOUNT, "interface_id": "eni-0a", "srcaddr": "10.0.1.5",
               "dstaddr": "198.51.100.7", "srcport": 40000, "dstport": 443, "protocol": 6, "packets": 3,
               "bytes": 500, "start": T0, "end": T0 + 60, "action": "ACCEPT", "log_status": "OK"}  # fmt: skip

# name -> (file bytes, object outcome, reason fragment or None, records stored, lines rejected)
CASES: dict[str, tuple[bytes, str, str | None, int, int]] = {
    "truncated_gzip": (gzip.compress(text(*GOOD) * 50)[:60], "quarantined", "gzip", 0, 0),
    "empty_file": (b"", "quarantined", "empty file", 0, 0),
    "gzip_of_nothing": (gzip.compress(b""), "quarantined", "empty file", 0, 0),
    "cloudtrail_json_in_a_flow_file": (gzip.compress(b'{"Records": []}'), "quarantined", "not a flow log", 0, 0),
    "wrong_header": (text(*GOOD, header=b"date time host message"), "quarantined", "not a flow log", 0, 0),
    "header_names_a_field_twice": (text(*GOOD, header=HEADER + b" start"), "quarantined", "twice", 0, 0),
    "header_over_the_line_limit": (b"version " * 1000 + b"\n" + GOOD[0], "quarantined", "not a flow log header", 0, 0),
    "header_not_ascii": (text(*GOOD, header=HEADER + b" caf\xc3\xa9"), "quarantined", "not ASCII", 0, 0),
    "header_only": (text(), "ingested", "no records after the header", 0, 0),
    "port_not_a_number": (text(*GOOD, line(5, sport="http")), "ingested", "srcport is not a whole number", 2, 1),
    "port_out_of_range": (text(*GOOD, line(5, dport=70000)), "ingested", "dstport out of range", 2, 1),
    "negative_bytes": (text(*GOOD, line(5, bytes=-10)), "ingested", "bytes out of range", 2, 1),
    "bytes_beyond_int64": (text(*GOOD, line(5, bytes=10**30)), "ingested", "bytes is not a whole number", 2, 1),
    "protocol_a_float": (text(*GOOD, line(5, proto="6.0")), "ingested", "protocol is not a whole number", 2, 1),
    "start_missing": (text(*GOOD, line(5, start="-")), "ingested", "start is missing", 2, 1),
    "start_in_year_5138": (text(*GOOD, line(5, start=99999999999)), "ingested", "start out of range", 2, 1),
    "ipv6_addresses": (text(*GOOD, line(5, src="2001:db8::1", dst="fd00::5")), "ingested", None, 3, 0),
    "nodata_and_skipdata": (
        text(*GOOD, line(5, src="-", dst="-", sport="-", dport="-", proto="-", packets="-", bytes="-",
                         action="-", status="NODATA"),
             line(6, src="-", dst="-", sport="-", dport="-", proto="-", packets="-", bytes="-", action="-",
                  status="SKIPDATA")),
        "ingested", None, 4, 0,
    ),  # fmt: skip
    "huge_field": (text(*GOOD, line(5, eni="eni-" + "a" * 100_000)), "ingested", "byte limit", 2, 1),
    "long_field_in_a_short_line": (text(*GOOD, line(5, eni="eni-" + "a" * 300)), "ingested", "interface-id is over", 2, 1),
    "huge_line_and_a_bad_value": (text(*GOOD, line(5, eni="eni-" + "a" * 100_000), line(6, sport="x")), "ingested",
                                  "byte limit", 2, 2),
    "huge_line_of_many_blocks": (text(GOOD[0], b"x" * (3 * 2**20), GOOD[1]), "ingested", "byte limit", 2, 1),
    "truncated_last_line": (text(*GOOD) + line(5)[:30], "ingested", "fields, the header names 14", 2, 1),
    "mixed_versions": (text(*GOOD, V5_LINE), "ingested", "21 fields, the header names 14", 2, 1),
    "v2_lines_under_a_v5_header": (text(V5_LINE, *GOOD, header=V5_HEADER), "ingested", "14 fields", 1, 2),
    "tab_separated_line": (text(*GOOD, line(5).replace(b" ", b"\t")), "ingested", "1 fields", 2, 1),
    "trailing_space": (text(*GOOD, line(5) + b" "), "ingested", "15 fields", 2, 1),
    "empty_lines_inside": (text(GOOD[0], b"", GOOD[1]), "ingested", None, 2, 0),  # nothing in them to lose
    "empty_line_and_a_bad_value": (text(GOOD[0], b"", GOOD[1], line(6, sport="x")), "ingested", "1 fields", 2, 2),
    "crlf_line_endings": (text(*GOOD).replace(b"\n", b"\r\n"), "ingested", None, 2, 0),
    "carriage_return_inside_a_line": (text(*GOOD, line(5).replace(b" 443 ", b" 443\r")), "ingested",
                                      "carriage return inside", 2, 1),  # fmt: skip
    "nul_and_binary_bytes": (text(*GOOD, b"\x00\xff\xfe" + line(5)), "ingested", "not ASCII", 2, 1),
    "unknown_field_in_header": (
        text(*(g + b" prod" for g in GOOD), header=HEADER + b" ecs-cluster-name"), "ingested", "unknown field", 2, 0,
    ),
    "no_header_in_the_default_format": (b"\n".join(GOOD) + b"\n", "ingested", "no header line", 2, 0),
    "parquet_truncated": (parquet([PARQUET_ROW])[:-10], "quarantined", "cut short", 0, 0),
    "parquet_footer_only_garbage": (b"PAR1" + b"\x00" * 100 + b"PAR1", "quarantined", "not a readable Parquet", 0, 0),
    "parquet_negative_bytes": (parquet([PARQUET_ROW, PARQUET_ROW | {"bytes": -1}]), "ingested", "bytes out of range", 1, 1),
    "parquet_without_flow_columns": (parquet([{"a": 1, "b": "x"}]), "quarantined", "not a flow log file", 0, 0),
}  # fmt: skip


def _layout(tmp_path: Path, name: str, data: bytes) -> Path:
    folder = tmp_path / "logs" / FOLDER
    folder.mkdir(parents=True)
    suffix = ".log.parquet" if name.startswith("parquet") else ".log.gz"
    (folder / f"{ACCOUNT}_vpcflowlogs_us-east-1_fl-0a_20260101T0005Z_{name}{suffix}").write_bytes(data)
    neighbour = text(line(100), line(101))
    (folder / f"{ACCOUNT}_vpcflowlogs_us-east-1_fl-0a_20260101T0010Z_valid.log.gz").write_bytes(
        gzip.compress(neighbour)
    )
    return tmp_path / "logs"


@pytest.mark.parametrize("name", list(CASES))
def test_flow_corpus_case(name: str, tmp_path: Path) -> None:
    data, outcome, reason, stored, rejected = CASES[name]
    root = tmp_path / "data"
    summary = ingest_flows(LocalFolderSource(_layout(tmp_path, name, data)), root)
    store = FlowStore(root)
    entry = next(m for m in store.read_manifest().to_pylist() if name in m["key"])
    assert entry["status"] == outcome, entry
    quarantined_lines = store.read_quarantined_records().to_pylist()
    if outcome == "quarantined":
        kept = list((store.quarantine_dir / "objects").glob(f"*{name}*"))
        data_files = [p for p in kept if not p.name.endswith(".reason.json")]
        assert [p.read_bytes() for p in data_files] == [data], "the file's own bytes are kept"
        assert reason in entry["error"] and "\n" not in entry["error"], entry["error"]
    else:
        text_of = " | ".join([entry["error"] or ""] + [r["reason"] for r in quarantined_lines])
        assert reason is None or reason in text_of, text_of
        assert (entry["records_new"], entry["records_quarantined"]) == (stored, rejected)
        assert entry["records_read"] == stored + rejected, "every line read is stored or rejected"
        assert all(
            r["record_index"] >= 1 and r["reason"] and len(r["raw"]) <= 1000 for r in quarantined_lines
        )
    assert summary.stored == stored + 2  # the valid neighbour is always stored, whatever its neighbour holds
    assert summary.quarantined == rejected == len(quarantined_lines)
    assert summary.records == summary.stored + summary.quarantined


def test_validation_flags_what_the_reader_lets_through(tmp_path: Path) -> None:
    """An unknown action and addresses that are not addresses are stored (the reader checks types and bounds)
    and the day's GX suite warns about them, keeping every row."""
    body = text(*GOOD, line(5, action="MAYBE"), line(6, src="999.1.1.1", dst="not-an-ip"))
    root = tmp_path / "data"
    ingest_flows(LocalFolderSource(_layout(tmp_path, "odd_values", body)), root)
    document = validate_flows(root, DAY, now=datetime(2026, 1, 2, tzinfo=timezone.utc))
    failed = {e["name"] for e in document["outcomes"] if not e["success"]}
    assert {"flow_action_known", "flow_srcaddr_ip", "flow_dstaddr_ip"} <= failed, failed
    assert document["status"] == "warning" and document["rows_passed"] == 6


# -- memory bounded by the settings ----------------------------------------------------------------------
_MEASURE = """
import json, re, sys
from trailguard.cli import main
code = main(sys.argv[2:])
hwm = int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
open(sys.argv[1], "w").write(json.dumps({"peak_kb": hwm}))
sys.exit(code)
"""


def _bomb() -> bytes:
    """4 GiB of spaces after a valid header: 64 gzip members of 64 MiB, about 4 MB on disk."""
    spaces = gzip.compress(b" " * (64 * 2**20), compresslevel=9)
    return gzip.compress(HEADER + b"\n") + spaces * 64


@pytest.mark.slow
def test_a_gzip_bomb_and_a_huge_line_are_refused_within_bounded_memory(tmp_path: Path) -> None:
    folder = tmp_path / "logs" / FOLDER
    folder.mkdir(parents=True)
    bomb = _bomb()
    (folder / f"{ACCOUNT}_vpcflowlogs_us-east-1_fl-0a_20260101T0005Z_bomb.log.gz").write_bytes(bomb)
    one_line = gzip.compress(
        text(GOOD[0], b"9" * (40 * 2**20), GOOD[1])
    )  # a 40 MB line between two good ones
    (folder / f"{ACCOUNT}_vpcflowlogs_us-east-1_fl-0a_20260101T0006Z_line.log.gz").write_bytes(one_line)
    env = {**os.environ, "TRAILGUARD_FLOW_MAX_FILE_BYTES": str(64 * 2**20), "TRAILGUARD_INGEST_WORKERS": "1"}
    peak = tmp_path / "peak.json"
    command = [sys.executable, "-c", _MEASURE, str(peak), "--data", str(tmp_path / "data"), "ingest",
               "--kind", "flows", "--source", str(tmp_path / "logs"), "--json"]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout)
    peak_mb = json.loads(peak.read_text())["peak_kb"] // 1024
    print(f"flow bomb {len(bomb):,} bytes, a 40 MB line: peak RSS {peak_mb} MB")
    assert peak_mb < 400, f"peak RSS {peak_mb} MB with a 64 MB file limit"
    assert (summary["objects_quarantined"], summary["stored"], summary["quarantined"]) == (1, 2, 1)
    store = FlowStore(tmp_path / "data")
    entry = next(m for m in store.read_manifest().to_pylist() if "bomb" in m["key"])
    assert (
        "expands past the 67,108,864-byte limit" in entry["error"]
        and "TRAILGUARD_FLOW_MAX_FILE_BYTES" in entry["error"]
    )
    (line_rejected,) = store.read_quarantined_records().to_pylist()
    assert (
        "41943040 bytes is over the 4096 byte limit" in line_rejected["reason"]
        and len(line_rejected["raw"]) == 1000
    )


def test_limits_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from trailguard.store.settings import load_settings

    monkeypatch.setenv("TRAILGUARD_FLOW_BLOCK_BYTES", str(2**20))
    monkeypatch.setenv("TRAILGUARD_FLOW_MAX_FILE_BYTES", "1000")
    monkeypatch.setenv("TRAILGUARD_FLOW_LOG_FORMAT", "${version} ${srcaddr} ${start} ${log-status}")
    limits = FlowLimits.from_settings(load_settings())
    assert limits == FlowLimits(
        block_bytes=2**20, max_file_bytes=1000, log_format="version srcaddr start log-status"
    )
