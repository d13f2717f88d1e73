"""The analyst label store: risk scores people gave to events, the ground truth the models learn from.

The paper's loop is "analysts score events, a model learns the score, analysts' feedback keeps tuning
it". Decisions are kept append-only under ``<data root>/labels/`` - one parquet file per decision batch,
written atomically - so every change of mind stays on record; :func:`read_labels` gives the latest
decision per eventID.

Training targets (:func:`training_targets`): the analyst's score where there is one; else the score of
the labelling functions (:mod:`trailguard.detections`) where a rule fired; else ``DEFAULT_TARGET`` (5):
an event no rule and no analyst flagged is most likely routine, but not certainly harmless, so it gets
a low score rather than zero.
"""

from __future__ import annotations

import getpass
import json
import logging
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from trailguard.store.events import EventStore, write_bytes_atomic, write_parquet_atomic
from trailguard.store.fs import DataPath, as_path, read_parquet

log = logging.getLogger(__name__)

VERDICTS = ("malicious", "benign", "needs-review")
DEFAULT_TARGET = 5  # target for events no rule fired on and no analyst scored
MAX_NOTE_CHARS = 2000

LABEL_SCHEMA = pa.schema(
    [
        pa.field("eventID", pa.string(), nullable=False),
        pa.field("risk_score", pa.int64(), nullable=False),
        pa.field("verdict", pa.string(), nullable=False),
        pa.field("analyst", pa.string()),
        pa.field("note", pa.string()),
        pa.field("time", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
LABEL_COLUMNS = tuple(LABEL_SCHEMA.names)


def labels_dir(root: DataPath | str) -> DataPath:
    return as_path(root) / "labels"


def default_verdict(risk_score: int) -> str:
    """The verdict implied by a score when the analyst gives none: >= 70 malicious, < 40 benign."""
    if risk_score >= 70:
        return "malicious"
    if risk_score < 40:
        return "benign"
    return "needs-review"


def _validated(decision: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    event_id = decision.get("eventID")
    if not isinstance(event_id, str) or not event_id.strip():
        raise ValueError(f"eventID must be a non-empty string, got {event_id!r}")
    if len(event_id) > 256:
        raise ValueError(f"eventID is longer than 256 characters: {event_id[:40]!r}...")
    score = decision.get("risk_score")
    if isinstance(score, bool) or not isinstance(score, (int, float, np.integer, np.floating, str)):
        raise ValueError(f"risk_score for {event_id} must be a whole number from 0 to 100, got {score!r}")
    try:
        number = float(score)
    except ValueError:
        raise ValueError(
            f"risk_score for {event_id} must be a whole number from 0 to 100, got {score!r}"
        ) from None
    if not number.is_integer() or not 0 <= number <= 100:
        raise ValueError(f"risk_score for {event_id} must be a whole number from 0 to 100, got {score!r}")
    risk = int(number)
    verdict = decision.get("verdict") or default_verdict(risk)
    if verdict not in VERDICTS:
        raise ValueError(f"verdict for {event_id} must be one of {', '.join(VERDICTS)}; got {verdict!r}")
    note = decision.get("note") or ""
    if not isinstance(note, str):
        raise ValueError(f"note for {event_id} must be text, got {type(note).__name__}")
    if len(note) > MAX_NOTE_CHARS:
        raise ValueError(f"note for {event_id} is {len(note)} characters; the limit is {MAX_NOTE_CHARS}")
    analyst = decision.get("analyst") or _current_user()
    when = pd.Timestamp(decision.get("time") or now)
    when = when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")
    return {
        "eventID": event_id.strip(),
        "risk_score": risk,
        "verdict": verdict,
        "analyst": str(analyst),
        "note": note,
        "time": when.to_pydatetime(),
    }


def _current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def record_labels(store_root: DataPath | str, decisions: Iterable[Mapping[str, Any]]) -> DataPath:
    """Append a batch of decisions (mappings with eventID, risk_score and optionally verdict, analyst,
    note, time) as one file; all are validated before anything is written."""
    now = datetime.now(timezone.utc)
    rows = [_validated(d, now) for d in decisions]
    if not rows:
        raise ValueError("no decisions to record")
    table = pa.Table.from_pylist(rows, schema=LABEL_SCHEMA)
    # the name sorts in write order (microseconds), which breaks ties between decisions of the same time
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    path = labels_dir(store_root) / f"labels-{stamp}-{uuid.uuid4().hex[:6]}.parquet"
    write_parquet_atomic(table, path)
    log.info("recorded %d analyst decision(s) in %s", len(rows), path.name)
    return path


def record_label(
    store_root: DataPath | str,
    event_id: str,
    risk_score: int,
    *,
    verdict: str | None = None,
    analyst: str | None = None,
    note: str = "",
) -> DataPath:
    """Record one analyst decision. ``verdict`` defaults to what the score implies
    (:func:`default_verdict`), ``analyst`` to the current OS user. Raises ValueError on a score outside
    0-100, a non-whole score or an unknown verdict."""
    return record_labels(
        store_root,
        [
            {
                "eventID": event_id,
                "risk_score": risk_score,
                "verdict": verdict,
                "analyst": analyst,
                "note": note,
            }
        ],
    )


def label_history(root: DataPath | str) -> pd.DataFrame:
    """Every decision ever recorded, oldest first (the audit trail)."""
    folder = labels_dir(root)
    files = sorted(folder.glob("labels-*.parquet")) if folder.exists() else []
    if not files:
        return LABEL_SCHEMA.empty_table().to_pandas()
    tables = [read_parquet(f, schema=LABEL_SCHEMA) for f in files]
    frame = pa.concat_tables(tables).to_pandas()
    frame["_file"] = np.repeat(np.arange(len(tables)), [t.num_rows for t in tables])
    frame["_row"] = np.arange(len(frame))
    frame = frame.sort_values(["time", "_file", "_row"], kind="stable")
    return frame.drop(columns=["_file", "_row"]).reset_index(drop=True)


def read_labels(root: DataPath | str) -> pd.DataFrame:
    """The latest decision per eventID (by decision time, then file order): columns of LABEL_SCHEMA."""
    history = label_history(root)
    if history.empty:
        return history
    return history.drop_duplicates("eventID", keep="last").reset_index(drop=True)


def training_targets(
    events_df: pd.DataFrame, lf_frame: pd.DataFrame | None, analyst_labels: pd.DataFrame | None
) -> pd.Series:
    """The risk score (0-100) each event should get, indexed like ``events_df``.

    Analyst score where the event was labelled (analyst wins); else the labelling functions' ``lf_score``
    where a rule fired (> 0); else ``DEFAULT_TARGET``.
    """
    return targets_and_sources(events_df, lf_frame, analyst_labels)[0]


def target_sources(
    events_df: pd.DataFrame, lf_frame: pd.DataFrame | None, analyst_labels: pd.DataFrame | None
) -> pd.Series:
    """Where each target came from: ``analyst``, ``rules`` or ``default`` (same index as events_df)."""
    return targets_and_sources(events_df, lf_frame, analyst_labels)[1]


def targets_and_sources(
    events_df: pd.DataFrame, lf_frame: pd.DataFrame | None, analyst_labels: pd.DataFrame | None
) -> tuple[pd.Series, pd.Series]:
    """:func:`training_targets` and :func:`target_sources` in one pass."""
    n = len(events_df)
    target = np.full(n, float(DEFAULT_TARGET))
    source = np.full(n, "default", dtype=object)
    if lf_frame is not None and len(lf_frame):
        lf = (
            pd.to_numeric(lf_frame["lf_score"].reindex(events_df.index), errors="coerce")
            .fillna(0)
            .to_numpy(float)
        )
        fired = lf > 0
        target[fired] = lf[fired]
        source[fired] = "rules"
    if analyst_labels is not None and len(analyst_labels):
        scores = analyst_labels.drop_duplicates("eventID", keep="last").set_index("eventID")["risk_score"]
        found = events_df["eventID"].map(scores)
        labelled = found.notna().to_numpy()
        target[labelled] = found.to_numpy(float)[labelled]
        source[labelled] = "analyst"
    return (
        pd.Series(target, index=events_df.index, name="target"),
        pd.Series(source, index=events_df.index, name="target_source").astype("str"),
    )


def find_event(store: EventStore, event_id: str) -> dict[str, Any] | None:
    """Where an event is: its day and a few fields to show, or None. Reads only each partition's
    eventID column (newest day first) until found, then that one row."""
    if not event_id:
        return None
    for day in reversed(store.dates()):
        ids = store.read_partition(day, columns=["eventID"]).column("eventID")
        hits = pc.index(ids, event_id).as_py()
        if hits >= 0:
            columns = [
                "eventID",
                "eventTime",
                "eventName",
                "eventSource",
                "userIdentity.arn",
                "sourceIPAddress",
            ]
            table = store.read_partition(day, columns=columns)
            row = table.filter(pc.equal(table.column("eventID"), event_id)).slice(0, 1).to_pylist()[0]
            return {"date": day, **row}
    return None


# -- training bookkeeping ---------------------------------------------------------------------------------
def _marker(root: DataPath | str) -> DataPath:
    return as_path(root) / "training" / "last_training.json"


def mark_training(root: DataPath | str, when: datetime | None = None, **details: Any) -> None:
    """Note that a training ran (the label-triggered DAG compares new decisions against this)."""
    when = when or datetime.now(timezone.utc)
    payload = {"time": when.isoformat(), **details}
    write_bytes_atomic(json.dumps(payload, indent=2, default=str).encode(), _marker(root))


def last_training_time(root: DataPath | str) -> datetime | None:
    path = _marker(root)
    if not path.exists():
        return None
    try:
        return datetime.fromisoformat(json.loads(path.read_text())["time"])
    except (ValueError, KeyError, TypeError):
        return None


def labels_since_last_training(root: DataPath | str) -> int:
    """How many analyst decisions were recorded after the last training (all of them before any)."""
    history = label_history(root)
    since = last_training_time(root)
    if since is None or history.empty:
        return len(history)
    return int((history["time"] > pd.Timestamp(since)).sum())
