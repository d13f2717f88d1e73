"""Defense evasion (TA0005): logging and security tooling turned off, guardrails and network controls loosened."""

from __future__ import annotations

import re

from trailguard.detect.event import Event, as_list, is_false, is_true, short
from trailguard.detect.policy import (
    as_strings,
    describe_port,
    exposes_admin_port,
    failure_note,
    open_ingress,
    walk_params,
)
from trailguard.detect.registry import fires, near_miss, rule
from trailguard.detect.samples import ACCOUNT, DENIED, ROLE, call, sg_ingress


@rule(
    "cloudtrail_stopped",
    title="CloudTrail logging stopped",
    technique="T1562.008",
    score=90,
    reason="CloudTrail logging stopped on trail {trail} by {actor}",
    runbook="Restart logging (StartLogging) at once, then review what this principal did while the trail was off.",
    events=["StopLogging"],
    sources=["cloudtrail"],
    tests=[
        fires("trail stopped", call("StopLogging", "cloudtrail", {"name": "org-trail"})),
        near_miss(
            "the call failed",
            call("StopLogging", "cloudtrail", {"name": "org-trail"}, errorCode="InvalidTrailNameException"),
        ),
    ],
)
def cloudtrail_stopped(event: Event) -> str | None:
    if event.failed:
        return None
    return f"CloudTrail logging stopped on trail {short(event.text('requestParameters.name'))} by {event.actor()}"


@rule(
    "cloudtrail_deleted",
    title="CloudTrail trail or event data store deleted",
    technique="T1562.008",
    score=90,
    reason="CloudTrail {trail|event data store} {deleted:|ingestion stopped on} {name} by {actor}",
    runbook="Recreate the trail or data store, then review this principal's activity from other log sources.",
    events=["DeleteTrail", "DeleteEventDataStore", "StopEventDataStoreIngestion"],
    sources=["cloudtrail"],
    tests=[
        fires("trail deleted", call("DeleteTrail", "cloudtrail", {"name": "org-trail"})),
        near_miss(
            "the call failed",
            call("DeleteTrail", "cloudtrail", {"name": "org-trail"}, errorCode="ConflictException"),
        ),
    ],
)
def cloudtrail_deleted(event: Event) -> str | None:
    if event.failed:
        return None
    target = event.text("requestParameters.name") or event.text("requestParameters.eventDataStore")
    what = "trail" if event.name == "DeleteTrail" else "event data store"
    verb = "ingestion stopped on" if event.name == "StopEventDataStoreIngestion" else "deleted:"
    return f"CloudTrail {what} {verb} {short(target)} by {event.actor()}"


@rule(
    "cloudtrail_trail_weakened",
    title="CloudTrail trail scope reduced",
    technique="T1562.008",
    score=75,
    reason="CloudTrail trail {trail} updated to drop {settings} by {actor}",
    runbook="Restore multi-region, global-service and log-file-validation settings on the trail.",
    events=["UpdateTrail"],
    sources=["cloudtrail"],
    tests=[
        fires(
            "trail made single-region",
            call("UpdateTrail", "cloudtrail", {"name": "org-trail", "isMultiRegionTrail": False}),
        ),
        near_miss(
            "trail still multi-region, new bucket",
            call(
                "UpdateTrail",
                "cloudtrail",
                {"name": "org-trail", "isMultiRegionTrail": True, "s3BucketName": "logs"},
            ),
        ),
    ],
)
def cloudtrail_trail_weakened(event: Event) -> str | None:
    if event.failed:
        return None
    dropped = [
        label
        for key, label in (
            ("isMultiRegionTrail", "other regions"),
            ("includeGlobalServiceEvents", "global service events"),
            ("enableLogFileValidation", "log file validation"),
        )
        if is_false(event.params(key))
    ]
    if not dropped:
        return None
    trail = short(event.text("requestParameters.name"))
    return f"CloudTrail trail {trail} updated to drop {', '.join(dropped)} by {event.actor()}"


@rule(
    "cloudtrail_event_selectors_reduced",
    title="CloudTrail event selectors reduce logging",
    technique="T1562.008",
    score=80,
    reason="CloudTrail trail {trail} event selectors now skip {what}; set by {actor}",
    runbook="Restore management-event logging (read and write) on the trail; review activity since the change.",
    events=["PutEventSelectors"],
    sources=["cloudtrail"],
    tests=[
        fires(
            "management events switched off",
            call(
                "PutEventSelectors",
                "cloudtrail",
                {
                    "trailName": "t",
                    "eventSelectors": [{"includeManagementEvents": False, "readWriteType": "All"}],
                },
            ),
        ),
        near_miss(
            "management events kept",
            call(
                "PutEventSelectors",
                "cloudtrail",
                {
                    "trailName": "t",
                    "eventSelectors": [{"includeManagementEvents": True, "readWriteType": "All"}],
                },
            ),
        ),
    ],
)
def cloudtrail_event_selectors_reduced(event: Event) -> str | None:
    if event.failed:
        return None
    selectors = [s for s in as_list(event.params("eventSelectors")) if isinstance(s, dict)]
    dropped = []
    if selectors and all(is_false(s.get("includeManagementEvents")) for s in selectors):
        dropped.append("management events")
    if any(str(s.get("readWriteType", "")).lower() == "readonly" for s in selectors):
        dropped.append("write events")
    if any(s.get("excludeManagementEventSources") for s in selectors):
        dropped.append("some management event sources")
    advanced = event.params("advancedEventSelectors")
    if (
        isinstance(advanced, list)
        and advanced
        and '"management"' not in event.json_text("requestParameters").lower().replace(" ", "")
    ):
        dropped.append("management events (advanced selectors)")
    if not dropped:
        return None
    trail = short(event.text("requestParameters.trailName"))
    return f"CloudTrail trail {trail} event selectors now skip {', '.join(dropped)}; set by {event.actor()}"


@rule(
    "vpc_flow_logs_deleted",
    title="VPC flow logs deleted",
    technique="T1562.008",
    score=80,
    reason="VPC flow logs {flow log id} deleted by {actor}",
    runbook="Recreate the flow logs; network evidence since the deletion is lost, use other sources for the gap.",
    events=["DeleteFlowLogs"],
    sources=["ec2"],
    tests=[
        fires(
            "flow log deleted",
            call(
                "DeleteFlowLogs",
                "ec2",
                {"DeleteFlowLogsRequest": {"FlowLogId": {"content": "fl-0abc", "tag": 1}}},
            ),
        ),
        near_miss(
            "the call was denied",
            call(
                "DeleteFlowLogs",
                "ec2",
                {"DeleteFlowLogsRequest": {}},
                errorCode="Client.UnauthorizedOperation",
            ),
        ),
    ],
)
def vpc_flow_logs_deleted(event: Event) -> str | None:
    if event.failed:
        return None
    found = re.search(r"fl-[0-9a-zA-Z]+", event.json_text("requestParameters")[:4096])
    return f"VPC flow logs {found.group(0) if found else '?'} deleted by {event.actor()}"


@rule(
    "dns_query_logs_deleted",
    title="Route 53 resolver query logging deleted",
    technique="T1562.008",
    score=80,
    reason="DNS query logging {config} removed ({eventName}) by {actor}",
    runbook="Recreate DNS query logging for the VPCs; DNS is how exfiltration and C2 are usually spotted.",
    events=["DeleteResolverQueryLogConfig", "DisassociateResolverQueryLogConfig"],
    sources=["route53resolver"],
    tests=[
        fires(
            "query logging config deleted",
            call("DeleteResolverQueryLogConfig", "route53resolver", {"resolverQueryLogConfigId": "rqlc-1"}),
        ),
        near_miss(
            "the call was denied",
            call(
                "DeleteResolverQueryLogConfig",
                "route53resolver",
                {"resolverQueryLogConfigId": "rqlc-1"},
                **DENIED,
            ),
        ),
    ],
)
def dns_query_logs_deleted(event: Event) -> str | None:
    if event.failed:
        return None
    config = short(event.text("requestParameters.resolverQueryLogConfigId"))
    return f"DNS query logging {config} removed ({short(event.name)}) by {event.actor()}"


@rule(
    "logs_deleted_or_disabled",
    title="Log group deleted or service logging disabled",
    technique="T1562.008",
    score=60,
    reason="{CloudWatch log group X deleted|Bedrock model invocation logging deleted|S3 access logging disabled on bucket X} by {actor}",
    runbook="Check the log source is expected to go away; restore logging and review what the gap hides.",
    events=["DeleteLogGroup", "DeleteModelInvocationLoggingConfiguration", "PutBucketLogging"],
    sources=["logs", "bedrock", "s3"],
    tests=[
        fires(
            "S3 access logging turned off",
            call(
                "PutBucketLogging", "s3", {"bucketName": "b", "BucketLoggingStatus": {"xmlns": "http://s3"}}
            ),
        ),
        near_miss(
            "S3 access logging pointed at a bucket",
            call(
                "PutBucketLogging",
                "s3",
                {"bucketName": "b", "BucketLoggingStatus": {"LoggingEnabled": {"TargetBucket": "l"}}},
            ),
        ),
        fires("log group deleted", call("DeleteLogGroup", "logs", {"logGroupName": "/aws/lambda/api"})),
    ],
)
def logs_deleted_or_disabled(event: Event) -> str | None:
    if event.failed:
        return None
    if event.name == "DeleteLogGroup":
        return f"CloudWatch log group {short(event.text('requestParameters.logGroupName'))} deleted by {event.actor()}"
    if event.name == "DeleteModelInvocationLoggingConfiguration":
        return f"Bedrock model invocation logging deleted by {event.actor()}"
    status = event.params("BucketLoggingStatus")
    if not isinstance(status, dict) or "LoggingEnabled" in status:
        return None
    return f"S3 access logging disabled on bucket {short(event.text('requestParameters.bucketName'))} by {event.actor()}"


_GUARDDUTY_OFF = frozenset(
    {
        "DeleteDetector", "UpdateDetector", "DisassociateFromMasterAccount",
        "DisassociateFromAdministratorAccount", "DeleteMembers", "DisassociateMembers", "StopMonitoringMembers",
    }
)  # fmt: skip


@rule(
    "guardduty_disabled",
    title="GuardDuty detector deleted, disabled or detached",
    technique="T1562.001",
    score=85,
    reason="GuardDuty {eventName} on detector {detector} by {actor}",
    runbook="Re-enable the detector / membership; threat findings during the gap are missing.",
    events=_GUARDDUTY_OFF,
    sources=["guardduty"],
    tests=[
        fires(
            "detector disabled", call("UpdateDetector", "guardduty", {"detectorId": "d1", "enable": False})
        ),
        near_miss(
            "detector enabled", call("UpdateDetector", "guardduty", {"detectorId": "d1", "enable": True})
        ),
        fires("detector deleted", call("DeleteDetector", "guardduty", {"detectorId": "d1"})),
    ],
)
def guardduty_disabled(event: Event) -> str | None:
    if event.failed or (event.name == "UpdateDetector" and not is_false(event.params("enable"))):
        return None
    detector = short(event.text("requestParameters.detectorId"))
    return f"GuardDuty {short(event.name)} on detector {detector} by {event.actor()}"


@rule(
    "guardduty_findings_suppressed",
    title="GuardDuty findings suppressed or IPs trusted",
    technique="T1562.001",
    score=65,
    reason="GuardDuty {auto-archive filter|trusted IP list} {name} set by {actor}",
    runbook="Review the filter / trusted IP list: an archive rule or trusted IP hides an attacker's findings.",
    events=["CreateFilter", "UpdateFilter", "CreateIPSet", "UpdateIPSet"],
    sources=["guardduty"],
    tests=[
        fires(
            "auto-archive filter created",
            call("CreateFilter", "guardduty", {"name": "quiet", "action": "ARCHIVE"}),
        ),
        near_miss(
            "filter that only tags findings",
            call("CreateFilter", "guardduty", {"name": "triage", "action": "NOOP"}),
        ),
        fires(
            "trusted IP list created", call("CreateIPSet", "guardduty", {"name": "office", "activate": True})
        ),
    ],
)
def guardduty_findings_suppressed(event: Event) -> str | None:
    if event.failed:
        return None
    if event.name.endswith("Filter"):
        if event.text("requestParameters.action").upper() != "ARCHIVE":
            return None
        return f"GuardDuty auto-archive filter {short(event.text('requestParameters.name'))} set by {event.actor()}"
    if is_false(event.params("activate")):
        return None
    return f"GuardDuty trusted IP list {short(event.text('requestParameters.name'))} set by {event.actor()}"


@rule(
    "config_recording_stopped",
    title="AWS Config recorder stopped or deleted",
    technique="T1562.001",
    score=80,
    reason="AWS Config {eventName} ({recorder or channel}) by {actor}",
    runbook="Restart the configuration recorder and delivery channel; configuration history has a gap.",
    events=["StopConfigurationRecorder", "DeleteConfigurationRecorder", "DeleteDeliveryChannel"],
    sources=["config"],
    tests=[
        fires(
            "recorder stopped",
            call("StopConfigurationRecorder", "config", {"configurationRecorderName": "default"}),
        ),
        near_miss(
            "the call was denied",
            call("StopConfigurationRecorder", "config", {"configurationRecorderName": "default"}, **DENIED),
        ),
    ],
)
def config_recording_stopped(event: Event) -> str | None:
    if event.failed:
        return None
    target = event.text("requestParameters.configurationRecorderName") or event.text(
        "requestParameters.deliveryChannelName"
    )
    return f"AWS Config {short(event.name)} ({short(target)}) by {event.actor()}"


_SECURITY_SERVICE_OFF: dict[str, frozenset[str]] = {
    "DisableSecurityHub": frozenset({"securityhub.amazonaws.com"}),
    "BatchDisableStandards": frozenset({"securityhub.amazonaws.com"}),
    "DisableMacie": frozenset({"macie2.amazonaws.com", "macie.amazonaws.com"}),
    "UpdateMacieSession": frozenset({"macie2.amazonaws.com", "macie.amazonaws.com"}),
    "DisassociateFromAdministratorAccount": frozenset({"securityhub.amazonaws.com", "macie2.amazonaws.com"}),
    "DeleteAnalyzer": frozenset({"access-analyzer.amazonaws.com"}),
    "DeleteGraph": frozenset({"detective.amazonaws.com"}),
    "Disable": frozenset({"inspector2.amazonaws.com"}),
}


@rule(
    "security_service_disabled",
    title="Security Hub, Macie, Inspector, Detective or Access Analyzer off",
    technique="T1562.001",
    score=75,
    reason="{service} {eventName} by {actor}",
    runbook="Re-enable the service; find who turned it off and why.",
    events=_SECURITY_SERVICE_OFF,
    tests=[
        fires("Macie paused", call("UpdateMacieSession", "macie2", {"status": "PAUSED"})),
        near_miss(
            "Macie settings changed, still running",
            call("UpdateMacieSession", "macie2", {"findingPublishingFrequency": "SIX_HOURS"}),
        ),
        near_miss("the same call name on another service", call("DeleteGraph", "neptune-graph")),
    ],
)
def security_service_disabled(event: Event) -> str | None:
    if event.failed or event.source not in _SECURITY_SERVICE_OFF.get(event.name, ()):
        return None
    if event.name == "UpdateMacieSession" and event.text("requestParameters.status").upper() != "PAUSED":
        return None
    return f"{short(event.source.split('.')[0], 20)} {short(event.name)} by {event.actor()}"


@rule(
    "cloudwatch_alarms_disabled",
    title="CloudWatch alarms disabled or deleted",
    technique="T1562.001",
    score=55,
    reason="CloudWatch {eventName} on {alarms} by {actor}",
    runbook="Check which alarms went silent and restore them; alarms often guard security metrics.",
    events=["DisableAlarmActions", "DeleteAlarms"],
    sources=["monitoring"],
    tests=[
        fires(
            "alarm actions disabled",
            call("DisableAlarmActions", "monitoring", {"alarmNames": ["root-login"]}),
        ),
        near_miss(
            "the call was denied",
            call("DisableAlarmActions", "monitoring", {"alarmNames": ["root-login"]}, **DENIED),
        ),
    ],
)
def cloudwatch_alarms_disabled(event: Event) -> str | None:
    if event.failed:
        return None
    alarms = as_strings(event.params("alarmNames"))
    shown = short(", ".join(alarms[:3])) + (f" and {len(alarms) - 3} more" if len(alarms) > 3 else "")
    return f"CloudWatch {short(event.name)} on {shown} by {event.actor()}"


@rule(
    "ebs_default_encryption_disabled",
    title="EBS encryption by default disabled",
    technique="T1562.001",
    score=50,
    reason="EBS default encryption disabled by {actor}",
    runbook="Re-enable default EBS encryption for the region.",
    events=["DisableEbsEncryptionByDefault"],
    sources=["ec2"],
    tests=[
        fires("default encryption turned off", call("DisableEbsEncryptionByDefault", "ec2")),
        near_miss(
            "the call failed",
            call("DisableEbsEncryptionByDefault", "ec2", errorCode="Client.UnauthorizedOperation"),
        ),
    ],
)
def ebs_default_encryption_disabled(event: Event) -> str | None:
    return None if event.failed else f"EBS default encryption disabled by {event.actor()}"


@rule(
    "organizations_leave",
    title="Account left its AWS Organization",
    technique="T1666",
    score=85,
    reason="Account left its AWS Organization; called by {actor}",
    runbook="The account escaped organisation guardrails (SCPs, central logging): contact the owner immediately.",
    events=["LeaveOrganization"],
    sources=["organizations"],
    tests=[
        fires("account leaves", call("LeaveOrganization", "organizations")),
        near_miss("the attempt was denied", call("LeaveOrganization", "organizations", **DENIED)),
    ],
)
def organizations_leave(event: Event) -> str | None:
    return None if event.failed else f"Account left its AWS Organization; called by {event.actor()}"


@rule(
    "organizations_leave_attempt",
    title="Attempt to leave the AWS Organization",
    technique="T1666",
    score=70,
    reason="Attempt to leave the AWS Organization by {actor}{failure}",
    runbook="Nobody leaves an organisation by accident: treat the caller's credentials as compromised until explained.",
    events=["LeaveOrganization"],
    sources=["organizations"],
    tests=[
        fires("denied attempt to leave", call("LeaveOrganization", "organizations", **DENIED)),
        near_miss("the account did leave (the other rule)", call("LeaveOrganization", "organizations")),
    ],
)
def organizations_leave_attempt(event: Event) -> str | None:
    if not event.failed:
        return None
    return f"Attempt to leave the AWS Organization by {event.actor()}{failure_note(event)}"


@rule(
    "iam_identity_provider_changed",
    title="SAML / OIDC identity provider created or changed",
    technique="T1484.002",
    score=70,
    reason="Identity provider {provider} changed ({eventName}) by {actor}",
    runbook="A new or changed identity provider can mint sessions for any role trusting it: verify with the IdP owners.",
    events=[
        "CreateSAMLProvider",
        "UpdateSAMLProvider",
        "CreateOpenIDConnectProvider",
        "UpdateOpenIDConnectProviderThumbprint",
        "AddClientIDToOpenIDConnectProvider",
    ],
    sources=["iam"],
    tests=[
        fires(
            "SAML provider created by a role",
            call("CreateSAMLProvider", "iam", {"name": "okta"}, userIdentity=ROLE),
        ),
        near_miss(
            "IAM Identity Center creates its own provider",
            call(
                "CreateSAMLProvider",
                "iam",
                {"name": "AWSSSO_abc_DO_NOT_DELETE"},
                userIdentity={
                    **ROLE,
                    "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/AWSServiceRoleForSSO/AWS-SSO",
                },
            ),
        ),
    ],
)
def iam_identity_provider_changed(event: Event) -> str | None:
    if event.failed or "AWSServiceRoleForSSO" in event.text("userIdentity.arn")[:400]:
        return None  # IAM Identity Center manages its own provider
    target = (
        event.text("requestParameters.name")
        or event.text("requestParameters.sAMLProviderArn")
        or event.text("requestParameters.url")
        or event.text("requestParameters.openIDConnectProviderArn")
    )
    return f"Identity provider {short(target)} changed ({short(event.name)}) by {event.actor()}"


_PUBLIC_ACCESS_FLAGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
_BLOCK_ALL = dict.fromkeys(_PUBLIC_ACCESS_FLAGS, True)  # for the cases


@rule(
    "s3_public_access_block_removed",
    title="S3 Block Public Access removed or loosened",
    technique="T1562",
    score=65,
    reason="S3 Block Public Access {removed|loosened} for {bucket X|account}{ (flags off)} by {actor}",
    runbook="Restore Block Public Access; then look for ACL or policy changes that make data public.",
    events=[
        "DeleteBucketPublicAccessBlock",
        "PutBucketPublicAccessBlock",
        "DeleteAccountPublicAccessBlock",
        "PutAccountPublicAccessBlock",
        "DeletePublicAccessBlock",
        "PutPublicAccessBlock",
    ],
    sources=["s3", "s3control"],
    tests=[
        fires(
            "BlockPublicPolicy turned off",
            call(
                "PutBucketPublicAccessBlock",
                "s3",
                {
                    "bucketName": "reports",
                    "PublicAccessBlockConfiguration": {**_BLOCK_ALL, "BlockPublicPolicy": False},
                },
            ),
        ),
        near_miss(
            "all four flags kept on",
            call(
                "PutBucketPublicAccessBlock",
                "s3",
                {"bucketName": "reports", "PublicAccessBlockConfiguration": _BLOCK_ALL},
            ),
        ),
        fires("account-level block deleted", call("DeletePublicAccessBlock", "s3control")),
    ],
)
def s3_public_access_block_removed(event: Event) -> str | None:
    if event.failed:
        return None
    scope = (
        "bucket " + short(event.text("requestParameters.bucketName")) if "Bucket" in event.name else "account"
    )
    if event.name.startswith("Delete"):
        return f"S3 Block Public Access removed for {scope} by {event.actor()}"
    loosened = sorted(
        {
            key
            for node, _ in walk_params(event.parsed("requestParameters"))
            for key, value in node.items()
            if key in _PUBLIC_ACCESS_FLAGS and is_false(value)
        }
    )
    if not loosened:
        return None
    return f"S3 Block Public Access loosened for {scope} ({', '.join(loosened)} off) by {event.actor()}"


@rule(
    "rds_made_public",
    title="RDS database made publicly accessible",
    technique="T1562.007",
    score=65,
    reason="RDS database {database} made publicly accessible ({eventName}) by {actor}",
    runbook="Turn public accessibility off unless the database must be reachable from the internet; check its SG.",
    events=[
        "ModifyDBInstance",
        "ModifyDBCluster",
        "RestoreDBInstanceFromDBSnapshot",
        "RestoreDBClusterFromSnapshot",
    ],
    sources=["rds"],
    tests=[
        fires(
            "instance made public",
            call("ModifyDBInstance", "rds", {"dBInstanceIdentifier": "db", "publiclyAccessible": True}),
        ),
        near_miss(
            "instance made private",
            call("ModifyDBInstance", "rds", {"dBInstanceIdentifier": "db", "publiclyAccessible": False}),
        ),
    ],
)
def rds_made_public(event: Event) -> str | None:
    if event.failed or not is_true(event.params("publiclyAccessible")):
        return None
    target = event.text("requestParameters.dBInstanceIdentifier") or event.text(
        "requestParameters.dBClusterIdentifier"
    )
    return f"RDS database {short(target)} made publicly accessible ({short(event.name)}) by {event.actor()}"


@rule(
    "security_group_admin_port_open",
    title="Security group opens SSH/RDP (or all ports) to the internet",
    technique="T1562.007",
    score=80,
    reason="Security group {group} opened {port or all ports} from {cidr} by {actor}",
    runbook="Revoke the 0.0.0.0/0 rule; use SSM Session Manager or a bastion with a narrow CIDR instead.",
    events=["AuthorizeSecurityGroupIngress"],
    sources=["ec2"],
    tests=[
        fires(
            "SSH open to 0.0.0.0/0", call("AuthorizeSecurityGroupIngress", "ec2", sg_ingress("0.0.0.0/0", 22))
        ),
        near_miss(
            "SSH open to 10.0.0.0/8",
            call("AuthorizeSecurityGroupIngress", "ec2", sg_ingress("10.0.0.0/8", 22)),
        ),
        fires(
            "RDP open to ::/0",
            call("AuthorizeSecurityGroupIngress", "ec2", sg_ingress("::/0", 3389, key="cidrIpv6")),
        ),
        fires(
            "Stratus's flat shape with a scrambled /0",
            call(
                "AuthorizeSecurityGroupIngress",
                "ec2",
                {
                    "groupId": "sg-1",
                    "cidrIp": "208.236.235.254/0",
                    "fromPort": 22,
                    "toPort": 22,
                    "ipProtocol": "tcp",
                },
            ),
        ),
        fires(
            "all protocols open",
            call(
                "AuthorizeSecurityGroupIngress",
                "ec2",
                {
                    "groupId": "sg-1",
                    "ipPermissions": {
                        "items": [{"ipProtocol": "-1", "ipRanges": {"items": [{"cidrIp": "0.0.0.0/0"}]}}]
                    },
                },
            ),
        ),
    ],
)
def security_group_admin_port_open(event: Event) -> str | None:
    exposed = (
        []
        if event.failed
        else [r for r in open_ingress(event.parsed("requestParameters")) if exposes_admin_port(r)]
    )
    if not exposed:
        return None
    group = short(event.text("requestParameters.groupId") or event.text("requestParameters.groupName"))
    return f"Security group {group} opened {describe_port(exposed[0])} by {event.actor()}"


@rule(
    "security_group_open_world",
    title="Security group opens a port to the internet",
    technique="T1562.007",
    score=50,
    reason="Security group {group} opened {port} from {cidr} by {actor}",
    runbook="Check the port should be public (a web front end); otherwise narrow the CIDR.",
    events=["AuthorizeSecurityGroupIngress"],
    sources=["ec2"],
    tests=[
        fires(
            "HTTPS open to 0.0.0.0/0",
            call("AuthorizeSecurityGroupIngress", "ec2", sg_ingress("0.0.0.0/0", 443)),
        ),
        near_miss(
            "HTTPS open to 10.0.0.0/8",
            call("AuthorizeSecurityGroupIngress", "ec2", sg_ingress("10.0.0.0/8", 443)),
        ),
        near_miss(
            "SSH open to the world (the admin-port rule)",
            call("AuthorizeSecurityGroupIngress", "ec2", sg_ingress("0.0.0.0/0", 22)),
        ),
    ],
)
def security_group_open_world(event: Event) -> str | None:
    exposed = [] if event.failed else open_ingress(event.parsed("requestParameters"))
    if not exposed or any(exposes_admin_port(r) for r in exposed):
        return None  # the admin-port rule scores those
    group = short(event.text("requestParameters.groupId") or event.text("requestParameters.groupName"))
    return f"Security group {group} opened {describe_port(exposed[0])} by {event.actor()}"


@rule(
    "nacl_open_world",
    title="Network ACL allows inbound traffic from the internet",
    technique="T1562.007",
    score=55,
    reason="Network ACL {acl} allows inbound from {cidr} by {actor}",
    runbook="Check the subnet should accept internet traffic on these ports; narrow the entry otherwise.",
    events=["CreateNetworkAclEntry", "ReplaceNetworkAclEntry"],
    sources=["ec2"],
    tests=[
        fires(
            "inbound allow from 0.0.0.0/0",
            call(
                "CreateNetworkAclEntry",
                "ec2",
                {"networkAclId": "acl-1", "egress": False, "ruleAction": "allow", "cidrBlock": "0.0.0.0/0"},
            ),
        ),
        near_miss(
            "inbound allow from one address",
            call(
                "CreateNetworkAclEntry",
                "ec2",
                {
                    "networkAclId": "acl-1",
                    "egress": False,
                    "ruleAction": "allow",
                    "cidrBlock": "203.0.113.5/32",
                },
            ),
        ),
    ],
)
def nacl_open_world(event: Event) -> str | None:
    if (
        event.failed
        or is_true(event.params("egress"))
        or event.text("requestParameters.ruleAction").lower() != "allow"
    ):
        return None
    cidr = event.text("requestParameters.cidrBlock") or event.text("requestParameters.ipv6CidrBlock")
    if not cidr.strip().endswith("/0"):
        return None
    acl = short(event.text("requestParameters.networkAclId"))
    return f"Network ACL {acl} allows inbound from {short(cidr, 45)} by {event.actor()}"


@rule(
    "vpc_network_change",
    title="VPC routing or gateway changed",
    technique="T1562.007",
    score=25,
    reason="{eventName} by {actor}",
    runbook="Routine for network admins; check it matches a change request when the caller is unusual.",
    events=[
        "CreateRoute",
        "ReplaceRoute",
        "AttachInternetGateway",
        "CreateVpcPeeringConnection",
        "AcceptVpcPeeringConnection",
        "DeleteNetworkAcl",
        "DeleteNetworkAclEntry",
        "ReplaceNetworkAclAssociation",
    ],
    sources=["ec2"],
    tests=[
        fires("route created", call("CreateRoute", "ec2", {"routeTableId": "rtb-1"})),
        near_miss(
            "the call failed",
            call(
                "CreateRoute",
                "ec2",
                {"routeTableId": "rtb-1"},
                errorCode="Client.InvalidRouteTableID.NotFound",
            ),
        ),
    ],
)
def vpc_network_change(event: Event) -> str | None:
    return None if event.failed else f"{short(event.name)} by {event.actor()}"


@rule(
    "region_enabled",
    title="Opt-in AWS region enabled",
    technique="T1535",
    score=45,
    reason="Region {region} enabled by {actor}",
    runbook="Attackers enable unused regions to hide resources: confirm the business needs the region.",
    events=["EnableRegion"],
    tests=[
        fires("me-central-1 enabled", call("EnableRegion", "account", {"RegionName": "me-central-1"})),
        near_miss(
            "the call was denied", call("EnableRegion", "account", {"RegionName": "me-central-1"}, **DENIED)
        ),
    ],
)
def region_enabled(event: Event) -> str | None:
    if event.failed:
        return None
    region = event.text("requestParameters.RegionName") or event.text("requestParameters.regionName")
    return f"Region {short(region, 32)} enabled by {event.actor()}"


# --- added for GuardDuty parity (issue 16) -----------------------------------------------------------------


@rule(
    "ebs_snapshot_created",
    title="EBS snapshot created by a person",
    technique="T1578.001",
    score=25,
    reason="Snapshot of {volume} created by {actor}",
    runbook="Backups are made by AWS Backup or automation; a person snapshotting a disk may be about to copy or "
    "share it: check what the volume holds and what happens to the snapshot next.",
    events=["CreateSnapshot", "CreateSnapshots"],
    identity_types=["IAMUser", "Root", "AssumedRole"],
    sources=["ec2"],
    tests=[
        fires("a user snapshots a volume", call("CreateSnapshot", "ec2", {"volumeId": "vol-0abc"})),
        near_miss(
            "AWS Backup snapshots a volume",
            call(
                "CreateSnapshot",
                "ec2",
                {"volumeId": "vol-0abc"},
                userIdentity={
                    **ROLE,
                    "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/AWSBackupDefaultServiceRole/AWSBackup-1",
                },
            ),
        ),  # fmt: skip
    ],
)
def ebs_snapshot_created(event: Event) -> str | None:
    if (
        event.failed
        or event.text("userIdentity.invokedBy")
        or "AWSBackup" in event.text("userIdentity.arn")[:300]
    ):
        return None
    volume = event.text("requestParameters.volumeId") or event.text(
        "requestParameters.instanceSpecification.instanceId"
    )
    return f"Snapshot of {short(volume or '?')} created by {event.actor()}"
