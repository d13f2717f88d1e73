"""Defense evasion (TA0005): logging and security tooling turned off or weakened.
"""

from __future__ import annotations

import re

from trailguard.detect.event import Event, as_list, is_false, short
from trailguard.detect.policy import as_strings, failure_note
from trailguard.detect.registry import rule

# --- logging and security tooling -----------------------------------------------------------------


@rule(
    "cloudtrail_stopped", "T1562.008", 90, "CloudTrail logging stopped",
    "Restart logging (StartLogging) at once, then review what this principal did while the trail was off.",
    events=["StopLogging"], sources=["cloudtrail"],
)  # fmt: skip
def cloudtrail_stopped(event: Event) -> str | None:
    if event.failed:
        return None
    return f"CloudTrail logging stopped on trail {short(event.text('requestParameters.name'))} by {event.actor()}"


@rule(
    "cloudtrail_deleted", "T1562.008", 90, "CloudTrail trail or event data store deleted",
    "Recreate the trail or data store, then review this principal's activity from other log sources.",
    events=["DeleteTrail", "DeleteEventDataStore", "StopEventDataStoreIngestion"], sources=["cloudtrail"],
)  # fmt: skip
def cloudtrail_deleted(event: Event) -> str | None:
    if event.failed:
        return None
    target = event.text("requestParameters.name") or event.text("requestParameters.eventDataStore")
    what = "trail" if event.name == "DeleteTrail" else "event data store"
    verb = "ingestion stopped on" if event.name == "StopEventDataStoreIngestion" else "deleted:"
    return f"CloudTrail {what} {verb} {short(target)} by {event.actor()}"


@rule(
    "cloudtrail_trail_weakened", "T1562.008", 75, "CloudTrail trail scope reduced",
    "Restore multi-region, global-service and log-file-validation settings on the trail.",
    events=["UpdateTrail"], sources=["cloudtrail"],
)  # fmt: skip
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
    "cloudtrail_event_selectors_reduced", "T1562.008", 80, "CloudTrail event selectors reduce logging",
    "Restore management-event logging (read and write) on the trail; review activity since the change.",
    events=["PutEventSelectors"], sources=["cloudtrail"],
)  # fmt: skip
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
    "vpc_flow_logs_deleted", "T1562.008", 80, "VPC flow logs deleted",
    "Recreate the flow logs; network evidence since the deletion is lost, use other sources for the gap.",
    events=["DeleteFlowLogs"], sources=["ec2"],
)  # fmt: skip
def vpc_flow_logs_deleted(event: Event) -> str | None:
    if event.failed:
        return None
    found = re.search(r"fl-[0-9a-zA-Z]+", event.json_text("requestParameters")[:4096])
    return f"VPC flow logs {found.group(0) if found else '?'} deleted by {event.actor()}"


@rule(
    "dns_query_logs_deleted", "T1562.008", 80, "Route 53 resolver query logging deleted",
    "Recreate DNS query logging for the VPCs; DNS is how exfiltration and C2 are usually spotted.",
    events=["DeleteResolverQueryLogConfig", "DisassociateResolverQueryLogConfig"], sources=["route53resolver"],
)  # fmt: skip
def dns_query_logs_deleted(event: Event) -> str | None:
    if event.failed:
        return None
    config = short(event.text("requestParameters.resolverQueryLogConfigId"))
    return f"DNS query logging {config} removed ({short(event.name)}) by {event.actor()}"


@rule(
    "logs_deleted_or_disabled", "T1562.008", 60, "Log group deleted or service logging disabled",
    "Check the log source is expected to go away; restore logging and review what the gap hides.",
    events=["DeleteLogGroup", "DeleteModelInvocationLoggingConfiguration", "PutBucketLogging"],
    sources=["logs", "bedrock", "s3"],
)  # fmt: skip
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
    "guardduty_disabled", "T1562.001", 85, "GuardDuty detector deleted, disabled or detached",
    "Re-enable the detector / membership; threat findings during the gap are missing.",
    events=_GUARDDUTY_OFF, sources=["guardduty"],
)  # fmt: skip
def guardduty_disabled(event: Event) -> str | None:
    if event.failed or (event.name == "UpdateDetector" and not is_false(event.params("enable"))):
        return None
    detector = short(event.text("requestParameters.detectorId"))
    return f"GuardDuty {short(event.name)} on detector {detector} by {event.actor()}"


@rule(
    "guardduty_findings_suppressed", "T1562.001", 65, "GuardDuty findings suppressed or IPs trusted",
    "Review the filter / trusted IP list: an archive rule or trusted IP hides an attacker's findings.",
    events=["CreateFilter", "UpdateFilter", "CreateIPSet", "UpdateIPSet"], sources=["guardduty"],
)  # fmt: skip
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
    "config_recording_stopped", "T1562.001", 80, "AWS Config recorder stopped or deleted",
    "Restart the configuration recorder and delivery channel; configuration history has a gap.",
    events=["StopConfigurationRecorder", "DeleteConfigurationRecorder", "DeleteDeliveryChannel"],
    sources=["config"],
)  # fmt: skip
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
    "security_service_disabled", "T1562.001", 75, "Security Hub, Macie, Inspector, Detective or Access Analyzer off",
    "Re-enable the service; find who turned it off and why.",
    events=_SECURITY_SERVICE_OFF,
)  # fmt: skip
def security_service_disabled(event: Event) -> str | None:
    if event.failed or event.source not in _SECURITY_SERVICE_OFF.get(event.name, ()):
        return None
    if event.name == "UpdateMacieSession" and event.text("requestParameters.status").upper() != "PAUSED":
        return None
    return f"{short(event.source.split('.')[0], 20)} {short(event.name)} by {event.actor()}"


@rule(
    "cloudwatch_alarms_disabled", "T1562.001", 55, "CloudWatch alarms disabled or deleted",
    "Check which alarms went silent and restore them; alarms often guard security metrics.",
    events=["DisableAlarmActions", "DeleteAlarms"], sources=["monitoring"],
)  # fmt: skip
def cloudwatch_alarms_disabled(event: Event) -> str | None:
    if event.failed:
        return None
    alarms = as_strings(event.params("alarmNames"))
    shown = short(", ".join(alarms[:3])) + (f" and {len(alarms) - 3} more" if len(alarms) > 3 else "")
    return f"CloudWatch {short(event.name)} on {shown} by {event.actor()}"


@rule(
    "ebs_default_encryption_disabled", "T1562.001", 50, "EBS encryption by default disabled",
    "Re-enable default EBS encryption for the region.",
    events=["DisableEbsEncryptionByDefault"], sources=["ec2"],
)  # fmt: skip
def ebs_default_encryption_disabled(event: Event) -> str | None:
    return None if event.failed else f"EBS default encryption disabled by {event.actor()}"


@rule(
    "organizations_leave", "T1666", 85, "Account left its AWS Organization",
    "The account escaped organisation guardrails (SCPs, central logging): contact the owner immediately.",
    events=["LeaveOrganization"], sources=["organizations"],
)  # fmt: skip
def organizations_leave(event: Event) -> str | None:
    return None if event.failed else f"Account left its AWS Organization; called by {event.actor()}"


@rule(
    "organizations_leave_attempt", "T1666", 70, "Attempt to leave the AWS Organization",
    "Nobody leaves an organisation by accident: treat the caller's credentials as compromised until explained.",
    events=["LeaveOrganization"], sources=["organizations"],
)  # fmt: skip
def organizations_leave_attempt(event: Event) -> str | None:
    if not event.failed:
        return None
    return f"Attempt to leave the AWS Organization by {event.actor()}{failure_note(event)}"


