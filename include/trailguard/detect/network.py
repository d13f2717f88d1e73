"""The network detections' catalogue records: what each flow detection is, its reason, triage line and cases.

The detections themselves run over a day of VPC flow records in ``trailguard.flows.detect`` (a wing above
this one, which reads the store); their records live here, beside the CloudTrail rules', so that the
catalogue (``trailguard rules``, ``docs/detections.md``) and its parametrised test cover them too. A case's
records are flow records as stored (``flows/date=D/`` columns: ``srcaddr``, ``dstport``, ``start``...);
``tests/detect/test_catalogue.py`` runs each through ``flows.detect``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from trailguard.detect.registry import Case, Detection, fires, near_miss

T0 = datetime(2026, 1, 1, 8, tzinfo=timezone.utc)
ENI, HOST = "eni-0web", "10.0.1.5"
LISTED_PEER = "203.0.113.66"  # the documentation address the catalogue test puts on a threat list
TOR_EXIT = "185.220.101.1"  # in the shipped Tor exit ranges


def flow(
    src: str | None,
    dst: str | None,
    sport: int | None,
    dport: int | None,
    *,
    action: str | None = "ACCEPT",
    nbytes: int | None = 800,
    minute: float = 0.0,
    eni: str = ENI,
    status: str = "OK",
) -> dict[str, Any]:
    """One flow record as stored (the case records' shape)."""
    start = T0 + timedelta(minutes=minute)
    return {
        "version": 2, "account_id": "111122223333", "interface_id": eni, "srcaddr": src, "dstaddr": dst,
        "srcport": sport, "dstport": dport, "protocol": 6, "packets": 5, "bytes": nbytes, "start": start,
        "end": start + timedelta(seconds=60), "action": action, "log_status": status, "instance_id": "i-0web",
    }  # fmt: skip


def _burst(n: int, **kwargs: Any) -> tuple[dict[str, Any], ...]:
    return tuple(flow("198.51.100.4", HOST, 40000 + i, 22, minute=i, **kwargs) for i in range(n))


def _beacon(minutes: list[float], nbytes: int = 300) -> tuple[dict[str, Any], ...]:
    return tuple(
        flow(HOST, "203.0.113.77", 51000 + i, 8443, nbytes=nbytes, minute=m) for i, m in enumerate(minutes)
    )


def _network(
    rule_id: str,
    tactic: str,
    technique: str,
    score: int,
    title: str,
    reason: str,
    runbook: str,
    cases: list[Case],
) -> Detection:
    return Detection(
        rule_id, technique, score, title, runbook, reason=reason, tactic=tactic, cases=tuple(cases)
    )


NETWORK_DETECTIONS: tuple[Detection, ...] = (
    _network(
        "flow_remote_access_from_internet", "lateral_movement", "T1021", 60, "SSH/RDP accepted from the internet",
        "{SSH|RDP} from internet address {ip} accepted by {interface} ({address}:{port}): {count} flows; "
        "{never before in its history|it accepted this on earlier days too}",
        "Who opened the port (AuthorizeSecurityGroupIngress)? Close it; check the host's auth log.",
        [fires("SSH from an internet address accepted", flow("203.0.113.9", HOST, 50000, 22)),
         fires("RDP from an internet address accepted", flow("203.0.113.9", HOST, 50000, 3389)),
         near_miss("SSH from a bastion inside the VPC", flow("10.0.9.9", HOST, 50000, 22)),
         near_miss("SSH from the internet rejected by the security group",
                   flow("203.0.113.9", HOST, 50000, 22, action="REJECT"))],
    ),
    _network(
        "flow_remote_access_brute_force", "credential_access", "T1110", 85, "SSH/RDP brute force from the internet",
        "{SSH|RDP} from internet address {ip} accepted by {interface} ({address}:{port}): {count} flows, 20+ in a "
        "day is a brute force; {never before in its history|it accepted this on earlier days too}",
        "Block the source; check the host for a successful login after the burst.",
        [fires("20 accepted SSH flows from one address in a day", *_burst(20)),
         near_miss("19 accepted SSH flows from one address", *_burst(19))],
    ),
    _network(
        "flow_scan_fanout", "discovery", "T1046", 70, "One address opening connections to many hosts or ports",
        "{address} ({interface}) {opened connections to N distinct hosts|tried N distinct ports on HOST} in a day "
        "(threshold {count})",
        "Is this a scanner you run? If not, isolate the instance and check its processes.",
        [fires("connections to 50 hosts on port 445", *(flow(HOST, f"10.0.2.{i}", 40000 + i, 445) for i in range(50))),
         fires("50 ports tried on one host", *(flow(HOST, "10.0.2.7", 60000, p) for p in range(1, 51))),
         near_miss("connections to 49 hosts", *(flow(HOST, f"10.0.2.{i}", 40000 + i, 445) for i in range(49))),
         near_miss("a web server answering 80 clients",
                   *(flow(HOST, f"198.51.100.{i}", 443, 40000 + i) for i in range(80)))],
    ),
    _network(
        "flow_rejected_burst", "discovery", "T1046", 40, "Burst of rejected flows from one address",
        "{count} rejected flows from {ip} to {interface} within {window} from {HH:MM} ({count} ports)",
        "Usually internet noise; worry when the same source later gets ACCEPT.",
        [fires("50 rejected flows within 5 minutes",
               *(flow("192.0.2.50", HOST, 40000, p, action="REJECT", minute=p / 10) for p in range(1, 51))),
         near_miss("50 rejected flows spread over 9 hours",
                   *(flow("192.0.2.50", HOST, 40000, p, action="REJECT", minute=p * 11) for p in range(1, 51)))],
    ),
    _network(
        "flow_mining_pool_port", "impact", "T1496", 75, "Traffic to a mining-pool port on the internet",
        "{interface} ({address}) talked to {peer}:{port}, a mining-pool port: {count} flows, {bytes} bytes",
        "Look for xmrig-like processes; check who launched the instance and when.",
        [fires("an instance connecting to stratum port 3333", flow(HOST, "198.51.100.77", 50123, 3333)),
         near_miss("an instance connecting to 443", flow(HOST, "198.51.100.77", 50123, 443)),
         near_miss("our web server answering a client's port 3333", flow(HOST, "198.51.100.77", 443, 3333))],
    ),
    _network(
        "flow_exfiltration_volume", "exfiltration", "T1048", 80,
        "Bytes out to the internet far above the interface's usual",
        "{interface} sent {MB} MB to the internet ({count} peers, most to {peer}); "
        "{its usual day is N MB (Rx)|no 3-day history, over 1 GB}",
        "Which process sent it, to whom? Check the instance role's recent S3/KMS calls.",
        [fires("2 GB out in a day with no history",
               *(flow(HOST, "198.51.100.200", 50000 + i, 443, nbytes=200 * 2**20) for i in range(10))),
         near_miss("500 MB out in a day with no history (under the 1 GB bar)",
                   *(flow(HOST, "198.51.100.200", 50000 + i, 443, nbytes=50 * 2**20) for i in range(10)))],
    ),
    _network(
        "flow_beaconing", "command_and_control", "T1071", 65, "Periodic small flows to one internet peer",
        "{interface} ({address}) called {peer}:{port} {count} times every {minutes} min (jitter {percent}), "
        "median {bytes} bytes",
        "Look up the peer; find the process holding the connection on the host.",
        [fires("a 300-byte call every 5 minutes for two hours", *_beacon([5 * i for i in range(24)])),
         near_miss("irregular calls", *_beacon([0, 1, 9, 11, 25, 26, 40, 41, 44, 60, 61, 80, 83, 99, 110, 111])),
         near_miss("regular but large transfers", *_beacon([5 * i for i in range(24)], nbytes=90_000))],
    ),
    _network(
        "flow_peer_on_threat_list", "command_and_control", "T1071", 80, "Traffic with an address on a threat list",
        "{interface} ({address}) {sent to|accepted from} {peer}, on threat list {list} of {date}: {count} flows, "
        "{bytes} bytes",
        "The peer is on one of your threat lists (TRAILGUARD_THREAT_LISTS; the reason names it and its date): "
        "find the process that talked to it, isolate the instance if it was not expected.",
        [fires("an instance connecting to a listed address", flow(HOST, LISTED_PEER, 50123, 443)),
         fires("a listed address accepted on 443", flow(LISTED_PEER, HOST, 50123, 443)),
         near_miss("a listed address rejected at the security group",
                   flow(LISTED_PEER, HOST, 50123, 443, action="REJECT")),
         near_miss("an instance connecting to an unlisted address", flow(HOST, "198.51.100.5", 50123, 443))],
    ),
    _network(
        "flow_tor_exit_inbound", "command_and_control", "T1090.003", 70, "Connections accepted from a Tor exit node",
        "{interface} ({address}) accepted {count} flows from Tor exit {ip} on port {port} (network data of {date})",
        "Nothing of yours needs Tor to reach an instance: close what the exit reached and look for who used it.",
        [fires("an instance accepting a connection from a Tor exit", flow(TOR_EXIT, HOST, 50123, 443)),
         near_miss("a Tor exit rejected at the security group", flow(TOR_EXIT, HOST, 50123, 443, action="REJECT")),
         near_miss("a connection from a home address", flow("24.6.171.20", HOST, 50123, 443))],
    ),
)  # fmt: skip
