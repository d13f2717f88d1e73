"""Per-day activity aggregates: ``activity/date=D/activity.parquet``, one small long table per day.

Every dashboard (events per category, user activity, top APIs and errors, first-seen principals,
countries and ASNs, console sign-ins, the PCA map) is a sum or a distinct count over these rows, so a
30-day view reads 30 small files instead of millions of events. One row per
``(account, region, principal, dim, value)`` with its ``events``; the dims are:

* ``category``: the Splunk App for AWS event type (``enrich.event_category``: error, auth, iam_change,
  notable_network, network, delete, sns, read, ec2, change); summed per principal it is its event count;
* ``service`` (``iam``, ``ec2``... from eventSource) and ``api`` (``service:eventName``);
* ``error``: the errorCode of failed calls;
* ``country`` and ``asn`` of the source address (GeoIP, offline);
* ``console``: console sign-ins as ``success_mfa``, ``success_no_mfa`` or ``failure``, and
  ``console_country``: the country each sign-in came from;
* ``identity``: ``userIdentity.type``.

Values are attacker-controlled: they are kept as text (escaped where shown) and cut to
:data:`MAX_VALUE_CHARS` so a crafted 8 kB eventName cannot bloat the table. A rerun overwrites the day.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa

from trailguard.model import enrich
from trailguard.store.events import EventStore, day_text
from trailguard.store.fs import DataPath, as_path, read_parquet, visible_files, write_parquet_atomic
from trailguard.store.schema import EVENT_SCHEMA

log = logging.getLogger(__name__)

ACTIVITY_FILE = "activity.parquet"
MAX_VALUE_CHARS = 200
KEYS = ("account", "region", "principal")
DIMS = ("category", "service", "api", "error", "country", "asn", "console", "console_country", "identity")
UNKNOWN = "unknown"
TEXT_COLUMNS = ("account", "region", "principal", "dim", "value")

SCHEMA = pa.schema(
    [
        pa.field("account", pa.string(), nullable=False),
        pa.field("region", pa.string(), nullable=False),
        pa.field("principal", pa.string(), nullable=False),
        pa.field("dim", pa.string(), nullable=False),
        pa.field("value", pa.string(), nullable=False),
        pa.field("events", pa.int64(), nullable=False),
    ]
)

#: The table as read for the views: text columns dictionary-encoded (pandas categoricals).
_READ_SCHEMA = pa.schema(
    [
        pa.field(f.name, pa.dictionary(pa.int32(), pa.string()) if f.name in TEXT_COLUMNS else f.type)
        for f in SCHEMA
    ]
)

#: What the aggregates read of each event: never ``raw``, ``requestParameters`` or ``responseElements``.
COLUMNS = (
    "eventSource",
    "eventName",
    "readOnly",
    "errorCode",
    "responseElements.ConsoleLogin",
    "additionalEventData.MFAUsed",
    "sourceIPAddress",
    "vpcEndpointId",
    "awsRegion",
    "recipientAccountId",
    "userIdentity.type",
    "userIdentity.arn",
    "userIdentity.principalId",
    "userIdentity.accountId",
)

_DATE_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


def activity_dir(root: DataPath | str, day: date | str) -> DataPath:
    return as_path(root) / "activity" / f"date={day_text(day)}"


def activity_days(root: DataPath | str) -> list[str]:
    """Days that have an activity table, oldest first."""
    folder = as_path(root) / "activity"
    if not folder.is_dir():
        return []
    days = []
    for child in folder.iterdir():
        match = _DATE_DIR.match(child.name)
        if match and (child / ACTIVITY_FILE).exists():
            days.append(match.group(1))
    return sorted(days)


def _text(frame: pd.DataFrame, column: str) -> pd.Series:
    """A column as clipped text with nulls as None (attacker-controlled: any length, any characters)."""
    if column not in frame:
        return pd.Series(None, index=frame.index, dtype="object")
    values = frame[column].astype("object")
    return values.where(values.isna(), values.astype(str).str.slice(0, MAX_VALUE_CHARS))


def principal_column(frame: pd.DataFrame) -> pd.Series:
    """Who acted: userIdentity.arn, else principalId, else accountId, else ``unknown`` (as the features
    name a principal)."""
    out = pd.Series(UNKNOWN, index=frame.index, dtype="object")
    for column in ("userIdentity.accountId", "userIdentity.principalId", "userIdentity.arn"):
        values = _text(frame, column)
        out = values.where(values.notna() & (values != ""), out)
    return out


def _dimensions(frame: pd.DataFrame, enricher: enrich.Enricher) -> dict[str, pd.Series]:
    """The value of each dim for each event (None where the dim does not apply)."""
    source = _text(frame, "eventSource")
    name = _text(frame, "eventName")
    service = source.str.split(".", n=1).str[0].where(source.notna() & (source != ""), UNKNOWN)
    geo = enricher.enrich(frame["sourceIPAddress"], frame.get("vpcEndpointId"))
    error = _text(frame, "errorCode")
    console = name.eq("ConsoleLogin").to_numpy(dtype=bool)
    outcome = _text(frame, "responseElements.ConsoleLogin").fillna("").str.lower()
    mfa = _text(frame, "additionalEventData.MFAUsed").fillna("").str.lower().eq("yes")
    login = np.where(outcome.eq("failure"), "failure", np.where(mfa, "success_mfa", "success_no_mfa"))
    return {
        "category": enrich.event_category(frame).astype("object"),
        "service": service,
        "api": service + ":" + name.fillna(UNKNOWN),
        "error": error.where(error != ""),
        "country": geo["country"].astype("object"),
        "asn": geo["asn"].astype("object"),
        "console": pd.Series(np.where(console, login, None), index=frame.index, dtype="object"),
        "console_country": geo["country"].astype("object").where(console),
        "identity": _text(frame, "userIdentity.type").fillna(UNKNOWN),
    }


def aggregate_events(frame: pd.DataFrame, enricher: enrich.Enricher | None = None) -> pd.DataFrame:
    """The activity rows of a frame of events (columns as in the store; missing ones count as null)."""
    if frame.empty:
        return SCHEMA.empty_table().to_pandas()
    enricher = enricher or enrich.default_enricher()
    frame = frame.reindex(columns=list(COLUMNS))
    account = _text(frame, "recipientAccountId")
    account = account.where(account.notna() & (account != ""), _text(frame, "userIdentity.accountId"))
    region = _text(frame, "awsRegion")
    keys = pd.DataFrame(
        {
            "account": account.where(account.notna() & (account != ""), UNKNOWN),
            "region": region.where(region.notna() & (region != ""), UNKNOWN),
            "principal": principal_column(frame),
        }
    )
    parts = []
    for dim, values in _dimensions(frame, enricher).items():
        rows = keys.assign(value=values.to_numpy())
        rows = rows[rows["value"].notna()]
        counts = rows.groupby([*KEYS, "value"], sort=False).size().rename("events").reset_index()
        parts.append(counts.assign(dim=dim))
    return _sum(parts)


def _sum(parts: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Add up rows of the same key (parts of one day, or days of a period)."""
    frame = pd.concat(list(parts), ignore_index=True)
    if frame.empty:
        return SCHEMA.empty_table().to_pandas()
    total = frame.groupby([*KEYS, "dim", "value"], sort=True)["events"].sum().reset_index()
    return total[list(SCHEMA.names)].astype({"events": "int64"})


def compute_day_activity(
    store: EventStore, day: date | str, enricher: enrich.Enricher | None = None
) -> pd.DataFrame:
    """A day's activity rows, computed part file by part file (memory: one part's columns at a time)."""
    parts = []
    for path in store.partition_files(day):
        table = read_parquet(path, columns=list(COLUMNS), schema=EVENT_SCHEMA)
        parts.append(aggregate_events(table.to_pandas(), enricher))
    if not parts:
        return SCHEMA.empty_table().to_pandas()
    return _sum(parts)


def write_day_activity(
    store: EventStore, day: date | str, enricher: enrich.Enricher | None = None
) -> DataPath:
    """Compute and write (atomically, overwriting a rerun's) ``activity/date=D/activity.parquet``."""
    rows = compute_day_activity(store, day, enricher)
    table = pa.Table.from_pandas(rows, schema=SCHEMA, preserve_index=False)
    path = activity_dir(store.root, day) / ACTIVITY_FILE
    write_parquet_atomic(table, path, compression="zstd", use_dictionary=True)
    events = int(rows.loc[rows["dim"] == "category", "events"].sum())
    log.info("%s: activity of %d events written to %s (%d rows)", day_text(day), events, path, len(rows))
    return path


def ensure_activity(
    store: EventStore, days: Iterable[str], enricher: enrich.Enricher | None = None
) -> list[str]:
    """Write the activity table of each day that has events but none yet (``trailguard explore`` on a
    store the pipeline filled before aggregates existed); returns the days written."""
    have = set(activity_days(store.root))
    written = []
    for day in days:
        if day not in have and store.partition_files(day):
            write_day_activity(store, day, enricher)
            written.append(day)
    return written


def read_activity(root: DataPath | str, days: Iterable[str]) -> pd.DataFrame:
    """The activity rows of the given days with a ``date`` column (days without a table are absent).

    Text columns come back as pandas categoricals sharing one dictionary per column: a 30-day view groups
    and filters codes, not hundreds of thousands of strings."""
    tables = []
    for day in days:
        files = visible_files(activity_dir(root, day), ACTIVITY_FILE)
        if files:
            table = read_parquet(files[0], columns=list(SCHEMA.names), read_dictionary=list(TEXT_COLUMNS))
            table = table.cast(_READ_SCHEMA)
            date_column = pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(table.num_rows, dtype=np.int32)), pa.array([day])
            )
            tables.append(table.append_column("date", date_column))
    if not tables:
        frame = SCHEMA.empty_table().to_pandas().assign(date=pd.Series(dtype="object"))
        return frame.astype({c: "category" for c in (*TEXT_COLUMNS, "date")})
    return pa.concat_tables(tables).unify_dictionaries().to_pandas()
