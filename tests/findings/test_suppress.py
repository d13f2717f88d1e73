"""Analysts on findings: a label by finding id reaches every event; benign with a note suppresses the same
principal, calls and network (not others) for a period; the report counts what it suppressed; the CLI."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from trailguard.cli import main
from trailguard.findings.suppress import active_suppressions, label_finding
from trailguard.model.labels import read_labels
from trailguard.report.daily import build_report

DAY = "2026-11-20"
START = datetime(2026, 11, 20, 2, tzinfo=timezone.utc)
BACKUP = "arn:aws:sts::111122223333:assumed-role/backup-role/nightly"


def scored(event_id: str, minute: int, risk: float, principal: str, ip: str, name: str, **values) -> dict:
    return {"eventID": event_id, "eventTime": START + timedelta(minutes=minute), "use_case": "api_call",
            "risk_score": risk, "reasons": "r", "attack_technique": None, "model_name": "m", "model_version": "1",
            "principal": principal, "eventName": name, "eventSource": "secretsmanager.amazonaws.com",
            "awsRegion": "us-east-1", "account": "111122223333", "sourceIPAddress": ip, "country": "US",
            "asn": values.pop("asn", "AMAZON-02"), "userAgent": "aws-sdk-go", "errorCode": None, "category": "read",
            "lf_rules": "", "anomaly_score": 0.2, **values}  # fmt: skip


def write_day(root, rows: list[dict], day: str = DAY) -> None:
    folder = root / "scores" / f"date={day}"
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(folder / "part.parquet", index=False)


def backup_rows(prefix: str = "b", ip: str = "3.218.180.10", asn: str = "AMAZON-02") -> list[dict]:
    return [scored(f"{prefix}-{i}", i, 88.0 if i == 0 else 60.0, BACKUP, ip, "GetSecretValue", asn=asn)
            for i in range(12)]  # fmt: skip


def other_rows() -> list[dict]:
    return [scored("x-1", 300, 75.0, "arn:aws:iam::111122223333:user/alice", "198.51.100.7", "ListSecrets")]


@pytest.fixture
def root(tmp_path):
    write_day(tmp_path, backup_rows() + other_rows())
    return tmp_path


def finding_of(root, event_id: str, day: str = DAY) -> str:
    with (root / "reports" / day / "top_events.csv").open() as handle:
        return next(r["finding_id"] for r in csv.DictReader(handle) if event_id in r["event_ids"].split())


def test_a_label_by_finding_id_reaches_every_event_and_suppresses_the_pattern(root):
    build_report(root, DAY)
    fid = finding_of(root, "b-0")
    now = datetime(2026, 11, 21, tzinfo=timezone.utc)
    done = label_finding(root, fid, 5, verdict="benign", analyst="ana", note="nightly backup job", now=now)
    assert done["events"] == 12 and done["suppression"] and done["until"] == "2026-12-21T00:00:00Z"
    labels = read_labels(root)
    assert set(labels["eventID"]) == {f"b-{i}" for i in range(12)} and set(labels["risk_score"]) == {5}
    assert labels["note"].str.startswith(f"[finding {fid}]").all()
    rule = active_suppressions(root, now)[0]
    assert (rule.principal, rule.actions, rule.network) == (BACKUP, ("GetSecretValue",), "3.218.180.0/24")
    assert active_suppressions(root, now + timedelta(days=31)) == []  # the period ends

    # the next day: the same pattern is suppressed, another network or another call is not
    day2 = "2026-11-21"
    rows = backup_rows("c") + backup_rows("d", ip="8.210.12.33", asn="Alibaba") + other_rows()
    rows += [scored("e-1", 400, 80.0, BACKUP, "3.218.180.10", "DeleteSecret")]
    write_day(root, [{**r, "eventTime": r["eventTime"] + timedelta(days=1)} for r in rows], day2)
    report = build_report(root, day2)
    reported = {e for ids in report.top_events["event_ids"] for e in ids.split()}
    assert not reported & {f"c-{i}" for i in range(12)}  # suppressed
    assert {f"d-{i}" for i in range(12)} <= reported and "e-1" in reported and "x-1" in reported
    assert report.summary["suppressed"] == 1 and "suppressed: 1" in report.text()
    html = (root / "reports" / day2 / "report.html").read_text()
    assert "suppressed: 1 (findings an analyst marked benign" in html
    assert f"finding {report.top_events['finding_id'].iloc[0]}" in html and "Top 3 findings" in html
    document = json.loads((root / "reports" / day2 / "findings.json").read_text())
    assert document["suppressed"] == 1


def test_no_suppression_without_a_note_or_when_not_benign(root):
    build_report(root, DAY)
    fid = finding_of(root, "b-0")
    assert label_finding(root, fid, 5, verdict="benign", note="")["suppression"] is None
    assert label_finding(root, fid, 90, verdict="malicious", note="confirmed")["suppression"] is None
    assert label_finding(root, fid, 5, verdict="benign", note="ok", suppress_days=0)["suppression"] is None
    with pytest.raises(ValueError, match="0-366 days"):
        label_finding(root, fid, 5, verdict="benign", note="ok", suppress_days=999)
    with pytest.raises(LookupError, match="no finding"):
        label_finding(root, "F-0000000000000000", 5)


def test_cli_label_by_finding_id(root, capsys):
    build_report(root, DAY)
    fid = finding_of(root, "b-0")
    code = main(
        [
            "--data",
            str(root),
            "label",
            fid,
            "5",
            "--verdict",
            "benign",
            "--note",
            "backup",
            "--suppress-days",
            "7",
        ]
    )
    assert code == 0 and "12 events" in capsys.readouterr().out
    assert main(["--data", str(root), "label", "F-0000000000000000", "5"]) == 1
    assert "no finding" in capsys.readouterr().err
    assert (
        main(
            [
                "--data",
                str(root),
                "label",
                fid,
                "5",
                "--verdict",
                "benign",
                "--note",
                "x",
                "--suppress-days",
                "400",
            ]
        )
        == 2
    )


def test_cli_ip_ranges_refresh(tmp_path, capsys):
    assert main(["--data", str(tmp_path), "ip-ranges"]) == 0 and "(shipped)" in capsys.readouterr().out
    good = tmp_path / "ip-ranges.json"
    good.write_text(
        json.dumps({"createDate": "2026-11-30-08-00-00", "prefixes": [{"ip_prefix": "3.0.0.0/8"}]})
    )
    assert main(["--data", str(tmp_path), "ip-ranges", "--from", str(good)]) == 0
    assert "AWS IP ranges of 2026-11-30" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text("<html>")
    assert main(["--data", str(tmp_path), "ip-ranges", "--from", str(bad)]) == 1
    assert "not an AWS ip-ranges.json" in capsys.readouterr().err
    from trailguard.intel import networks

    networks.aws_ranges.cache_clear()
