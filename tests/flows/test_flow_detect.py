"""Each network detection fires on its case and stays quiet on the near miss."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest
from trailguard.detect.network import ENI, HOST, flow  # the catalogue cases' flow records
from trailguard.flows.detect import DETECTIONS, detect, internal, prepare, score_flows
from trailguard.flows.logs import FLOW_SCHEMA

_SCHEMA = pa.schema([f for f in FLOW_SCHEMA if f.name != "source_key"])


def findings(rows, history=None, seen=None) -> pd.DataFrame:
    return detect(prepare(pa.Table.from_pylist(rows, schema=_SCHEMA)), history, seen)


def fired(rows, history=None) -> list[str]:
    return sorted(set(findings(rows, history)["detection"]))


def test_internal_ranges_ipv4_and_ipv6():
    got = internal(
        pd.Series(["10.1.2.3", "172.31.0.9", "100.64.1.1", "fd00::1", "203.0.113.9", "2001:db8::1", "x"])
    )
    assert got.tolist() == [True, True, True, True, False, False, False]


def test_ssh_accepted_from_the_internet_and_the_near_misses():
    assert fired([flow("203.0.113.9", HOST, 50000, 22)]) == ["flow_remote_access_from_internet"]
    assert fired([flow("10.0.9.9", HOST, 50000, 22)]) == []  # a bastion inside the VPC
    assert fired([flow("203.0.113.9", HOST, 50000, 22, action="REJECT")]) == []  # the group said no
    out = findings([flow("203.0.113.9", HOST, 50000, 3389)])
    assert out.loc[0, "attack_technique"] == "T1021.001" and "RDP" in out.loc[0, "reasons"]


def test_ssh_a_host_always_had_scores_lower_than_a_first_time():
    first = findings([flow("203.0.113.9", HOST, 50000, 22)])
    usual = findings([flow("203.0.113.9", HOST, 50000, 22)], seen={(ENI, 22)})
    assert first.loc[0, "risk_score"] == 60 and "never before" in first.loc[0, "reasons"]
    assert usual.loc[0, "risk_score"] == 35 and "earlier days too" in usual.loc[0, "reasons"]


def test_brute_force_is_twenty_accepted_flows_from_one_source():
    burst = [flow("198.51.100.4", HOST, 40000 + i, 22, minute=i) for i in range(20)]
    out = findings(burst)
    assert out["detection"].tolist() == ["flow_remote_access_brute_force"]
    assert out.loc[0, "attack_technique"] == "T1110" and out.loc[0, "risk_score"] >= 85
    assert fired(burst[:19]) == ["flow_remote_access_from_internet"]


def test_fan_out_to_many_hosts_or_ports():
    hosts = [flow(HOST, f"10.0.2.{i}", 40000 + i, 445) for i in range(50)]
    assert fired(hosts) == ["flow_scan_fanout"] and findings(hosts).loc[0, "attack_technique"] == "T1046"
    assert fired(hosts[:49]) == []
    ports = [flow(HOST, "10.0.2.7", 60000, p) for p in range(1, 51)]
    assert fired(ports) == ["flow_scan_fanout"]
    replies = [flow(HOST, f"198.51.100.{i}", 443, 40000 + i) for i in range(80)]  # a web server answering
    assert fired(replies) == []


def test_rejected_burst_in_one_window():
    burst = [flow("192.0.2.50", HOST, 40000, p, action="REJECT", minute=p / 10) for p in range(1, 51)]
    assert fired(burst) == ["flow_rejected_burst"]
    spread = [flow("192.0.2.50", HOST, 40000, p, action="REJECT", minute=p * 11) for p in range(1, 51)]
    assert fired(spread) == []


def test_mining_pool_port():
    out = findings([flow(HOST, "198.51.100.77", 50123, 3333)])
    assert (
        out["detection"].tolist() == ["flow_mining_pool_port"] and out.loc[0, "attack_technique"] == "T1496"
    )
    assert fired([flow(HOST, "198.51.100.77", 50123, 443)]) == []
    assert fired([flow(HOST, "198.51.100.77", 50123, 3333, action="REJECT")]) == []
    assert fired([flow(HOST, "198.51.100.77", 443, 3333)]) == []  # our web server answering a client's port


def test_exfiltration_against_the_interfaces_history():
    history = pd.DataFrame({"interface_id": [ENI] * 5, "bytes": [20 * 2**20] * 5, "day": list("abcde")})
    big = [flow(HOST, "198.51.100.200", 50000 + i, 443, nbytes=25 * 2**20) for i in range(10)]  # 250 MB
    out = findings(big, history)
    assert out["detection"].tolist() == ["flow_exfiltration_volume"]
    assert out.loc[0, "attack_technique"] == "T1048" and "198.51.100.200" in out.loc[0, "reasons"]
    assert fired(big[:7], history) == []  # 175 MB is under 10x its 20 MB day
    assert fired(big) == []  # no history: 250 MB is under the 1 GB bar


def test_beaconing_is_regular_and_small():
    regular = [flow(HOST, "203.0.113.66", 51000 + i, 8443, nbytes=300, minute=5 * i) for i in range(24)]
    out = findings(regular)
    assert out["detection"].tolist() == ["flow_beaconing"] and out.loc[0, "attack_technique"] == "T1071"
    jitter = [0, 1, 9, 11, 25, 26, 40, 41, 44, 60, 61, 80, 83, 99, 110, 111]
    assert (
        fired(
            [flow(HOST, "203.0.113.66", 51000 + i, 8443, nbytes=300, minute=m) for i, m in enumerate(jitter)]
        )
        == []
    )
    assert (
        fired([flow(HOST, "203.0.113.66", 51000 + i, 8443, nbytes=90_000, minute=5 * i) for i in range(24)])
        == []
    )


def test_nodata_records_and_an_empty_day_give_no_findings():
    nodata = flow(None, None, None, None, status="NODATA", action=None, nbytes=None)
    assert fired([nodata]) == []
    assert fired([]) == []


@pytest.mark.parametrize("detection", sorted(DETECTIONS))
def test_every_detection_has_a_technique_and_runbook(detection):
    d = DETECTIONS[detection]
    assert d.technique.startswith("T") and d.runbook and 0 < d.score <= 100


def test_score_flows_writes_score_rows_and_rewrites_on_rerun(tmp_path):
    from trailguard.flows.ingestion import FlowStore
    from trailguard.store import fs

    store = FlowStore(tmp_path)
    table = pa.Table.from_pylist([flow("203.0.113.9", HOST, 50000, 22)], schema=_SCHEMA)
    source = pa.DictionaryArray.from_arrays(pa.array([0], pa.int32()), pa.array(["k"]))
    fs.write_parquet_atomic(
        table.append_column(FLOW_SCHEMA.field("source_key"), source),
        store.partition_dir("2026-01-01") / "p.parquet",
    )
    out, path = score_flows(tmp_path, "2026-01-01")
    again, _ = score_flows(tmp_path, "2026-01-01")
    written = fs.read_parquet(path).to_pandas()
    assert (
        len(written) == 1
        and written.loc[0, "use_case"] == "network_flow"
        and written.loc[0, "risk_score"] == 60
    )
    assert {"eventID", "eventTime", "reasons", "attack_technique", "model_name", "model_version"} <= set(
        written.columns
    )
    assert out["eventID"].tolist() == again["eventID"].tolist()
    assert len(list(path.parent.glob("*.parquet"))) == 1


def test_threat_list_peer_names_the_list_and_its_date():
    from trailguard.intel.reputation import parse_list

    lists = (parse_list("vendor-feed", b"198.51.100.0/24\n", updated="2026-11-30"),)
    rows = [flow(HOST, "198.51.100.9", 50000 + i, 443) for i in range(3)] + [
        flow("198.51.100.20", HOST, 50000, 22)
    ]
    out = detect(prepare(pa.Table.from_pylist(rows, schema=_SCHEMA)), threat_lists=lists)
    listed = out[out["detection"] == "flow_peer_on_threat_list"].sort_values("risk_score", ascending=False)
    assert listed["reasons"].tolist() == [
        f"{ENI} ({HOST}) sent to 198.51.100.9, on threat list 'vendor-feed' of 2026-11-30: 3 flows, 2,400 bytes",
        f"{ENI} ({HOST}) accepted from 198.51.100.20, on threat list 'vendor-feed' of 2026-11-30: 1 flows, 800 bytes",
    ]
    assert listed["attack_technique"].tolist() == ["T1071", "T1071"] and listed["risk_score"].tolist() == [
        80,
        70,
    ]
    unlisted = [flow(HOST, "192.0.2.9", 50000, 443)]
    assert "flow_peer_on_threat_list" not in set(
        detect(prepare(pa.Table.from_pylist(unlisted, schema=_SCHEMA)), threat_lists=lists)["detection"]
    )


def test_tor_exit_accepted_inbound_only():
    from trailguard.detect.network import TOR_EXIT

    assert fired([flow(TOR_EXIT, HOST, 50000, 443)]) == ["flow_tor_exit_inbound"]
    assert fired([flow(TOR_EXIT, HOST, 50000, 443, action="REJECT")]) == []
