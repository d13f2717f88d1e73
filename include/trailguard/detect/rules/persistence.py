"""Persistence (TA0003): IAM users, keys, passwords, admin grants, role trust, identity providers, Lambda
backdoors. The account-manipulation rules (T1098) are privilege escalation (TA0004) too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trailguard.detect.event import Event, is_true, short
from trailguard.detect.policy import accounts_text, as_strings, is_admin_statement, statements, trust_exposure
from trailguard.detect.registry import fires, frame_rule, near_miss, rule
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


# --- added for GuardDuty parity (issue 16) -----------------------------------------------------------------

_PASS_ROLE_DENIED = {
    "errorCode": "AccessDenied",
    "errorMessage": f"User: arn:aws:iam::{ACCOUNT}:user/alice is not authorized to perform: iam:PassRole on "
    f"resource: arn:aws:iam::{ACCOUNT}:role/admin-role",
}


@rule(
    "iam_access_key_created_for_self",
    title="Access key created by a user for themselves",
    technique="T1098.001",
    score=30,
    reason="Access key created by {user} for themselves from {ip}",
    runbook="Routine rotation from the user's usual network; a key made from a new network or client is how a "
    "stolen session keeps access after the password changes (the finding's usual-vs-now panel shows which).",
    events=["CreateAccessKey"],
    identity_types=["IAMUser"],
    sources=["iam"],
    tests=[
        fires("a user creates their own key", call("CreateAccessKey", "iam", {"userName": "alice"})),
        fires("no userName: the caller's own key", call("CreateAccessKey", "iam")),
        near_miss("a key for somebody else", call("CreateAccessKey", "iam", {"userName": "bob"})),
        near_miss("the call was denied", call("CreateAccessKey", "iam", {"userName": "alice"}, **DENIED)),
    ],
)
def iam_access_key_created_for_self(event: Event) -> str | None:
    target = event.text("requestParameters.userName")
    if event.failed or (target and target != event.caller_name()):
        return None
    return f"Access key created by {short(event.caller_name())} for themselves from {event.ip()}"


@rule(
    "ec2_key_pair_created",
    title="EC2 key pair created or imported",
    technique="T1098.004",
    score=45,
    reason="EC2 key pair {keyName} {imported|created} by {actor}",
    runbook="An SSH key pair opens every instance launched with it: confirm the owner, delete unknown key pairs "
    "and check the instances using them.",
    events=["CreateKeyPair", "ImportKeyPair"],
    sources=["ec2"],
    tests=[
        fires(
            "a key pair imported",
            call("ImportKeyPair", "ec2", {"keyName": "backdoor", "publicKeyMaterial": "c3No"}),
        ),
        fires("a key pair created", call("CreateKeyPair", "ec2", {"keyName": "ops"})),
        near_miss("key pairs listed", call("DescribeKeyPairs", "ec2", {"keyName": "backdoor"})),
        near_miss("the import was denied", call("ImportKeyPair", "ec2", {"keyName": "backdoor"}, **DENIED)),
    ],
)
def ec2_key_pair_created(event: Event) -> str | None:
    if event.failed:
        return None
    verb = "imported" if event.name == "ImportKeyPair" else "created"
    return f"EC2 key pair {short(event.text('requestParameters.keyName'))} {verb} by {event.actor()}"


@rule(
    "ec2_instance_profile_attached",
    title="Instance profile attached to a running instance",
    technique="T1098.003",
    score=50,
    reason="Instance profile {profile} attached to instance {instance} by {actor}",
    runbook="Attaching a role to an instance passes the role (iam:PassRole) to whoever controls the instance: "
    "confirm the change; an attacker attaches a powerful role to an instance they can reach.",
    events=["AssociateIamInstanceProfile", "ReplaceIamInstanceProfileAssociation"],
    sources=["ec2"],
    tests=[
        fires(
            "an admin profile attached",
            call(
                "AssociateIamInstanceProfile",
                "ec2",
                {
                    "AssociateIamInstanceProfileRequest": {
                        "InstanceId": "i-0abc",
                        "IamInstanceProfile": {"Arn": f"arn:aws:iam::{ACCOUNT}:instance-profile/admin"},
                    }
                },
            ),
        ),  # fmt: skip
        near_miss(
            "the call was denied",
            call(
                "AssociateIamInstanceProfile",
                "ec2",
                {"AssociateIamInstanceProfileRequest": {"InstanceId": "i-0abc"}},
                **DENIED,
            ),
        ),  # fmt: skip
    ],
)
def ec2_instance_profile_attached(event: Event) -> str | None:
    if event.failed:
        return None
    request = "AssociateIamInstanceProfileRequest" if event.name.startswith("Associate") else (
        "ReplaceIamInstanceProfileAssociationRequest")  # fmt: skip
    profile = event.text(f"requestParameters.{request}.IamInstanceProfile.Arn") or event.text(
        f"requestParameters.{request}.IamInstanceProfile.Name"
    )
    instance = event.text(f"requestParameters.{request}.InstanceId") or event.text(
        f"requestParameters.{request}.AssociationId"
    )
    return f"Instance profile {short(profile or '?')} attached to instance {short(instance or '?')} by {event.actor()}"


_PASS_ROLE_EVENTS = (
    "RunInstances", "AssociateIamInstanceProfile", "ReplaceIamInstanceProfileAssociation", "CreateFunction20150331",
    "UpdateFunctionConfiguration20150331v2", "CreateStack", "UpdateStack", "CreateDevEndpoint", "CreateJob",
    "CreateNotebookInstance", "CreateTrainingJob", "CreateCluster", "RegisterTaskDefinition", "CreateLaunchTemplate",
    "CreateLaunchTemplateVersion", "CreatePipeline", "CreateStateMachine", "CreateProject", "StartBuild",
)  # fmt: skip


@rule(
    "iam_pass_role_denied",
    title="Denied attempt to pass a role (iam:PassRole)",
    technique="T1098.003",
    score=55,
    reason="{eventName} by {actor} refused iam:PassRole on {role}",
    runbook="Someone tried to hand a role to a service they control and was refused: a classic privilege "
    "escalation probe. Ask what they meant to do; repeated attempts with different roles are hostile.",
    events=_PASS_ROLE_EVENTS,
    tests=[
        fires(
            "RunInstances refused the role",
            call("RunInstances", "ec2", {"instanceType": "t3.micro"}, **_PASS_ROLE_DENIED),
        ),
        near_miss(
            "denied for another permission",
            call("RunInstances", "ec2", {"instanceType": "t3.micro"}, **DENIED),
        ),
    ],
)
def iam_pass_role_denied(event: Event) -> str | None:
    message = event.text("errorMessage")[:2000]
    if "iam:PassRole" not in message:
        return None
    role = next((w for w in message.split() if ":role/" in w), "a role")
    return f"{short(event.name)} by {event.actor()} refused iam:PassRole on {short(role.strip('.,'))}"


def _weak_password_policy(event: Event) -> list[str]:
    weak = []
    length = event.params("minimumPasswordLength")
    if isinstance(length, (int, float)) and not isinstance(length, bool) and length < 14:
        weak.append(f"minimum length {int(length)}")
    weak += [f"{key} off" for key in ("requireSymbols", "requireNumbers", "requireUppercaseCharacters",
                                      "requireLowercaseCharacters") if event.params(key) is False]  # fmt: skip
    return weak


@rule(
    "iam_password_policy_changed",
    title="Account password policy changed or deleted",
    technique="T1556",
    score=45,
    reason="Account password policy {changed|deleted} by {actor}{ (weakened settings)}",
    runbook="Confirm the change with the account's owners; a weaker or deleted policy makes password guessing "
    "easier (GuardDuty: Stealth:IAMUser/PasswordPolicyChange).",
    events=["UpdateAccountPasswordPolicy", "DeleteAccountPasswordPolicy"],
    sources=["iam"],
    tests=[
        fires(
            "the policy weakened",
            call("UpdateAccountPasswordPolicy", "iam", {"minimumPasswordLength": 6, "requireSymbols": False}),
        ),
        fires("the policy deleted", call("DeleteAccountPasswordPolicy", "iam")),
        near_miss("the policy read", call("GetAccountPasswordPolicy", "iam")),
        near_miss(
            "the deletion failed", call("DeleteAccountPasswordPolicy", "iam", errorCode="NoSuchEntity")
        ),
    ],
)
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


_ADMIN_GRANT = call("AttachGroupPolicy", "iam", {"groupName": "platform",
                    "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}, eventID="grant")  # fmt: skip


@frame_rule(
    "iam_user_added_to_privileged_group",
    title="User added to a group that grants admin rights",
    technique="T1098.003",
    score=80,
    reason="User {userName} added to group {groupName}, which was given {policy} the same day; by {actor}",
    runbook="The group's name does not say admin but a policy attached the same day grants every action: "
    "confirm the membership and the grant; remove both if nobody asked for them.",
    tests=[
        fires("added to a group made admin the same day",
              _ADMIN_GRANT, call("AddUserToGroup", "iam", {"groupName": "platform", "userName": "mallory"}, eventID="add")),
        near_miss("added to another group",
                  _ADMIN_GRANT, call("AddUserToGroup", "iam", {"groupName": "readers", "userName": "bob"}, eventID="add")),
        near_miss("the group got read-only rights",
                  call("AttachGroupPolicy", "iam", {"groupName": "platform", "policyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}),
                  call("AddUserToGroup", "iam", {"groupName": "platform", "userName": "mallory"}, eventID="add")),
    ],
)  # fmt: skip
def iam_user_added_to_privileged_group(df: pd.DataFrame) -> list[tuple[int, str]]:
    grants = _rows_named(df, ("AttachGroupPolicy", "PutGroupPolicy"))
    adds = _rows_named(df, ("AddUserToGroup",))
    if not len(grants) or not len(adds):
        return []
    admin_groups: dict[tuple[str, str], str] = {}
    for position in grants:
        event = Event(df.iloc[int(position)].to_dict())
        arn = event.text("requestParameters.policyArn")
        if not event.failed and (
            _admin_policy_arn(arn)
            or any(is_admin_statement(s) for s in statements(event.params("policyDocument")))
        ):
            grant = arn.rpartition("/")[2] or "an inline policy granting every action"
            admin_groups[(event.account, event.text("requestParameters.groupName"))] = short(grant)
    hits = []
    for position in adds:
        event = Event(df.iloc[int(position)].to_dict())
        group = event.text("requestParameters.groupName")
        grant = admin_groups.get((event.account, group))
        if (
            event.failed or grant is None or "admin" in group.lower()
        ):  # named admin: iam_admin_group_membership
            continue
        hits.append((int(position), f"User {short(event.text('requestParameters.userName'))} added to group "
                     f"{short(group)}, which was given {grant} the same day; by {event.actor()}"))  # fmt: skip
    return hits
