"""The partitioned event store under the data root.

Layout (see CONTRACTS.md): ``events/date=YYYY-MM-DD/*.parquet`` with one row per ``eventID`` across the
store, ``manifest/objects/*.parquet`` (every source object seen), ``quarantine/`` (files and rows rejected,
each with its reason). Every file is written atomically: locally a temporary name in the same folder, then a
rename; on S3 (an ``s3://bucket/prefix`` root, see :mod:`trailguard.fs`) one PUT of the whole object.

Parts are committed by one committer at a time (:meth:`EventStore.commit_lock`): a ``lockf`` lock on a
local root; on an S3 root a lease object in the bucket taken with a conditional write
(:mod:`trailguard.store.lease`), so committers on machines that share nothing but the bucket (Airflow
workers of any executor, the command line) are kept apart. What decides that an event is already stored
is read after the lock is taken.

Deduplication keeps, for each day a run touches, a sorted index of 16-byte keys of the day's eventIDs (see
:func:`id_keys`): 16 MB per million stored events (plus about as much again, briefly, while a batch is
merged in), read once from the partition's eventID column and then kept up to date, never reread per
file. The indexes of the least recently used days are dropped beyond ``index_budget_bytes`` (1 GiB, about
64 million events), so a backfill of many busy days stays bounded: a day of 20 million events needs 320 MB.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trailguard.store import fs
from trailguard.store.fs import DataPath, as_path, parquet_file, read_parquet, visible_files
from trailguard.store.fs import atomic_path as atomic_path
from trailguard.store.fs import write_bytes_atomic as write_bytes_atomic
from trailguard.store.lease import Lease
from trailguard.store.lease import held as hold_lease
from trailguard.store.schema import EVENT_SCHEMA
from trailguard.store.settings import load_settings

log = logging.getLogger(__name__)

MANIFEST_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("size", pa.int64()),
        ("etag", pa.string()),
        ("status", pa.string()),  # ingested | skipped | quarantined
        ("records_read", pa.int64()),
        ("records_new", pa.int64()),
        ("records_duplicate", pa.int64()),
        ("records_quarantined", pa.int64()),
        ("error", pa.string()),
        ("run_id", pa.string()),
        ("seen_at", pa.timestamp("us", tz="UTC")),
        # hex SHA-256 of the uncompressed content as read (what a CloudTrail digest's hashValue states);
        # null for objects not read, CloudWatch hours, and manifests written before it existed
        ("sha256", pa.string()),
    ]
)

REJECTED_RECORD_SCHEMA = pa.schema(
    [
        ("source_key", pa.string()),
        ("record_index", pa.int64()),
        ("reason", pa.string()),
        ("eventID", pa.string()),
        ("raw", pa.string()),
        ("run_id", pa.string()),
    ]
)

# A record delivered again under a stored eventID with other content (in CloudTrail, a sign of tampering):
# the new version, and where the stored one is.
CONFLICT_SCHEMA = pa.schema(
    [
        ("eventID", pa.string()),
        ("eventTime", pa.timestamp("us", tz="UTC")),
        ("day", pa.string()),
        ("source_key", pa.string()),
        ("raw", pa.string()),
        ("stored_file", pa.string()),  # the stored version: its part file under the data root
        ("stored_source_key", pa.string()),
        ("stored_eventTime", pa.timestamp("us", tz="UTC")),
        ("run_id", pa.string()),
    ]
)

_DATE_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def new_run_id() -> str:
    """A sortable id for one run: files it writes carry it, so reruns never overwrite each other's parts."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


# Columns holding a different long text in nearly every row: dictionary-encoding them is wasted work, and
# their statistics are never used to skip row groups. Left out of both, a day reads about 3x faster.
UNIQUE_TEXT_COLUMNS = frozenset(
    {"eventID", "raw", "requestParameters", "responseElements", "requestID", "errorMessage", "reasons"}
)


# Event texts that queries filter on (a query engine skips row groups by their min/max statistics); the
# other event texts (ARNs, user agents, addresses...) get no statistics: computing them took 5-15% of the
# writing time as measured, and a min and max of ARNs prunes nothing.
PRUNING_COLUMNS = frozenset(
    {
        "eventSource",
        "eventName",
        "eventType",
        "eventCategory",
        "awsRegion",
        "errorCode",
        "recipientAccountId",
        "userIdentity.type",
        "userIdentity.accountId",
    }
)
_NO_STATISTICS = UNIQUE_TEXT_COLUMNS | {
    f.name for f in EVENT_SCHEMA if pa.types.is_string(f.type) and f.name not in PRUNING_COLUMNS
}


def parquet_write_options(schema: pa.Schema) -> dict[str, object]:
    """pyarrow.parquet writer options for a table: zstd, no dictionary for unique texts, and statistics only
    where they can prune. Beside unique texts, the dictionary-encoded columns are small: snappy compresses
    them almost as well (files 2% larger) without zstd's setup for every page (10% of writing a part)."""
    options: dict[str, object] = {"compression": "zstd"}
    stats = [name for name in schema.names if name not in _NO_STATISTICS]
    if len(stats) < len(schema.names):
        options["write_statistics"] = stats
    plain = [name for name in schema.names if name not in UNIQUE_TEXT_COLUMNS]
    if len(plain) < len(schema.names):
        options["use_dictionary"] = plain
        options["compression"] = {name: "snappy" if name in plain else "zstd" for name in schema.names}
    return options


def write_parquet_atomic(table: pa.Table, final: DataPath) -> DataPath:
    return fs.write_parquet_atomic(table, final, **parquet_write_options(table.schema))


def safe_name(key: str, limit: int = 180) -> str:
    """A file name derived from an untrusted object key (no path traversal, bounded length)."""
    name = _UNSAFE.sub("_", key).strip("._") or "object"
    if len(name) > limit:
        name = name[: limit - 9] + "_" + uuid.uuid5(uuid.NAMESPACE_URL, key).hex[:8]
    return name


def quarantine_name(key: str) -> str:
    """A unique file name for a quarantined object: its key made safe, then a hash of the exact key (keys
    that read alike once made safe, ``x/bad.json`` and ``x_bad.json``, never share a file)."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"{safe_name(key, limit=160)}.{digest}"


_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_UUID_HEX_COLUMNS = [i for i in range(36) if i not in (8, 13, 18, 23)]


def id_keys(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A 128-bit key per eventID, as two uint64 halves (shape ``(n, 2)``), for deduplication.

    A lowercase UUID, which is what CloudTrail writes, is packed into its 16 bytes (exact, vectorised);
    any other text becomes its BLAKE2b-128 digest: two different ids of a day of 20 million share a key
    with odds of about one in 10^24.
    """
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    ids = ids.fill_null("")
    keys = np.zeros((len(ids), 2), dtype=np.uint64)
    is_uuid = pc.match_substring_regex(ids, _UUID)
    mask = is_uuid.to_numpy(zero_copy_only=False)
    if mask.any():
        text = ids.filter(is_uuid).cast(pa.binary(36))
        chars = np.frombuffer(text.buffers()[1], dtype=np.uint8)[text.offset * 36 :][: len(text) * 36]
        digits = chars.reshape(-1, 36)[:, _UUID_HEX_COLUMNS] - np.uint8(ord("0"))
        digits -= np.uint8(ord("a") - ord("0") - 10) * (digits > 9)
        keys[mask] = np.ascontiguousarray((digits[:, 0::2] << 4) | digits[:, 1::2]).view(np.uint64)
    if not mask.all():
        others = ids.filter(pc.invert(is_uuid)).to_pylist()
        digests = b"".join(hashlib.blake2b(text.encode(), digest_size=16).digest() for text in others)
        keys[~mask] = np.frombuffer(digests, dtype=np.uint64).reshape(-1, 2)
    return keys


class KeyIndex:
    """A set of eventID keys (a day's stored eventIDs, or a batch's). Keys given to it are sorted (see
    :func:`sort_keys`). Kept as two sorted levels, each as first halves for binary search with second
    halves beside: new keys go into the small level, which is merged into the large one now and then, so
    adding a part's keys does not copy the whole index each time."""

    _MERGE_ROWS = 65_536  # the small level is merged once it holds this many keys, or an eighth of the large

    def __init__(self, keys: np.ndarray | None = None) -> None:
        empty = np.empty(0, dtype=np.uint64)
        self._levels = [(empty, empty), (empty, empty)]  # (large, small), each (first halves, second halves)
        if keys is not None:
            self.add(sort_keys(keys)[0])

    def __len__(self) -> int:
        return sum(len(first) for first, _ in self._levels)

    @property
    def nbytes(self) -> int:
        return sum(first.nbytes + second.nbytes for first, second in self._levels)

    def keys(self) -> np.ndarray:
        """Every key, sorted (shape ``(n, 2)``)."""
        first, second = _merged(*self._levels[0], np.stack(self._levels[1], axis=1))
        return np.stack([first, second], axis=1)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        """Which of the (sorted) keys are in the index."""
        found = _contains(*self._levels[0], keys)
        if len(self._levels[1][0]):
            found |= _contains(*self._levels[1], keys)
        return found

    def add(self, keys: np.ndarray) -> None:
        """Add (sorted) keys not in the index yet."""
        if not len(keys):
            return
        (first, second), small = self._levels
        small = _merged(*small, keys)
        if len(small[0]) >= min(self._MERGE_ROWS, max(len(first) // 8, 1024)):
            self._levels = [_merged(first, second, np.stack(small, axis=1)), (first[:0], second[:0])]
        else:
            self._levels[1] = small


def _contains(first: np.ndarray, second: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Which of the sorted ``keys`` are among (first, second), sorted by first."""
    at = np.searchsorted(first, keys[:, 0])  # sorted queries: each search starts where the last ended
    found = np.zeros(len(keys), dtype=bool)
    inside = np.flatnonzero(at < len(first))
    same = inside[first[at[inside]] == keys[inside, 0]]
    found[same] = second[at[same]] == keys[same, 1]
    shared = same[~found[same] & (at[same] < len(first) - 1)]
    for i in shared[first[at[shared] + 1] == keys[shared, 0]]:  # first halves shared by stored ids: rare
        stop = np.searchsorted(first, keys[i, 0], "right")
        found[i] = bool((second[at[i] : stop] == keys[i, 1]).any())
    return found


def _merged(first: np.ndarray, second: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, second) with the sorted ``keys`` inserted in place, in one pass (no re-sort)."""
    at = np.searchsorted(first, keys[:, 0], "right") + np.arange(len(keys))  # where each new key lands
    old = np.ones(len(first) + len(keys), dtype=bool)
    old[at] = False
    merged_first, merged_second = np.empty(len(old), dtype=np.uint64), np.empty(len(old), dtype=np.uint64)
    merged_first[at], merged_second[at] = keys[:, 0], keys[:, 1]
    merged_first[old], merged_second[old] = first, second
    return merged_first, merged_second


def sort_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keys sorted (by first half, then second), with the row each came from; equal keys stay in row order."""
    order = np.lexsort((keys[:, 1], keys[:, 0]))
    return keys[order], order


def first_of_sorted(keys: np.ndarray) -> np.ndarray:
    """True for the first of each run of equal keys in sorted keys, False for the copies after it."""
    keep = np.ones(len(keys), dtype=bool)
    keep[1:] = (keys[1:] != keys[:-1]).any(axis=1)
    return keep


@dataclass
class StagedIds:
    """What deduplication needs of a staged part: its eventID keys, sorted, with each one's row, and the
    source each row came from."""

    keys: np.ndarray  # (rows, 2) uint64, see id_keys; sorted by sort_keys
    rows: np.ndarray  # (rows,) the row of each key
    source_index: np.ndarray  # (rows,) int32 into sources, in row order
    sources: list[str]

    @classmethod
    def of(cls, table: pa.Table) -> StagedIds:
        """From a table's eventID and source_key columns."""
        encoded = table.column("source_key").combine_chunks().fill_null("").dictionary_encode()
        keys, rows = sort_keys(id_keys(table.column("eventID")))
        return cls(
            keys=keys,
            rows=rows,
            source_index=encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32),
            sources=encoded.dictionary.to_pylist(),
        )


@dataclass
class EventStore:
    """Events, manifest and quarantine under one data root (a local folder or ``s3://bucket/prefix``)."""

    root: DataPath
    index_budget_bytes: int = 1 << 30
    # an s3:// root's commit lease: how long it lasts unrenewed, how long to wait for it (None: settings)
    lease_seconds: float | None = None
    lease_wait_seconds: float | None = None
    _indexes: OrderedDict[str, KeyIndex] = field(default_factory=OrderedDict, repr=False)
    _lease: Lease | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.root = as_path(self.root)

    # -- paths -------------------------------------------------------------------------------------
    @property
    def events_dir(self) -> DataPath:
        return self.root / "events"

    @property
    def manifest_dir(self) -> DataPath:
        return self.root / "manifest" / "objects"

    @property
    def quarantine_dir(self) -> DataPath:
        return self.root / "quarantine"

    def partition_dir(self, day: date | str) -> DataPath:
        return self.events_dir / f"date={day_text(day)}"

    # -- events ------------------------------------------------------------------------------------
    def dates(self) -> list[str]:
        """Partition dates present in the store, oldest first."""
        if not self.events_dir.exists():
            return []
        found = []
        for child in self.events_dir.iterdir():
            match = _DATE_DIR.match(child.name)
            if match and _part_files(child):
                found.append(match.group(1))
        return sorted(found)

    def partition_files(self, day: date | str, *, allow_damaged: bool = False) -> list[DataPath]:
        """A day's part files. A local file that is not a whole parquet file (its end is not the footer's
        magic, as after a truncation) is moved aside to ``quarantine/store/`` and the day marked damaged;
        a damaged day raises :class:`DamagedPartitionError` (naming the file and what to do) unless
        ``allow_damaged`` (ingestion goes on with the other files, and the repair reads the day again)."""
        files = _part_files(self.partition_dir(day))
        if not fs.is_remote(self.root):
            whole = [f for f in files if _looks_whole(f)]
            for broken in set(files) - set(whole):
                self.contain(day, broken, "not a whole parquet file (no footer at its end: truncated?)")
            files = whole
        if not allow_damaged:
            damage = self.damaged(day)
            if damage is not None:
                raise DamagedPartitionError(day_text(day), damage)
        return files

    # -- damage: unreadable parts moved aside, the day marked until it is repaired ----------------------
    def damage_dir(self, day: date | str) -> DataPath:
        return self.quarantine_dir / "store" / f"date={day_text(day)}"

    def contain(self, day: date | str, path: DataPath, reason: str) -> DataPath:
        """Move an unreadable part file aside and mark its day damaged (``damaged.json`` lists the files)."""
        folder = self.damage_dir(day)
        target = folder / path.name
        fs.move(path, target)
        marker = folder / "damaged.json"
        record = json.loads(marker.read_text()) if marker.exists() else {"day": day_text(day), "files": []}
        record["files"].append(
            {
                "file": f"events/date={day_text(day)}/{path.name}",
                "moved_to": str(target),
                "reason": reason,
                "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
        )
        write_bytes_atomic(json.dumps(record, indent=2).encode(), marker)
        self._indexes.pop(day_text(day), None)
        log.warning("moved %s aside to %s: %s (the day is marked damaged)", path, target, reason)
        return target

    def damaged(self, day: date | str) -> dict | None:
        """The day's damage record (files moved aside, why), or None when the day is whole."""
        marker = self.damage_dir(day) / "damaged.json"
        return json.loads(marker.read_text()) if marker.exists() else None

    def mark_repaired(self, day: date | str) -> None:
        """Keep the damage record as history (``repaired-<time>.json``); the day reads as whole again."""
        marker = self.damage_dir(day) / "damaged.json"
        if marker.exists():
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
            fs.move(marker, marker.with_name(f"repaired-{stamp}.json"))

    def count_rows(self, day: date | str) -> int:
        """A day's event count from the parquet footers, without reading any column."""
        return sum(parquet_file(f).metadata.num_rows for f in self.partition_files(day))

    def read_partition(
        self, day: date | str, columns: Iterable[str] | None = None, *, allow_damaged: bool = False
    ) -> pa.Table:
        """One day's events as an Arrow table (empty, with the schema, when the day has none)."""
        files = self.partition_files(day, allow_damaged=allow_damaged)
        cols = list(columns) if columns is not None else None
        if not files:
            schema = EVENT_SCHEMA if cols is None else pa.schema([EVENT_SCHEMA.field(c) for c in cols])
            return schema.empty_table()
        tables = []
        for path in files:
            try:
                tables.append(read_parquet(path, columns=cols, schema=EVENT_SCHEMA))
            except (pa.ArrowInvalid, OSError) as exc:  # a damage the footer check cannot see
                self.contain(day, path, f"unreadable: {str(exc).splitlines()[0][:300]}")
                if not allow_damaged:
                    raise DamagedPartitionError(day_text(day), self.damaged(day) or {}) from exc
        if not tables:
            schema = EVENT_SCHEMA if cols is None else pa.schema([EVENT_SCHEMA.field(c) for c in cols])
            return schema.empty_table()
        return pa.concat_tables(tables)

    def partition_ids(self, day: date | str, *, allow_damaged: bool = False) -> pa.Array:
        """The eventIDs stored for a day, as they are on disk."""
        table = self.read_partition(day, columns=["eventID"], allow_damaged=allow_damaged)
        return table.column("eventID").combine_chunks()

    def _day_index(self, day: str) -> KeyIndex:
        """The day's dedupe index: built from the partition on first use, then kept up to date."""
        index = self._indexes.get(day)
        if index is None:
            ids = self.partition_ids(day, allow_damaged=True)  # a damaged file aside, the rest still dedupes
            index = self._indexes[day] = KeyIndex(id_keys(ids.drop_null()))
        self._indexes.move_to_end(day)
        return index

    def _trim_indexes(self) -> None:
        """Drop the least recently used days' indexes beyond the memory budget (the newest always stays)."""
        while (
            len(self._indexes) > 1 and sum(i.nbytes for i in self._indexes.values()) > self.index_budget_bytes
        ):
            self._indexes.popitem(last=False)

    def _keep_new(self, day: str, keys: np.ndarray, keep: np.ndarray) -> None:
        """Clear ``keep`` for (sorted) keys already stored on ``day``; the kept ones join the day's index."""
        rows = np.flatnonzero(keep)
        index = self._day_index(day)
        keep[rows[index.contains(keys[rows])]] = False
        index.add(keys[keep])
        self._trim_indexes()

    def append_events(self, table: pa.Table, run_id: str) -> tuple[pa.Table, int]:
        """Add events not yet in the store; returns (the rows written, duplicates dropped).

        Deduplicates by eventID within the batch (the first row stays) and against the day's partition;
        writes one new part file per touched day, atomically.
        """
        self.check_commit_lock()
        if table.num_rows == 0:
            return table, 0
        keys, order = sort_keys(id_keys(table.column("eventID")))
        fresh = first_of_sorted(keys)
        days = event_days(table.column("eventTime"))
        ordered_days = days[order]
        for day in np.unique(days):
            on_day = ordered_days == day
            day_fresh = fresh & on_day
            self._keep_new(str(day), keys, day_fresh)
            fresh[on_day] = day_fresh[on_day]
        keep = np.zeros(len(keys), dtype=bool)
        keep[order[fresh]] = True
        written = []
        for day, part in split_by_day(table, days, keep):
            write_parquet_atomic(part, self.new_part_path(day, run_id))
            written.append(part)
        new = pa.concat_tables(written) if written else table.schema.empty_table()
        return new, table.num_rows - new.num_rows

    def new_part_path(self, day: date | str, run_id: str) -> DataPath:
        return self.partition_dir(day) / f"part-{run_id}-{uuid.uuid4().hex[:8]}.parquet"

    # -- staging: parts written by workers, moved into the store by one committer --------------------
    def staging_dir(self, stage_id: str) -> DataPath:
        """A private folder for one run's or task's staged parts (same filesystem as the partitions)."""
        return self.root / "staging" / safe_name(stage_id)

    def local_staging_dir(self, run_id: str) -> Path:
        """Where a run that commits its own parts stages them: :meth:`staging_dir` for a local root (a
        commit is a rename); a local temporary folder for an S3 root (a commit is one upload)."""
        return fs.local_folder(self.staging_dir(run_id), prefix="trailguard-staging-")

    def clean_staging(self, older_than_hours: float = 48) -> list[str]:
        """Remove stages left by runs that failed before their commit (older than ``older_than_hours``)."""
        folder = self.root / "staging"
        if not folder.is_dir():
            return []
        cutoff = datetime.now(timezone.utc).timestamp() - older_than_hours * 3600
        removed = []
        for child in folder.iterdir():
            if child.is_dir() and fs.last_modified(child) < cutoff:
                fs.rmtree(child)
                removed.append(child.name)
                log.warning("removed stale staging %s (a run that never committed it)", child)
        return removed

    def add_staged_part(
        self,
        staged: DataPath,
        day: str,
        run_id: str,
        batch: KeyIndex | None = None,
        ids: StagedIds | None = None,
        on_dropped: Callable[[pa.Table], None] | None = None,
    ) -> dict[str, int]:
        """Move a staged part (one day's events in EVENT_SCHEMA) into the partition, less the eventIDs the
        store or the part already holds; returns the new events per ``source_key``.

        ``batch`` holds the keys a run committed lately on any day: an eventID seen there (at another
        eventTime) is a duplicate too. ``ids`` are the part's keys and sources as its writer computed
        them; without them the two columns are read from the file. A part with nothing to drop (the usual
        case) is renamed into place, not rewritten (on S3: uploaded, or copied within S3, once).
        ``on_dropped(rows)`` sees the rows dropped as duplicates, once the kept ones are in place (so that a
        changed record under a known eventID can be kept apart, not lost).
        """
        self.check_commit_lock()
        if ids is None:
            ids = StagedIds.of(read_parquet(staged, columns=["eventID", "source_key"], schema=EVENT_SCHEMA))
        keys = ids.keys
        fresh = first_of_sorted(keys)
        if batch is not None:
            fresh &= ~batch.contains(keys)
        self._keep_new(day_text(day), keys, fresh)
        if batch is not None:
            batch.add(keys[fresh])
        keep = np.zeros(len(keys), dtype=bool)
        keep[ids.rows[fresh]] = True
        final = self.new_part_path(day, run_id)
        if keep.all():
            fs.move(staged, final)
        else:
            if keep.any() or on_dropped is not None:
                whole = read_parquet(staged, schema=EVENT_SCHEMA)
                if keep.any():
                    write_parquet_atomic(whole.filter(pa.array(keep)), final)
                if on_dropped is not None:
                    on_dropped(whole.filter(pa.array(~keep)))
            staged.unlink()
        counts = np.bincount(ids.source_index[keep], minlength=len(ids.sources))
        return {name: int(count) for name, count in zip(ids.sources, counts, strict=True) if count}

    @contextmanager
    def commit_lock(self, purpose: str = "commit") -> Iterator[None]:
        """Held while parts are committed, so that two committers never race on a day's index, and what
        decides "already stored" (each day's eventIDs, the stages left) is read after it is taken.

        A local root: a POSIX record lock (``lockf``): the kernel drops it when its process dies, however
        it dies, and worker processes forked while it is held do not inherit it (an ``flock`` they would:
        workers left alive by a ``kill -9`` of their parent held it for ever). The lock file records its
        owner (pid, host, start, purpose): a waiting run says what it waits for, and a run that finds the
        record of an owner that is gone says it takes over.

        An ``s3://`` root: a lease object in the bucket (``_locks/commit.json``, see
        :mod:`trailguard.store.lease`), created with a conditional write and renewed while held, so that
        committers on machines sharing nothing but the bucket are kept apart, from Airflow or the CLI.
        """
        with _THREAD_LOCKS.setdefault(str(self.root), threading.Lock()):
            if fs.is_remote(self.root):
                with self._commit_lease(purpose):
                    yield
            else:
                with self._local_commit_lock(purpose):
                    yield

    @contextmanager
    def _commit_lease(self, purpose: str) -> Iterator[None]:
        lease_seconds, wait_seconds = self.lease_seconds, self.lease_wait_seconds
        if lease_seconds is None or wait_seconds is None:
            settings = load_settings()
            lease_seconds = settings.commit_lease_seconds if lease_seconds is None else lease_seconds
            wait_seconds = settings.commit_wait_seconds if wait_seconds is None else wait_seconds
        with hold_lease(
            self.root, "commit", purpose, lease_seconds=lease_seconds, wait_seconds=wait_seconds
        ) as held:
            self._lease = held
            try:
                self._indexes.clear()  # another machine may have committed since: read the days again
                yield
            finally:
                self._lease = None

    def check_commit_lock(self) -> None:
        """Before a write of a commit: raises when the S3 lease it holds was lost (see lease.LeaseLost)."""
        if self._lease is not None:
            self._lease.check()

    @contextmanager
    def _local_commit_lock(self, purpose: str) -> Iterator[None]:
        import fcntl
        import os
        import socket

        lock = fs.lock_file(self.root)
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a+b") as handle:
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                log.warning("waiting for the commit lock of %s, held by %s", self.root, _lock_owner(handle))
                fcntl.lockf(handle, fcntl.LOCK_EX)
            previous = _lock_owner(handle)
            if previous != "nobody":
                log.warning(
                    "took over the commit lock of %s from %s (gone without releasing it; what it "
                    "committed is complete, what it had not is read again)",
                    self.root,
                    previous,
                )
            owner = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "purpose": purpose,
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(owner).encode())
            handle.flush()
            try:
                self._indexes.clear()  # another process may have committed since: rebuild from disk
                yield
            finally:
                handle.seek(0)
                handle.truncate()  # released cleanly: no owner left on record
                handle.flush()
                fcntl.lockf(handle, fcntl.LOCK_UN)

    def rewrite_partition(self, day: date | str, table: pa.Table) -> None:
        """Replace a day's partition with ``table`` as one file (used by validation's quarantine).

        The new file is in place before the old parts go, so a crash leaves extra rows, never lost ones,
        and the next rewrite of the day removes the leftovers.
        """
        key = day_text(day)
        old = self.partition_files(key)
        final = self.partition_dir(key) / f"part-{new_run_id()}-compact.parquet"
        write_parquet_atomic(table.cast(EVENT_SCHEMA), final)
        for path in old:
            if path != final:
                path.unlink(missing_ok=True)
        self._indexes.pop(key, None)

    # -- manifest ----------------------------------------------------------------------------------
    def read_manifest(self) -> pa.Table:
        """Every manifest entry ever written (one row per object and run)."""
        files = sorted(self.manifest_dir.glob("*.parquet")) if self.manifest_dir.exists() else []
        if not files:
            return MANIFEST_SCHEMA.empty_table()
        return pa.concat_tables([read_parquet(f, schema=MANIFEST_SCHEMA) for f in files])

    def manifest_index(self) -> dict[str, tuple[int, str, str]]:
        """Latest (size, etag, status) per object key, for skipping what was already read."""
        table = self.read_manifest()
        index: dict[str, tuple[int, str, str]] = {}
        for key, size, etag, status in zip(
            table.column("key").to_pylist(),
            table.column("size").to_pylist(),
            table.column("etag").to_pylist(),
            table.column("status").to_pylist(),
            strict=True,
        ):
            index[key] = (size, etag, status)
        return index

    def record_run(self, run_id: str, source: str) -> None:
        """Note which source a run read (``manifest/runs/``): a repair reads a damaged day from there again."""
        if source:
            doc = {
                "run_id": run_id,
                "source": source,
                "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            write_bytes_atomic(
                json.dumps(doc).encode(), self.root / "manifest" / "runs" / f"{safe_name(run_id)}.json"
            )

    def run_sources(self) -> dict[str, str]:
        """The source each recorded run read, by run id."""
        folder = self.root / "manifest" / "runs"
        found = {}
        for path in visible_files(folder, "*.json"):
            doc = json.loads(path.read_text())
            found[doc["run_id"]] = doc["source"]
        return found

    def manifest_hashes(self) -> dict[str, tuple[int, str, str]]:
        """Latest (size, etag, sha256) per object read and hashed, for checking it against its digest."""
        table = self.read_manifest().select(["key", "size", "etag", "status", "sha256"])
        hashes: dict[str, tuple[int, str, str]] = {}
        for key, size, etag, status, sha256 in zip(*(c.to_pylist() for c in table.columns), strict=True):
            if sha256 and status in ("ingested", "quarantined"):
                hashes[key] = (size, etag, sha256)
            else:
                hashes.pop(key, None)
        return hashes

    def write_manifest(self, entries: list[dict], run_id: str) -> None:
        self.check_commit_lock()
        if not entries:
            return
        table = pa.Table.from_pylist(entries, schema=MANIFEST_SCHEMA)
        write_parquet_atomic(table, self.manifest_dir / f"part-{run_id}-{uuid.uuid4().hex[:8]}.parquet")

    # -- quarantine --------------------------------------------------------------------------------
    def quarantine_object(self, key: str, data: bytes, reason: str, run_id: str) -> DataPath:
        """Keep a rejected source object's bytes and the reason beside it."""
        folder = self.quarantine_dir / "objects"
        target = folder / quarantine_name(key)
        write_bytes_atomic(data, target)
        reason_doc = {"key": key, "reason": reason, "run_id": run_id, "bytes": len(data)}
        write_bytes_atomic(
            json.dumps(reason_doc, indent=2).encode(), target.with_name(target.name + ".reason.json")
        )
        return target

    def quarantine_records(self, rejected: list[dict], run_id: str) -> DataPath | None:
        """Keep records that could not become events (no eventID, no eventTime, not an object...)."""
        if not rejected:
            return None
        table = pa.Table.from_pylist(rejected, schema=REJECTED_RECORD_SCHEMA)
        target = self.quarantine_dir / "records" / f"part-{run_id}-{uuid.uuid4().hex[:8]}.parquet"
        return write_parquet_atomic(table, target)

    def find_events(
        self, day: str, event_ids: Iterable[str], columns: list[str]
    ) -> Iterator[tuple[DataPath, pa.Table]]:
        """The stored rows of a day with these eventIDs, file by file (read in batches: memory follows a batch)."""
        wanted = pa.array(sorted(set(event_ids)), pa.string())
        for path in self.partition_files(day, allow_damaged=True):
            found = []
            for batch in parquet_file(path).iter_batches(batch_size=65_536, columns=["eventID", *columns]):
                hits = batch.filter(pc.is_in(batch.column(0), value_set=wanted))
                if hits.num_rows:
                    found.append(hits)
            if found:
                yield path, pa.Table.from_batches(found)

    def quarantine_conflicts(self, rows: list[dict], run_id: str) -> DataPath | None:
        """Keep records that came again under a stored eventID with other content, beside a pointer to
        the stored version (``quarantine/conflicts/``)."""
        if not rows:
            return None
        table = pa.Table.from_pylist(rows, schema=CONFLICT_SCHEMA)
        target = self.quarantine_dir / "conflicts" / f"part-{run_id}-{uuid.uuid4().hex[:8]}.parquet"
        return write_parquet_atomic(table, target)

    def read_conflicts(self, day: date | str | None = None) -> pa.Table:
        """Conflicting versions kept so far (of one event day, if given)."""
        folder = self.quarantine_dir / "conflicts"
        files = sorted(folder.glob("*.parquet")) if folder.exists() else []
        if not files:
            return CONFLICT_SCHEMA.empty_table()
        table = pa.concat_tables([read_parquet(f, schema=CONFLICT_SCHEMA) for f in files])
        if day is not None:
            table = table.filter(pc.equal(table.column("day"), day_text(day)))
        return table

    def read_quarantined_records(self) -> pa.Table:
        folder = self.quarantine_dir / "records"
        files = sorted(folder.glob("*.parquet")) if folder.exists() else []
        if not files:
            return REJECTED_RECORD_SCHEMA.empty_table()
        return pa.concat_tables([read_parquet(f, schema=REJECTED_RECORD_SCHEMA) for f in files])


# POSIX record locks and S3 leases keep processes apart, not the threads of one process: those take this first
_THREAD_LOCKS: dict[str, threading.Lock] = {}


def _lock_owner(handle: object) -> str:
    """Who the lock file says holds it, as text ("nobody" when it holds no record)."""
    handle.seek(0)  # type: ignore[attr-defined]
    try:
        owner = json.loads(handle.read() or b"null")  # type: ignore[attr-defined]
    except ValueError:
        return "an unknown process"
    if not isinstance(owner, dict):
        return "nobody"
    return (
        f"pid {owner.get('pid')} on {owner.get('host')} ({owner.get('purpose')}, since "
        f"{owner.get('started')})"
    )


class DamagedPartitionError(RuntimeError):
    """A day whose stored events are not all readable: which file, why, and what to do."""

    def __init__(self, day: str, damage: dict) -> None:
        self.day, self.damage = day, damage
        files = damage.get("files") or [{}]
        last = files[-1]
        more = f" (and {len(files) - 1} more)" if len(files) > 1 else ""
        super().__init__(
            f"{day}: the stored events are damaged: {last.get('file', '?')}{more} is {last.get('reason', 'unreadable')}; "
            f"it is kept in quarantine/store/date={day}/. Run `trailguard repair --date {day}` to read the day "
            "again from its sources, then validate, score and report it again"
        )


def _looks_whole(path: Path) -> bool:
    """Whether a local file ends as a parquet file does (a footer length, then ``PAR1``)."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, 2)
            if size < 12:
                return False
            handle.seek(size - 4)
            return handle.read(4) == b"PAR1"
    except FileNotFoundError:
        return True  # gone since it was listed (a rewrite): not damage
    except OSError:
        return False


def _part_files(folder: DataPath) -> list[DataPath]:
    """The parquet files in a folder, not the temporary ones of a write in progress (``.tmp-*``)."""
    return visible_files(folder)


def split_by_day(table: pa.Table, days: np.ndarray, keep: np.ndarray) -> Iterator[tuple[str, pa.Table]]:
    """The kept rows of each day, copying only record batches that mix days or lose rows (a batch per
    source file, usually all of one day and all new, is passed on as it is)."""
    parts: dict[str, list[pa.RecordBatch]] = {}
    start = 0
    for batch in table.to_batches():
        batch_days, batch_keep = days[start : start + batch.num_rows], keep[start : start + batch.num_rows]
        start += batch.num_rows
        if batch.num_rows and batch_keep.all() and (batch_days == batch_days[0]).all():
            parts.setdefault(str(batch_days[0]), []).append(batch)
            continue
        for day in np.unique(batch_days[batch_keep]):
            parts.setdefault(str(day), []).append(batch.filter(pa.array(batch_keep & (batch_days == day))))
    for day in sorted(parts):
        yield day, pa.Table.from_batches(parts[day], schema=table.schema)


def event_days(event_time: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The UTC day of each eventTime (numpy ``datetime64[D]``; ``str()`` of one is ``YYYY-MM-DD``)."""
    return event_time.cast(pa.date32()).to_numpy()


def day_text(day: date | str) -> str:
    """``YYYY-MM-DD`` of a date, datetime or date text; a clear error for anything else."""
    if isinstance(day, (date, datetime)):
        return day.strftime("%Y-%m-%d")
    text = str(day)
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError as exc:
        raise ValueError(f"not a date (YYYY-MM-DD): {text!r}") from exc
