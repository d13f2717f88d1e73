"""``trailguard investigate``: the incident responder's one-shot run over a folder (or ``s3://`` prefix, or
one file) of CloudTrail evidence, in any shape ingest reads.

Why one command: the logs someone brings to an incident have no history, no trained model and no
Airflow around them, and the answer is wanted in minutes. So: ingest into a scratch data root, validate
each day, fit what the data allows (a model only where a use case has enough events, in a local MLflow
file store inside the scratch root; otherwise the cold-start scorer), score every day, and write one
report over the whole period - ``investigation.html`` (+ ``investigation.json``): the top findings
across all days, each risky principal's timeline, the ATT&CK techniques seen, which scorer ran and why,
and the quality summary.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trailguard.ingest.ingestion import IngestSummary, ingest
from trailguard.ingest.sources import Source, open_source
from trailguard.model.features import USE_CASES, use_case_of
from trailguard.model.scoring import read_scores, score_day
from trailguard.report.daily import (
    HIGH_RISK,
    _reasons,
    _service,
    _title,
    clean_text,
    rank_findings,
    technique_url,
)
from trailguard.store.events import EventStore, write_bytes_atomic
from trailguard.store.render import render
from trailguard.store.settings import Settings

log = logging.getLogger(__name__)

TOP_K = 100
FINDING_MIN_SCORE = 40.0  # a group reaching this is a finding; below, it is background
TIMELINE_PRINCIPALS = 25
TIMELINE_EVENTS = 200
HTML_NAME = "investigation.html"
JSON_NAME = "investigation.json"


class InvestigationError(ValueError):
    """The evidence cannot be investigated (no source, nothing readable): the message says why."""


def evidence_source(uri: str) -> Source:
    """A folder, one file, an ``s3://`` prefix or a ``cloudwatch://`` group, as ``trailguard ingest`` reads it."""
    try:
        return open_source(uri)
    except (ValueError, FileNotFoundError) as exc:
        raise InvestigationError(f"cannot read the evidence: {exc}") from None


@dataclass
class Investigation:
    """What the run did and where its report is."""

    out: Path
    data_root: Path
    source: str
    days: list[str] = field(default_factory=list)
    events: int = 0
    scored: int = 0
    ingest: dict[str, Any] = field(default_factory=dict)
    trained: dict[str, str] = field(default_factory=dict)  # use case -> what training did
    top: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def html_path(self) -> Path:
        return self.out / HTML_NAME

    @property
    def json_path(self) -> Path:
        return self.out / JSON_NAME

    def lines(self) -> list[str]:
        span = f"{self.days[0]} .. {self.days[-1]}" if self.days else "-"
        out = [
            f"evidence     {self.source}",
            f"events       {self.events:,} on {len(self.days)} day(s) ({span}), {self.scored:,} scored",
            "models       " + ("; ".join(f"{uc}: {what}" for uc, what in self.trained.items()) or "-"),
        ]
        for row in self.top[:10]:
            out.append(
                f"  #{row['rank']:<3} {row['risk_score']:5.1f}  {row['title']}  {row['principal'] or '-'}"
            )
        out.append(
            f"seconds      {self.seconds:.1f} ("
            + ", ".join(f"{k} {v:.1f}" for k, v in self.timings.items())
            + ")"
        )
        out.append(f"report       {self.html_path}")
        return out


def investigate(
    source: str,
    settings: Settings,
    *,
    out: Path | None = None,
    data_root: Path | None = None,
    start: date | None = None,
    end: date | None = None,
    top_k: int = TOP_K,
    fit_models: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Investigation:
    """Ingest ``source`` into ``data_root`` (default: ``out/data``; ``out`` default: a new scratch folder),
    validate, score every day from ``start`` to ``end`` (event days, UTC) and write the investigation into
    ``out``. Scoring is the cold-start scorer fitted on the evidence itself (seconds); with ``fit_models``
    the use cases with enough events and days also get models trained on the whole period (a local
    MLflow store inside the data root; tens of seconds more), which then score them."""
    from trailguard.model.training import train
    from trailguard.quality.gate import validate_partition

    started = time.perf_counter()
    say = progress or (lambda _: None)
    src = evidence_source(source)
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="trailguard-investigation-"))
    out.mkdir(parents=True, exist_ok=True)
    root = Path(data_root) if data_root is not None else out / "data"
    store = EventStore(root)
    result = Investigation(out=out.resolve(), data_root=root.resolve(), source=src.uri)
    clock = _Clock(result.timings)

    say(f"ingest {src.uri} into {root}")
    summary: IngestSummary = ingest(src, store, batch_records=settings.ingest_batch_records, workers=1)
    result.ingest = summary.as_dict()
    say(
        f"  {summary.records:,} records: {summary.new:,} new, {summary.duplicates:,} duplicates, "
        f"{summary.quarantined:,} quarantined; {summary.objects_quarantined} file(s) quarantined"
    )
    days = [
        d
        for d in store.dates()
        if (start is None or d >= start.isoformat()) and (end is None or d <= end.isoformat())
    ]
    if not days:
        raise InvestigationError(
            f"no events in {src.uri}"
            + (f" between {start} and {end}" if start or end else "")
            + f" ({summary.records} records read, {summary.quarantined} quarantined: see {root / 'quarantine'})"
        )
    result.days = days
    clock("ingest")

    quality: dict[str, dict[str, Any]] = {}
    for day in days:
        checked = validate_partition(store, day, allowed_lateness_hours=settings.allowed_lateness_hours)
        quality[day] = {
            "status": checked.status,
            "rows_in": checked.rows_in,
            "rows_passed": checked.rows_passed,
            "rows_quarantined": checked.rows_quarantined,
            "problems": [o.summary_line() for o in checked.outcomes if not getattr(o, "success", True)][:8],
            "page": str(checked.html_path),
        }
        say(f"validate {day}: {checked.status} ({checked.rows_passed:,} rows)")
    clock("validate")

    tracking_uri = f"sqlite:///{(root / 'mlflow').resolve() / 'mlflow.db'}"
    if fit_models:
        result.trained = _fit_what_the_data_allows(store, days, settings, tracking_uri, train, say)
    else:
        result.trained = {
            uc: "cold-start (rules and rarity fitted on the evidence; --train fits models where the "
            "data allows)"
            for uc in USE_CASES
        }
    clock("train")

    cold_starts: dict = {}
    frames = []
    for day in days:
        if quality[day]["status"] == "failed":
            say(f"score {day}: skipped, the day failed validation critically")
            continue
        scored = score_day(
            store, day, tracking_uri=tracking_uri, cold_starts=cold_starts, registry=fit_models
        )
        result.scored += sum(scored.scored.values())
        say(f"score {day}: {scored.events:,} events, {scored.high_risk} at or above {HIGH_RISK:g}")
        frames.append(read_scores(store.root, day))
    clock("score")

    scores = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    result.events = sum(store.count_rows(d) for d in days)
    document = build_document(scores, result, quality, summary, top_k=top_k)
    result.top = document["top"]
    write_bytes_atomic(
        json.dumps(document, indent=2, default=str, allow_nan=False).encode("utf-8"), result.json_path
    )
    write_bytes_atomic(render_html(document).encode("utf-8"), result.html_path)
    clock("report")
    result.seconds = time.perf_counter() - started
    return result


def _fit_what_the_data_allows(
    store: EventStore,
    days: list[str],
    settings: Settings,
    tracking_uri: str,
    train: Callable[..., Any],
    say: Callable[[str], None],
) -> dict[str, str]:
    """Train (into the scratch root's own MLflow store) only the use cases with enough events and days;
    the others are scored cold-start. Counting first keeps a small set of evidence free of MLflow."""
    per_use_case: dict[str, tuple[int, int]] = {}
    for uc in USE_CASES:
        counts = []
        for day in days:
            types = store.read_partition(day, columns=["eventType"]).column("eventType").to_pandas()
            counts.append(int((use_case_of(types) == uc).sum()))
        per_use_case[uc] = (sum(counts), sum(1 for c in counts if c))
    enough = [
        uc
        for uc, (n, d) in per_use_case.items()
        if n >= settings.train_min_events and d >= settings.train_min_days
    ]
    what = {
        uc: f"cold-start ({n} events on {d} day(s); a model needs {settings.train_min_events} on {settings.train_min_days})"
        for uc, (n, d) in per_use_case.items()
        if uc not in enough
    }
    if enough:
        say(f"train {', '.join(enough)} (local MLflow store in {store.root / 'mlflow'})")
        span = (date.fromisoformat(days[-1]) - date.fromisoformat(days[0])).days + 1
        trained = train(
            store,
            until=date.fromisoformat(days[-1]),
            history_days=span,
            tracking_uri=tracking_uri,
            use_cases=tuple(enough),
            min_events=settings.train_min_events,
            min_days=settings.train_min_days,
        )
        for uc, res in trained.use_cases.items():
            if res.skipped:
                what[uc] = f"cold-start ({res.skipped})"
            elif res.decision:
                what[uc] = f"{res.decision.model_name} v{res.decision.version} ({res.decision.candidate})"
    for uc, text in what.items():
        say(f"  {uc}: {text}")
    return {uc: what[uc] for uc in USE_CASES if uc in what}


class _Clock:
    def __init__(self, into: dict[str, float]) -> None:
        self.into, self.last = into, time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self.into[stage] = self.into.get(stage, 0.0) + now - self.last
        self.last = now


# -- the document: one dict behind the JSON and the HTML ---------------------------------------------------
def build_document(
    scores: pd.DataFrame,
    result: Investigation,
    quality: Mapping[str, Mapping[str, Any]],
    ingested: IngestSummary,
    *,
    top_k: int = TOP_K,
) -> dict[str, Any]:
    """Everything the report shows, as plain bounded values (attacker-controlled text is clipped here
    and escaped by the template)."""
    top: list[dict[str, Any]] = []
    findings_total = high = 0
    if len(scores):
        scores = scores.copy()
        scores["eventTime"] = pd.to_datetime(scores["eventTime"], utc=True)
        findings = rank_findings(scores, top_k=top_k, min_score=FINDING_MIN_SCORE)
        findings_total = (
            int(findings.top["risk_score"].ge(FINDING_MIN_SCORE).sum()) if len(findings.top) else 0
        )
        high = findings.high_risk
        for rank, row in enumerate(findings.top.to_dict("records"), start=1):
            top.append(_finding(rank, row))
    return {
        "title": "TrailGuard investigation",
        "source": clean_text(result.source, 500),
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "period": {
            "from": result.days[0] if result.days else None,
            "to": result.days[-1] if result.days else None,
            "days": result.days,
        },
        "summary": {
            "events": result.events,
            "events_scored": int(scores["risk_score"].notna().sum()) if len(scores) else 0,
            "principals": int(scores["principal"].nunique()) if len(scores) else 0,
            "high_risk_events": int((scores["risk_score"] >= HIGH_RISK).sum()) if len(scores) else 0,
            "high_risk_findings": high,
            "findings_listed": findings_total,
            "finding_min_score": FINDING_MIN_SCORE,
            "by_event_type": _counts(scores, "use_case"),
        },
        "scorers": _scorers(scores),
        "trained": result.trained,
        "top": top,
        "techniques": _techniques(scores),
        "timelines": _timelines(scores, top),
        "quality": {
            "ingest": {
                k: ingested.as_dict()[k]
                for k in (
                    "objects",
                    "objects_ingested",
                    "objects_quarantined",
                    "records",
                    "new",
                    "duplicates",
                    "quarantined",
                )
            },
            "days": [{"day": d, **{k: v for k, v in q.items()}} for d, q in quality.items()],
            "quarantine": str(result.data_root / "quarantine"),
        },
        "data_root": str(result.data_root),
    }


def _finding(rank: int, row: Mapping[str, Any]) -> dict[str, Any]:
    technique = clean_text(row.get("attack_technique"), 40) or None
    return {
        "rank": rank,
        "risk_score": round(float(row["risk_score"]), 1),
        "title": _title(row),
        "service": _service(row.get("eventSource")),
        "eventName": clean_text(row.get("eventName"), 120),
        "principal": clean_text(row.get("principal"), 300),
        "count": int(row.get("count") or 1),
        "first_seen": _iso(row.get("first_seen")),
        "last_seen": _iso(row.get("last_seen")),
        "eventTime": _iso(row.get("eventTime")),
        "eventID": clean_text(row.get("eventID"), 100),
        "sourceIPAddress": clean_text(row.get("sourceIPAddress"), 100),
        "awsRegion": clean_text(row.get("awsRegion"), 60),
        "account": clean_text(row.get("account"), 40),
        "use_case": clean_text(row.get("use_case"), 40),
        "errorCode": clean_text(row.get("errorCode"), 80),
        "attack_technique": technique,
        "technique_url": technique_url(technique),
        "reasons": _reasons(row.get("reasons")),
        "model_name": clean_text(row.get("model_name"), 80),
    }


def _iso(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
        return None
    return pd.Timestamp(value).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def _counts(scores: pd.DataFrame, column: str) -> dict[str, int]:
    if not len(scores) or column not in scores:
        return {}
    return {
        clean_text(k, 60) or "(none)": int(v) for k, v in scores[column].value_counts(dropna=False).items()
    }


def _scorers(scores: pd.DataFrame) -> list[dict[str, Any]]:
    """Which scorer ran for each use case, on how many events and days, and why (the note of its
    largest day first, then each distinct note of the others)."""
    if not len(scores):
        return []
    frame = scores.assign(
        _day=scores["eventTime"].dt.strftime("%Y-%m-%d"), scorer_note=scores.get("scorer_note")
    )
    out = []
    for (uc, name), part in frame.groupby(["use_case", "model_name"], dropna=False):
        by_day = (
            part.groupby("_day")["scorer_note"].agg(["first", "size"]).sort_values("size", ascending=False)
        )
        notes = [f"{day}: {clean_text(note, 400)}" for day, note in by_day["first"].sort_index().items()]
        out.append(
            {
                "use_case": clean_text(uc, 40),
                "model_name": clean_text(name, 80),
                "note": clean_text(by_day["first"].iloc[0], 400),
                "notes": notes,
                "events": int(len(part)),
                "days": int(len(by_day)),
            }
        )
    return sorted(out, key=lambda s: (s["use_case"], -s["events"]))


def _techniques(scores: pd.DataFrame) -> list[dict[str, Any]]:
    if not len(scores) or scores["attack_technique"].notna().sum() == 0:
        return []
    seen = scores[scores["attack_technique"].notna() & scores["attack_technique"].ne("")]
    out = []
    for technique, part in seen.groupby("attack_technique"):
        text = clean_text(technique, 40)
        out.append(
            {
                "technique": text,
                "url": technique_url(text),
                "events": int(len(part)),
                "max_risk": round(float(part["risk_score"].max()), 1),
                "principals": sorted({clean_text(p, 200) for p in part["principal"].dropna()})[:10],
                "calls": sorted({clean_text(n, 80) for n in part["eventName"].dropna()})[:10],
                "first_seen": _iso(part["eventTime"].min()),
                "last_seen": _iso(part["eventTime"].max()),
            }
        )
    return sorted(out, key=lambda t: (-t["max_risk"], -t["events"]))


def _timelines(scores: pd.DataFrame, top: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each risky principal's events in time order: those of the top findings first, then any other
    principal with an event at or above the finding threshold, riskiest first."""
    if not len(scores):
        return []
    principal = scores["principal"].fillna("(unknown)")
    peak = scores.assign(_p=principal).groupby("_p")["risk_score"].max().sort_values(ascending=False)
    chosen = list(dict.fromkeys([t["principal"] or "(unknown)" for t in top]))
    chosen += [p for p, r in peak.items() if r >= FINDING_MIN_SCORE and p not in chosen]
    out = []
    for name in chosen[:TIMELINE_PRINCIPALS]:
        mine = scores[principal.eq(name).to_numpy()].sort_values("eventTime", kind="stable")
        events = [
            {
                "time": _iso(e["eventTime"]),
                "risk_score": round(float(e["risk_score"]), 1),
                "title": _title(e),
                "sourceIPAddress": clean_text(e.get("sourceIPAddress"), 100),
                "awsRegion": clean_text(e.get("awsRegion"), 60),
                "attack_technique": clean_text(e.get("attack_technique"), 40) or None,
                "reason": (_reasons(e.get("reasons"), limit=1) or [""])[0],
                "eventID": clean_text(e.get("eventID"), 100),
            }
            for e in mine.head(TIMELINE_EVENTS).to_dict("records")
        ]
        out.append(
            {
                "principal": clean_text(name, 300),
                "events": int(len(mine)),
                "shown": len(events),
                "max_risk": round(float(mine["risk_score"].max()), 1),
                "first_seen": _iso(mine["eventTime"].min()),
                "last_seen": _iso(mine["eventTime"].max()),
                "timeline": events,
            }
        )
    return out


# -- HTML -------------------------------------------------------------------------------------------------
def render_html(document: Mapping[str, Any]) -> str:
    """``templates/investigation.html`` through the wings' one autoescaping environment (store.render)."""
    return render("trailguard.report", "investigation.html", doc=document, high_risk=HIGH_RISK)
