"""Network detections over a day of VPC flow records, per interface, each with its ATT&CK technique.

Each detection turns a day's flows (and, for volume, the interface's own history) into findings: one row per
interface and peer (or port, or window) with a 0-100 score, a reason in words and the technique. The
findings are written as score rows (``flows_scores/date=D/scores.parquet``: the columns of ``scores/``,
``use_case = network_flow``, ``eventID`` = the finding's id), beside the CloudTrail scores rather than in
them, so rescoring CloudTrail never drops them and readers of ``scores/`` see only events they can join.

"Internal" means the private, shared, loopback and link-local ranges (IPv4 and IPv6); every other address
is the internet. An internal address initiating a flow is told by its ephemeral source port (the source
port above the destination port), which keeps a server's replies to many clients from looking like a scan.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa

from trailguard.detect.catalogue import TACTICS
from trailguard.detect.network import NETWORK_DETECTIONS
from trailguard.flows.ingestion import FlowStore
from trailguard.flows.logs import FLOW_SCHEMA
from trailguard.intel.networks import TOR, origin_of, snapshot_date
from trailguard.intel.reputation import ThreatList, configured_lists, matches
from trailguard.store import fs
from trailguard.store.events import day_text
from trailguard.store.fs import DataPath, as_path

log = logging.getLogger(__name__)

USE_CASE = "network_flow"
MODEL_NAME = "flow-detections"
MODEL_VERSION = "1"

REMOTE_ACCESS_PORTS = {22: ("SSH", "T1021.004"), 3389: ("RDP", "T1021.001")}
BRUTE_FORCE_FLOWS = 20  # accepted remote-access flows from one internet address in a day
SCAN_HOSTS = 50  # distinct hosts one address opened connections to in a day
SCAN_PORTS = 50  # distinct ports one address tried on one host in a day
REJECT_BURST = 50  # rejected flows from one address to one interface in one window
REJECT_WINDOW = "10min"
# stratum and common pool ports (monero/bitcoin pools, xmrig defaults); 443 and 80 are not here on purpose
MINING_PORTS = frozenset({3333, 3334, 3357, 4444, 5555, 5730, 7777, 8333, 9332, 14433, 14444, 45560, 45700})
EXFIL_MIN_BYTES = 100 * 2**20  # below this a day's outbound volume is never a finding
EXFIL_RATIO = 10.0  # times the interface's median day
EXFIL_NO_HISTORY_BYTES = 2**30  # with fewer than EXFIL_MIN_HISTORY days of history, only this much is
EXFIL_MIN_HISTORY = 3
HISTORY_DAYS = 14
BEACON_MIN_FLOWS = 12
BEACON_MAX_BYTES = 4096  # median bytes per flow: a beacon is small
BEACON_MAX_CV = 0.15  # standard deviation of the gaps over their mean: a beacon is regular
BEACON_MIN_SPAN = pd.Timedelta(hours=1)

_INTERNAL = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "0.0.0.0/8", "fc00::/7", "fe80::/10", "::1/128", "::/128",
    )
)  # fmt: skip


@dataclass(frozen=True)
class FlowDetection:
    id: str
    title: str
    tactic: str
    technique: str
    score: int
    runbook: str


# the metadata, reason templates and cases are the catalogue's (trailguard.detect.network)
DETECTIONS = {
    d.rule_id: FlowDetection(d.rule_id, d.title, TACTICS[d.tactic][1], d.technique, d.score, d.runbook)
    for d in NETWORK_DETECTIONS
}

SCORE_COLUMNS = (
    "eventID", "eventTime", "use_case", "risk_score", "reasons", "attack_technique", "model_name", "model_version",
    "detection", "account_id", "interface_id", "instance_id", "srcaddr", "dstaddr", "dstport", "flows", "bytes",
)  # fmt: skip
_READ = ["account_id", "interface_id", "instance_id", "srcaddr", "dstaddr", "srcport", "dstport", "protocol",
         "packets", "bytes", "start", "action", "log_status"]  # fmt: skip


def internal(addresses: pd.Series) -> np.ndarray:
    """Whether each address is internal (each distinct value classified once; unparsable text is not)."""
    distinct = pd.unique(addresses.dropna())
    known = {}
    for text in distinct:
        try:
            address = ipaddress.ip_address(str(text))
        except ValueError:
            known[text] = False
            continue
        known[text] = any(address in network for network in _INTERNAL if network.version == address.version)
    return addresses.map(known).fillna(False).to_numpy(dtype=bool)


def prepare(table: pa.Table) -> pd.DataFrame:
    """The day's traffic records (NODATA/SKIPDATA left out) with direction flags."""
    frame = table.select([c for c in _READ if c in table.column_names]).to_pandas()
    frame = frame[frame["log_status"].eq("OK") & frame["srcaddr"].notna() & frame["dstaddr"].notna()].copy()
    for column in ("srcport", "dstport", "protocol", "packets", "bytes"):
        frame[column] = frame[column].astype("Int64")
    frame["src_internal"] = internal(frame["srcaddr"])
    frame["dst_internal"] = internal(frame["dstaddr"])
    frame["outbound"] = frame["src_internal"] & ~frame["dst_internal"]
    frame["inbound"] = ~frame["src_internal"] & frame["dst_internal"]
    frame["initiated"] = (frame["srcport"].fillna(0) > frame["dstport"].fillna(0)).to_numpy(dtype=bool)
    frame["accepted"] = frame["action"].eq("ACCEPT")
    return frame


def detect(
    frame: pd.DataFrame,
    history: pd.DataFrame | None = None,
    remote_seen: set[tuple[str, int]] | None = None,
    threat_lists: tuple[ThreatList, ...] | None = None,
) -> pd.DataFrame:
    """Every finding of a prepared day; ``history`` has ``interface_id, day, bytes`` (outbound per day),
    ``remote_seen`` the (interface, port) pairs that accepted SSH/RDP from the internet on earlier days,
    ``threat_lists`` the lists peers are checked against (default: the configured ones)."""
    found = [
        _remote_access(frame, remote_seen or set()),
        _scan_fanout(frame),
        _rejected_bursts(frame),
        _mining_pool(frame),
        _exfiltration(frame, history),
        _beaconing(frame),
        _listed_peers(frame, configured_lists() if threat_lists is None else threat_lists),
        _tor_inbound(frame),
    ]
    found = [f for f in found if len(f)]
    if not found:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in SCORE_COLUMNS})
    out = pd.concat(found, ignore_index=True)
    for column in ("interface_id", "account_id", "instance_id", "srcaddr", "dstaddr"):
        if column not in out:
            out[column] = None
    out["use_case"], out["model_name"], out["model_version"] = USE_CASE, MODEL_NAME, MODEL_VERSION
    out["eventID"] = [
        "flow-" + hashlib.sha1("|".join(map(str, key)).encode()).hexdigest()[:24]
        for key in zip(out["detection"], out["interface_id"], out["srcaddr"], out["dstaddr"], out["dstport"],
                       out["eventTime"], strict=True)
    ]  # fmt: skip
    usual = out["detection"].map(lambda d: DETECTIONS[d].technique)
    out["attack_technique"] = out["technique"].fillna(usual) if "technique" in out else usual
    out = out.sort_values(["risk_score", "eventTime"], ascending=[False, True], kind="stable")
    return out[list(SCORE_COLUMNS)].reset_index(drop=True)


def _first(frame: pd.DataFrame, keys: list[str], **aggs: tuple[str, str]) -> pd.DataFrame:
    base = {"eventTime": ("start", "min"), "flows": ("start", "size"), "bytes": ("bytes", "sum"),
            "account_id": ("account_id", "first"), "instance_id": ("instance_id", "first")}  # fmt: skip
    return frame.groupby(keys, dropna=False, sort=False).agg(**base, **aggs).reset_index()


def remote_access_pairs(frame: pd.DataFrame) -> set[tuple[str, int]]:
    """(interface, port) pairs that accepted SSH/RDP from the internet: a host that always had it is less
    surprising than one that never did."""
    rows = frame[frame["inbound"] & frame["accepted"] & frame["dstport"].isin(list(REMOTE_ACCESS_PORTS))]
    return {(str(i), int(p)) for i, p in zip(rows["interface_id"], rows["dstport"], strict=True)}


def _remote_access(frame: pd.DataFrame, seen: set[tuple[str, int]]) -> pd.DataFrame:
    rows = frame[frame["inbound"] & frame["accepted"] & frame["dstport"].isin(list(REMOTE_ACCESS_PORTS))]
    if rows.empty:
        return rows
    out = _first(rows, ["interface_id", "dstaddr", "dstport", "srcaddr"])
    brute = out["flows"] >= BRUTE_FORCE_FLOWS
    usual = np.array([(str(i), int(p)) in seen for i, p in zip(out["interface_id"], out["dstport"], strict=True)],
                     dtype=bool)  # fmt: skip
    service = out["dstport"].map(lambda p: REMOTE_ACCESS_PORTS[int(p)][0])
    out["detection"] = np.where(brute, "flow_remote_access_brute_force", "flow_remote_access_from_internet")
    out["technique"] = np.where(brute, "T1110", out["dstport"].map(lambda p: REMOTE_ACCESS_PORTS[int(p)][1]))
    out["risk_score"] = np.where(brute, 85, np.where(usual, 35, 60)) + np.minimum(out["flows"] // 100, 10)
    out["reasons"] = [
        f"{s} from internet address {src} accepted by {eni} ({dst}:{port}): {n} flows"
        + (f", {BRUTE_FORCE_FLOWS}+ in a day is a brute force" if b else "")
        + ("; it accepted this on earlier days too" if u else "; never before in its history")
        for s, src, eni, dst, port, n, b, u in zip(service, out["srcaddr"], out["interface_id"], out["dstaddr"],
                                                    out["dstport"], out["flows"], brute, usual, strict=True)
    ]  # fmt: skip
    return out


def _scan_fanout(frame: pd.DataFrame) -> pd.DataFrame:
    rows = frame[frame["src_internal"] & frame["initiated"]]
    if rows.empty:
        return rows
    hosts = _first(rows, ["interface_id", "srcaddr"], hosts=("dstaddr", "nunique"))
    hosts = hosts[hosts["hosts"] >= SCAN_HOSTS].assign(dstaddr=None, dstport=None)
    hosts["reasons"] = [
        f"{src} ({eni}) opened connections to {h} distinct hosts in a day (threshold {SCAN_HOSTS})"
        for src, eni, h in zip(hosts["srcaddr"], hosts["interface_id"], hosts["hosts"], strict=True)
    ]
    hosts["risk_score"] = 70 + np.minimum(hosts["hosts"] // SCAN_HOSTS - 1, 15)
    ports = _first(rows, ["interface_id", "srcaddr", "dstaddr"], ports=("dstport", "nunique"))
    ports = ports[ports["ports"] >= SCAN_PORTS].assign(dstport=None)
    ports["reasons"] = [
        f"{src} ({eni}) tried {p} distinct ports on {dst} in a day (threshold {SCAN_PORTS})"
        for src, eni, dst, p in zip(ports["srcaddr"], ports["interface_id"], ports["dstaddr"], ports["ports"],
                                    strict=True)
    ]  # fmt: skip
    ports["risk_score"] = 70 + np.minimum(ports["ports"] // SCAN_PORTS - 1, 15)
    out = pd.concat([hosts, ports], ignore_index=True)
    out["detection"] = "flow_scan_fanout"
    return out.drop(columns=["hosts", "ports"], errors="ignore")


def _rejected_bursts(frame: pd.DataFrame) -> pd.DataFrame:
    rows = frame[frame["action"].eq("REJECT")].copy()
    if rows.empty:
        return rows
    rows["window"] = rows["start"].dt.floor(REJECT_WINDOW)
    out = _first(rows, ["interface_id", "srcaddr", "window"], ports=("dstport", "nunique"))
    out = out[out["flows"] >= REJECT_BURST]
    if out.empty:
        return out
    best = out.sort_values("flows", ascending=False).drop_duplicates(["interface_id", "srcaddr"])
    best = best.assign(dstaddr=None, dstport=None, detection="flow_rejected_burst")
    best["risk_score"] = 40 + np.minimum(best["flows"] // REJECT_BURST - 1, 20)
    best["reasons"] = [
        f"{n} rejected flows from {src} to {eni} within {REJECT_WINDOW} from {w:%H:%M} ({p} ports)"
        for n, src, eni, w, p in zip(best["flows"], best["srcaddr"], best["interface_id"], best["window"],
                                     best["ports"], strict=True)
    ]  # fmt: skip
    return best.drop(columns=["window", "ports"])


def _mining_pool(frame: pd.DataFrame) -> pd.DataFrame:
    # a reply from one of our services (source port below 1024) to a client's ephemeral port is not a miner
    rows = frame[frame["outbound"] & frame["accepted"] & frame["dstport"].isin(list(MINING_PORTS))]
    rows = rows[rows["srcport"].fillna(0) >= 1024]
    if rows.empty:
        return rows
    out = _first(rows, ["interface_id", "srcaddr", "dstaddr", "dstport"])
    out["detection"], out["risk_score"] = "flow_mining_pool_port", 75
    out["reasons"] = [
        f"{eni} ({src}) talked to {dst}:{port}, a mining-pool port: {n} flows, {b:,} bytes"
        for eni, src, dst, port, n, b in zip(out["interface_id"], out["srcaddr"], out["dstaddr"], out["dstport"],
                                             out["flows"], out["bytes"], strict=True)
    ]  # fmt: skip
    return out


def outbound_bytes(frame: pd.DataFrame) -> pd.DataFrame:
    """Bytes each interface sent to the internet (``interface_id, bytes``): the volume history's unit."""
    rows = frame[frame["outbound"] & frame["accepted"]]
    return rows.groupby("interface_id", sort=False)["bytes"].sum().reset_index()


def _exfiltration(frame: pd.DataFrame, history: pd.DataFrame | None) -> pd.DataFrame:
    rows = frame[frame["outbound"] & frame["accepted"]]
    if rows.empty:
        return rows
    out = _first(rows, ["interface_id"], peers=("dstaddr", "nunique"))
    top = rows.groupby(["interface_id", "dstaddr"])["bytes"].sum().reset_index()
    top = top.sort_values("bytes", ascending=False).drop_duplicates("interface_id").set_index("interface_id")
    out["dstaddr"] = out["interface_id"].map(top["dstaddr"])
    # the finding starts when the volume to its main peer does (a story orders it among CloudTrail's events)
    began = rows.groupby(["interface_id", "dstaddr"])["start"].min()
    out["eventTime"] = [began.get((eni, dst), t) for eni, dst, t in zip(out["interface_id"], out["dstaddr"],
                                                                       out["eventTime"], strict=True)]  # fmt: skip
    if history is not None and len(history):
        stats = history.groupby("interface_id")["bytes"].agg(["median", "size"])
        out["usual"] = out["interface_id"].map(stats["median"])
        out["days"] = out["interface_id"].map(stats["size"]).fillna(0)
    else:
        out["usual"], out["days"] = np.nan, 0
    known = out["days"] >= EXFIL_MIN_HISTORY
    # float64: with no history "usual" is NaN, and a nullable ratio would make np.where raise
    ratio = out["bytes"].astype("float64") / out["usual"].astype("float64").clip(lower=1)
    fires = (out["bytes"] >= EXFIL_MIN_BYTES) & np.where(
        known, ratio >= EXFIL_RATIO, out["bytes"] >= EXFIL_NO_HISTORY_BYTES
    )
    out = out[fires].copy()
    if out.empty:
        return out
    ratio = ratio[fires]
    out["detection"], out["srcaddr"], out["dstport"] = "flow_exfiltration_volume", None, None
    out["risk_score"] = np.where(ratio >= 100, 90, 80)
    out["reasons"] = [
        f"{eni} sent {b / 2**20:,.0f} MB to the internet ({p} peers, most to {dst}); "
        + (f"its usual day is {u / 2**20:,.1f} MB ({r:,.0f}x)" if k else f"no {EXFIL_MIN_HISTORY}-day history, over 1 GB")
        for eni, b, p, dst, u, r, k in zip(out["interface_id"], out["bytes"], out["peers"], out["dstaddr"],
                                          out["usual"], ratio, known[fires], strict=True)
    ]  # fmt: skip
    return out.drop(columns=["usual", "days", "peers"])


def _beaconing(frame: pd.DataFrame) -> pd.DataFrame:
    rows = frame[frame["outbound"] & frame["accepted"] & frame["initiated"]]
    keys = ["interface_id", "srcaddr", "dstaddr", "dstport"]
    if rows.empty:
        return rows
    sizes = rows.groupby(keys, sort=False)["start"].transform("size")
    rows = rows[sizes >= BEACON_MIN_FLOWS]
    found = []
    for key, group in rows.groupby(keys, sort=False):
        times = np.sort(group["start"].drop_duplicates().to_numpy(dtype="datetime64[s]").astype(np.int64))
        if len(times) < BEACON_MIN_FLOWS or times[-1] - times[0] < BEACON_MIN_SPAN.total_seconds():
            continue
        gaps = np.diff(times)
        cv = float(gaps.std() / gaps.mean()) if gaps.mean() > 0 else 1.0
        median = float(group["bytes"].median())
        if cv > BEACON_MAX_CV or median > BEACON_MAX_BYTES:
            continue
        found.append({
            **dict(zip(keys, key, strict=True)), "eventTime": group["start"].min(), "flows": len(group),
            "bytes": int(group["bytes"].sum()), "account_id": group["account_id"].iloc[0],
            "instance_id": group["instance_id"].iloc[0], "detection": "flow_beaconing",
            "risk_score": 65 + (10 if cv < 0.05 else 0),
            "reasons": f"{key[0]} ({key[1]}) called {key[2]}:{key[3]} {len(times)} times every "
                       f"{gaps.mean() / 60:.1f} min (jitter {cv:.0%}), median {median:.0f} bytes",
        })  # fmt: skip
    return pd.DataFrame(found)


def _peers(frame: pd.DataFrame) -> pd.DataFrame:
    """The day's flows with the internet from our side: ``local``/``peer`` addresses, ``outbound`` or not.
    Outbound flows count whatever the security group said (an instance trying to reach a peer matters);
    inbound ones only when accepted."""
    outbound = frame[frame["outbound"]].assign(local=lambda f: f["srcaddr"], peer=lambda f: f["dstaddr"])
    inbound = frame[frame["inbound"] & frame["accepted"]]
    inbound = inbound.assign(local=inbound["dstaddr"], peer=inbound["srcaddr"])
    return pd.concat([outbound, inbound], ignore_index=True)


def _by_peer(rows: pd.DataFrame, decide: dict[str, str]) -> pd.DataFrame:
    """Flows whose peer has a verdict, one row per interface, local address, peer and direction."""
    rows = rows[rows["peer"].isin(list(decide))]
    if rows.empty:
        return rows
    out = _first(rows, ["interface_id", "local", "peer", "outbound"], port=("dstport", "first"))
    out["verdict"] = out["peer"].map(decide)
    out["srcaddr"] = np.where(out["outbound"], out["local"], out["peer"])
    out["dstaddr"] = np.where(out["outbound"], out["peer"], out["local"])
    out["dstport"] = out["port"]
    return out


def _listed_peers(frame: pd.DataFrame, lists: tuple[ThreatList, ...]) -> pd.DataFrame:
    """Flows with a peer on a threat list (each distinct peer looked up once)."""
    if not lists or frame.empty:
        return frame.iloc[:0]
    rows = _peers(frame)
    named = {threat.name: threat for threat in lists}
    decide = {}
    for peer in pd.unique(rows["peer"].dropna()):
        found = matches(peer, lists)
        if found:
            decide[peer] = ", ".join(
                f"'{name}'" + (f" ({label[:60]})" if label else "")
                + f" of {named[name].updated or 'unknown date'}"
                for name, label in found
            )  # fmt: skip
    out = _by_peer(rows, decide)
    if out.empty:
        return out
    out["detection"] = "flow_peer_on_threat_list"
    out["risk_score"] = np.where(out["outbound"], 80, 70)
    out["reasons"] = [
        f"{eni} ({local}) {'sent to' if o else 'accepted from'} {peer}, on threat list {v}: {n} flows, {b:,} bytes"
        for eni, local, peer, o, v, n, b in zip(out["interface_id"], out["local"], out["peer"], out["outbound"],
                                                out["verdict"], out["flows"], out["bytes"], strict=True)
    ]  # fmt: skip
    return out.drop(columns=["local", "peer", "outbound", "verdict", "port"])


def _tor_inbound(frame: pd.DataFrame) -> pd.DataFrame:
    """Connections accepted from Tor exit nodes (the shipped network data; each distinct address once)."""
    rows = frame[frame["inbound"] & frame["accepted"]]
    if rows.empty:
        return rows
    rows = rows.assign(local=rows["dstaddr"], peer=rows["srcaddr"])
    decide = {p: "tor" for p in pd.unique(rows["peer"].dropna()) if origin_of(str(p)).kind == TOR}
    out = _by_peer(rows, decide)
    if out.empty:
        return out
    dated = snapshot_date()
    out["detection"], out["risk_score"] = "flow_tor_exit_inbound", 70
    out["reasons"] = [
        f"{eni} ({local}) accepted {n} flows from Tor exit {peer} on port {port} (network data of {dated})"
        for eni, local, peer, n, port in zip(out["interface_id"], out["local"], out["peer"], out["flows"],
                                             out["dstport"], strict=True)
    ]  # fmt: skip
    return out.drop(columns=["local", "peer", "outbound", "verdict", "port"])


def case_reasons(rule_id: str, records: list[dict] | tuple[dict, ...]) -> list[str]:
    """The reasons detection ``rule_id`` gives on a catalogue case's flow records (none: it stays silent)."""
    schema = pa.schema([f for f in FLOW_SCHEMA if f.name != "source_key"])
    table = pa.Table.from_pylist([dict(r) for r in records], schema=schema)
    found = detect(prepare(table))
    return found.loc[found["detection"] == rule_id, "reasons"].tolist()


# -- a day from the store ----------------------------------------------------------------------------------
def history_of(
    store: FlowStore, day: str, days: int = HISTORY_DAYS
) -> tuple[pd.DataFrame, set[tuple[str, int]]]:
    """For the ``days`` before ``day``: outbound bytes per interface and day, and the (interface, port)
    pairs that accepted SSH/RDP from the internet."""
    first = date.fromisoformat(day)
    frames = []
    seen: set[tuple[str, int]] = set()
    for back in range(1, days + 1):
        earlier = (first - timedelta(days=back)).isoformat()
        table = store.read_partition(earlier, columns=_READ)
        if table.num_rows:
            prepared = prepare(table)
            frames.append(outbound_bytes(prepared).assign(day=earlier))
            seen |= remote_access_pairs(prepared)
    empty = pd.DataFrame(columns=["interface_id", "bytes", "day"])
    return (pd.concat(frames, ignore_index=True) if frames else empty), seen


def scores_dir(data_root: DataPath | str, day: date | str) -> DataPath:
    return as_path(data_root) / "flows_scores" / f"date={day_text(day)}"


def score_flows(data_root: DataPath | str, day: date | str) -> tuple[pd.DataFrame, DataPath]:
    """Run every detection on a stored day and write its findings (overwritten on rerun)."""
    store = FlowStore(as_path(data_root))
    text = day_text(day)
    outbound, remote_seen = history_of(store, text)
    findings = detect(prepare(store.read_partition(text, columns=_READ)), outbound, remote_seen)
    table = pa.Table.from_pandas(findings.astype({"risk_score": "float64"}), preserve_index=False)
    path = fs.write_parquet_atomic(table, scores_dir(data_root, text) / "scores.parquet", compression="zstd")
    log.info("flows %s: %d findings written to %s", text, len(findings), path)
    return findings, path
