"""A small demo organisation with both sources in one data root: CloudTrail (its instances' RunInstances on
the first day, the attacks on the last) and the VPC Flow Logs of the same instances (the network attacks on
the last day). Shared by the join, model, report and DAG tests."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import date
from pathlib import Path

END = date(2026, 1, 31)  # the last day holds every scenario
DAYS = 5


@dataclass
class NetworkDemo:
    logs: Path
    root: Path
    flows_truth: list[dict]
    cloudtrail_truth: list[dict]

    @property
    def day(self) -> str:
        return END.isoformat()


def write_demo(base: Path, *, ingest_flows_too: bool = True) -> NetworkDemo:
    from trailguard.demo import generator
    from trailguard.demo.flows import demo_dates, write_flow_logs
    from trailguard.ingest.ingestion import ingest
    from trailguard.ingest.sources import open_source
    from trailguard.store.events import EventStore

    logs, root = base / "logs", base / "data"
    generator.generate(logs, end=END, days=DAYS, events=DAYS * 800, bad_files=False)
    truth = write_flow_logs(logs, demo_dates(END, DAYS))
    ingest(open_source(str(logs / "AWSLogs")), EventStore(root), workers=1)
    if ingest_flows_too:
        from trailguard.flows.ingestion import ingest_flows

        ingest_flows(open_source(str(logs / "AWSLogs"), service="vpcflowlogs"), root)
    with open(logs / "ground_truth.csv", newline="") as handle:
        cloudtrail = list(csv.DictReader(handle))
    return NetworkDemo(logs, root, truth, cloudtrail)
