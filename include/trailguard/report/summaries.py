"""Short human summaries of what the pipeline left in a data root (for `trailguard demo` and logs).

They read only what the steps wrote (manifest, quality results, training summary, report), so they work
the same whether a step ran in Airflow, from the command line or in a test.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date

from trailguard.store.events import EventStore
from trailguard.store.fs import DataPath, as_path


def ingest_lines(data_root: DataPath) -> list[str]:
    store = EventStore(data_root)
    manifest = store.read_manifest().to_pandas()
    if manifest.empty:
        return ["nothing ingested yet"]
    latest = manifest.drop_duplicates("key", keep="last")
    status = Counter(latest["status"])
    days = store.dates()
    rejected = store.read_quarantined_records().num_rows
    events = sum(store.count_rows(d) for d in days)
    lines = [
        f"objects: {len(latest):,} seen - {status.get('ingested', 0):,} ingested, "
        f"{status.get('skipped', 0):,} skipped (digest/insight/other), {status.get('quarantined', 0):,} quarantined",
        f"events: {events:,} stored in {len(days)} day partitions ({days[0] if days else '-'} .. {days[-1] if days else '-'}); "
        f"{int(latest['records_duplicate'].sum()):,} duplicates dropped, {rejected:,} records quarantined",
    ]
    for row in latest[latest["status"] == "quarantined"].itertuples():
        lines.append(f"  quarantined {row.key}: {row.error}")
    return lines + [f"store: {store.events_dir}"]


def quality_lines(data_root: DataPath) -> list[str]:
    store = EventStore(data_root)
    from trailguard.quality.gate import read_quality_status

    results = {day: read_quality_status(store, day) for day in store.dates()}
    done = {d: r for d, r in results.items() if r}
    if not done:
        return ["validation: no day validated yet"]
    status = Counter(r["status"] for r in done.values())
    quarantined = sum(int(r.get("rows_quarantined") or 0) for r in done.values())
    lines = [
        f"validation: {len(done)} days - "
        + ", ".join(f"{n} {s}" for s, n in sorted(status.items()))
        + f"; {quarantined:,} rows quarantined"
    ]
    for day, result in sorted(done.items()):
        if result["status"] != "passed":
            failing = [o["name"] for o in result.get("outcomes", []) if not o.get("success")]
            lines.append(f"  {day} {result['status']}: {', '.join(failing) or '-'}")
    last = max(done)
    lines.append(f"quality pages: {data_root / 'quality'}/date=YYYY-MM-DD/index.html (e.g. {last})")
    return lines


def save_training_summary(data_root: DataPath, result: object) -> DataPath:
    """Keep the last training's table beside the data (MLflow has the details) for `demo` and logs."""
    from trailguard.store.events import write_bytes_atomic

    document = {"lines": result.lines(), "result": result.as_dict()}
    path = as_path(data_root) / "models" / "last_training.json"
    return write_bytes_atomic(json.dumps(document, indent=2, default=str).encode(), path)


def flows_lines(data_root: DataPath) -> list[str]:
    """The flow store's days and each day's network findings (from ``flows_scores/``)."""
    from trailguard.findings.network import read_flow_scores
    from trailguard.flows.ingestion import FlowStore

    days = FlowStore(as_path(data_root)).dates()
    if not days:
        return ["flows: none stored"]
    found = {d: read_flow_scores(data_root, d) for d in days}
    high = {d: int((f["risk_score"] >= 70).sum()) for d, f in found.items() if f is not None}
    return [f"flows: {len(days)} days ({days[0]} .. {days[-1]}), {sum(1 for f in found.values() if f is not None)} scored; "
            f"days with network findings >= 70: " + (", ".join(f"{d} ({n})" for d, n in high.items() if n) or "none")]  # fmt: skip


def training_lines(data_root: DataPath) -> list[str]:
    path = data_root / "models" / "last_training.json"
    if not path.exists():
        return ["training: no summary found"]
    return json.loads(path.read_text()).get("lines", [])


def report_lines(data_root: DataPath, day: date | str) -> list[str]:
    from trailguard.report.daily import load_report

    report = load_report(data_root, day)
    lines = list(report.lines())
    lines.append(f"report: {report.html_path}")
    eml = report.html_path.with_name("report.eml")
    if eml.exists():
        lines.append(f"email copy: {eml}")
    return lines


def integrity_lines(data_root: DataPath) -> list[str]:
    """The CloudTrail evidence verdict of each verified delivery day, with its findings."""
    from trailguard.integrity.findings import integrity_section, text_lines

    folder = as_path(data_root) / "integrity"
    days = sorted(p.name.removeprefix("date=") for p in folder.glob("date=*")) if folder.is_dir() else []
    sections = {day: integrity_section(data_root, day) for day in days}
    checked = {day: s for day, s in sections.items() if s and s["status"] != "unverified"}
    if not checked:
        return ["evidence integrity: no day with digest files verified"]
    status = Counter(s["status"] for s in checked.values())
    lines = ["evidence integrity: " + ", ".join(f"{n} days {s}" for s, n in sorted(status.items()))]
    for day, section in checked.items():
        if section["status"] == "tampered":
            lines += [f"  {day} {line.strip()}" for line in text_lines(section, day)[:12]]
    return lines
