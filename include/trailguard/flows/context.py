"""Which instance and role stand behind a network interface, from CloudTrail in the event store.

A flow record names an interface (``eni-...``) and, from version 3 on, the instance; the default v2
format does not. CloudTrail knows the rest: ``RunInstances`` answers with each instance's interfaces,
private address, security groups and instance profile; ``CreateNetworkInterface`` with a new interface;
``AttachNetworkInterface`` asks to attach an interface to an instance; and an instance's own calls are
made as the role session ``assumed-role/<role>/<instance-id>``. :func:`instance_inventory` reads those
records of the days up to the given one (``lookback_days``) into one row per interface, which flow
findings are joined to (:func:`attach_context`): the instance, its role, its security groups and the
CloudTrail event that told (``context_event``).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import date, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from trailguard.store.events import EventStore, day_text
from trailguard.store.fs import DataPath, as_path

log = logging.getLogger(__name__)

LOOKBACK_DAYS = 90
INVENTORY_CALLS = ("RunInstances", "CreateNetworkInterface", "AttachNetworkInterface")
INVENTORY_COLUMNS = (
    "interface_id", "instance_id", "role", "security_groups", "private_ip", "account_id", "region",
    "context_event", "context_call", "context_time",
)  # fmt: skip
_SESSION = re.compile(r":assumed-role/([^/]+)/(i-[0-9a-f]{8,17})$")
_READ = ["eventID", "eventTime", "eventName", "awsRegion", "recipientAccountId", "errorCode",
         "requestParameters", "responseElements"]  # fmt: skip


def _json(text: Any) -> dict:
    if not isinstance(text, str) or not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _items(value: Any) -> list[dict]:
    """CloudTrail's EC2 lists: ``{"items": [...]}`` (or a plain list)."""
    if isinstance(value, dict):
        value = value.get("items")
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _groups(value: Any) -> list[str]:
    return [str(g["groupId"]) for g in _items(value) if g.get("groupId")]


def _profile_role(profile: Any) -> str | None:
    """An instance profile's name (``arn:aws:iam::1:instance-profile/web-server-role``): the role's name
    by convention, used only when no session of the instance names its role."""
    arn = profile.get("arn") if isinstance(profile, dict) else None
    return str(arn).rsplit("/", 1)[-1] if arn else None


def interfaces_of(event: dict) -> list[dict]:
    """The interfaces one inventory record tells of (``eventName`` and the two JSON texts of a stored
    event), each a dict of :data:`INVENTORY_COLUMNS` (without the event's own fields)."""
    name = event.get("eventName")
    response, request = _json(event.get("responseElements")), _json(event.get("requestParameters"))
    out = []
    if name == "RunInstances":
        for instance in _items(response.get("instancesSet")):
            instance_id = instance.get("instanceId")
            profile = _profile_role(instance.get("iamInstanceProfile"))
            groups = _groups(instance.get("groupSet")) or _groups(response.get("groupSet"))
            for eni in _items(instance.get("networkInterfaceSet")):
                if eni.get("networkInterfaceId"):
                    out.append({
                        "interface_id": eni["networkInterfaceId"], "instance_id": instance_id, "role": profile,
                        "security_groups": _groups(eni.get("groupSet")) or groups,
                        "private_ip": eni.get("privateIpAddress") or instance.get("privateIpAddress"),
                    })  # fmt: skip
    elif name == "CreateNetworkInterface":
        eni = response.get("networkInterface") or {}
        if isinstance(eni, dict) and eni.get("networkInterfaceId"):
            attachment = eni.get("attachment") if isinstance(eni.get("attachment"), dict) else {}
            out.append({
                "interface_id": eni["networkInterfaceId"], "instance_id": attachment.get("instanceId"), "role": None,
                "security_groups": _groups(eni.get("groupSet")), "private_ip": eni.get("privateIpAddress"),
            })  # fmt: skip
    elif name == "AttachNetworkInterface" and request.get("networkInterfaceId") and request.get("instanceId"):
        out.append({"interface_id": request["networkInterfaceId"], "instance_id": request["instanceId"],
                    "role": None, "security_groups": [], "private_ip": None})  # fmt: skip
    return out


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in INVENTORY_COLUMNS})


def instance_inventory(
    data_root: DataPath | str, day: date | str, lookback_days: int = LOOKBACK_DAYS
) -> pd.DataFrame:
    """One row per interface known from CloudTrail on the ``lookback_days`` days up to ``day``
    (:data:`INVENTORY_COLUMNS`; the newest record wins, an attachment fills in the instance of an
    interface created alone), the role filled from the instance's own sessions."""
    store = EventStore(as_path(data_root))
    last = date.fromisoformat(day_text(day))
    first = (last - timedelta(days=lookback_days)).isoformat()
    rows: list[dict] = []
    roles: dict[str, str] = {}
    for text in store.dates():
        if not first <= text <= last.isoformat():
            continue
        arns = store.read_partition(text, columns=["userIdentity.arn"]).column(0)
        for arn in pc.unique(arns).to_pylist():
            match = _SESSION.search(arn or "")
            if match:
                roles[match.group(2)] = match.group(1)
        table = store.read_partition(text, columns=_READ)
        table = table.filter(pc.is_in(table["eventName"], value_set=pa.array(INVENTORY_CALLS)))
        for event in table.to_pylist():
            if event.get("errorCode"):
                continue
            for found in interfaces_of(event):
                rows.append(found | {
                    "account_id": event.get("recipientAccountId"), "region": event.get("awsRegion"),
                    "context_event": event.get("eventID"), "context_call": event.get("eventName"),
                    "context_time": event.get("eventTime"),
                })  # fmt: skip
    if not rows:
        frame = _empty()
    else:
        frame = pd.DataFrame(rows).sort_values("context_time", kind="stable")
        # an attachment names the instance; a creation or launch the groups and address: keep the newest
        # of each field per interface
        frame = frame.groupby("interface_id", sort=False).agg(
            {c: _last_known for c in INVENTORY_COLUMNS if c != "interface_id"}
        ).reset_index()  # fmt: skip
    frame["role"] = [
        roles.get(str(i), r) if i else r for i, r in zip(frame["instance_id"], frame["role"], strict=True)
    ]
    frame = frame[list(INVENTORY_COLUMNS)].reset_index(drop=True)
    frame.attrs["roles"] = roles
    return frame


def _last_known(values: pd.Series) -> Any:
    known = [v for v in values if v is not None and not (isinstance(v, float) and pd.isna(v)) and v != []]
    return known[-1] if known else None


def attach_context(findings: pd.DataFrame, inventory: pd.DataFrame) -> pd.DataFrame:
    """Flow findings with ``instance_id`` (the record's own, else CloudTrail's), ``role``,
    ``security_groups``, ``context_event`` and ``context_call`` joined by interface; the role of an
    instance whose record named it is looked up among the instances' sessions too."""
    out = findings.copy()
    known = inventory.set_index("interface_id") if len(inventory) else None
    roles = inventory.attrs.get("roles", {})

    def column(name: str) -> pd.Series:
        if known is None:
            return pd.Series([None] * len(out), index=out.index, dtype=object)
        return out["interface_id"].map(known[name]).astype(object)

    def text(value: Any) -> str | None:
        return value if isinstance(value, str) and value else None

    def objects(values: list) -> pd.Series:  # text columns keep None (pandas would make a str column of NaN)
        return pd.Series(values, index=out.index, dtype=object)

    own = out["instance_id"].astype(object) if "instance_id" in out else column("instance_id")
    out["instance_id"] = objects(
        [text(o) or text(c) for o, c in zip(own, column("instance_id"), strict=True)]
    )
    out["role"] = objects(
        [text(r) or roles.get(i) for r, i in zip(column("role"), out["instance_id"], strict=True)]
    )
    out["security_groups"] = objects(
        [" ".join(g) if isinstance(g, list) else None for g in column("security_groups")]
    )
    out["context_event"] = objects([text(v) for v in column("context_event")])
    out["context_call"] = objects([text(v) for v in column("context_call")])
    return out
