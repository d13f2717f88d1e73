"""The join of the demo's network attacks to CloudTrail, and the report's stories per instance.

On the demo's last day: the SSH brute force hits the one web server in the security group that
``AuthorizeSecurityGroupIngress`` opened to 0.0.0.0/0:22 an hour before; the exfiltration leaves the web
server whose role credentials were used from outside AWS that morning. The prod account's flow records are
v2 (no instance-id): the instance and role come from CloudTrail alone."""

from __future__ import annotations

import pytest
from trailguard.findings.network import network_section
from trailguard.model.network import score_network_day

from tests.flows.network_demo import write_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from trailguard.model.scoring import score_day
    from trailguard.quality.gate import validate_partition
    from trailguard.report.daily import build_report
    from trailguard.store.events import EventStore

    demo = write_demo(tmp_path_factory.mktemp("network"))
    store = EventStore(demo.root)
    validate_partition(store, demo.day)
    score_day(store, demo.day, registry=False)
    findings, note = score_network_day(demo.root, demo.day, use_model=False)
    report = build_report(demo.root, demo.day, top_k=20)
    return demo, findings, report


def _truth(demo, scenario):
    return next(t for t in demo.flows_truth if t["date"] == demo.day and t["scenario"] == scenario)


def test_flow_findings_name_instance_and_role_from_cloudtrail(demo):
    demo, findings, _ = demo
    for scenario in ("ssh_brute_force", "data_exfiltration"):
        truth = _truth(demo, scenario)
        row = findings[
            (findings["detection"] == truth["detection"])
            & (findings["interface_id"] == truth["interface_id"])
        ]
        assert len(row) == 1, scenario
        row = row.iloc[0]
        assert (
            row["instance_id"] == truth["instance_id"] and row["role"] == truth["role"] == "web-server-role"
        )
        assert row["context_call"] == "RunInstances" and row["context_event"]
    brute = findings[findings["detection"] == "flow_remote_access_brute_force"].iloc[0]
    assert "sg-0e5a7c9b1d3f24680" in brute["security_groups"].split()


def test_each_attack_is_one_story_with_its_cloudtrail_side(demo):
    demo, _, report = demo
    section = report.network
    assert section is not None and section["high_risk"] >= 2
    stories = {s["instance_id"]: s for s in section["stories"]}
    ct_ids = {scenario: {t["eventID"] for t in demo.cloudtrail_truth if t["scenario"] == scenario and
                         t["date"] == demo.day} for scenario in ("security_group_open_ssh", "secrets_bulk_read")}  # fmt: skip
    ranks = dict(zip(report.top_events["finding_id"], report.top_events["rank"], strict=True))
    for scenario in ("ssh_brute_force", "data_exfiltration"):
        truth = _truth(demo, scenario)
        story = stories[truth["instance_id"]]
        assert story["joined"] and story["role"] == "web-server-role"
        assert story["score"] == story["network_score"] + 10  # both sources agree
        cloudtrail = [e for e in story["timeline"] if e["source"] == "CloudTrail"]
        flows = [e for e in story["timeline"] if e["source"] == "VPC Flow Logs"]
        assert flows and any(e["how"] == truth["detection"] for e in flows)
        # the CloudTrail side is the scenario's own events, as the report ranked them
        lead = [e for e in cloudtrail if e["event_id"] in ct_ids[truth["cloudtrail_scenario"]]]
        assert lead, f"{scenario}: no event of {truth['cloudtrail_scenario']} in {cloudtrail}"
        assert lead[0]["rank"] == ranks[lead[0]["finding_id"]]
        # the story is in time order: what CloudTrail saw comes before what the instance then did
        times = [e["time"] for e in story["timeline"]]
        assert times == sorted(times) and lead[0]["time"] < next(
            e["time"] for e in flows if e["how"] == truth["detection"]
        )
    brute = stories[_truth(demo, "ssh_brute_force")["instance_id"]]
    assert any("AuthorizeSecurityGroupIngress: tcp 22 from 0.0.0.0/0" in e["what"] for e in brute["timeline"])
    exfil = stories[_truth(demo, "data_exfiltration")["instance_id"]]
    assert any(
        e["how"] == "as the instance's role" and "GetSecretValue" in e["what"] for e in exfil["timeline"]
    )


def test_report_html_email_and_json_show_the_stories(demo):
    demo, _, report = demo
    html, text = report.render_html(), report.text()
    brute, exfil = _truth(demo, "ssh_brute_force"), _truth(demo, "data_exfiltration")
    for page in (html, text):
        assert "Network (VPC Flow Logs)" in page
        assert brute["instance_id"] in page and exfil["instance_id"] in page and "web-server-role" in page
        assert "45.146.164.110" in page and "95.217.120.33" in page
    assert "CloudTrail + flows" in html and "AuthorizeSecurityGroupIngress" in html
    from trailguard.report.daily import load_report

    again = load_report(demo.root, demo.day)
    assert again.network == report.network  # report.json keeps the section for the mail task


def test_no_flow_scores_no_section(tmp_path):
    assert network_section(tmp_path, "2026-01-31") is None


def test_describe_event_says_what_the_group_opened():
    import json

    from trailguard.findings.network import describe_event

    params = {"groupId": "sg-0abc", "ipPermissions": {"items": [{
        "ipProtocol": "tcp", "fromPort": 22, "toPort": 22, "ipRanges": {"items": [{"cidrIp": "0.0.0.0/0"}]},
        "ipv6Ranges": {"items": [{"cidrIpv6": "::/0"}]}}]}}  # fmt: skip
    event = {"eventName": "AuthorizeSecurityGroupIngress", "requestParameters": json.dumps(params),
             "userIdentity.arn": "arn:aws:iam::1:user/bob", "sourceIPAddress": "99.31.204.17"}  # fmt: skip
    assert describe_event(event) == (
        "AuthorizeSecurityGroupIngress: tcp 22 from 0.0.0.0/0, ::/0 on sg-0abc by user/bob from 99.31.204.17"
    )
    # a request that is not JSON, or another call: the call and who, nothing invented
    odd = {
        "eventName": "RunInstances",
        "requestParameters": "{not json",
        "errorCode": "Client.UnauthorizedOperation",
    }
    assert describe_event(odd) == "RunInstances (Client.UnauthorizedOperation) by ? from ?"
