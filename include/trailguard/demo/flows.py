"""VPC Flow Logs for the demo organisation's instances, with injected network attacks and their ground truth.

Every instance of ``INSTANCE_GROUPS`` gets an interface and a day of traffic: web servers serve HTTPS to
internet clients, EKS nodes talk to each other, every host resolves names and calls AWS endpoints; the
internet's background noise (a few rejected probes an hour) and idle NODATA intervals are there too.
Files are written hourly per account and region, in AWS's layout and format (a custom list with v3-v5 fields
on the dev account, the default v2 format elsewhere), gzipped.

Attacks, on the days their CloudTrail counterparts happen (``attacks.SCENARIOS``):

* ``ssh_brute_force`` (T1110): after ``security_group_open_ssh`` opens port 22 of ``DEBUG_GROUP`` to the
  world, an attacker address hammers SSH on the prod web server in that group (us-east-1) through it, and
  the group lets it in;
* ``data_exfiltration`` (T1048): on ``secrets_bulk_read`` days (the credentials of web server 0 in
  us-east-1, its role session used from outside AWS), the same instance sends about 1.5 GB to an attacker
  address over HTTPS.

CloudTrail context (what the join to CloudTrail finds): every instance's ``RunInstances`` on the demo's
first day (:func:`launch_instances`, written by the CloudTrail generator) names its interface, groups and
instance profile; the instances' own calls run as ``assumed-role/<role>/<instance-id>``. The prod
account's records are v2 (no ``instance-id``): only CloudTrail tells whose interface it is.

Ground truth: ``flows_ground_truth.csv`` (date, scenario, detection, attack_technique, interface_id,
instance_id, peer).
"""

from __future__ import annotations

import csv
import gzip
import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from trailguard.demo.organisation import ACCOUNT, INSTANCE_GROUPS, REGIONS
from trailguard.demo.traffic import DayTraffic, _private_ip, stable_hex
from trailguard.flows.logs import DEFAULT_FORMAT, flow_log_key, format_flow_file

V2 = DEFAULT_FORMAT.split()
V5 = V2 + [
    "vpc-id",
    "subnet-id",
    "instance-id",
    "tcp-flags",
    "type",
    "pkt-srcaddr",
    "pkt-dstaddr",
    "flow-direction",
]
AWS_ENDPOINTS = ("52.94.236.248", "54.239.28.85", "3.5.29.160", "52.216.138.45")
TRUTH_COLUMNS = ("date", "scenario", "detection", "attack_technique", "interface_id", "instance_id", "peer",
                 "role", "cloudtrail_scenario")
BRUTE_SOURCE = "45.146.164.110"
EXFIL_PEER = "95.217.120.33"


# the group ``security_group_open_ssh`` opens port 22 of to the world ("temp debug"): one prod web server in
# us-east-1 (the brute force's target) carries it beside its role's group
DEBUG_GROUP = "sg-0e5a7c9b1d3f24680"
DEBUG_HOST = ("web-server-role", "us-east-1", 1)


@dataclass(frozen=True)
class Host:
    account: str
    env: str
    region: str
    role: str
    instance: str
    interface: str
    address: str
    vpc: str
    subnet: str
    groups: tuple[str, ...] = ()


def hosts() -> list[Host]:
    """The demo's instances with their interface, address and security groups (the same ids CloudTrail's
    records carry: their RunInstances on the first day, their role sessions every day)."""
    out = []
    for g in INSTANCE_GROUPS:
        account = ACCOUNT[g.env]
        ri = REGIONS.index(g.region)
        for i in range(g.count):
            instance = "i-0" + stable_hex(account.id, g.role, g.region, str(i), length=16)
            groups = ("sg-0" + stable_hex(account.id, g.role, g.region, "sg", length=16),)
            if (g.role, g.region, i) == DEBUG_HOST and g.env == "prod":
                groups += (DEBUG_GROUP,)
            out.append(Host(
                account.id, g.env, g.region, g.role, instance, "eni-0" + stable_hex(instance, "eni", length=16),
                _private_ip(account, ri, i % 8, 11 + (i * 37) % 240), "vpc-0" + stable_hex(account.id, g.region, length=16),
                "subnet-0" + stable_hex(account.id, g.region, str(i % 8), length=16), groups,
            ))  # fmt: skip
    return out


LAUNCHED_BY = {"prod": "bob", "dev": "bob", "security": "erin"}  # terraform / the security team's CLI


def launch_instances(gen: DayTraffic) -> None:
    """The demo's instances as CloudTrail saw them start: one ``RunInstances`` per instance group on the
    demo's first day, answering with each instance's interface, address, groups and instance profile
    (what :mod:`trailguard.flows.context` joins flow records to)."""
    from trailguard.demo.organisation import USERS
    from trailguard.demo.traffic import cli_actor

    by_group: dict[tuple[str, str, str], list[Host]] = defaultdict(list)
    for host in hosts():
        by_group[(host.env, host.role, host.region)].append(host)
    for n, ((env, role, region), members) in enumerate(by_group.items()):
        account = ACCOUNT[env]
        user = next(u for u in USERS if u.name == LAUNCHED_BY[env])
        profile = {"arn": f"arn:aws:iam::{account.id}:instance-profile/{role}",
                   "id": "AIPA" + stable_hex(account.id, role, "profile", length=17).upper()}  # fmt: skip
        items = []
        for i, h in enumerate(members):
            groups = {"items": [{"groupId": g, "groupName": g} for g in h.groups]}
            items.append({
                "instanceId": h.instance, "imageId": "ami-0c7217cdde317cfec", "instanceState": {"code": 0, "name": "pending"},
                "privateIpAddress": h.address, "subnetId": h.subnet, "vpcId": h.vpc, "amiLaunchIndex": i,
                "instanceType": "m7i.large", "groupSet": groups, "iamInstanceProfile": profile,
                "networkInterfaceSet": {"items": [{
                    "networkInterfaceId": h.interface, "subnetId": h.subnet, "vpcId": h.vpc, "ownerId": account.id,
                    "status": "in-use", "privateIpAddress": h.address, "groupSet": groups,
                    "attachment": {"attachmentId": "eni-attach-0" + stable_hex(h.interface, length=16),
                                   "deviceIndex": 0, "status": "attaching", "deleteOnTermination": True},
                }]},
            })  # fmt: skip
        gen.call(
            cli_actor(user, account), "ec2:RunInstances", 8 * 3600 + 300 * n, region=region,
            params={"instancesSet": {"items": [{"imageId": "ami-0c7217cdde317cfec", "minCount": len(members),
                                                "maxCount": len(members)}]}, "instanceType": "m7i.large",
                    "iamInstanceProfile": {"name": role}, "groupSet": {"items": [{"groupId": g} for g in members[0].groups]}},
            response={"reservationId": "r-0" + stable_hex(account.id, role, region, "r", length=16),
                      "ownerId": account.id, "groupSet": {}, "instancesSet": {"items": items}},
        )  # fmt: skip


def _client(rng: random.Random) -> str:
    return f"{rng.choice((24, 31, 73, 81, 98, 151, 176, 187, 201))}.{rng.randint(1, 254)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def _day_flows(host: Host, day: date, rng: random.Random, peers: list[Host]) -> list[dict]:
    """One ordinary day of one interface's flows (record dicts keyed by AWS field name)."""
    base = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp())
    rows: list[dict] = []

    def add(src, dst, sport, dport, proto, packets, nbytes, t, action="ACCEPT", flags=2):
        rows.append({"srcaddr": src, "dstaddr": dst, "srcport": sport, "dstport": dport, "protocol": proto,
                     "packets": packets, "bytes": nbytes, "start": t, "end": t + 60, "action": action,
                     "log-status": "OK", "tcp-flags": flags})  # fmt: skip

    for minute in range(0, 1440, 10):
        t = base + minute * 60 + rng.randint(0, 59)
        add(
            host.address,
            host.address.rsplit(".", 2)[0] + ".0.2",
            rng.randint(32768, 60999),
            53,
            17,
            2,
            160,
            t,
        )
        endpoint = rng.choice(AWS_ENDPOINTS)
        sent = rng.randint(3_000, 40_000)
        add(host.address, endpoint, rng.randint(32768, 60999), 443, 6, 12, sent, t + 5)
        add(endpoint, host.address, 443, rng.randint(32768, 60999), 6, 10, rng.randint(5_000, 90_000), t + 5)
        if "web" in host.role:
            for _ in range(rng.randint(1, 4)):
                client = _client(rng)
                port = rng.randint(1024, 65000)
                add(client, host.address, port, 443, 6, 14, rng.randint(800, 3_000), t + rng.randint(0, 500))
                add(
                    host.address,
                    client,
                    443,
                    port,
                    6,
                    16,
                    rng.randint(5_000, 120_000),
                    t + rng.randint(0, 500),
                )
        if "eks" in host.role and peers:
            peer = rng.choice(peers)
            add(
                host.address,
                peer.address,
                rng.randint(32768, 60999),
                10250,
                6,
                20,
                rng.randint(2_000, 30_000),
                t + 30,
            )
        if rng.random() < 0.15:  # the internet knocking: rejected, a few an hour
            add(_client(rng), host.address, rng.randint(1024, 65000), rng.choice((23, 445, 3389, 8080, 5900, 22)),
                6, 1, 44, t + rng.randint(0, 500), action="REJECT")  # fmt: skip
        if rng.random() < 0.01:
            rows.append({"start": t, "end": t + 60, "log-status": "NODATA"})
    return rows


def _brute_force(host: Host, day: date, hour: float, rng: random.Random) -> list[dict]:
    start = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() + (hour + 1) * 3600)
    rows = []
    for i in range(rng.randint(60, 140)):
        t = start + i * rng.randint(8, 20)
        rows.append({"srcaddr": BRUTE_SOURCE, "dstaddr": host.address, "srcport": rng.randint(30000, 65000),
                     "dstport": 22, "protocol": 6, "packets": rng.randint(10, 30), "bytes": rng.randint(2_000, 6_000),
                     "start": t, "end": t + 60, "action": "ACCEPT", "log-status": "OK", "tcp-flags": 3})  # fmt: skip
    return rows


def _exfiltration(host: Host, day: date, hour: float, rng: random.Random) -> list[dict]:
    start = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() + (hour + 0.5) * 3600)
    rows = []
    for i in range(30):
        t = start + i * 60
        rows.append({"srcaddr": host.address, "dstaddr": EXFIL_PEER, "srcport": 51000 + i, "dstport": 443,
                     "protocol": 6, "packets": 36_000, "bytes": rng.randint(45, 55) * 2**20, "start": t, "end": t + 60,
                     "action": "ACCEPT", "log-status": "OK", "tcp-flags": 2})  # fmt: skip
    return rows


def write_flow_logs(out_dir: Path | str, dates: list[date], seed: int = 7) -> list[dict]:
    """Write the demo's flow log files for ``dates`` under ``out_dir`` (AWS's S3 layout) and the ground
    truth; returns the ground-truth rows."""
    from trailguard.demo.attacks import SCENARIOS
    from trailguard.demo.generator import _scenario_days

    out = Path(out_dir)
    all_hosts = hosts()
    by_name = {s.name: s for s in SCENARIOS}
    scenario_days = _scenario_days(dates)
    web = next(h for h in all_hosts if h.role == "web-server-role" and h.region == "us-east-1")
    target = next(h for h in all_hosts if DEBUG_GROUP in h.groups)
    truth: list[dict] = []
    for day in dates:
        rng = random.Random(f"{seed}|flows|{day.isoformat()}")
        files: dict[tuple[str, str, int], list[dict]] = defaultdict(list)
        happening = {s.name for s, _ in scenario_days.get(day, ())}
        for host in all_hosts:
            peers = [p for p in all_hosts if p.role == host.role and p.region == host.region and p != host]
            rows = _day_flows(host, day, rng, peers)
            if host == target and "security_group_open_ssh" in happening:
                rows += _brute_force(host, day, by_name["security_group_open_ssh"].hour, rng)
                truth.append({"date": day.isoformat(), "scenario": "ssh_brute_force",
                              "detection": "flow_remote_access_brute_force", "attack_technique": "T1110",
                              "interface_id": host.interface, "instance_id": host.instance, "peer": BRUTE_SOURCE,
                              "role": host.role, "cloudtrail_scenario": "security_group_open_ssh"})  # fmt: skip
            if host == web and "secrets_bulk_read" in happening:
                rows += _exfiltration(host, day, by_name["secrets_bulk_read"].hour, rng)
                truth.append({"date": day.isoformat(), "scenario": "data_exfiltration",
                              "detection": "flow_exfiltration_volume", "attack_technique": "T1048",
                              "interface_id": host.interface, "instance_id": host.instance, "peer": EXFIL_PEER,
                              "role": host.role, "cloudtrail_scenario": "secrets_bulk_read"})  # fmt: skip
            for row in rows:
                common = {"version": 5 if host.env == "dev" else 2, "account-id": host.account,
                          "interface-id": host.interface, "vpc-id": host.vpc, "subnet-id": host.subnet,
                          "instance-id": host.instance, "type": "IPv4", "pkt-srcaddr": row.get("srcaddr"),
                          "pkt-dstaddr": row.get("dstaddr"),
                          "flow-direction": "ingress" if row.get("dstaddr") == host.address else "egress"}  # fmt: skip
                hour = (row["start"] // 3600) % 24
                files[(host.account, host.region, hour)].append(common | row)
        for (account, region, hour), rows in sorted(files.items()):
            fields = V5 if account == ACCOUNT["dev"].id else V2
            rows.sort(key=lambda r: r["start"])
            stamp = datetime(day.year, day.month, day.day, hour, 5, tzinfo=timezone.utc)
            key = flow_log_key(account, region, day, "fl-0" + stable_hex(account, region, length=16), stamp,
                               stable_hex(account, region, day.isoformat(), str(hour), length=8))  # fmt: skip
            path = out / key
            path.parent.mkdir(parents=True, exist_ok=True)
            body = format_flow_file(fields, [tuple(r.get(f) for f in fields) for r in rows])
            path.write_bytes(gzip.compress(body, compresslevel=6, mtime=0))
    with open(out / "flows_ground_truth.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=TRUTH_COLUMNS)
        writer.writeheader()
        writer.writerows(truth)
    return truth


def demo_dates(end: date, days: int) -> list[date]:
    return [end - timedelta(days=days - 1 - i) for i in range(days)]
