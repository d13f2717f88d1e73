"""The join of flow findings to CloudTrail: which instance and role stand behind an interface."""

from __future__ import annotations

import json

import pandas as pd
from trailguard.flows.context import attach_context, interfaces_of

RUN = {
    "eventName": "RunInstances",
    "responseElements": json.dumps(
        {
            "instancesSet": {
                "items": [
                    {
                        "instanceId": "i-0aaa111122223333a",
                        "privateIpAddress": "10.0.1.5",
                        "groupSet": {"items": [{"groupId": "sg-0web"}]},
                        "iamInstanceProfile": {"arn": "arn:aws:iam::111122223333:instance-profile/web-role"},
                        "networkInterfaceSet": {
                            "items": [
                                {
                                    "networkInterfaceId": "eni-0aaa",
                                    "privateIpAddress": "10.0.1.5",
                                    "groupSet": {"items": [{"groupId": "sg-0web"}, {"groupId": "sg-0debug"}]},
                                }
                            ]
                        },
                    }
                ]
            }
        }
    ),  # fmt: skip
}


def test_run_instances_names_interface_instance_groups_and_profile():
    (found,) = interfaces_of(RUN)
    assert found == {"interface_id": "eni-0aaa", "instance_id": "i-0aaa111122223333a", "role": "web-role",
                     "security_groups": ["sg-0web", "sg-0debug"], "private_ip": "10.0.1.5"}  # fmt: skip


def test_create_and_attach_network_interface():
    created = {"eventName": "CreateNetworkInterface",
               "responseElements": json.dumps({"networkInterface": {"networkInterfaceId": "eni-0bbb",
                                                                    "groupSet": {"items": [{"groupId": "sg-0x"}]},
                                                                    "privateIpAddress": "10.0.2.9"}})}  # fmt: skip
    (eni,) = interfaces_of(created)
    assert (
        eni["interface_id"] == "eni-0bbb"
        and eni["instance_id"] is None
        and eni["security_groups"] == ["sg-0x"]
    )
    attach = {
        "eventName": "AttachNetworkInterface",
        "requestParameters": json.dumps({"networkInterfaceId": "eni-0bbb", "instanceId": "i-0bbb"}),
    }
    assert interfaces_of(attach)[0]["instance_id"] == "i-0bbb"


def test_near_misses_name_nothing():
    assert interfaces_of({"eventName": "RunInstances", "responseElements": None}) == []
    assert interfaces_of({"eventName": "RunInstances", "responseElements": "not json"}) == []
    assert (
        interfaces_of({"eventName": "DescribeInstances", "responseElements": RUN["responseElements"]}) == []
    )
    assert interfaces_of({"eventName": "AttachNetworkInterface", "requestParameters": "{}"}) == []


def test_attach_context_prefers_the_record_and_the_session_role():
    inventory = pd.DataFrame({
        "interface_id": ["eni-0aaa", "eni-0bbb"], "instance_id": ["i-0aaa", None], "role": ["web-profile", None],
        "security_groups": [["sg-0web"], []], "private_ip": [None, None], "account_id": ["1", "1"],
        "region": ["r", "r"], "context_event": ["ev-1", "ev-2"], "context_call": ["RunInstances", "CreateNetworkInterface"],
        "context_time": [None, None],
    })  # fmt: skip
    inventory.attrs["roles"] = {"i-0ccc": "batch-role"}
    findings = pd.DataFrame({"interface_id": ["eni-0aaa", "eni-0bbb", "eni-0zzz"],
                             "instance_id": [None, "i-0ccc", None]})  # fmt: skip
    out = attach_context(findings, inventory)
    assert out["instance_id"].tolist() == ["i-0aaa", "i-0ccc", None]
    assert out["role"].tolist() == ["web-profile", "batch-role", None]
    assert out["security_groups"].tolist() == ["sg-0web", "", None]
    assert out["context_call"].tolist()[:2] == ["RunInstances", "CreateNetworkInterface"]
