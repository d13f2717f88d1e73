"""Daily features per network interface: the rows the ``network_flow`` models learn and score.

One row per interface and day: what it sent to and received from the internet, how many peers and ports
it talked to, rejections, remote access from the internet, mining-pool ports, and how that day compares
with the interface's own previous ``history_days`` (new internet peers, the day's outbound volume over its
usual, remote access it never had). Counts and volumes are raw here; the models take their logarithm.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd

from trailguard.flows.detect import _READ, MINING_PORTS, REMOTE_ACCESS_PORTS, prepare
from trailguard.flows.ingestion import FlowStore
from trailguard.store.events import day_text
from trailguard.store.fs import DataPath, as_path

HISTORY_DAYS = 14
KEYS = ("day", "interface_id", "account_id", "instance_id")
NETWORK_FEATURES: tuple[str, ...] = (
    "flows",
    "bytes_out_internet",
    "bytes_in_internet",
    "packets_out_internet",
    "internet_peers_out",
    "internet_sources_in",
    "internal_peers",
    "dst_ports",
    "rejected_flows",
    "remote_access_flows",
    "remote_access_sources",
    "mining_port_flows",
    "max_peer_bytes_out",
    "new_internet_peers",
    "bytes_out_ratio",
    "remote_access_new",
)
# counts and volumes: the models take log1p of these (the others are ratios and flags)
COUNT_COLUMNS = tuple(c for c in NETWORK_FEATURES if c not in ("bytes_out_ratio", "remote_access_new"))


@dataclass
class _Day:
    """What later days compare with: per interface, the outbound volume, internet peers, remote access."""

    bytes_out: dict[str, float] = field(default_factory=dict)
    peers: dict[str, set[str]] = field(default_factory=dict)
    remote: set[str] = field(default_factory=set)


def _aggregate(frame: pd.DataFrame, day: str) -> tuple[pd.DataFrame, _Day]:
    """The day's features that need no history, and what the history keeps of the day."""
    if frame.empty:
        return pd.DataFrame(columns=[*KEYS, *NETWORK_FEATURES]), _Day()
    f = frame
    out_ok = f["outbound"] & f["accepted"]
    in_ok = f["inbound"] & f["accepted"]
    initiated_out = out_ok & f["initiated"]
    remote = in_ok & f["dstport"].isin(list(REMOTE_ACCESS_PORTS))
    mining = out_ok & f["dstport"].isin(list(MINING_PORTS)) & (f["srcport"].fillna(0) >= 1024)
    work = pd.DataFrame({
        "interface_id": f["interface_id"], "account_id": f["account_id"], "instance_id": f["instance_id"],
        "flows": 1, "bytes_out_internet": np.where(out_ok, f["bytes"].fillna(0), 0),
        "bytes_in_internet": np.where(in_ok, f["bytes"].fillna(0), 0),
        "packets_out_internet": np.where(out_ok, f["packets"].fillna(0), 0),
        "rejected_flows": f["action"].eq("REJECT").astype(int), "remote_access_flows": remote.astype(int),
        "mining_port_flows": mining.astype(int),
        "peer_out": f["dstaddr"].where(initiated_out), "source_in": f["srcaddr"].where(in_ok),
        "internal_peer": f["dstaddr"].where(f["dst_internal"] & f["initiated"]),
        "port": f["dstport"].where(f["initiated"]), "remote_source": f["srcaddr"].where(remote),
    })  # fmt: skip
    grouped = work.groupby("interface_id", sort=True)
    out = grouped.agg(
        account_id=("account_id", "first"), instance_id=("instance_id", "first"), flows=("flows", "sum"),
        bytes_out_internet=("bytes_out_internet", "sum"), bytes_in_internet=("bytes_in_internet", "sum"),
        packets_out_internet=("packets_out_internet", "sum"), internet_peers_out=("peer_out", "nunique"),
        internet_sources_in=("source_in", "nunique"), internal_peers=("internal_peer", "nunique"),
        dst_ports=("port", "nunique"), rejected_flows=("rejected_flows", "sum"),
        remote_access_flows=("remote_access_flows", "sum"), remote_access_sources=("remote_source", "nunique"),
        mining_port_flows=("mining_port_flows", "sum"),
    ).reset_index()  # fmt: skip
    sent = f[out_ok].groupby(["interface_id", "dstaddr"])["bytes"].sum()
    top = sent.groupby(level=0).max() if len(sent) else pd.Series(dtype=float)
    out["max_peer_bytes_out"] = out["interface_id"].map(top).fillna(0)
    out["day"] = day
    kept = _Day(
        bytes_out=dict(zip(out["interface_id"], out["bytes_out_internet"].astype(float), strict=True)),
        peers={k: set(v.dropna()) for k, v in work.groupby("interface_id")["peer_out"]},
        remote=set(out.loc[out["remote_access_flows"] > 0, "interface_id"]),
    )
    return out, kept


def _with_history(today: pd.DataFrame, kept: _Day, history: list[_Day]) -> pd.DataFrame:
    """The history-relative features: new internet peers, outbound volume over the usual, new remote access."""
    if today.empty:
        return today
    new_peers, ratio, remote_new = [], [], []
    for eni, sent, remote in zip(today["interface_id"], today["bytes_out_internet"], today["remote_access_flows"],
                                 strict=True):  # fmt: skip
        seen: set[str] = set().union(*(h.peers.get(eni, set()) for h in history)) if history else set()
        new_peers.append(len(kept.peers.get(eni, set()) - seen) if history else 0)
        volumes = [h.bytes_out[eni] for h in history if eni in h.bytes_out]
        usual = float(np.median(volumes)) if volumes else 0.0
        ratio.append(float(sent) / usual if usual > 0 else (1.0 if not volumes or not sent else 10.0))
        remote_new.append(int(remote > 0 and bool(history) and not any(eni in h.remote for h in history)))
    out = today.copy()
    out["new_internet_peers"], out["bytes_out_ratio"], out["remote_access_new"] = new_peers, ratio, remote_new
    return out


def features_for_days(
    data_root: DataPath | str, days: list[str], history_days: int = HISTORY_DAYS
) -> pd.DataFrame:
    """The features of every interface on each of ``days`` (sorted), each day against the
    ``history_days`` stored days before it; each stored day is read once."""
    store = FlowStore(as_path(data_root))
    days = sorted(day_text(d) for d in days)
    if not days:
        return pd.DataFrame(columns=[*KEYS, *NETWORK_FEATURES])
    first = date.fromisoformat(days[0]) - timedelta(days=history_days)
    span = [
        (first + timedelta(days=i)).isoformat()
        for i in range((date.fromisoformat(days[-1]) - first).days + 1)
    ]
    history: deque[tuple[str, _Day]] = deque()
    wanted, parts = set(days), []
    for text in span:
        table = store.read_partition(text, columns=_READ)
        today, kept = _aggregate(prepare(table) if table.num_rows else pd.DataFrame(), text)
        cutoff = (date.fromisoformat(text) - timedelta(days=history_days)).isoformat()
        while history and history[0][0] < cutoff:
            history.popleft()
        if text in wanted and len(today):
            parts.append(_with_history(today, kept, [h for _, h in history]))
        history.append((text, kept))
    if not parts:
        return pd.DataFrame(columns=[*KEYS, *NETWORK_FEATURES])
    frame = pd.concat(parts, ignore_index=True)
    for column in NETWORK_FEATURES:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64").fillna(0.0)
    return frame[[*KEYS, *NETWORK_FEATURES]]
