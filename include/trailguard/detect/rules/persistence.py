"""Persistence (TA0003): IAM users, keys, passwords, admin grants, role trust, identity providers, Lambda
backdoors. The account-manipulation rules (T1098) are privilege escalation (TA0004) too.
"""

from __future__ import annotations

from trailguard.detect.event import Event, is_true, short
from trailguard.detect.policy import accounts_text, as_strings, is_admin_statement, statements, trust_exposure
from trailguard.detect.registry import fires, near_miss, rule
from trailguard.detect.samples import (
    ACCOUNT,
    ADMIN_STATEMENT,
    DENIED,
    FOREIGN,
    ROLE,
    ROOT,
    call,
    policy,
    trust,
)


@rule(
    "root_access_key_created",
    title="Access key created for the root user",
    technique="T1098.001",
    score=90,
    reason="Access key created for the root user from {ip}",
    runbook="Delete the root access key now unless a documented break-glass procedure created it; rotate root password.",
    events=["CreateAccessKey"],
    identity_types=["Root"],
    sources=["iam"],
    tests=[
        fires("root creates a key for itself", call("CreateAccessKey", "iam", userIdentity=ROOT)),
        near_miss(
            "root creates a key for an IAM user",
            call("CreateAccessKey", "iam", {"userName": "bob"}, userIdentity=ROOT),
        ),
    ],
)
def root_access_key_created(event: Event) -> str | None:
    if event.failed or event.text("requestParameters.userName"):
        return None
    return f"Access key created for the root user from {event.ip()}"


@rule(
    "sts_federation_token",
    title="Federation token minted",
    technique="T1098.001",
    score=70,
    reason="Federation token '{name}' minted by {actor}{ with a policy allowing every action}",
    runbook="Federation tokens outlive the deletion of the key that minted them: confirm the use, else revoke sessions.",
    events=["GetFederationToken"],
    sources=["sts"],
    tests=[
        fires(
            "token minted with an admin policy",
            call("GetFederationToken", "sts", {"name": "x", "policy": policy(ADMIN_STATEMENT)}),
        ),
        near_miss("the call was denied", call("GetFederationToken", "sts", {"name": "x"}, **DENIED)),
    ],
)
def sts_federation_token(event: Event) -> str | None:
    if event.failed:
        return None
    broad = any(is_admin_statement(s) for s in statements(event.params("policy")))
    name = short(event.text("requestParameters.name"), 40)
    return f"Federation token '{name}' minted by {event.actor()}" + (
        " with a policy allowing every action" if broad else ""
    )


def _admin_policy_arn(arn: str) -> bool:
    name = arn.rpartition("/")[2].lower()
    return "administratoraccess" in name or name == "iamfullaccess"


@rule(
    "iam_admin_policy_attached",
    title="Administrator policy attached",
    technique="T1098.003",
    score=85,
    reason="{policy} attached to {user|role|group} {name} by {actor}",
    runbook="Confirm the grant through change management; otherwise detach it and review the principal's actions.",
    events=["AttachUserPolicy", "AttachRolePolicy", "AttachGroupPolicy"],
    sources=["iam"],
    tests=[
        fires(
            "AdministratorAccess attached to a user",
            call(
                "AttachUserPolicy",
                "iam",
                {"userName": "bob", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"},
            ),
        ),
        near_miss(
            "ReadOnlyAccess attached to a user",
            call(
                "AttachUserPolicy",
                "iam",
                {"userName": "bob", "policyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"},
            ),
        ),
    ],
)
def iam_admin_policy_attached(event: Event) -> str | None:
    arn = event.text("requestParameters.policyArn")
    if event.failed or not _admin_policy_arn(arn):
        return None
    kind = event.name.removeprefix("Attach").removesuffix("Policy").lower()
    target = event.text(f"requestParameters.{kind}Name")
    return f"{short(arn.rpartition('/')[2])} attached to {kind} {short(target)} by {event.actor()}"


@rule(
    "iam_admin_inline_policy",
    title="Inline or new policy version grants every action",
    technique="T1098.003",
    score=85,
    reason="{eventName} grants every action on every resource to {principal}; by {actor}",
    runbook="Read the policy document; remove the wildcard grant unless it is an approved break-glass role.",
    events=["PutUserPolicy", "PutRolePolicy", "PutGroupPolicy", "CreatePolicyVersion"],
    sources=["iam"],
    tests=[
        fires(
            "inline policy allows * on *",
            call(
                "PutUserPolicy",
                "iam",
                {"userName": "bob", "policyName": "p", "policyDocument": policy(ADMIN_STATEMENT)},
            ),
        ),
        near_miss(
            "inline policy denies * on *",
            call(
                "PutUserPolicy",
                "iam",
                {
                    "userName": "bob",
                    "policyName": "p",
                    "policyDocument": policy({**ADMIN_STATEMENT, "Effect": "Deny"}),
                },
            ),
        ),
    ],
)
def iam_admin_inline_policy(event: Event) -> str | None:
    if event.failed or not any(is_admin_statement(s) for s in statements(event.params("policyDocument"))):
        return None
    target = (
        event.text("requestParameters.userName")
        or event.text("requestParameters.roleName")
        or event.text("requestParameters.groupName")
        or event.text("requestParameters.policyArn")
    )
    return f"{short(event.name)} grants every action on every resource to {short(target)}; by {event.actor()}"


@rule(
    "iam_admin_group_membership",
    title="User added to an admin group",
    technique="T1098.003",
    score=75,
    reason="User {user} added to group {group} by {actor}",
    runbook="Confirm the membership was requested; otherwise remove the user and review its recent activity.",
    events=["AddUserToGroup"],
    sources=["iam"],
    tests=[
        fires(
            "user added to Admins", call("AddUserToGroup", "iam", {"groupName": "Admins", "userName": "bob"})
        ),
        near_miss(
            "user added to developers",
            call("AddUserToGroup", "iam", {"groupName": "developers", "userName": "bob"}),
        ),
    ],
)
def iam_admin_group_membership(event: Event) -> str | None:
    group = event.text("requestParameters.groupName")
    if event.failed or "admin" not in group.lower():
        return None
    user = short(event.text("requestParameters.userName"))
    return f"User {user} added to group {short(group)} by {event.actor()}"


@rule(
    "iam_access_key_for_other_user",
    title="Access key created for another user",
    technique="T1098.001",
    score=80,
    reason="Access key created for user {user} by {actor}",
    runbook="Ask the key's user whether they wanted it; a key made by someone else is a classic backdoor. Delete if not.",
    events=["CreateAccessKey"],
    sources=["iam"],
    tests=[
        fires("alice creates a key for bob", call("CreateAccessKey", "iam", {"userName": "bob"})),
        near_miss("alice creates a key for herself", call("CreateAccessKey", "iam", {"userName": "alice"})),
        near_miss("a key without a user name (the caller's own)", call("CreateAccessKey", "iam", None)),
    ],
)
def iam_access_key_for_other_user(event: Event) -> str | None:
    target = event.text("requestParameters.userName")
    if event.failed or not target or target == event.caller_name():
        return None
    return f"Access key created for user {short(target)} by {event.actor()}"


@rule(
    "iam_login_profile_for_other_user",
    title="Console password set for another user",
    technique="T1098.001",
    score=75,
    reason="Console password {created|changed} for user {user} by {actor}",
    runbook="Ask the user; a password set by someone else (without forced reset) lets that person sign in as them.",
    events=["CreateLoginProfile", "UpdateLoginProfile"],
    sources=["iam"],
    tests=[
        fires(
            "alice sets bob's password",
            call("CreateLoginProfile", "iam", {"userName": "bob", "passwordResetRequired": False}),
        ),
        near_miss(
            "an admin resets bob's password (must change it)",
            call("UpdateLoginProfile", "iam", {"userName": "bob", "passwordResetRequired": True}),
        ),
        near_miss(
            "a role session named alice sets her own password",
            call(
                "UpdateLoginProfile",
                "iam",
                {"userName": "alice"},
                userIdentity={**ROLE, "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/IAM/alice"},
            ),
        ),
    ],
)
def iam_login_profile_for_other_user(event: Event) -> str | None:
    target = event.text("requestParameters.userName")
    if event.failed or not target or target == event.caller_name():
        return None
    if event.name == "UpdateLoginProfile" and is_true(event.params("passwordResetRequired")):
        return None  # an administrator's password reset: the user must choose a new one
    verb = "created" if event.name == "CreateLoginProfile" else "changed"
    return f"Console password {verb} for user {short(target)} by {event.actor()}"


@rule(
    "iam_user_created",
    title="IAM user created",
    technique="T1136.003",
    score=45,
    reason="IAM user {user} created by {actor}",
    runbook="New IAM users should come from provisioning: check the creator and whether keys or admin rights follow.",
    events=["CreateUser"],
    sources=["iam"],
    tests=[
        fires("user created", call("CreateUser", "iam", {"userName": "bob"})),
        near_miss(
            "the user already existed",
            call("CreateUser", "iam", {"userName": "bob"}, errorCode="EntityAlreadyExists"),
        ),
    ],
)
def iam_user_created(event: Event) -> str | None:
    if event.failed:
        return None
    return f"IAM user {short(event.text('requestParameters.userName'))} created by {event.actor()}"


@rule(
    "iam_role_trust_backdoor",
    title="Role trust policy opened to another account or anyone",
    technique="T1098.003",
    score=85,
    reason="Role {role} now trusts {accounts or anyone}; changed by {actor}",
    runbook="Compare with the previous trust policy; remove unknown principals and review who assumed the role since.",
    events=["UpdateAssumeRolePolicy"],
    sources=["iam"],
    tests=[
        fires(
            "trust opened to a foreign account",
            call(
                "UpdateAssumeRolePolicy",
                "iam",
                {"roleName": "ops", "policyDocument": trust({"AWS": f"arn:aws:iam::{FOREIGN}:root"})},
            ),
        ),
        near_miss(
            "trust given to a role of the same account",
            call(
                "UpdateAssumeRolePolicy",
                "iam",
                {"roleName": "ops", "policyDocument": trust({"AWS": f"arn:aws:iam::{ACCOUNT}:role/ops"})},
            ),
        ),
    ],
)
def iam_role_trust_backdoor(event: Event) -> str | None:
    exposed = [] if event.failed else trust_exposure(event.params("policyDocument"), event.account)
    if not exposed:
        return None
    role = short(event.text("requestParameters.roleName"))
    return f"Role {role} now trusts {accounts_text(exposed)}; changed by {event.actor()}"


@rule(
    "iam_role_created_external_trust",
    title="Role created that another account can assume",
    technique="T1098.003",
    score=70,
    reason="Role {role} created trusting {accounts or anyone} by {actor}",
    runbook="Vendor integrations do this, attackers too: confirm the trusted account belongs to a known vendor.",
    events=["CreateRole"],
    sources=["iam"],
    tests=[
        fires(
            "role trusting a foreign account",
            call(
                "CreateRole",
                "iam",
                {
                    "roleName": "vendor",
                    "assumeRolePolicyDocument": trust({"AWS": f"arn:aws:iam::{FOREIGN}:root"}),
                },
            ),
        ),
        near_miss(
            "role trusting the EC2 service",
            call(
                "CreateRole",
                "iam",
                {"roleName": "web", "assumeRolePolicyDocument": trust({"Service": "ec2.amazonaws.com"})},
            ),
        ),
    ],
)
def iam_role_created_external_trust(event: Event) -> str | None:
    exposed = [] if event.failed else trust_exposure(event.params("assumeRolePolicyDocument"), event.account)
    if not exposed:
        return None
    role = short(event.text("requestParameters.roleName"))
    return f"Role {role} created trusting {accounts_text(exposed)} by {event.actor()}"


@rule(
    "iam_mfa_removed",
    title="MFA device deactivated or deleted",
    technique="T1556.006",
    score=55,
    reason="MFA removed ({eventName}) for {user or device} by {actor}",
    runbook="Confirm the user replaced the device; otherwise re-enrol MFA and check recent sign-ins.",
    events=["DeactivateMFADevice", "DeleteVirtualMFADevice"],
    sources=["iam"],
    tests=[
        fires(
            "MFA device deactivated",
            call("DeactivateMFADevice", "iam", {"userName": "bob", "serialNumber": "arn:mfa"}),
        ),
        near_miss("the call was denied", call("DeactivateMFADevice", "iam", {"userName": "bob"}, **DENIED)),
    ],
)
def iam_mfa_removed(event: Event) -> str | None:
    if event.failed:
        return None
    target = event.text("requestParameters.userName") or event.text("requestParameters.serialNumber")
    return f"MFA removed ({short(event.name)}) for {short(target)} by {event.actor()}"


@rule(
    "rolesanywhere_trust_anchor",
    title="IAM Roles Anywhere trust anchor created or changed",
    technique="T1098.001",
    score=75,
    reason="Roles Anywhere trust anchor {name} set by {actor}",
    runbook="A trust anchor lets holders of certificates from that CA get role credentials: confirm the CA is yours.",
    events=["CreateTrustAnchor", "UpdateTrustAnchor"],
    sources=["rolesanywhere"],
    tests=[
        fires("trust anchor created", call("CreateTrustAnchor", "rolesanywhere", {"name": "ca"})),
        near_miss(
            "the call was denied", call("CreateTrustAnchor", "rolesanywhere", {"name": "ca"}, **DENIED)
        ),
    ],
)
def rolesanywhere_trust_anchor(event: Event) -> str | None:
    if event.failed:
        return None
    return f"Roles Anywhere trust anchor {short(event.text('requestParameters.name'))} set by {event.actor()}"


_LAMBDA_PERMISSION_EVENTS = ("AddPermission", "AddPermission20150331", "AddPermission20150331v2")

_LAMBDA_URL_EVENTS = (
    "CreateFunctionUrlConfig", "UpdateFunctionUrlConfig",
    "CreateFunctionUrlConfig20211031", "UpdateFunctionUrlConfig20211031",
)  # fmt: skip


@rule(
    "lambda_public_permission",
    title="Lambda function invocable by anyone",
    technique="T1546",
    score=80,
    reason="Lambda function {function} {made invocable by anyone|given a public URL (no auth)} by {actor}",
    runbook="Remove the public permission / NONE-auth URL; review invocations and the function's code and role.",
    events=[*_LAMBDA_PERMISSION_EVENTS, *_LAMBDA_URL_EVENTS],
    sources=["lambda"],
    tests=[
        fires(
            "permission for principal *",
            call(
                "AddPermission20150331v2",
                "lambda",
                {"functionName": "f", "principal": "*", "action": "lambda:InvokeFunction"},
            ),
        ),
        near_miss(
            "permission for the S3 service",
            call(
                "AddPermission20150331v2",
                "lambda",
                {"functionName": "f", "principal": "s3.amazonaws.com", "action": "lambda:InvokeFunction"},
            ),
        ),
        fires(
            "function URL without auth",
            call("CreateFunctionUrlConfig20211031", "lambda", {"functionName": "f", "authType": "NONE"}),
        ),
        near_miss(
            "function URL with IAM auth",
            call("CreateFunctionUrlConfig20211031", "lambda", {"functionName": "f", "authType": "AWS_IAM"}),
        ),
    ],
)
def lambda_public_permission(event: Event) -> str | None:
    if event.failed:
        return None
    function = short(event.text("requestParameters.functionName").rpartition(":")[2])
    if event.name in _LAMBDA_URL_EVENTS:
        if event.text("requestParameters.authType").upper() != "NONE":
            return None
        return f"Lambda function {function} given a public URL (no auth) by {event.actor()}"
    principal = event.text("requestParameters.principal").strip()
    if principal != "*" and event.text("requestParameters.functionUrlAuthType").upper() != "NONE":
        return None
    return f"Lambda function {function} made invocable by anyone by {event.actor()}"


@rule(
    "lambda_layer_added",
    title="Lambda layer attached to a function",
    technique="T1546",
    score=50,
    reason="Layer {layer} attached to Lambda function {function} by {actor}",
    runbook="Layers (and extensions in them) run with the function: check the layer's origin and content.",
    events=[
        "UpdateFunctionConfiguration",
        "UpdateFunctionConfiguration20150331",
        "UpdateFunctionConfiguration20150331v2",
    ],
    sources=["lambda"],
    tests=[
        fires(
            "a foreign layer attached",
            call(
                "UpdateFunctionConfiguration20150331v2",
                "lambda",
                {"functionName": "api", "layers": [f"arn:aws:lambda:eu-west-1:{FOREIGN}:layer:x:1"]},
            ),
        ),
        near_miss(
            "memory size changed",
            call(
                "UpdateFunctionConfiguration20150331v2", "lambda", {"functionName": "api", "memorySize": 256}
            ),
        ),
    ],
)
def lambda_layer_added(event: Event) -> str | None:
    layers = [] if event.failed else as_strings(event.params("layers"))
    if not layers:
        return None
    function = short(event.text("requestParameters.functionName").rpartition(":")[2])
    layer = short(layers[0].split(":layer:")[-1], 48)
    return f"Layer {layer} attached to Lambda function {function} by {event.actor()}"
