"""Every environment variable TrailGuard reads, in one place (documented in .env.example)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trailguard.store.fs import DataPath


class ConfigError(ValueError):
    """A setting is missing or wrong; the message says which one and what to set."""


@dataclass(frozen=True)
class Settings:
    data_root: str
    mlflow_tracking_uri: str | None
    geoip_mmdb: str | None
    geoip_asn_mmdb: str | None
    report_recipients: tuple[str, ...]
    allowed_lateness_hours: float
    ingest_batch_records: int
    ingest_workers: int
    ingest_max_tasks: int
    score_max_tasks: int
    smtp_url: str | None
    # respond: automation destinations and operational alerts (trailguard.respond)
    notify_destinations: str | None = None  # JSON list, parsed by respond.destinations.parse_destinations
    notify_min_score: float = 70.0
    notify_max_per_run: int = 50
    report_base_url: str | None = None
    alert_recipients: tuple[str, ...] = ()
    freshness_hours: float = 24.0
    freshness_lookback_days: int = 7
    source: str | None = None  # the CloudTrail source the DAGs and `trailguard verify` read by default
    flows_source: str | None = None  # the VPC Flow Logs source of the flowlogs_ingest DAG
    integrity_keys: str | None = None  # folder of CloudTrail public keys; empty: cloudtrail:ListPublicKeys
    threat_lists: tuple[str, ...] = ()
    mlflow_ui_url: str | None = None
    # what training needs before it fits a use case's models (below: that use case is scored cold-start)
    train_min_events: int = 30
    train_min_days: int = 2
    # the cold-start scorer: how many days before the day its detector learns from, and how few events
    # are too few for a detector at all (rules and rarity only then)
    coldstart_fit_days: int = 7
    coldstart_min_events: int = 10
    ingest_max_file_bytes: int = 256 * 1024 * 1024
    ingest_max_records_per_file: int = 200_000
    ingest_max_record_bytes: int = 8 * 1024 * 1024
    # VPC Flow Logs (trailguard.flows.logs.FlowLimits): the field list of CloudWatch Logs messages and of
    # text without a header; the CSV block each parsing thread holds; a file's size gunzipped; a Parquet
    # file's rows
    flow_log_format: str | None = None
    flow_block_bytes: int = 1024 * 1024
    flow_max_file_bytes: int = 512 * 1024 * 1024
    flow_max_records_per_file: int = 10_000_000
    # an s3:// data root: how long the commit lease lasts without renewal (renewed every third of it), and
    # how long a committer waits for a lease another one holds before it fails naming the holder
    commit_lease_seconds: float = 60.0
    commit_wait_seconds: float = 3600.0

    @property
    def data_path(self) -> DataPath:
        """The data root: a ``pathlib.Path`` for a local folder, a ``UPath`` for ``s3://bucket/prefix``."""
        from trailguard.store.fs import as_path

        try:
            return as_path(self.data_root)
        except ValueError as exc:
            raise ConfigError(f"TRAILGUARD_DATA: {exc}") from exc


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r} is not a whole number") from exc


def _served(uri: str) -> str | None:
    """An MLflow tracking URI that is also where people open its UI (an http(s) server), else None."""
    uri = uri.strip()
    return uri if uri.startswith(("http://", "https://")) else None


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not a number") from exc


def _list(name: str) -> tuple[str, ...]:
    return tuple(r.strip() for r in os.environ.get(name, "").split(",") if r.strip())


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment; keyword overrides win (used by the CLI and tests)."""
    env = os.environ
    values: dict[str, object] = {
        "data_root": env.get("TRAILGUARD_DATA", "").strip() or "./data",
        "mlflow_tracking_uri": env.get("MLFLOW_TRACKING_URI", "").strip() or None,
        "geoip_mmdb": env.get("TRAILGUARD_GEOIP_MMDB", "").strip() or None,
        "geoip_asn_mmdb": env.get("TRAILGUARD_GEOIP_ASN_MMDB", "").strip() or None,
        "report_recipients": tuple(
            r.strip() for r in env.get("TRAILGUARD_REPORT_RECIPIENTS", "").split(",") if r.strip()
        ),
        "allowed_lateness_hours": float(env.get("TRAILGUARD_ALLOWED_LATENESS_HOURS", "") or 2.0),
        "ingest_batch_records": _int("TRAILGUARD_INGEST_BATCH_RECORDS", 250_000),
        "ingest_workers": _int("TRAILGUARD_INGEST_WORKERS", 1),
        "ingest_max_tasks": max(1, _int("TRAILGUARD_INGEST_MAX_TASKS", 32)),
        "score_max_tasks": max(1, _int("TRAILGUARD_SCORE_MAX_TASKS", 4)),
        "smtp_url": env.get("TRAILGUARD_SMTP_URL", "").strip() or None,
        "notify_destinations": env.get("TRAILGUARD_NOTIFY_DESTINATIONS", "").strip() or None,
        "notify_min_score": _float("TRAILGUARD_NOTIFY_MIN_SCORE", 70.0),
        "notify_max_per_run": max(1, _int("TRAILGUARD_NOTIFY_MAX_PER_RUN", 50)),
        "report_base_url": env.get("TRAILGUARD_REPORT_BASE_URL", "").strip() or None,
        "alert_recipients": _list("TRAILGUARD_ALERT_RECIPIENTS") or _list("TRAILGUARD_REPORT_RECIPIENTS"),
        "freshness_hours": _float("TRAILGUARD_FRESHNESS_HOURS", 24.0),
        "freshness_lookback_days": max(1, _int("TRAILGUARD_FRESHNESS_LOOKBACK_DAYS", 7)),
        "source": env.get("TRAILGUARD_SOURCE", "").strip() or None,
        "flows_source": env.get("TRAILGUARD_FLOWS_SOURCE", "").strip() or None,
        "integrity_keys": env.get("TRAILGUARD_INTEGRITY_KEYS", "").strip() or None,
        "threat_lists": tuple(
            s.strip() for s in env.get("TRAILGUARD_THREAT_LISTS", "").split(",") if s.strip()
        ),
        "mlflow_ui_url": env.get("TRAILGUARD_MLFLOW_UI_URL", "").strip()
        or _served(env.get("MLFLOW_TRACKING_URI", "")),
        "train_min_events": max(1, _int("TRAILGUARD_TRAIN_MIN_EVENTS", 30)),
        "train_min_days": max(2, _int("TRAILGUARD_TRAIN_MIN_DAYS", 2)),
        "coldstart_fit_days": max(0, _int("TRAILGUARD_COLDSTART_FIT_DAYS", 7)),
        "coldstart_min_events": max(2, _int("TRAILGUARD_COLDSTART_MIN_EVENTS", 10)),
        "ingest_max_file_bytes": max(1, _int("TRAILGUARD_INGEST_MAX_FILE_BYTES", 256 * 1024 * 1024)),
        "ingest_max_records_per_file": max(1, _int("TRAILGUARD_INGEST_MAX_RECORDS_PER_FILE", 200_000)),
        "ingest_max_record_bytes": max(1, _int("TRAILGUARD_INGEST_MAX_RECORD_BYTES", 8 * 1024 * 1024)),
        "flow_log_format": " ".join(
            env.get("TRAILGUARD_FLOW_LOG_FORMAT", "")
            .replace("$", "")
            .replace("{", "")
            .replace("}", "")
            .split()
        )
        or None,
        "flow_block_bytes": max(64 * 1024, _int("TRAILGUARD_FLOW_BLOCK_BYTES", 1024 * 1024)),
        "flow_max_file_bytes": max(1, _int("TRAILGUARD_FLOW_MAX_FILE_BYTES", 512 * 1024 * 1024)),
        "flow_max_records_per_file": max(1, _int("TRAILGUARD_FLOW_MAX_RECORDS_PER_FILE", 10_000_000)),
        "commit_lease_seconds": max(1.0, _float("TRAILGUARD_COMMIT_LEASE_SECONDS", 60.0)),
        "commit_wait_seconds": max(0.0, _float("TRAILGUARD_COMMIT_WAIT_SECONDS", 3600.0)),
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)  # type: ignore[arg-type]
