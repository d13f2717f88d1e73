"""Where CloudTrail logs come from: a local folder, S3 as AWS delivers them, or a CloudWatch Logs group.

Every source lists :class:`SourceObject` items; each carries enough to decide, without reading it, whether
it was ingested before (key, size, etag), and a ``fetch()`` that returns its bytes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

# .../CloudTrail/<region>/YYYY/MM/DD/... as AWS writes it (and .../year=YYYY/month=MM/day=DD/..., the
# Hive-compatible prefixes a VPC flow log may be delivered with)
_KEY_DATE = re.compile(r"/(?:year=)?(\d{4})/(?:month=)?(\d{2})/(?:day=)?(\d{2})/")
SKIP_MARKERS = ("CloudTrail-Digest/", "CloudTrail-Insight/", "CloudTrail-Insights/")
# CloudTrail's own files, and evidence as others export it (NDJSON from SIEMs, Athena, CloudTrail Lake)
LOG_SUFFIXES = (".json", ".json.gz", ".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz")


@dataclass(frozen=True)
class SourceObject:
    key: str
    size: int
    etag: str
    fetch: Callable[[], bytes]
    is_file: bool = True  # False for CloudWatch log events grouped into one document
    skip: str | None = None  # why the source itself will not read it (a symlink out of the folder...)


class Source(Protocol):
    uri: str

    def objects(
        self, start: date | None = None, end: date | None = None, prefix: str | None = None
    ) -> Iterator[SourceObject]:
        """Objects delivered from ``start`` to ``end``; with ``prefix`` (a key prefix, e.g. one partition's
        day folder) only those below it, listed without the rest where the source can."""
        ...


def skip_reason(key: str) -> str | None:
    """Why an object is not a CloudTrail log file to read, or None when it is one."""
    normalised = key.replace("\\", "/")
    if any(marker in normalised for marker in SKIP_MARKERS):
        kind = "digest" if "Digest" in normalised else "insight"
        return f"CloudTrail {kind} file, not event records"
    if not normalised.lower().endswith(LOG_SUFFIXES):
        return "not a .json, .ndjson or .jsonl log file (gzipped or not)"
    return None


def key_date(key: str) -> date | None:
    """The delivery date in an AWS-layout key (``.../YYYY/MM/DD/...``), if it has one."""
    match = _KEY_DATE.search("/" + key.replace("\\", "/"))
    if not match:
        return None
    try:
        return date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    except ValueError:
        return None


# AWSLogs/[o-orgid/]<account>/CloudTrail/<region>/YYYY/MM/DD/: one partition of a trail's delivery
_PARTITION = re.compile(
    r"(?:^|/)AWSLogs/(?:o-[a-z0-9]{10,32}/)?(\d{12})/CloudTrail/([a-z0-9-]{1,32})/(\d{4})/(\d{2})/(\d{2})/"
)


def partition_of(key: str) -> dict[str, str] | None:
    """The account, region and delivery day of an AWS-layout key, with the key prefix they share (None for
    keys outside that layout, e.g. CloudWatch hours or a flat folder)."""
    match = _PARTITION.search(key.replace("\\", "/"))
    if not match:
        return None
    account, region, year, month, day = match.groups()
    return {
        "account": account,
        "region": region,
        "day": f"{year}-{month}-{day}",
        "prefix": key[: match.end()],
    }


def in_range(key: str, start: date | None, end: date | None) -> bool:
    """Keys without a date in their path are always in range (we cannot tell)."""
    if start is None and end is None:
        return True
    day = key_date(key)
    if day is None:
        return True
    return (start is None or day >= start) and (end is None or day <= end)


class LocalFolderSource:
    """CloudTrail files below a folder, at any depth.

    Read as the user meant: symbolic links are not followed (with ``follow_links``, only those whose
    target is inside the folder, each folder once, so loops end); a link is listed as skipped with the
    reason. A name that is not UTF-8 becomes a key with the odd bytes escaped (``\\xNN``). Folders given
    to :meth:`exclude` (the data root, when it is inside the source) are never listed.
    """

    def __init__(self, folder: str | Path, *, follow_links: bool = False) -> None:
        self.folder = Path(folder)
        self.uri = str(self.folder)
        self.follow_links = follow_links
        self._excluded: set[str] = set()
        if not self.folder.is_dir():
            raise FileNotFoundError(f"source folder {self.folder} does not exist or is not a folder")
        self._real = os.path.realpath(self.folder)

    def exclude(self, folder: str | Path) -> None:
        """Never list anything below ``folder`` (e.g. the data root, so a run never reads its own output)."""
        self._excluded.add(os.path.realpath(folder))

    def objects(
        self, start: date | None = None, end: date | None = None, prefix: str | None = None
    ) -> Iterator[SourceObject]:
        folder, below = self.folder, ""
        if prefix:
            below = prefix[: prefix.rfind("/") + 1]
            folder = self.folder / below
            if ".." in Path(below).parts or not folder.is_dir():
                return
        found = _files_below(folder, below, self._real, self.follow_links, self._excluded, set())
        for key, path, skip in sorted(found, key=lambda item: item[0].split("/")):
            if not in_range(key, start, end) or (prefix and not key.startswith(prefix)):
                continue
            yield _local_object(key, path, skip)

    def objects_with_digests(self, start: date, end: date) -> Iterator[SourceObject]:
        """The log files and the digest files delivered from ``start`` to ``end`` (for integrity checks):
        only the day folders of the AWS layout are listed; a folder without that layout is read whole."""
        roots = sorted(_trail_roots(self.folder))
        if not roots:
            yield from self.objects(start, end)
            return
        for root in roots:
            for region in sorted(p for p in root.iterdir() if p.is_dir()):
                day = start
                while day <= end:
                    folder = region / f"{day:%Y/%m/%d}"
                    if folder.is_dir():
                        below = folder.relative_to(self.folder).as_posix() + "/"
                        found = _files_below(
                            folder, below, self._real, self.follow_links, self._excluded, set()
                        )
                        for key, path, skip in sorted(found):
                            yield _local_object(key, path, skip)
                    day += timedelta(days=1)


def _local_object(key: str, path: str, skip: str | None = None) -> SourceObject:
    """A listed file as a source object; one the source will not read (a link...) carries the reason."""
    if skip is not None:
        return SourceObject(key=key, size=0, etag="", fetch=_refuse(skip), skip=skip)
    stat = os.stat(path)
    return SourceObject(
        key=key, size=stat.st_size, etag=f"mtime:{stat.st_mtime_ns}", fetch=Path(path).read_bytes
    )


def _trail_roots(folder: Path, depth: int = 4) -> Iterator[Path]:
    """``CloudTrail`` and ``CloudTrail-Digest`` folders at most ``depth`` levels below ``folder``
    (``AWSLogs/[o-id/]<account>/CloudTrail``), without walking into them or into day folders."""
    if depth < 0:
        return
    with os.scandir(folder) as entries:
        for entry in entries:
            if not entry.is_dir():
                continue
            if entry.name in ("CloudTrail", "CloudTrail-Digest"):
                yield Path(entry.path)
            elif not entry.name.isdigit() or len(entry.name) == 12:  # an account id, not a YYYY/MM/DD folder
                yield from _trail_roots(Path(entry.path), depth - 1)


def _refuse(reason: str) -> Callable[[], bytes]:
    def fetch() -> bytes:
        raise OSError(reason)

    return fetch


def key_text(name: str) -> str:
    """A file name as key text: bytes that are not UTF-8 (surrogate escapes from the OS) as ``\\xNN``."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    return name


def inside(path: str, folder: str) -> bool:
    """Whether a real path is ``folder`` or below it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _files_below(
    folder: Path, prefix: str, root: str, follow: bool, excluded: set[str], seen: set[tuple[int, int]]
) -> Iterator[tuple[str, str, str | None]]:
    """(key, path, skip reason or None) of every file below a folder, at any depth (os.scandir: one system
    call per folder). Links are followed only with ``follow`` and only inside ``root``; ``seen`` holds the
    folders entered (device, inode), so a loop is entered once."""
    if os.path.realpath(folder) in excluded:
        return
    try:
        info = os.stat(folder)
    except OSError as exc:
        yield prefix.rstrip("/") or ".", str(folder), f"folder not readable: {exc.strerror}"
        return
    if (info.st_dev, info.st_ino) in seen:
        return
    seen.add((info.st_dev, info.st_ino))
    try:
        with os.scandir(folder) as listing:
            entries = list(listing)
    except OSError as exc:
        yield prefix.rstrip("/") or ".", str(folder), f"folder not readable: {exc.strerror}"
        return
    for entry in entries:
        key = f"{prefix}{key_text(entry.name)}"
        try:
            if entry.is_symlink():
                target = os.path.realpath(entry.path)
                if not follow:
                    yield (
                        key,
                        entry.path,
                        "a symbolic link (not followed; follow_links reads links inside the source)",
                    )
                    continue
                if not inside(target, root):
                    yield key, entry.path, "a symbolic link to outside the source folder (not followed)"
                    continue
                if os.path.isdir(target):
                    yield from _files_below(Path(entry.path), key + "/", root, follow, excluded, seen)
                elif os.path.isfile(target):
                    yield key, entry.path, None
                else:
                    yield key, entry.path, "a broken symbolic link, or a loop of them"
            elif entry.is_dir(follow_symlinks=False):
                yield from _files_below(Path(entry.path), key + "/", root, follow, excluded, seen)
            elif entry.is_file(follow_symlinks=False):
                yield key, entry.path, None
        except OSError as exc:
            yield key, entry.path, f"not readable: {exc.strerror or exc}"


class S3Source:
    """Objects under ``s3://bucket/prefix``, listed with pagination.

    With a date range, only the ``YYYY/MM/DD/`` day prefixes of each account and region are listed, so an
    hourly run reads a few listings, not the whole bucket. ``service`` is the folder AWS delivers into after
    the account: ``CloudTrail``, or ``vpcflowlogs`` for VPC Flow Logs.
    """

    def __init__(
        self, uri: str, client: Any | None = None, page_size: int = 1000, service: str = "CloudTrail"
    ) -> None:
        if not uri.startswith("s3://"):
            raise ValueError(f"not an S3 URI: {uri!r}")
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"no bucket in {uri!r}: use s3://bucket/prefix")
        self.uri, self.bucket, self.prefix = uri, bucket, prefix
        if prefix and not prefix.endswith("/"):
            self.prefix = prefix + "/"
        self.client = client if client is not None else _boto3_client("s3")
        self.page_size = page_size
        self.service = service

    def _list(self, prefix: str, delimiter: str | None = None) -> Iterator[dict]:
        paginator = self.client.get_paginator("list_objects_v2")
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        yield from paginator.paginate(**kwargs, PaginationConfig={"PageSize": self.page_size})

    def _subfolders(self, prefix: str) -> list[str]:
        return [cp["Prefix"] for page in self._list(prefix, "/") for cp in page.get("CommonPrefixes", [])]

    def _day_prefixes(self, start: date, end: date, kind: str = "CloudTrail/") -> Iterator[str]:
        """``.../AWSLogs/<acct>/<kind>/<region>/YYYY/MM/DD/`` for each day, found by listing folders (``kind``
        ``CloudTrail/`` for log files, ``CloudTrail-Digest/`` for digest files)."""
        base = self.prefix
        roots = [base + "AWSLogs/"] if self._subfolders(base + "AWSLogs/") else []
        if not roots:  # an organisation trail: AWSLogs/<org-id>/<account>/...
            return
        accounts = self._subfolders(roots[0])
        for account in accounts:
            children = self._subfolders(account)
            if any(c.endswith(("/CloudTrail/", "/CloudTrail-Digest/", "/" + kind)) for c in children):
                trail_roots = [account + kind]
            else:  # organisation trail: one more level of account ids
                trail_roots = [c + kind for c in children]
            for trail_root in trail_roots:
                for region in self._subfolders(trail_root):
                    day = start
                    while day <= end:
                        yield f"{region}{day:%Y/%m/%d}/"
                        day += timedelta(days=1)

    def objects_with_digests(self, start: date, end: date) -> Iterator[SourceObject]:
        """The log files and the digest files delivered from ``start`` to ``end`` (for integrity checks)."""
        yield from self.objects(start, end)
        for listed in self._day_prefixes(start, end, "CloudTrail-Digest/"):
            for page in self._list(listed):
                for item in page.get("Contents", []):
                    yield self._object(item)

    def object_metadata(self, key: str) -> dict[str, str]:
        """An object's user metadata (a digest's ``signature`` and ``signature-algorithm``)."""
        own = f"s3://{self.bucket}/"
        answer = self.client.head_object(
            Bucket=self.bucket, Key=key[len(own) :] if key.startswith(own) else key
        )
        return dict(answer.get("Metadata") or {})

    def _object(self, item: dict) -> SourceObject:
        key = item["Key"]
        return SourceObject(
            key=f"s3://{self.bucket}/{key}",
            size=int(item.get("Size", 0)),
            etag=str(item.get("ETag", "")).strip('"'),
            fetch=_s3_fetch(self.client, self.bucket, key),
        )

    def objects(
        self, start: date | None = None, end: date | None = None, prefix: str | None = None
    ) -> Iterator[SourceObject]:
        own = f"s3://{self.bucket}/"
        if prefix and prefix.startswith(own + self.prefix):
            prefixes = [prefix[len(own) :]]
        elif start is not None and end is not None:
            prefixes = list(self._day_prefixes(start, end, f"{self.service}/"))
            if not prefixes:  # not the AWS layout: list everything and filter by key
                prefixes = [self.prefix]
        else:
            prefixes = [self.prefix]
        for listed in prefixes:
            for page in self._list(listed):
                for item in page.get("Contents", []):
                    key = item["Key"]
                    if (
                        key.endswith("/")
                        or not in_range(key, start, end)
                        or (prefix and not f"{own}{key}".startswith(prefix))
                    ):
                        continue
                    yield self._object(item)


def _s3_fetch(client: Any, bucket: str, key: str) -> Callable[[], bytes]:
    def fetch() -> bytes:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()

    return fetch


class CloudWatchLogsSource:
    """CloudTrail records delivered to a CloudWatch Logs group (each log event's message is one record).

    Log events are grouped per log stream and UTC hour into one pseudo-object (``cloudwatch://group/
    stream/YYYY-MM-DDTHH``) whose etag is a hash of its CloudWatch event ids: an hour already ingested
    is skipped, one that gained late events is read again (and deduplicated by eventID).
    """

    def __init__(self, uri: str, client: Any | None = None, page_size: int = 10_000) -> None:
        if not uri.startswith("cloudwatch://"):
            raise ValueError(f"not a CloudWatch Logs URI: {uri!r}")
        self.uri = uri
        self.group = uri[len("cloudwatch://") :].strip("/")
        if not self.group:
            raise ValueError(f"no log group in {uri!r}: use cloudwatch://log-group-name")
        self.client = client if client is not None else _boto3_client("logs")
        self.page_size = page_size

    def objects(
        self, start: date | None = None, end: date | None = None, prefix: str | None = None
    ) -> Iterator[SourceObject]:
        kwargs: dict[str, Any] = {"logGroupName": self.group}
        if start is not None:
            kwargs["startTime"] = _epoch_ms(datetime.combine(start, datetime.min.time(), timezone.utc))
        if end is not None:
            kwargs["endTime"] = (
                _epoch_ms(datetime.combine(end + timedelta(days=1), datetime.min.time(), timezone.utc)) - 1
            )
        groups: dict[str, list[dict]] = {}
        paginator = self.client.get_paginator("filter_log_events")
        for page in paginator.paginate(**kwargs, PaginationConfig={"PageSize": self.page_size}):
            for event in page.get("events", []):
                hour = datetime.fromtimestamp(event.get("timestamp", 0) / 1000, tz=timezone.utc)
                key = f"{self.uri.rstrip('/')}/{event.get('logStreamName', '')}/{hour:%Y-%m-%dT%H}"
                groups.setdefault(key, []).append(event)
        for key in sorted(groups):
            events = sorted(groups[key], key=lambda e: (e.get("timestamp", 0), e.get("eventId", "")))
            ids = "\n".join(str(e.get("eventId", "")) for e in events)
            payload = _records_document([e.get("message", "") for e in events])
            yield SourceObject(
                key=key,
                size=len(payload),
                etag="sha1:" + hashlib.sha1(ids.encode()).hexdigest(),
                fetch=lambda payload=payload: payload,
                is_file=False,
            )


def _records_document(messages: list[str]) -> bytes:
    """Wrap log-event messages (each one JSON record) as a CloudTrail file, ``{"Records": [...]}``.

    A message that is not valid JSON is kept as a JSON string, so the reader rejects that one record
    with its reason instead of the whole hour.
    """
    import orjson

    parts = []
    for message in messages:
        try:
            orjson.loads(message)
            parts.append(message.encode() if isinstance(message, str) else message)
        except orjson.JSONDecodeError:
            parts.append(orjson.dumps(message))
    return b'{"Records":[' + b",".join(parts) + b"]}"


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _boto3_client(service: str) -> Any:
    import boto3

    return boto3.client(service)


class LocalFileSource:
    """One local file as a source: evidence often comes as a single export (NDJSON, lookup-events output).
    Its key is the file name; like any object it is read once (same name, size and mtime)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.uri = str(self.path)
        if not self.path.is_file():
            raise FileNotFoundError(f"source file {self.path} does not exist or is not a file")

    def objects(
        self, start: date | None = None, end: date | None = None, prefix: str | None = None
    ) -> Iterator[SourceObject]:
        key = self.path.name
        if prefix and not key.startswith(prefix):
            return
        stat = self.path.stat()
        yield SourceObject(
            key=key, size=stat.st_size, etag=f"mtime:{stat.st_mtime_ns}", fetch=self.path.read_bytes
        )


def open_source(
    uri: str, client: Any | None = None, service: str = "CloudTrail", *, follow_links: bool = False
) -> Source:
    """The source for a ``--source`` value: a folder, ``s3://bucket/prefix`` or ``cloudwatch://group``
    (``follow_links``: a folder's symbolic links that stay inside it are read)."""
    if uri.startswith("s3://"):
        return S3Source(uri, client, service=service)
    if uri.startswith("cloudwatch://"):
        if service != "CloudTrail":  # its messages are not CloudTrail records: the flows wing reads them
            raise ValueError(
                f"a CloudWatch Logs group of {service} is read by trailguard.flows.sources.open_flow_source"
            )
        return CloudWatchLogsSource(uri, client)
    if "://" in uri:
        raise ValueError(
            f"unknown source {uri!r}: use a folder, s3://bucket/prefix or cloudwatch://log-group"
        )
    if Path(uri).is_file():
        return LocalFileSource(uri)
    return LocalFolderSource(uri, follow_links=follow_links)
