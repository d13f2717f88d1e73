"""The demo's flow logs end to end: written in AWS's layout, ingested, validated and the injected network
attacks found by the detections; through the command line as a user runs it."""

from __future__ import annotations

import csv
from datetime import date

import pytest
from trailguard import cli
from trailguard.demo.flows import demo_dates, write_flow_logs
from trailguard.flows.detect import score_flows
from trailguard.flows.ingestion import ingest_flows
from trailguard.flows.quality import validate_flows
from trailguard.ingest.sources import LocalFolderSource

END = date(2026, 1, 31)  # the last day holds every scenario


def test_demo_flows_detections_find_the_injected_attacks(tmp_path):
    truth = write_flow_logs(tmp_path / "logs", demo_dates(END, 5))
    assert {t["scenario"] for t in truth if t["date"] == END.isoformat()} == {
        "ssh_brute_force",
        "data_exfiltration",
    }
    summary = ingest_flows(LocalFolderSource(tmp_path / "logs"), tmp_path / "data", workers=2)
    assert summary.objects_quarantined == 0 and summary.quarantined == 0 and summary.nodata > 0
    for day in summary.dates:
        findings, _ = score_flows(tmp_path / "data", day)
        expected = {(t["detection"], t["interface_id"]) for t in truth if t["date"] == day}
        found = set(zip(findings["detection"], findings["interface_id"], strict=True))
        assert expected <= found, f"{day}: missed {expected - found}"
        # nothing else on the demo's ordinary traffic: every finding is an injected attack
        assert found <= expected, f"{day}: false positives {found - expected}"
    top = score_flows(tmp_path / "data", END.isoformat())[0]
    assert set(top["attack_technique"]) == {"T1110", "T1048"} and (top["risk_score"] >= 80).all()


@pytest.mark.slow
def test_demo_flows_through_the_command_line(tmp_path, capsys):
    data, logs = tmp_path / "data", tmp_path / "logs"
    assert cli.main(["demo-data", "--out", str(logs), "--days", "4", "--end", END.isoformat(), "--events", "400",
                     "--no-bad-files", "--flows"]) == 0  # fmt: skip
    rows = list(csv.DictReader(open(logs / "flows_ground_truth.csv")))
    assert {r["scenario"] for r in rows} == {"ssh_brute_force", "data_exfiltration"}
    assert cli.main(["--data", str(data), "ingest", "--source", str(logs), "--kind", "flows", "--json"]) == 0
    assert cli.main(["--data", str(data), "flows", "--date", END.isoformat()]) == 0
    out = capsys.readouterr().out
    assert "flow_remote_access_brute_force" in out and "flow_exfiltration_volume" in out
    doc = validate_flows(data, END.isoformat())
    assert doc["status"] == "passed", doc["summary"]
    # CloudTrail ingest of the same folder skips the flow files and reads the trail
    assert cli.main(["--data", str(data), "ingest", "--source", str(logs), "--json"]) == 0
