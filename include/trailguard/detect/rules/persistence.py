"""Persistence and privilege escalation (TA0003, TA0004): IAM users, keys, policies, trust and identity providers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trailguard.detect.event import Event, is_true, short
from trailguard.detect.policy import accounts_text, is_admin_statement, statements, trust_exposure
from trailguard.detect.registry import frame_rule, rule

# --- IAM privilege and persistence ----------------------------------------------------------------


def _admin_policy_arn(arn: str) -> bool:
    name = arn.rpartition("/")[2].lower()
    return "administratoraccess" in name or name == "iamfullaccess"


@rule(
    "iam_admin_policy_attached", "T1098.003", 85, "Administrator policy attached",
    "Confirm the grant through change management; otherwise detach it and review the principal's actions.",
    events=["AttachUserPolicy", "AttachRolePolicy", "AttachGroupPolicy"], sources=["iam"],
)  # fmt: skip
def iam_admin_policy_attached(event: Event) -> str | None:
    arn = event.text("requestParameters.policyArn")
    if event.failed or not _admin_policy_arn(arn):
        return None
    kind = event.name.removeprefix("Attach").removesuffix("Policy").lower()
    target = event.text(f"requestParameters.{kind}Name")
    return f"{short(arn.rpartition('/')[2])} attached to {kind} {short(target)} by {event.actor()}"


@rule(
    "iam_compromised_key_quarantine", "T1552.001", 80, "AWS quarantined a leaked access key",
    "AWS found the user's key exposed in public (e.g. a code repository): rotate the key, review its recent use.",
    events=["AttachUserPolicy"], sources=["iam"],
)  # fmt: skip
def iam_compromised_key_quarantine(event: Event) -> str | None:
    arn = event.text("requestParameters.policyArn")
    if event.failed or not arn.rpartition("/")[2].startswith("AWSCompromisedKeyQuarantine"):
        return None
    return f"Leaked-key quarantine policy attached to user {short(event.text('requestParameters.userName'))}"


@rule(
    "iam_admin_inline_policy", "T1098.003", 85, "Inline or new policy version grants every action",
    "Read the policy document; remove the wildcard grant unless it is an approved break-glass role.",
    events=["PutUserPolicy", "PutRolePolicy", "PutGroupPolicy", "CreatePolicyVersion"], sources=["iam"],
)  # fmt: skip
def iam_admin_inline_policy(event: Event) -> str | None:
    if event.failed or not any(is_admin_statement(s) for s in statements(event.params("policyDocument"))):
        return None
    target = (
        event.text("requestParameters.userName")
        or event.text("requestParameters.roleName")
        or event.text("requestParameters.groupName")
        or event.text("requestParameters.policyArn")
    )
    return (
        f"{short(event.name)} grants every action on every resource to {short(target)}; by {event.actor()}"
    )


@rule(
    "iam_admin_group_membership", "T1098.003", 75, "User added to an admin group",
    "Confirm the membership was requested; otherwise remove the user and review its recent activity.",
    events=["AddUserToGroup"], sources=["iam"],
)  # fmt: skip
def iam_admin_group_membership(event: Event) -> str | None:
    group = event.text("requestParameters.groupName")
    if event.failed or "admin" not in group.lower():
        return None
    user = short(event.text("requestParameters.userName"))
    return f"User {user} added to group {short(group)} by {event.actor()}"


@rule(
    "iam_access_key_for_other_user", "T1098.001", 80, "Access key created for another user",
    "Ask the key's user whether they wanted it; a key made by someone else is a classic backdoor. Delete if not.",
    events=["CreateAccessKey"], sources=["iam"],
)  # fmt: skip
def iam_access_key_for_other_user(event: Event) -> str | None:
    target = event.text("requestParameters.userName")
    if event.failed or not target or target == event.caller_name():
        return None
    return f"Access key created for user {short(target)} by {event.actor()}"


@rule(
    "iam_login_profile_for_other_user", "T1098.001", 75, "Console password set for another user",
    "Ask the user; a password set by someone else (without forced reset) lets that person sign in as them.",
    events=["CreateLoginProfile", "UpdateLoginProfile"], sources=["iam"],
)  # fmt: skip
def iam_login_profile_for_other_user(event: Event) -> str | None:
    target = event.text("requestParameters.userName")
    if event.failed or not target or target == event.caller_name():
        return None
    if event.name == "UpdateLoginProfile" and is_true(event.params("passwordResetRequired")):
        return None  # an administrator's password reset: the user must choose a new one
    verb = "created" if event.name == "CreateLoginProfile" else "changed"
    return f"Console password {verb} for user {short(target)} by {event.actor()}"


@rule(
    "iam_user_created", "T1136.003", 45, "IAM user created",
    "New IAM users should come from provisioning: check the creator and whether keys or admin rights follow.",
    events=["CreateUser"], sources=["iam"],
)  # fmt: skip
def iam_user_created(event: Event) -> str | None:
    if event.failed:
        return None
    return f"IAM user {short(event.text('requestParameters.userName'))} created by {event.actor()}"


@rule(
    "iam_role_trust_backdoor", "T1098.003", 85, "Role trust policy opened to another account or anyone",
    "Compare with the previous trust policy; remove unknown principals and review who assumed the role since.",
    events=["UpdateAssumeRolePolicy"], sources=["iam"],
)  # fmt: skip
def iam_role_trust_backdoor(event: Event) -> str | None:
    exposed = [] if event.failed else trust_exposure(event.params("policyDocument"), event.account)
    if not exposed:
        return None
    role = short(event.text("requestParameters.roleName"))
    return f"Role {role} now trusts {accounts_text(exposed)}; changed by {event.actor()}"


@rule(
    "iam_role_created_external_trust", "T1098.003", 70, "Role created that another account can assume",
    "Vendor integrations do this, attackers too: confirm the trusted account belongs to a known vendor.",
    events=["CreateRole"], sources=["iam"],
)  # fmt: skip
def iam_role_created_external_trust(event: Event) -> str | None:
    exposed = [] if event.failed else trust_exposure(event.params("assumeRolePolicyDocument"), event.account)
    if not exposed:
        return None
    role = short(event.text("requestParameters.roleName"))
    return f"Role {role} created trusting {accounts_text(exposed)} by {event.actor()}"


@rule(
    "iam_mfa_removed", "T1556.006", 55, "MFA device deactivated or deleted",
    "Confirm the user replaced the device; otherwise re-enrol MFA and check recent sign-ins.",
    events=["DeactivateMFADevice", "DeleteVirtualMFADevice"], sources=["iam"],
)  # fmt: skip
def iam_mfa_removed(event: Event) -> str | None:
    if event.failed:
        return None
    target = event.text("requestParameters.userName") or event.text("requestParameters.serialNumber")
    return f"MFA removed ({short(event.name)}) for {short(target)} by {event.actor()}"


@rule(
    "iam_identity_provider_changed", "T1484.002", 70, "SAML / OIDC identity provider created or changed",
    "A new or changed identity provider can mint sessions for any role trusting it: verify with the IdP owners.",
    events=[
        "CreateSAMLProvider", "UpdateSAMLProvider", "CreateOpenIDConnectProvider",
        "UpdateOpenIDConnectProviderThumbprint", "AddClientIDToOpenIDConnectProvider",
    ],
    sources=["iam"],
)  # fmt: skip
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


@rule(
    "rolesanywhere_trust_anchor", "T1098.001", 75, "IAM Roles Anywhere trust anchor created or changed",
    "A trust anchor lets holders of certificates from that CA get role credentials: confirm the CA is yours.",
    events=["CreateTrustAnchor", "UpdateTrustAnchor"], sources=["rolesanywhere"],
)  # fmt: skip
def rolesanywhere_trust_anchor(event: Event) -> str | None:
    if event.failed:
        return None
    return (
        f"Roles Anywhere trust anchor {short(event.text('requestParameters.name'))} set by {event.actor()}"
    )




# --- added for GuardDuty parity (issue 16): keys for oneself, SSH key pairs, instance profiles, ----------------
# --- PassRole, password policy -----------------------------------------------------------------------------


@rule(
    "iam_access_key_created_for_self", "T1098.001", 30, "Access key created by a user for themselves",
    "Routine rotation from the user's usual network; a second active key, or one made from a new network or "
    "client, is how a stolen session keeps access after the password changes.",
    events=["CreateAccessKey"], identity_types=["IAMUser"], sources=["iam"],
)  # fmt: skip
def iam_access_key_created_for_self(event: Event) -> str | None:
    target = event.text("requestParameters.userName")
    if event.failed or (target and target != event.caller_name()):
        return None
    return f"Access key created by {short(event.caller_name())} for themselves from {event.ip()}"


@rule(
    "ec2_key_pair_created", "T1098.004", 45, "EC2 key pair created or imported",
    "An SSH key pair gives shell access to every instance launched with it: confirm the owner, delete unknown "
    "key pairs and check the instances using them.",
    events=["CreateKeyPair", "ImportKeyPair"], sources=["ec2"],
)  # fmt: skip
def ec2_key_pair_created(event: Event) -> str | None:
    if event.failed:
        return None
    verb = "imported" if event.name == "ImportKeyPair" else "created"
    return f"EC2 key pair {short(event.text('requestParameters.keyName'), 60)} {verb} by {event.actor()}"


@rule(
    "ec2_instance_profile_attached", "T1098.003", 50, "Instance profile attached to a running instance",
    "Attaching a role to an instance passes the role (iam:PassRole) to whoever controls the instance: confirm "
    "the change; an attacker attaches a powerful role to an instance they can reach.",
    events=["AssociateIamInstanceProfile", "ReplaceIamInstanceProfileAssociation"], sources=["ec2"],
)  # fmt: skip
def ec2_instance_profile_attached(event: Event) -> str | None:
    if event.failed:
        return None
    profile = event.text("requestParameters.AssociateIamInstanceProfileRequest.IamInstanceProfile.Arn") or \
        event.text("requestParameters.ReplaceIamInstanceProfileAssociationRequest.IamInstanceProfile.Arn") or \
        event.text("requestParameters.iamInstanceProfile.arn") or event.text("requestParameters.iamInstanceProfile.name")
    instance = event.text("requestParameters.AssociateIamInstanceProfileRequest.InstanceId") or \
        event.text("requestParameters.instanceId")
    return (f"Instance profile {short(profile or 'unknown', 120)} attached to instance {short(instance or '?', 30)} "
            f"by {event.actor()}")  # fmt: skip


_PASS_ROLE_EVENTS = (
    "RunInstances", "AssociateIamInstanceProfile", "ReplaceIamInstanceProfileAssociation", "CreateFunction20150331",
    "UpdateFunctionConfiguration20150331v2", "CreateStack", "UpdateStack", "CreateDevEndpoint", "CreateJob",
    "CreateNotebookInstance", "CreateTrainingJob", "CreateCluster", "RegisterTaskDefinition", "CreateLaunchTemplate",
    "CreateLaunchTemplateVersion", "CreatePipeline", "CreateStateMachine", "CreateProject", "StartBuild",
)  # fmt: skip


@rule(
    "iam_pass_role_denied", "T1098.003", 55, "Denied attempt to pass a role (iam:PassRole)",
    "Someone tried to hand a role to a service they control and was refused: a classic privilege escalation "
    "probe. Ask the caller what they meant to do; repeated attempts with different roles are hostile.",
    events=_PASS_ROLE_EVENTS,
)  # fmt: skip
def iam_pass_role_denied(event: Event) -> str | None:
    message = event.text("errorMessage")[:2000]
    if "iam:PassRole" not in message:
        return None
    role = next((w for w in message.split() if ":role/" in w), "a role")
    return f"{short(event.name)} by {event.actor()} refused iam:PassRole on {short(role.strip('.,'), 120)}"


def _weak_password_policy(event: Event) -> list[str]:
    weak = []
    length = event.params("minimumPasswordLength")
    if isinstance(length, (int, float)) and length < 14:
        weak.append(f"minimum length {int(length)}")
    for key in ("requireSymbols", "requireNumbers", "requireUppercaseCharacters", "requireLowercaseCharacters"):
        if event.params(key) is False:
            weak.append(f"{key} off")
    if event.params("passwordReusePrevention") is None and event.params("maxPasswordAge") is None:
        weak.append("no reuse prevention or expiry")
    return weak


@rule(
    "iam_password_policy_changed", "T1556", 45, "Account password policy changed or deleted",
    "Confirm the change with the account's owners; a weaker or deleted policy makes password guessing easier "
    "and is a known step before persistence (GuardDuty: Stealth:IAMUser/PasswordPolicyChange).",
    events=["UpdateAccountPasswordPolicy", "DeleteAccountPasswordPolicy"], sources=["iam"],
)  # fmt: skip
def iam_password_policy_changed(event: Event) -> str | None:
    if event.failed:
        return None
    if event.name == "DeleteAccountPasswordPolicy":
        return f"Account password policy deleted by {event.actor()}"
    weak = _weak_password_policy(event)
    return f"Account password policy changed by {event.actor()}" + (f" ({', '.join(weak)})" if weak else "")


def _rows_named(df: pd.DataFrame, names: tuple[str, ...]) -> np.ndarray:
    if "eventName" not in df:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(df["eventName"].isin(names).to_numpy(dtype=bool))


@frame_rule(
    "iam_user_added_to_privileged_group", "T1098.003", 80, "User added to a group that grants admin rights",
    "The group's name does not say admin but a policy attached the same day grants every action: confirm the "
    "membership and the grant; remove both if nobody asked for them.",
)  # fmt: skip
def iam_user_added_to_privileged_group(df: pd.DataFrame) -> list[tuple[int, str]]:
    grants = _rows_named(df, ("AttachGroupPolicy", "PutGroupPolicy"))
    adds = _rows_named(df, ("AddUserToGroup",))
    if not len(grants) or not len(adds):
        return []
    admin_groups: dict[tuple[str, str], str] = {}
    for position in grants:
        event = Event(df.iloc[int(position)].to_dict())
        if event.failed:
            continue
        group = event.text("requestParameters.groupName")
        arn = event.text("requestParameters.policyArn")
        if _admin_policy_arn(arn) or any(is_admin_statement(s) for s in statements(event.params("policyDocument"))):
            admin_groups[(event.account, group)] = short(arn.rpartition("/")[2] or "an inline policy granting *", 60)
    hits = []
    for position in adds:
        event = Event(df.iloc[int(position)].to_dict())
        group = event.text("requestParameters.groupName")
        grant = admin_groups.get((event.account, group))
        if event.failed or grant is None or "admin" in group.lower():  # named admin: iam_admin_group_membership
            continue
        hits.append((int(position), f"User {short(event.text('requestParameters.userName'))} added to group "
                     f"{short(group)}, which was given {grant} the same day; by {event.actor()}"))  # fmt: skip
    return hits
