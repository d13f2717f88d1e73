"""The exploration views as plain JSON-ready dicts: what the pages render and the plugin's JSON returns.

Activity and the PCA map read only the per-day activity tables (:mod:`trailguard.explore.activity`);
reports and quality read the small JSON files the pipeline writes; models ask MLflow. No view reads raw
events. Every value here is data, possibly attacker-controlled: escaping is the renderer's job.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trailguard.explore.activity import activity_days, read_activity
from trailguard.model.enrich import CATEGORIES
from trailguard.store.fs import DataPath, as_path

log = logging.getLogger(__name__)

DEFAULT_DAYS = 7
MAX_PERIOD_DAYS = 366
LOOKBACK_DAYS = 30  # "new" = not seen in the 30 days before (the features' history)
TOP_N = 20
MAX_PRINCIPAL_ROWS = 200
MAX_NEW_LISTED = 25
PCA_OUTLIERS = 8

#: The dashboard's categories: the Splunk App for AWS event types, plus every IAM and EC2 call.
CATEGORY_LABELS = {
    "error": "Errors",
    "auth": "Auth",
    "iam_change": "IAM changes",
    "notable_network": "Notable network",
    "network": "Network changes",
    "delete": "Deletes",
    "sns": "SNS",
    "ec2": "EC2 changes",
    "change": "Other changes",
    "read": "Reads",
}
SERVICE_SERIES = {"iam": "IAM (all calls)", "ec2": "EC2 (all calls)"}
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class ViewError(ValueError):
    """A request the views cannot answer (a bad date or period); the message says what to change."""


@dataclass(frozen=True)
class Period:
    start: date
    end: date

    @property
    def days(self) -> list[str]:
        return [(self.start + timedelta(days=i)).isoformat() for i in range((self.end - self.start).days + 1)]

    def to_json(self) -> dict[str, str]:
        return {"from": self.start.isoformat(), "to": self.end.isoformat()}


def _parse_day(text: str | date | None, name: str) -> date | None:
    if text is None or text == "":
        return None
    if isinstance(text, date):
        return text
    if not _DAY.match(str(text)):
        raise ViewError(f"{name}={str(text)[:40]!r} is not a date: use YYYY-MM-DD")
    try:
        return date.fromisoformat(str(text))
    except ValueError:
        raise ViewError(f"{name}={str(text)[:40]!r} is not a date: use YYYY-MM-DD") from None


def resolve_period(
    root: DataPath | str, start: str | date | None = None, end: str | date | None = None
) -> Period:
    """The period asked for; by default the last :data:`DEFAULT_DAYS` days that have activity tables."""
    first, last = _parse_day(start, "from"), _parse_day(end, "to")
    if last is None:
        days = activity_days(root)
        last = date.fromisoformat(days[-1]) if days else date.today()
        if first is not None and first > last:
            last = first + timedelta(days=DEFAULT_DAYS - 1)
    if first is None:
        first = last - timedelta(days=DEFAULT_DAYS - 1)
        days = activity_days(root)
        if days and date.fromisoformat(days[0]) <= last:
            first = max(first, date.fromisoformat(days[0]))  # the last 7 days *of the store*
    if first > last:
        raise ViewError(f"from {first} is after to {last}")
    if (last - first).days >= MAX_PERIOD_DAYS:
        raise ViewError(f"a period of at most {MAX_PERIOD_DAYS} days, not {(last - first).days + 1}")
    return Period(first, last)


def _filtered(rows: pd.DataFrame, filters: dict[str, str | None]) -> pd.DataFrame:
    for column, value in filters.items():
        if value:
            rows = rows[rows[column] == value]
    return rows


def _int(value: Any) -> int:
    return int(value) if value is not None and not (isinstance(value, float) and math.isnan(value)) else 0


# -- activity -----------------------------------------------------------------------------------------------
def activity_view(
    root: DataPath | str,
    period: Period,
    *,
    account: str | None = None,
    region: str | None = None,
    principal: str | None = None,
    rows: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """The activity dashboards for a period, filtered by account, region and principal (``rows``: those
    of :func:`activity_rows`, when several views of one period are rendered)."""
    filters = {"account": account or None, "region": region or None, "principal": principal or None}
    lookback = _lookback(period)
    all_rows = activity_rows(root, period) if rows is None else rows
    rows_all_filters = _filtered(all_rows, filters)
    in_period = all_rows["date"].isin(period.days)
    rows = rows_all_filters[rows_all_filters["date"].isin(period.days)]
    present = set(all_rows.loc[in_period, "date"].unique())
    by_dim = {dim: part for dim, part in rows.groupby("dim", sort=False)}
    empty = rows.iloc[0:0]

    def dim(name: str) -> pd.DataFrame:
        return by_dim.get(name, empty)

    categories = dim("category")
    per_day = categories.pivot_table(
        index="date", columns="value", values="events", aggfunc="sum", fill_value=0
    )
    services = dim("service")
    service_day = services[services["value"].isin(SERVICE_SERIES)].pivot_table(
        index="date", columns="value", values="events", aggfunc="sum", fill_value=0
    )
    days_out = []
    for day in period.days:
        counts = {
            c: _int(per_day.at[day, c]) if day in per_day.index and c in per_day.columns else 0
            for c in CATEGORIES
        }
        for service in SERVICE_SERIES:
            has = day in service_day.index and service in service_day.columns
            counts[f"service:{service}"] = _int(service_day.at[day, service]) if has else 0
        days_out.append({"date": day, "has_activity": day in present,
                         "events": sum(counts[c] for c in CATEGORIES), "counts": counts})  # fmt: skip

    period_rows = all_rows[in_period]
    return {
        "period": period.to_json(),
        "filters": filters,
        "options": {
            "accounts": sorted(period_rows["account"].unique().tolist()),
            "regions": sorted(period_rows["region"].unique().tolist()),
        },
        "missing_days": [d for d in period.days if d not in present],
        "totals": {
            "events": int(categories["events"].sum()),
            "principals": int(categories["principal"].nunique()),
            "accounts": int(categories["account"].nunique()),
            "regions": int(categories["region"].nunique()),
            "errors": int(dim("error")["events"].sum()),
            "console_signins": int(dim("console")["events"].sum()),
        },
        "categories": [{"key": c, "label": CATEGORY_LABELS[c]} for c in CATEGORIES]
        + [{"key": f"service:{s}", "label": label} for s, label in SERVICE_SERIES.items()],
        "days": days_out,
        "principals": _principal_table(rows, by_dim),
        "principal_count": int(categories["principal"].nunique()),
        "top_apis": _top(dim("api")),
        "top_errors": _top(dim("error")),
        "console": _console(dim("console"), dim("console_country")),
        "new": _first_seen(rows_all_filters, period, lookback),
    }


def _lookback(period: Period) -> Period:
    return Period(period.start - timedelta(days=LOOKBACK_DAYS), period.start - timedelta(days=1))


def activity_rows(root: DataPath | str, period: Period) -> pd.DataFrame:
    """The activity rows an activity view of ``period`` needs: the period's and the lookback's."""
    return read_activity(as_path(root), _lookback(period).days + period.days)


def _top(part: pd.DataFrame, n: int = TOP_N) -> list[dict[str, Any]]:
    if part.empty:
        return []
    grouped = part.groupby("value").agg(events=("events", "sum"), principals=("principal", "nunique"))
    grouped = grouped.sort_values(["events", "principals"], ascending=False, kind="stable").head(n)
    return [
        {"value": v, "events": int(r.events), "principals": int(r.principals)} for v, r in grouped.iterrows()
    ]


def _principal_table(rows: pd.DataFrame, by_dim: dict[str, pd.DataFrame]) -> list[dict[str, Any]]:
    """Per principal: events, distinct APIs / countries / ASNs, errors, console sign-ins with and without MFA."""
    features = principal_features(rows)
    if features.empty:
        return []
    features = features.sort_values(["events", "principal"], ascending=[False, True]).head(MAX_PRINCIPAL_ROWS)
    identity = by_dim.get("identity")
    kinds = {}
    if identity is not None and not identity.empty:
        kinds = identity.sort_values("events").groupby("principal")["value"].last().to_dict()
    return [
        {
            "principal": p,
            "identity": kinds.get(p, ""),
            "events": int(r["events"]),
            "apis": int(r["apis"]),
            "countries": int(r["countries"]),
            "asns": int(r["asns"]),
            "errors": int(r["errors"]),
            "console_mfa": int(r["console_mfa"]),
            "console_no_mfa": int(r["console_no_mfa"]),
            "console_failed": int(r["console_failed"]),
            "days_active": int(r["days_active"]),
        }
        for p, r in features.set_index("principal").iterrows()
    ]


def _console(outcomes: pd.DataFrame, countries: pd.DataFrame) -> dict[str, Any]:
    by_outcome = outcomes.groupby("value")["events"].sum().to_dict() if not outcomes.empty else {}
    table = []
    if not countries.empty:
        grouped = countries.groupby("value").agg(
            signins=("events", "sum"), principals=("principal", "nunique")
        )
        for country, r in grouped.sort_values("signins", ascending=False, kind="stable").iterrows():
            table.append({"country": country, "signins": int(r.signins), "principals": int(r.principals)})
    return {
        "success_mfa": _int(by_outcome.get("success_mfa")),
        "success_no_mfa": _int(by_outcome.get("success_no_mfa")),
        "failure": _int(by_outcome.get("failure")),
        "by_country": table,
    }


def _first_seen(rows: pd.DataFrame, period: Period, lookback: Period) -> dict[str, Any]:
    """Principals, countries and ASNs seen on a day of the period and on no earlier day (within the
    lookback); ``baseline_days`` says how many earlier days there were to compare with."""
    known = {"principal": set(), "country": set(), "asn": set()}
    before = rows[rows["date"].isin(lookback.days)]
    known["principal"] |= set(before.loc[before["dim"] == "category", "principal"])
    for kind in ("country", "asn"):
        known[kind] |= set(before.loc[before["dim"] == kind, "value"])
    out = []
    groups = {d: part for d, part in rows[rows["date"].isin(period.days)].groupby("date")}
    for day in period.days:
        part = groups.get(day)
        entry: dict[str, Any] = {"date": day}
        for kind in ("principal", "country", "asn"):
            if part is None:
                seen: set[str] = set()
            elif kind == "principal":
                seen = set(part.loc[part["dim"] == "category", "principal"])
            else:
                seen = set(part.loc[part["dim"] == kind, "value"])
            new = sorted(seen - known[kind])
            known[kind] |= seen
            entry[kind] = {"count": len(new), "values": new[:MAX_NEW_LISTED]}
        out.append(entry)
    return {"baseline_days": int(before["date"].nunique()), "days": out}


# -- behaviour features and PCA -------------------------------------------------------------------------------
FEATURE_LABELS = {
    "log_events": "events (log)",
    "apis": "distinct APIs",
    "services": "distinct services",
    "countries": "distinct countries",
    "asns": "distinct ASNs",
    "regions": "distinct regions",
    "accounts": "distinct accounts",
    "days_active": "days active",
    "error_share": "share of errors",
    "denied_share": "share access denied",
    "console_signins": "console sign-ins",
    "console_no_mfa": "sign-ins without MFA",
    "console_failed": "failed sign-ins",
    **{f"share_{c}": f"share {CATEGORY_LABELS[c].lower()}" for c in CATEGORIES if c != "error"},
}


def principal_features(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per principal of its behaviour over the rows' period (the PCA's input and the user
    activity table), from the activity rows alone."""
    columns = ["principal", "events", "errors", *FEATURE_LABELS, "console_mfa"]
    cats = rows[rows["dim"] == "category"]
    if cats.empty:
        return pd.DataFrame(columns=columns)
    events = cats.groupby("principal")["events"].sum()
    out = pd.DataFrame({"events": events})

    def distinct(dim: str, column: str = "value") -> pd.Series:
        part = rows[rows["dim"] == dim]
        return part.groupby("principal")[column].nunique().reindex(out.index, fill_value=0)

    def total(dim: str, values: tuple[str, ...] | None = None, mask: pd.Series | None = None) -> pd.Series:
        part = rows[rows["dim"] == dim]
        if values is not None:
            part = part[part["value"].isin(values)]
        if mask is not None:
            part = part[mask.reindex(part.index, fill_value=False)]
        return part.groupby("principal")["events"].sum().reindex(out.index, fill_value=0)

    errors_part = rows[rows["dim"] == "error"]
    denied = errors_part["value"].str.contains(
        "AccessDenied|Unauthorized|Forbidden|NotAuthorized", regex=True
    )
    out["apis"] = distinct("api")
    out["services"] = distinct("service")
    out["countries"] = distinct("country")
    out["asns"] = distinct("asn")
    out["regions"] = cats.groupby("principal")["region"].nunique()
    out["accounts"] = cats.groupby("principal")["account"].nunique()
    out["days_active"] = cats.groupby("principal")["date"].nunique() if "date" in cats else 1
    out["errors"] = total("error")
    out["error_share"] = out["errors"] / out["events"]
    out["denied_share"] = total("error", mask=denied) / out["events"]
    share = cats.pivot_table(index="principal", columns="value", values="events", aggfunc="sum", fill_value=0)
    for c in CATEGORIES:
        if c != "error":
            column = share[c] if c in share.columns else 0
            out[f"share_{c}"] = (pd.Series(column, index=share.index).reindex(out.index, fill_value=0)) / out[
                "events"
            ]
    out["console_mfa"] = total("console", ("success_mfa",))
    out["console_no_mfa"] = total("console", ("success_no_mfa",))
    out["console_failed"] = total("console", ("failure",))
    out["console_signins"] = out["console_mfa"] + out["console_no_mfa"] + out["console_failed"]
    out["log_events"] = np.log1p(out["events"])
    return out.reset_index().rename(columns={"index": "principal"})[columns]


def pca_view(
    root: DataPath | str, period: Period, *, account: str | None = None, region: str | None = None
) -> dict[str, Any]:
    """Principals on the first two principal components of their standardised behaviour features, with
    the explained variance, each component's strongest loadings, and the outliers labelled (largest
    Mahalanobis distance on the two components)."""
    rows = _filtered(read_activity(as_path(root), period.days), {"account": account, "region": region})
    features = principal_features(rows)
    result: dict[str, Any] = {"period": period.to_json(), "filters": {"account": account, "region": region},
                              "principals": int(len(features)), "points": [], "components": [], "features": []}  # fmt: skip
    names = list(FEATURE_LABELS)
    if len(features) < 3:
        result["note"] = f"{len(features)} principals in the period: the map needs at least 3"
        return result
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    X = features[names].to_numpy(dtype=float)
    keep = X.std(axis=0) > 0
    X, names = X[:, keep], [n for n, k in zip(names, keep, strict=True) if k]
    if X.shape[1] < 2:
        result["note"] = "the principals do not differ enough in the period for a map"
        return result
    scaled = StandardScaler().fit_transform(X)
    pca = PCA(n_components=2, random_state=0).fit(scaled)
    coords = pca.transform(scaled)
    spread = np.sqrt(np.maximum(pca.explained_variance_, 1e-12))
    distance = np.sqrt(((coords / spread) ** 2).sum(axis=1))
    order = np.argsort(-distance, kind="stable")
    outliers = set(order[: min(PCA_OUTLIERS, max(1, len(order) // 5))].tolist())
    for i, row in enumerate(features.itertuples(index=False)):
        result["points"].append({
            "principal": row.principal, "pc1": round(float(coords[i, 0]), 4), "pc2": round(float(coords[i, 1]), 4),
            "distance": round(float(distance[i]), 3), "outlier": i in outliers, "events": int(row.events),
        })  # fmt: skip
    result["points"].sort(key=lambda p: -p["distance"])
    for k in range(2):
        loads = pca.components_[k]
        top = np.argsort(-np.abs(loads), kind="stable")[:6]
        result["components"].append({
            "name": f"PC{k + 1}",
            "explained_variance": round(float(pca.explained_variance_ratio_[k]), 4),
            "loadings": [{"feature": names[j], "label": FEATURE_LABELS[names[j]], "loading": round(float(loads[j]), 4)}
                         for j in top],
        })  # fmt: skip
    result["features"] = [{"feature": n, "label": FEATURE_LABELS[n]} for n in names]
    return result


# -- reports, quality, models -----------------------------------------------------------------------------------
def _read_json(path: DataPath) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s: %s", path, exc)
        return None
    return document if isinstance(document, dict) else None


def reports_view(root: DataPath | str) -> dict[str, Any]:
    """Every daily report (``reports/D/report.json``) and investigation (``investigations/NAME/``), newest
    first, with their headline numbers."""
    root = as_path(root)
    items: list[dict[str, Any]] = []
    folder = root / "reports"
    if folder.is_dir():
        for child in folder.iterdir():
            if not _DAY.match(child.name) or not (child / "report.json").exists():
                continue
            document = _read_json(child / "report.json") or {}
            summary = document.get("summary") or {}
            quality = document.get("quality") or {}
            items.append({
                "kind": "report", "id": child.name, "date": child.name,
                "generated_at": document.get("generated_at"),
                "events_scored": _int(summary.get("events_scored")),
                "high_risk_events": _int(summary.get("high_risk_events")),
                "high_risk_findings": _int(summary.get("high_risk_findings")),
                "reported": _int(summary.get("reported")),
                "max_score": summary.get("max_score"),
                "quality_status": quality.get("status") if isinstance(quality, dict) else None,
                "models": [m for m in document.get("models") or [] if isinstance(m, dict)],
                "has_html": (child / "report.html").exists(),
            })  # fmt: skip
    folder = root / "investigations"
    if folder.is_dir():
        for child in folder.iterdir():
            page = child / "investigation.html"
            if not page.exists():
                continue
            document = _read_json(child / "investigation.json") or {}
            summary = document.get("summary") or {}
            items.append({
                "kind": "investigation", "id": child.name,
                "date": str(document.get("to") or document.get("date") or ""),
                "generated_at": document.get("generated_at"),
                "events_scored": _int(summary.get("events_scored")),
                "high_risk_events": _int(summary.get("high_risk_events")),
                "high_risk_findings": _int(summary.get("high_risk_findings")),
                "reported": _int(summary.get("reported")),
                "max_score": summary.get("max_score"), "quality_status": None, "models": [], "has_html": True,
            })  # fmt: skip
    items.sort(key=lambda i: (str(i["date"]), str(i["generated_at"] or "")), reverse=True)
    return {"reports": items}


def quality_view(root: DataPath | str, period: Period) -> dict[str, Any]:
    """Per day of the period: validation status, rows in and quarantined, warnings and critical failures."""
    root = as_path(root)
    days = []
    for day in period.days:
        folder = root / "quality" / f"date={day}"
        document = _read_json(folder / "result.json") if (folder / "result.json").exists() else None
        if document is None:
            days.append({"date": day, "status": None, "has_html": False})
            continue
        outcomes = [o for o in document.get("outcomes") or [] if isinstance(o, dict)]
        failed = [o for o in outcomes if not o.get("success")]
        days.append({
            "date": day, "status": str(document.get("status")),
            "rows_in": _int(document.get("rows_in")), "rows_passed": _int(document.get("rows_passed")),
            "rows_quarantined": _int(document.get("rows_quarantined")),
            "warnings": [_outcome(o) for o in failed if o.get("severity") != "critical"],
            "critical": [_outcome(o) for o in failed if o.get("severity") == "critical"],
            "validated_at": document.get("validated_at"), "has_html": (folder / "index.html").exists(),
        })  # fmt: skip
    return {"period": period.to_json(), "days": days}


def _outcome(outcome: dict[str, Any]) -> dict[str, Any]:
    return {"name": str(outcome.get("name")), "column": outcome.get("column"),
            "unexpected_count": _int(outcome.get("unexpected_count")), "detail": str(outcome.get("detail") or "")[:300]}  # fmt: skip


MODEL_METRICS = ("average_precision", "precision_at_20", "recall_at_20", "r2", "rmse", "mae", "rows")


def models_view(tracking_uri: str, latest: int = 6) -> dict[str, Any]:
    """Per use case: the champion and the latest training's candidates with their held-out (time split)
    metrics, and the MLflow ids to link to."""
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).exists():
        return {
            "use_cases": [],
            "metrics": list(MODEL_METRICS),
            "note": "no model trained yet (no MLflow store)",
        }
    import mlflow
    from mlflow.exceptions import MlflowException

    from trailguard.model.training import CHAMPION, MODEL_NAMES

    client = mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri)
    experiment = client.get_experiment_by_name("trailguard")
    use_cases = []
    for use_case, name in MODEL_NAMES.items():
        entry: dict[str, Any] = {
            "use_case": use_case,
            "model_name": name,
            "champion": None,
            "candidates": [],
            "experiment_id": None,
            "decision": None,
        }
        try:
            version = client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException:
            version = None
        if version is not None:
            entry["champion"] = {"version": str(version.version), "run_id": version.run_id,
                                 "candidate": (version.tags or {}).get("trailguard.candidate"),
                                 "metrics": _run_metrics(client, version.run_id)}  # fmt: skip
        if experiment is not None:
            parents = client.search_runs(
                [experiment.experiment_id],
                filter_string=f"tags.`trailguard.use_case` = '{use_case}' and tags.`trailguard.until` != ''",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            if parents:
                parent = parents[0]
                entry["training_run_id"] = parent.info.run_id
                entry["decision"] = parent.data.tags.get("trailguard.decision_reason")
                children = client.search_runs(
                    [experiment.experiment_id],
                    filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                    max_results=50,
                )
                for run in sorted(
                    children, key=lambda r: -(r.data.metrics.get("test_average_precision") or -1)
                )[:latest]:
                    entry["candidates"].append({
                        "candidate": run.data.tags.get("trailguard.candidate", run.info.run_name),
                        "run_id": run.info.run_id, "metrics": _metrics(run.data.metrics),
                        "champion": entry["champion"] is not None and entry["champion"]["run_id"] == run.info.run_id,
                    })  # fmt: skip
            entry["experiment_id"] = experiment.experiment_id
        use_cases.append(entry)
    return {"use_cases": use_cases, "metrics": list(MODEL_METRICS)}


def _run_metrics(client: Any, run_id: str | None) -> dict[str, float | int]:
    if not run_id:
        return {}
    try:
        return _metrics(client.get_run(run_id).data.metrics)
    except Exception as exc:  # a version whose run was deleted still shows, without numbers
        log.warning("run %s: %s", run_id, exc)
        return {}


def _metrics(metrics: dict[str, float]) -> dict[str, float | int]:
    out: dict[str, float | int] = {}
    for m in MODEL_METRICS:
        if f"test_{m}" in metrics:
            value = float(metrics[f"test_{m}"])
            out[m] = int(value) if m == "rows" else round(value, 4)
    return out
