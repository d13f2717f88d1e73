"""Persistence and privilege escalation (TA0003, TA0004): IAM users, keys, policies, trust and identity providers.
"""

from __future__ import annotations

from trailguard.detect.event import Event, is_true, short
from trailguard.detect.policy import accounts_text, is_admin_statement, statements, trust_exposure
from trailguard.detect.registry import rule

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


