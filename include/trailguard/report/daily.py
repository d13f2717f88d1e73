"""The daily risk report: the day's riskiest CloudTrail events, grouped, explained and safe to open.

:func:`build_report` reads ``scores/date=D/*.parquet``, groups repeats (a burst of 200 identical
AccessDenied calls is one row with a count), keeps the top K, adds summary figures, the partition's
data-quality status and a chart, and writes ``reports/D/`` atomically: ``report.html`` (self-contained),
``top_events.csv`` (rank order), ``report.json`` (everything, so :func:`load_report` can rebuild the
report for the mail task) and ``chart.png``.

Every CloudTrail field is attacker-controlled, and the reasons interpolate them. So: the HTML is rendered
from ``templates/daily_report.html`` (the mail's part from ``templates/email.html``) through the one
autoescaping Jinja2 environment (:mod:`trailguard.store.render`) and links are built only from validated
patterns; CSV text cells that a spreadsheet would read as a formula get a leading ``'``; long values are
cut with a visible marker; the plain text loses control and bidi characters. Nothing from the data
reaches the chart.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from numbers import Number
from typing import Any

import numpy as np
import pandas as pd

from trailguard.findings.baseline import (
    NOVEL_SENSITIVE,
    behaviour_findings,
    load_day_history,
    panel_lines,
    panels_for,
)
from trailguard.findings.correlate import DayFindings, correlate, read_identities
from trailguard.findings.files import findings_document, write_findings
from trailguard.findings.network import NETWORK_MIN_SCORE, network_section, story_lines
from trailguard.findings.suppress import Suppression, active_suppressions, suppressed_events
from trailguard.integrity.findings import integrity_section
from trailguard.integrity.findings import text_lines as integrity_text_lines
from trailguard.store.events import EventStore, write_bytes_atomic
from trailguard.store.events import day_text as _day_text
from trailguard.store.fs import DataPath, as_path, is_remote, parquet_schema, read_parquet, visible_files
from trailguard.store.text import TRUNCATED as TRUNCATED  # re-exported: the report's marker
from trailguard.store.text import sanitise

log = logging.getLogger(__name__)

HIGH_RISK = 70.0
DEFAULT_LIMIT = 300  # characters of one displayed value
FIELD_LIMITS = {"reasons": 2000, "userAgent": 240, "eventID": 128, "event_ids": 10_000 * 130}
MAX_REASONS = 12  # reasons listed per event; the rest are counted
BREAKDOWN_LIMIT = 10  # values listed per summary breakdown; the rest are summed as "other"
CHART_POINTS = 2000  # high-risk events drawn at most (the highest)

REQUIRED_COLUMNS = ("eventID", "eventTime", "use_case", "risk_score")
TEXT_COLUMNS = (
    "principal", "eventName", "eventSource", "awsRegion", "account", "sourceIPAddress", "country", "asn",
    "userAgent", "errorCode", "category", "reasons", "attack_technique", "model_name", "model_version",
)  # fmt: skip
CSV_COLUMNS = (
    "rank", "eventID", "risk_score", "count", "eventTime", "principal", "eventName", "eventSource",
    "sourceIPAddress", "country", "account", "awsRegion", "attack_technique", "reasons",
    # extensions after the contract's columns
    "use_case", "errorCode", "first_seen", "last_seen", "userAgent", "category", "model_name", "model_version",
    # findings (one row per finding; eventID is its lead event)
    "finding_id", "finding_score", "tactics", "event_ids",
)  # fmt: skip
TOP_COLUMNS = (*CSV_COLUMNS, "asn", "group_id")

_TECHNIQUE = re.compile(r"T(\d{4})(?:\.(\d{3}))?")
_URL = re.compile(r"https?://[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]+")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")
_REPORT_FILES = {"html": "report.html", "csv": "top_events.csv", "json": "report.json", "chart": "chart.png",
                 "findings": "findings.json"}  # fmt: skip


class ScoresNotFoundError(FileNotFoundError):
    """The day has no risk scores: the report cannot be built before scoring."""


# -- safe values ------------------------------------------------------------------------------------------
def is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def clip(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters with a visible marker, so a 5 MB userAgent stays readable."""
    return sanitise(text, limit, unsafe="keep")


def clean_text(value: Any, limit: int | None = None) -> str:
    """A value for plain text, HTML or a mail header: no control or bidi characters, bounded length."""
    return "" if is_missing(value) else sanitise(str(value), limit)


def csv_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet cannot execute: formula-like text gets a leading ``'``, numbers stay numbers."""
    if is_missing(value):
        return ""
    if isinstance(value, Number) and not isinstance(value, bool):
        return value
    text = str(value)
    if text.startswith(_FORMULA_START) or text.lstrip().startswith(_FORMULA_START):
        return "'" + text
    return text


def technique_url(technique: Any) -> str | None:
    """The ATT&CK page of a technique id, only for a well-formed ``T1234`` or ``T1234.001``."""
    if not isinstance(technique, str):
        return None
    match = _TECHNIQUE.fullmatch(technique.strip())
    if not match:
        return None
    main, sub = match.groups()
    return f"https://attack.mitre.org/techniques/T{main}/" + (f"{sub}/" if sub else "")


def _value(value: Any, column: str) -> str | None:
    """A stored value as bounded text (None when missing); floats that are whole numbers lose their ``.0``."""
    if is_missing(value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return clip(str(value), FIELD_LIMITS.get(column, DEFAULT_LIMIT))


def _iso(value: Any) -> str | None:
    if is_missing(value):
        return None
    return pd.Timestamp(value).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def scores_dir(data_root: DataPath | str, day: date | str) -> DataPath:
    return as_path(data_root) / "scores" / f"date={_day_text(day)}"


def report_dir(data_root: DataPath | str, day: date | str) -> DataPath:
    return as_path(data_root) / "reports" / _day_text(day)


# -- reading and ranking ----------------------------------------------------------------------------------
def read_scores(data_root: DataPath | str, day: date | str) -> pd.DataFrame:
    """The day's scored events; optional columns a scorer left out are added empty."""
    day_text = _day_text(day)
    folder = scores_dir(data_root, day_text)
    files = visible_files(folder)
    if not files:
        raise ScoresNotFoundError(
            f"no risk scores for {day_text} (looked for {folder}/*.parquet): "
            f"run `trailguard score --date {day_text}` first"
        )
    import pyarrow as pa

    # lf_rules: the findings' tactics; anomaly_score: their tie-break; scorer_note: which scorer ran and why
    wanted = (
        *REQUIRED_COLUMNS,
        *TEXT_COLUMNS,
        "lf_rules",
        "anomaly_score",
        "ua_family",
        "principal_short",
        "scorer_note",
    )
    tables = [
        read_parquet(path, columns=[c for c in parquet_schema(path).names if c in wanted]) for path in files
    ]
    # one conversion to pandas for all the day's parts (one per account x region)
    scores = pa.concat_tables(tables, promote_options="default").to_pandas()
    missing = [c for c in REQUIRED_COLUMNS if c not in scores.columns]
    if missing:
        raise ValueError(
            f"{folder}: scores lack column(s) {', '.join(missing)}; rescore with `trailguard score --date {day_text}`"
        )
    for column in TEXT_COLUMNS:
        if column not in scores.columns:
            scores[column] = None
    scores["eventTime"] = pd.to_datetime(scores["eventTime"], utc=True)
    scores["risk_score"] = pd.to_numeric(scores["risk_score"], errors="coerce")
    return scores


@dataclass(frozen=True)
class Findings:
    """The day's events correlated into findings: the top ones in full, the others only counted."""

    top: pd.DataFrame  # each reported finding's lead event + count, first/last seen, finding columns
    total: int
    high_risk: int
    day: DayFindings | None = None
    suppressed: np.ndarray | None = None  # per finding of ``day.table``

    @property
    def suppressed_count(self) -> int:
        return 0 if self.suppressed is None else int(self.suppressed.sum())


def rank_findings(
    scores: pd.DataFrame,
    *,
    top_k: int,
    min_score: float = 0.0,
    identities: pd.DataFrame | None = None,
    suppressions: list[Suppression] | None = None,
    history: Any = None,
) -> Findings:
    """Correlate the day's events into findings (:mod:`trailguard.findings.correlate`: one credential's
    chain from one source, a burst included) and keep the top K by finding score, each as its lead event
    with the finding's ``count``, ``first_seen``, ``last_seen``, ``finding_id``, ``finding_score``,
    ``tactics`` and ``event_ids``. Only findings whose lead event scores at least ``min_score`` count;
    findings an analyst suppressed (every event matches ``suppressions``) are left out and counted."""
    day = correlate(scores, identities=identities)
    if history is not None:
        behaviour = behaviour_findings(day, history.profile, len(history.days))
        rows = np.array(sorted(behaviour), dtype=np.int64)
        if len(rows):
            day.table.loc[rows, "score"] += NOVEL_SENSITIVE
            day.table["behaviour"] = pd.Series(behaviour, dtype=object).reindex(day.table.index)
    per_event = suppressed_events(day.events, day.events["credential"], suppressions or [])
    suppressed = day.suppressed(per_event)
    ranked = day.ranked(min_score=min_score, suppressed=suppressed)
    chosen = ranked.head(top_k)
    events = day.events
    top = events.iloc[chosen["lead"].to_numpy()].copy()
    top["count"] = chosen["count"].to_numpy()
    top["first_seen"] = chosen["first_seen"].to_numpy()
    top["last_seen"] = chosen["last_seen"].to_numpy()
    top["principal"] = chosen["credential"].to_numpy()  # a failed sign-in shows the user, not its principalId
    top["finding_id"] = chosen["finding_id"].to_numpy()
    top["finding_score"] = chosen["score"].to_numpy()
    top["tactics"] = [",".join(t) for t in chosen["tactics"]]
    if "behaviour" in chosen:  # the finding-level detection leads the reasons
        notes = chosen["behaviour"].to_numpy()
        top["reasons"] = [r if not isinstance(n, str) else f"{n}; {r}" if isinstance(r, str) and r else n
                          for n, r in zip(notes, top["reasons"].to_numpy(), strict=True)]  # fmt: skip
    top["event_ids"] = [" ".join(day.event_ids(row)) for row in chosen.index]
    high = int(((day.table["lead_risk"] >= HIGH_RISK).to_numpy() & ~suppressed).sum())
    return Findings(top=top.reset_index(drop=True), total=len(day.table), high_risk=high, day=day,
                    suppressed=suppressed)  # fmt: skip


def group_id(row: Mapping[str, Any]) -> str:
    """The finding's id (an update mail tells new findings from known ones by it)."""
    value = row.get("finding_id")
    return "" if is_missing(value) else str(value)


def _top_frame(chosen: pd.DataFrame) -> pd.DataFrame:
    """The reported rows as plain, bounded Python values (the same in CSV, JSON, HTML and text)."""
    records = []
    for rank, row in enumerate(chosen.to_dict("records"), start=1):
        record: dict[str, Any] = {column: _value(row.get(column), column) for column in TOP_COLUMNS}
        record.update(
            rank=rank,
            risk_score=round(float(row["risk_score"]), 1),
            finding_score=round(float(row["finding_score"]), 2),
            count=int(row["count"]),
            eventTime=_iso(row["eventTime"]),
            first_seen=_iso(row["first_seen"]),
            last_seen=_iso(row["last_seen"]),
            event_ids=None if is_missing(row.get("event_ids")) else str(row["event_ids"]),
            group_id=group_id(row),
        )
        records.append(record)
    return pd.DataFrame.from_records(records, columns=list(TOP_COLUMNS))


# -- summary ----------------------------------------------------------------------------------------------
def _breakdown(values: pd.Series) -> dict[str, Any]:
    counts = values.value_counts(dropna=False)
    top = [[_value(key, "breakdown"), int(n)] for key, n in counts.head(BREAKDOWN_LIMIT).items()]
    return {"top": top, "other": int(counts.iloc[BREAKDOWN_LIMIT:].sum()), "distinct": int(len(counts))}


def _summary(
    scores: pd.DataFrame, findings: Findings, top: pd.DataFrame, top_k: int, min_score: float
) -> dict:
    risk = scores["risk_score"]
    valid = risk.dropna().clip(0, 100)
    counts, _ = np.histogram(valid.to_numpy(dtype=float), bins=range(0, 101, 10))  # the last bin includes 100
    return {
        "events_scored": int(risk.notna().sum()),
        "events_unscored": int(risk.isna().sum()),
        "findings": findings.total,
        "suppressed": findings.suppressed_count,
        "reported": int(len(top)),
        "top_k": int(top_k),
        "min_score": float(min_score),
        "high_risk_threshold": HIGH_RISK,
        "high_risk_events": int((risk >= HIGH_RISK).sum()),
        "high_risk_findings": findings.high_risk,
        "max_score": None if valid.empty else round(float(valid.max()), 1),
        "mean_score": None if valid.empty else round(float(valid.mean()), 1),
        "p95_score": None if valid.empty else round(float(valid.quantile(0.95)), 1),
        "score_distribution": [
            {"range": f"{lo}-{lo + 10}", "events": int(n)}
            for lo, n in zip(range(0, 100, 10), counts, strict=True)
        ],
        "by_use_case": _breakdown(scores["use_case"]),
        "by_category": _breakdown(scores["category"]),
        "by_account": _breakdown(scores["account"]),
        "by_region": _breakdown(scores["awsRegion"]),
    }


def _models(scores: pd.DataFrame) -> list[dict[str, Any]]:
    """Per use case the scorer that ran (a champion, or the cold-start scorer) and why (``note``)."""
    keys = ["use_case", "model_name", "model_version"]
    notes = (
        scores["scorer_note"]
        if "scorer_note" in scores
        else pd.Series(None, index=scores.index, dtype=object)
    )
    grouped = scores.assign(scorer_note=notes).groupby(keys, dropna=False)["scorer_note"]
    sizes, first_note = grouped.size(), grouped.first()
    return [
        {"use_case": _value(u, "use_case"), "model_name": _value(m, "model_name"),
         "model_version": _value(v, "model_version"), "events": int(n),
         "note": _value(first_note.get((u, m, v)), "scorer_note")}
        for (u, m, v), n in sizes.items()
    ]  # fmt: skip


def _model_line(m: Mapping[str, Any]) -> str:
    """``api_call: trailguard-api-call v3`` or ``console_login: cold-start (no model yet: ...)``."""
    line = f"{clean_text(m['use_case'], 40)}: {clean_text(m['model_name'], 80) or '?'}"
    if m.get("model_version"):
        return line + f" v{clean_text(m['model_version'], 40)}"
    return line + (f" ({clean_text(m.get('note'), 300)})" if m.get("note") else "")


def _quality(data_root: DataPath, day_text: str) -> tuple[dict[str, Any] | None, DataPath | None]:
    """The partition's data-quality verdict and page; an unreadable result is reported, not fatal."""
    from trailguard.quality.gate import read_quality_status
    from trailguard.store.events import EventStore

    page = data_root / "quality" / f"date={day_text}" / "index.html"
    try:
        status = read_quality_status(EventStore(data_root), day_text)
    except ValueError as exc:
        log.warning("%s", exc)
        status = {"status": "unknown", "error": str(exc)}
    if status is None:
        return None, None
    quality = {key: status.get(key) for key in ("status", "rows_in", "rows_passed", "rows_quarantined")}
    if status.get("error"):
        quality["error"] = clip(str(status["error"]), DEFAULT_LIMIT)
    quality["page"] = f"quality/date={day_text}/index.html" if page.exists() else None
    return quality, page if page.exists() else None


# -- chart ------------------------------------------------------------------------------------------------
def render_chart(scores: pd.DataFrame, top: pd.DataFrame, day_text: str) -> bytes:
    """Risk over the day by hour as PNG: events per hour, the hourly maximum, high-risk events in red and
    the top five reported events numbered. Only numbers are drawn: no attacker text reaches matplotlib."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    start = pd.Timestamp(day_text, tz="UTC")
    valid = scores["risk_score"].notna() & scores["eventTime"].notna()
    risk = scores["risk_score"][valid]
    hours = ((scores["eventTime"][valid] - start).dt.total_seconds() / 3600).clip(0, 23.999)
    fig = Figure(figsize=(9, 3.3), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    volume = ax.twinx()
    per_hour = hours.astype(int).value_counts().reindex(range(24), fill_value=0)
    volume.bar([h + 0.5 for h in range(24)], per_hour.to_numpy(), width=0.85, color="#e5e7eb", zorder=1)
    volume.set_ylabel("events per hour", color="#6b7280", fontsize=8)
    volume.tick_params(labelsize=8, colors="#6b7280")
    ax.set_zorder(volume.get_zorder() + 1)
    ax.patch.set_visible(False)
    if not risk.empty:
        hourly_max = risk.groupby(hours.astype(int)).max().reindex(range(24))
        ax.step([h + 0.5 for h in range(24)], hourly_max.to_numpy(), where="mid", color="#374151",
                linewidth=1.2, label="hourly maximum")  # fmt: skip
        high = risk >= HIGH_RISK
        if high.any():
            points = risk[high].nlargest(CHART_POINTS)
            ax.scatter(hours[points.index], points, s=16, color="#c62828", zorder=3,
                       label=f"risk \u2265 {HIGH_RISK:g}")  # fmt: skip
    for row in top.head(5).itertuples():
        moment = pd.Timestamp(row.eventTime)
        x = min(max((moment - start).total_seconds() / 3600, 0), 23.999)
        ax.annotate(f"#{int(row.rank)}", (x, float(row.risk_score)), xytext=(4, 4), textcoords="offset points",
                    fontsize=8, color="#111827")  # fmt: skip
    if risk.empty:
        ax.text(12, 50, "no events scored", ha="center", va="center", color="#6b7280")
    ax.axhline(HIGH_RISK, color="#c62828", linestyle="--", linewidth=0.8)
    ax.set_xlim(0, 24)
    ax.set_ylim(0, 105)
    ax.set_xticks(range(0, 25, 3), [f"{h:02d}:00" for h in range(0, 25, 3)], fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.set_ylabel("risk score", fontsize=8)
    ax.set_title(f"Risk over {day_text} (UTC)", fontsize=10, loc="left")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


# -- the report -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Notice:
    """A highlighted note at the top of the report (the mail's "update" box)."""

    title: str
    lines: tuple[str, ...] = ()


@dataclass
class Report:
    """One day's report: the values behind every rendering, and where its files are."""

    day: str
    generated_at: str
    top_events: pd.DataFrame
    summary: dict[str, Any]
    models: list[dict[str, Any]]
    quality: dict[str, Any] | None
    chart_png: bytes
    folder: DataPath
    quality_page: DataPath | None = None
    feedback_hint: str | None = None
    usual: dict[str, Any] = field(default_factory=dict)  # finding id -> its usual-vs-now panel
    integrity: dict[str, Any] | None = (
        None  # trailguard.integrity.findings.integrity_section: its own section
    )
    network: dict[str, Any] | None = None  # trailguard.findings.network.network_section: stories per instance
    _files: dict[str, DataPath] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.folder = as_path(self.folder)
        self._files = {kind: self.folder / name for kind, name in _REPORT_FILES.items()}

    @property
    def html_path(self) -> DataPath:
        return self._files["html"]

    @property
    def csv_path(self) -> DataPath:
        return self._files["csv"]

    @property
    def json_path(self) -> DataPath:
        return self._files["json"]

    @property
    def chart_path(self) -> DataPath:
        return self._files["chart"]

    @property
    def paths(self) -> dict[str, DataPath]:
        return dict(self._files)

    @property
    def high_risk_findings(self) -> int:
        return int(self.summary.get("high_risk_findings", 0))

    # -- renderings -------------------------------------------------------------------------------------
    def csv_bytes(self) -> bytes:
        """top_events.csv: one row per reported finding in rank order, formula-neutralised."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        for row in self.top_events.to_dict("records"):
            writer.writerow([csv_cell(row.get(column)) for column in CSV_COLUMNS])
        return buffer.getvalue().encode("utf-8")

    def to_json(self) -> dict[str, Any]:
        top = [
            {k: (None if is_missing(v) else v) for k, v in row.items()}
            for row in self.top_events.to_dict("records")
        ]
        return {
            "date": self.day,
            "generated_at": self.generated_at,
            "top_events": top,
            "summary": self.summary,
            "models": self.models,
            "quality": self.quality,
            "integrity": self.integrity,
            "network": self.network,
            "feedback_hint": self.feedback_hint,
            "usual": self.usual,
            "files": {kind: path.name for kind, path in self._files.items()},
        }

    def render_html(
        self, *, image_src: str | None = None, for_email: bool = False, notice: Notice | None = None,
        new_groups: Iterable[str] = (),
    ) -> str:  # fmt: skip
        """The report page (``templates/daily_report.html``), or with ``for_email`` the mail's HTML part
        (``templates/email.html``); ``image_src`` is the chart's ``cid:`` in a mail, a data: URI in the file."""
        if image_src is None:
            image_src = "data:image/png;base64," + base64.b64encode(self.chart_png).decode("ascii")
        if not (image_src.startswith("cid:") or image_src.startswith("data:image/png;base64,")):
            raise ValueError("image_src must be a cid: or a data:image/png URI")
        from trailguard.store.render import render

        context = _html_context(
            self, image_src, for_email, notice or _store_notice(self), frozenset(new_groups)
        )
        return render("trailguard.report", "email.html" if for_email else "daily_report.html", **context)

    def text(self, *, notice: Notice | None = None, new_groups: Iterable[str] = ()) -> str:
        """The plain-text report (the mail's text part, ``templates/email.txt``): every value stripped of
        control characters."""
        from trailguard.store.render import render

        notice = notice or _store_notice(self)
        return render("trailguard.report", "email.txt", **_text_context(self, notice, frozenset(new_groups)))

    def lines(self) -> list[str]:
        """A terminal summary: the figures, then each top event with its reasons on one line."""
        out = [f"report {self.day}: {self.summary.get('events_scored', 0):,} events scored, "
               f"{self.summary.get('high_risk_events', 0):,} at or above {HIGH_RISK:g} "
               f"({self.high_risk_findings} distinct), {len(self.top_events)} reported"]  # fmt: skip
        out += [f"  {line}" for line in _summary_lines(self)[1:]]
        if self.integrity:
            out += [f"  {line}" for line in integrity_text_lines(self.integrity, self.day)[1:]]
        if self.network is not None:
            out += [f"  {line}" for line in story_lines(self.network, limit=5)]
        for row in self.top_events.to_dict("records"):
            reasons = "; ".join(_reasons(row.get("reasons"), limit=3)) or "-"
            out.append(f"  #{row['rank']:<3} {_finding_score(row):>6}  {_title(row)}  "
                       f"{clean_text(row.get('principal'), 80) or '-'}  | {clean_text(reasons, 200)}")  # fmt: skip
        out.append(f"  written to {self.folder} (report.html, top_events.csv, report.json)")
        return out


def build_report(
    data_root: DataPath | str,
    day: date | str,
    *,
    top_k: int = 20,
    min_score: float = 0.0,
    feedback_hint: str | None = None,
) -> Report:
    """Build and write the day's report; a rerun overwrites it with the same content (but its time)."""
    data_root = as_path(data_root)
    day_text = _day_text(day)
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    scores = read_scores(data_root, day_text)
    _check_scores_fresh(data_root, day_text)
    unscored = int(scores["risk_score"].isna().sum())
    if unscored:
        log.warning("%s: %d events have no risk score; they are counted but not ranked", day_text, unscored)
    identities = _identities(data_root, day_text)
    history = load_day_history(EventStore(data_root), day_text) if identities is not None else None
    end_of_day = datetime.fromisoformat(day_text).replace(tzinfo=timezone.utc) + timedelta(days=1)
    suppressions = active_suppressions(data_root, end_of_day)
    findings = rank_findings(scores, top_k=top_k, min_score=min_score, identities=identities,
                             suppressions=suppressions, history=history)  # fmt: skip
    top = _top_frame(findings.top)
    usual = _usual(findings, history)
    quality, quality_page = _quality(data_root, day_text)
    report = Report(
        day=day_text,
        generated_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        top_events=top,
        summary={
            **_summary(scores, findings, top, top_k, min_score),
            "store_notices": store_notices(data_root, day_text),
        },
        models=_models(scores),
        quality=quality,
        chart_png=render_chart(scores, top, day_text),
        folder=report_dir(data_root, day_text),
        quality_page=quality_page,
        feedback_hint=feedback_hint,
        usual=usual,
        integrity=integrity_section(data_root, day_text),
        network=_network(data_root, day_text, findings, top),
    )
    write_bytes_atomic(report.chart_png, report.chart_path)
    write_bytes_atomic(report.csv_bytes(), report.csv_path)
    write_bytes_atomic(
        json.dumps(report.to_json(), indent=2, ensure_ascii=False, allow_nan=False).encode("utf-8"),
        report.json_path,
    )
    write_bytes_atomic(report.render_html().encode("utf-8"), report.html_path)
    if findings.day is not None:
        usual_extra = {key: {"usual": value} for key, value in usual.items()}
        document = findings_document(
            day_text, findings.day, min_score=min_score, extra=usual_extra, suppressed=findings.suppressed
        )
        write_findings(data_root, document)
    log.info("%s: report of %d findings written to %s", day_text, len(top), report.folder)
    return report


def _network(
    data_root: DataPath, day_text: str, findings: Findings, top: pd.DataFrame
) -> dict[str, Any] | None:
    """The network section: the day's flow findings as stories per instance, joined to CloudTrail (the
    scored events with their finding, and the reported findings' ranks, name the CloudTrail side)."""
    scored = None
    if findings.day is not None and len(findings.day.events):
        events = findings.day.events
        scored = pd.DataFrame({
            "eventID": events["eventID"].astype(str).to_numpy(), "risk_score": events["risk_score"].to_numpy(),
            "finding_id": findings.day.table["finding_id"].to_numpy()[events["finding"].to_numpy()],
        })  # fmt: skip
    ranks = {
        str(f): int(r) for f, r in zip(top["finding_id"], top["rank"], strict=True) if isinstance(f, str)
    }
    return network_section(data_root, day_text, scored, ranks)


def _identities(data_root: DataPath, day_text: str) -> pd.DataFrame | None:
    """The identity fields of the day's events, when the data root keeps its events (a failed sign-in
    names only the principalId and userName: the event store joins it to the user's other events)."""
    store = EventStore(data_root)
    if not store.partition_files(day_text):
        return None
    return read_identities(store, day_text)


def _usual(findings: Findings, history: Any) -> dict[str, Any]:
    """The usual-vs-now panels of the reported findings, from the stored history (none without events)."""
    if findings.day is None or history is None or findings.top.empty:
        return {}
    rows = findings.day.table.index[findings.day.table["finding_id"].isin(findings.top["finding_id"])]
    return panels_for(findings.day, rows, history)


def load_report(data_root: DataPath | str, day: date | str) -> Report:
    """The report written by :func:`build_report` (the mail task runs apart from the build task)."""
    day_text = _day_text(day)
    folder = report_dir(data_root, day_text)
    path = folder / _REPORT_FILES["json"]
    if not path.exists():
        raise FileNotFoundError(
            f"no report for {day_text} at {path}: run `trailguard report --date {day_text}` first"
        )
    document = json.loads(path.read_text(encoding="utf-8"))
    chart = folder / _REPORT_FILES["chart"]
    page = as_path(data_root) / "quality" / f"date={day_text}" / "index.html"
    return Report(
        day=document["date"],
        generated_at=document["generated_at"],
        top_events=pd.DataFrame.from_records(document["top_events"], columns=list(TOP_COLUMNS)),
        summary=document["summary"],
        models=document["models"],
        quality=document.get("quality"),
        chart_png=chart.read_bytes() if chart.exists() else b"",
        folder=folder,
        quality_page=page if document.get("quality") and page.exists() else None,
        feedback_hint=document.get("feedback_hint"),
        usual=document.get("usual") or {},
        integrity=document.get("integrity"),
        network=document.get("network"),
    )


# -- shared wording ---------------------------------------------------------------------------------------
def _service(event_source: Any) -> str:
    source = clean_text(event_source, 80)
    return source.removesuffix(".amazonaws.com") if source else "-"


def _title(row: Mapping[str, Any]) -> str:
    """``cloudtrail StopLogging`` (plus the error and ``x200`` for a group)."""
    title = f"{_service(row.get('eventSource'))} {clean_text(row.get('eventName'), 120) or '-'}"
    error = clean_text(row.get("errorCode"), 80)
    if error:
        title += f" ({error})"
    if int(row.get("count") or 1) > 1:
        title += f" (+{int(row['count']) - 1} more)"
    return title


def _when(row: Mapping[str, Any]) -> str:
    if int(row.get("count") or 1) > 1 and row.get("first_seen") and row.get("last_seen"):
        return f"{row['count']} events {row['first_seen']} .. {row['last_seen']} (lead event at {row.get('eventTime')})"
    return str(row.get("eventTime") or "-")


def _finding_score(row: Mapping[str, Any]) -> str:
    """The finding's score (it can pass 100: a chain adds to its lead event's risk)."""
    value = row.get("finding_score")
    return f"{float(value if not is_missing(value) else row['risk_score']):.1f}"


def tactics_text(value: Any) -> str:
    """``initial-access > discovery > persistence`` from the stored comma-separated list."""
    return " > ".join(clean_text(t, 40) for t in clean_text(value, 400).split(",") if t.strip())


def _finding_line(row: Mapping[str, Any]) -> str:
    """``F-... · lead event risk 100.0 · 11 events · initial-access > discovery``."""
    parts = [clean_text(row.get("finding_id"), 40) or "-", f"lead event risk {float(row['risk_score']):.1f}",
             f"{int(row.get('count') or 1)} event{'s' if int(row.get('count') or 1) != 1 else ''}"]  # fmt: skip
    tactics = tactics_text(row.get("tactics"))
    if tactics:
        parts.append(tactics)
    return " · ".join(parts)


def _where(row: Mapping[str, Any]) -> str:
    parts = [
        f"account {clean_text(row.get('account'), 40) or '-'}",
        f"region {clean_text(row.get('awsRegion'), 40) or '-'}",
        f"source {clean_text(row.get('sourceIPAddress'), 120) or '-'}",
    ]
    geo = ", ".join(x for x in (clean_text(row.get("country"), 40), clean_text(row.get("asn"), 60)) if x)
    return "  ".join(parts) + (f" ({geo})" if geo else "")


def _reasons(reasons: Any, limit: int = MAX_REASONS) -> list[str]:
    items = [clean_text(r, DEFAULT_LIMIT) for r in clean_text(reasons, FIELD_LIMITS["reasons"]).split("; ")]
    items = [r for r in items if r]
    if len(items) > limit:
        items = items[:limit] + [f"... and {len(items) - limit} more"]
    return items


def _quality_line(report: Report) -> str:
    q = report.quality
    if not q:
        return f"Data quality: not validated (run `trailguard validate --date {report.day}`)"
    line = (f"Data quality: {clean_text(q.get('status'), 20)} (rows in {q.get('rows_in')}, passed "
            f"{q.get('rows_passed')}, quarantined {q.get('rows_quarantined')})")  # fmt: skip
    if q.get("page"):
        line += f"; details: {q['page']} under the data root"
    return line


def _summary_lines(report: Report) -> list[str]:
    s = report.summary
    uses = ", ".join(f"{clean_text(k, 40) or '(none)'} {n:,}" for k, n in s["by_use_case"]["top"]) or "-"
    models = "; ".join(_model_line(m) for m in report.models) or "-"
    return [
        f"Events scored: {s['events_scored']:,} ({uses})"
        + (f"; {s['events_unscored']:,} without a score" if s.get("events_unscored") else ""),
        f"At or above {HIGH_RISK:g}: {s['high_risk_events']:,} events, {s['high_risk_findings']:,} distinct findings; "
        f"highest {s['max_score'] if s['max_score'] is not None else '-'}",
        _quality_line(report),
        integrity_text_lines(report.integrity, report.day)[0],
        f"Models: {models}",
        *(f"STORE: {clean_text(line, 1000)}" for line in s.get("store_notices", [])),
    ]


class StaleScoresError(RuntimeError):
    """The day's events changed after it was scored: a report would show old scores as current."""


def _check_scores_fresh(data_root: DataPath, day: str) -> None:
    """Refuse scores older than the day's events (and a damaged day: its error names the file)."""
    from trailguard.store.events import EventStore

    events = EventStore(data_root).partition_files(day)
    scores = visible_files(scores_dir(data_root, day))
    if not events or not scores or is_remote(data_root):
        return
    newest_event = max(p.stat().st_mtime for p in events)
    oldest_score = min(p.stat().st_mtime for p in scores)
    if newest_event > oldest_score:
        raise StaleScoresError(
            f"{day}: the scores are older than the day's events (events written after the last scoring): "
            f"run `trailguard score --date {day}` first"
        )


def _store_notice(report: Report) -> Notice | None:
    """What the store says about the day's evidence (changed records under known eventIDs), as the
    report's highlighted notice when no other is given."""
    lines = report.summary.get("store_notices") or []
    return Notice("Evidence to check before trusting this day", tuple(lines)) if lines else None


def store_notices(data_root: DataPath, day: str) -> list[str]:
    """Lines for the day's report about the evidence itself: records that came again under a known
    eventID with other content (in CloudTrail, a sign that a log file was altered)."""
    from trailguard.store.events import EventStore

    conflicts = EventStore(data_root).read_conflicts(day)
    if not conflicts.num_rows:
        return []
    ids = sorted(set(conflicts.column("eventID").to_pylist()))
    shown = ", ".join(clean_text(i, 80) or "?" for i in ids[:5]) + (" ..." if len(ids) > 5 else "")
    return [
        f"{conflicts.num_rows} record(s) under {len(ids)} known eventID(s) came again with different content "
        f"(possible tampering): {shown}",
        "both versions are kept: the new ones in quarantine/conflicts/, each with a pointer to the stored one",
    ]


def _feedback_lines(report: Report) -> list[str]:
    lines = [clean_text(report.feedback_hint, 1000)] if report.feedback_hint else []
    example = report.top_events["eventID"].iloc[0] if len(report.top_events) else "EVENT_ID"
    lines.append(
        f"From a shell: trailguard label {shlex.quote(clean_text(example, FIELD_LIMITS['eventID']))} SCORE "
        "--verdict benign --note 'why'"
    )
    finding = report.top_events["finding_id"].iloc[0] if len(report.top_events) else None
    if isinstance(finding, str) and finding:
        lines.append(
            f"A whole finding: trailguard label {shlex.quote(clean_text(finding, 40))} SCORE --verdict benign "
            "--note 'why' (benign with a note also hides the same pattern for 30 days)"
        )
    return lines


def _text_context(report: Report, notice: Notice | None, new: frozenset[str]) -> dict[str, Any]:
    rows = []
    for row in report.top_events.to_dict("records"):
        technique = clean_text(row.get("attack_technique"), 40)
        rows.append({
            "rank": row["rank"],
            "risk": _finding_score(row),
            "finding": _finding_line(row),
            "usual": [clean_text(line, 600) for line in panel_lines(report.usual.get(str(row.get("finding_id")), {}))],
            "title": _title(row),
            "new": row.get("group_id") in new,
            "when": _when(row),
            "principal": clean_text(row.get("principal"), DEFAULT_LIMIT) or "-",
            "where": _where(row),
            "user_agent": None if is_missing(row.get("userAgent"))
            else clean_text(row.get("userAgent"), FIELD_LIMITS["userAgent"]),
            "technique": technique,
            "technique_url": technique_url(technique) if technique else None,
            "event_id": clean_text(row.get("eventID"), FIELD_LIMITS["eventID"]),
            "reasons": _reasons(row.get("reasons")),
        })  # fmt: skip
    return {
        "day": report.day,
        "generated_at": report.generated_at,
        "notice": None if notice is None else {
            "title": clean_text(notice.title, 500), "lines": [clean_text(x, 1000) for x in notice.lines]
        },
        "summary": _summary_lines(report),
        "integrity": integrity_text_lines(report.integrity, report.day)[1:]
        if report.integrity and (report.integrity["findings"] or report.integrity["gaps"]) else [],
        "rows": rows,
        "network": [clean_text(line, 1000) for line in story_lines(report.network, limit=20)]
        if report.network is not None else [],
        "feedback": _feedback_lines(report),
        "suppressed": int(report.summary.get("suppressed", 0)),
        "folder": str(report.folder),
    }  # fmt: skip


# -- HTML -------------------------------------------------------------------------------------------------
def _badge(score: float) -> tuple[str, str]:
    """Background and text colour of a score badge."""
    if score >= 90:
        return "#7f1d1d", "#ffffff"
    if score >= HIGH_RISK:
        return "#c62828", "#ffffff"
    if score >= 40:
        return "#f59e0b", "#111827"
    return "#d1fae5", "#065f46"


def _link_segments(text: str) -> list[tuple[str, str | None]]:
    """Text split into (text, url) pieces: only http(s) URLs become links."""
    pieces: list[tuple[str, str | None]] = []
    last = 0
    for match in _URL.finditer(text):
        url = match.group(0).rstrip(".,;:!?)'")  # sentence punctuation after a URL is not part of it
        if match.start() > last:
            pieces.append((text[last : match.start()], None))
        pieces.append((url, url))
        last = match.start() + len(url)
    if last < len(text):
        pieces.append((text[last:], None))
    return pieces


def _html_rows(report: Report, new: frozenset[str]) -> list[dict[str, Any]]:
    rows = []
    for row in report.top_events.to_dict("records"):
        score = float(row["risk_score"])
        background, colour = _badge(score)
        technique = clean_text(row.get("attack_technique"), 40)
        rows.append({
            "rank": int(row["rank"]),
            "score": _finding_score(row),
            "lead_risk": f"{score:.1f}",
            "finding_id": clean_text(row.get("finding_id"), 40),
            "tactics": tactics_text(row.get("tactics")),
            "usual": [clean_text(line, 600) for line in panel_lines(report.usual.get(str(row.get("finding_id")), {}))],
            "badge_bg": background,
            "badge_fg": colour,
            "new": row.get("group_id") in new,
            "count": int(row["count"]),
            "event_name": clean_text(row.get("eventName"), DEFAULT_LIMIT) or "-",
            "service": _service(row.get("eventSource")),
            "error": clean_text(row.get("errorCode"), 80),
            "use_case": clean_text(row.get("use_case"), 40),
            "when": _when(row),
            "event_id": clean_text(row.get("eventID"), FIELD_LIMITS["eventID"]),
            "principal": clean_text(row.get("principal"), DEFAULT_LIMIT) or "-",
            "account": clean_text(row.get("account"), 40) or "-",
            "region": clean_text(row.get("awsRegion"), 40) or "-",
            "ip": clean_text(row.get("sourceIPAddress"), 120) or "-",
            "geo": ", ".join(x for x in (clean_text(row.get("country"), 40), clean_text(row.get("asn"), 60)) if x),
            "user_agent": clean_text(row.get("userAgent"), FIELD_LIMITS["userAgent"]),
            "technique": technique,
            "technique_url": technique_url(technique),
            "reasons": _reasons(row.get("reasons")),
        })  # fmt: skip
    return rows


def _breakdown_rows(breakdown: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = [(clean_text(k, 80) or "(none)", f"{n:,}") for k, n in breakdown.get("top", [])]
    if breakdown.get("other"):
        rows.append((f"other ({breakdown['distinct'] - len(rows)} values)", f"{breakdown['other']:,}"))
    return rows


def _html_context(
    report: Report, image_src: str, for_email: bool, notice: Notice | None, new: frozenset[str]
) -> dict[str, Any]:
    s = report.summary
    q = report.quality or {}
    status = clean_text(q.get("status"), 20) if report.quality else "not validated"
    distribution = s.get("score_distribution", [])
    peak = max([b["events"] for b in distribution] + [1])
    feedback = [_link_segments(line) for line in _feedback_lines(report)]
    return {
        "day": report.day,
        "generated_at": report.generated_at,
        "image_src": image_src,
        "notice": None if notice is None else {
            "title": clean_text(notice.title, 500), "lines": [clean_text(x, 1000) for x in notice.lines]
        },
        "cards": [
            ("Events scored", f"{s['events_scored']:,}", "#111827"),
            (f"Events \u2265 {HIGH_RISK:g}", f"{s['high_risk_events']:,}", "#c62828" if s["high_risk_events"] else "#111827"),
            (f"Distinct findings \u2265 {HIGH_RISK:g}", f"{s['high_risk_findings']:,}", "#111827"),
            ("Highest score", "-" if s["max_score"] is None else f"{s['max_score']:.1f}", "#111827"),
        ],
        "quality": {
            "status": status,
            "colour": {"passed": "#15803d", "warning": "#b45309", "failed": "#b91c1c"}.get(status, "#6b7280"),
            "rows": [(label, f"{q[key]:,}") for label, key in (("rows in", "rows_in"), ("passed", "rows_passed"),
                     ("quarantined", "rows_quarantined")) if isinstance(q.get(key), int)],  # fmt: skip
            "error": clean_text(q.get("error"), DEFAULT_LIMIT),
            "link": None if for_email or not q.get("page") else f"../../quality/date={report.day}/index.html",
            "attached": for_email and report.quality_page is not None,
        },
        "integrity": _integrity_context(report),
        "network": _network_context(report.network),
        "rows": _html_rows(report, new),
        "top_k": s.get("top_k"),
        "min_score": s.get("min_score"),
        "breakdowns": [
            ("By use case", _breakdown_rows(s["by_use_case"])),
            ("By category", _breakdown_rows(s["by_category"])),
            ("By account", _breakdown_rows(s["by_account"])),
            ("By region", _breakdown_rows(s["by_region"])),
        ],
        "distribution": [
            (b["range"], f"{b['events']:,}", max(1, round(100 * b["events"] / peak)) if b["events"] else 0,
             "#c62828" if int(b["range"].split("-")[0]) >= HIGH_RISK else "#9ca3af")
            for b in distribution
        ],
        "models": [
            (clean_text(m["use_case"], 40) or "-", clean_text(m["model_name"], 80) or "-",
             clean_text(m["model_version"], 40) or "-", f"{m['events']:,}", clean_text(m.get("note"), 300))
            for m in report.models
        ],
        "feedback": feedback,
        "suppressed": int(s.get("suppressed", 0)),
        "folder": str(report.folder),
    }  # fmt: skip


def _network_context(section: dict[str, Any] | None) -> dict[str, Any] | None:
    """The network section's stories as text (every value cleaned; links only to ATT&CK)."""
    if section is None:
        return None
    stories = []
    for s in section.get("stories", []):
        background, colour = _badge(float(s["score"]))
        stories.append({
            "rank": s["rank"], "score": f"{s['score']:.1f}", "badge_bg": background, "badge_fg": colour,
            "title": clean_text(s["title"], 300), "context": clean_text(s["context"], 600), "joined": bool(s["joined"]),
            "techniques": [(clean_text(t, 40), technique_url(t)) for t in s.get("techniques", []) if technique_url(t)],
            "timeline": [{
                "time": clean_text(e["time"], 40), "source": clean_text(e["source"], 40), "score": f"{e['score']:.1f}",
                "what": clean_text(e["what"], 600), "event_id": clean_text(e["event_id"], 100),
                "how": clean_text(e.get("how"), 200) if e["source"] == "CloudTrail" else None,
                "finding": (f"#{e['rank']}" if e.get("rank") else clean_text(e.get("finding_id"), 40)) if e.get("finding_id") else None,
            } for e in s["timeline"]],
        })  # fmt: skip
    return {"stories": stories, "header": clean_text(story_lines(section, limit=0)[0], 600),
            "min_score": f"{NETWORK_MIN_SCORE:g}"}  # fmt: skip


def _integrity_context(report: Report) -> dict[str, Any]:
    """The evidence-integrity section: its header, colour, findings and gaps (every value as text)."""
    section = report.integrity
    header = integrity_text_lines(section, report.day)[0]
    status = section["status"] if section else "not checked"
    return {
        "header": clean_text(header, DEFAULT_LIMIT),
        "colour": {"valid": "#15803d", "tampered": "#b91c1c"}.get(status, "#6b7280"),
        "tampered": status == "tampered",
        "findings": [
            {
                "title": clean_text(f["title"], 200),
                "risk": f["risk_score"],
                "technique": clean_text(f["attack_technique"], 40),
                "technique_url": technique_url(f["attack_technique"]),
                "where": clean_text(f"account {f['account']} {f['region']} {f['hour']}", 200),
                "object": clean_text(f["object"], 500),
                "reason": clean_text(f["reason"], 500),
            }
            for f in (section or {}).get("findings", [])
        ],
        "gaps": [
            clean_text(f"{where}: nothing delivered at {', '.join(hours)}", 500)
            for where, hours in (section or {}).get("gaps", {}).items()
        ],
        "gap_note": clean_text((section or {}).get("gap_note"), 300),
    }
