"""The data root's filesystem: a local folder, or ``s3://bucket/prefix`` so every Airflow worker shares it.

A local root stays a plain :class:`pathlib.Path`: the same code, calls and speed as before. An S3 root is
a :class:`upath.UPath` (universal_pathlib: the pathlib API over fsspec, here ``s3fs``), so the modules keep
writing ``root / "scores" / ...``, ``.exists()``, ``.glob()``, ``.read_bytes()`` for both. What differs is
in this module:

* **atomic writes**: locally a temporary file beside the target, then a rename; on S3 a whole object is
  one PUT (a multipart upload above 100 MB), which readers see complete or not at all, so the bytes are
  built in memory and put once, with no temporary key and no rename.
* **parquet**: pyarrow reads a local path directly and an S3 object through the root's fsspec
  filesystem (ranged reads: a footer or a few columns, not the whole object).
* **listing**: S3 has no folders, only key prefixes: a "folder" exists while a key is under it, and
  listings are never cached, so a worker sees what another one has just written.
* **staging and moving** (ingestion): parts are always written to a local folder first; moving one into
  an S3 partition is one upload (or, for a part another worker staged in S3, a server-side copy) and
  then the source goes; locally it stays a rename.

Credentials and endpoint come from the standard AWS chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, ``~/.aws``, an instance or pod role; ``AWS_ENDPOINT_URL`` for MinIO or another
S3-compatible server).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeAlias

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

#: A path under the data root: ``pathlib.Path`` for a local root, ``UPath`` for an S3 one.
DataPath: TypeAlias = Path | UPath

REMOTE_SCHEMES = ("s3", "s3a")

# Another worker may have written a key a moment ago: list S3 afresh every time.
_S3_OPTIONS: dict[str, Any] = {"use_listings_cache": False}


def as_path(root: str | os.PathLike[str] | UPath) -> DataPath:
    """A data root (or a path under it) as a path object: ``Path`` when local, ``UPath`` on S3."""
    if isinstance(root, (Path, UPath)):
        return root
    text = os.fspath(root)
    scheme, sep, _ = text.partition("://")
    if not sep:
        return Path(text)
    if scheme.lower() not in REMOTE_SCHEMES:
        raise ValueError(f"data root {text!r}: use a local folder or s3://bucket/prefix, not {scheme}://")
    return UPath(text, **_S3_OPTIONS)


def is_remote(path: DataPath | str) -> bool:
    """True for an S3 path (no rename, no real folders, no local SQLite)."""
    if isinstance(path, str):
        scheme, sep, _ = path.partition("://")
        return bool(sep) and scheme.lower() in REMOTE_SCHEMES
    return not isinstance(path, Path)


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary local path beside ``final``; rename it into place only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{uuid.uuid4().hex}-{final.name}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(data: bytes, final: DataPath) -> DataPath:
    """Write a whole file so that readers see the old one or the new one, never a part."""
    if is_remote(final):
        final.write_bytes(data)  # one PUT
        return final
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return final


def write_parquet_atomic(table: pa.Table, final: DataPath, **options: Any) -> DataPath:
    """Write a parquet file atomically (``options`` go to ``pyarrow.parquet.write_table``)."""
    if is_remote(final):
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, **options)
        final.write_bytes(sink.getvalue().to_pybytes())
        return final
    with atomic_path(final) as tmp:
        pq.write_table(table, tmp, **options)
    return final


def _arrow(path: DataPath) -> tuple[Any, Any]:
    """pyarrow's (path, filesystem) for a data path: the path itself locally, the key and fsspec on S3."""
    if is_remote(path):
        return path.path, path.fs
    return path, None


def read_parquet(path: DataPath, **options: Any) -> pa.Table:
    """``pyarrow.parquet.read_table`` for a local or S3 path."""
    where, filesystem = _arrow(path)
    return pq.read_table(where, filesystem=filesystem, **options)


def read_parquet_pandas(path: DataPath, **options: Any) -> Any:
    """``pandas.read_parquet`` for a local or S3 path (same dtypes as pandas gives a local file)."""
    import pandas as pd

    where, filesystem = _arrow(path)
    return pd.read_parquet(where, filesystem=filesystem, **options)


def parquet_schema(path: DataPath) -> pa.Schema:
    """A parquet file's schema from its footer (one ranged read on S3)."""
    where, filesystem = _arrow(path)
    return pq.read_schema(where, filesystem=filesystem)


def parquet_file(path: DataPath) -> pq.ParquetFile:
    """``pyarrow.parquet.ParquetFile`` for a local or S3 path (metadata, batches)."""
    where, filesystem = _arrow(path)
    return pq.ParquetFile(where, filesystem=filesystem)


def visible_files(folder: DataPath, pattern: str = "*.parquet") -> list[DataPath]:
    """The files of a folder matching ``pattern``, sorted, without temporary ones of a local write in
    progress (``.tmp-*``); an absent folder (on S3: no key under the prefix) has none."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(pattern) if not p.name.startswith("."))


def move(source: DataPath, final: DataPath) -> None:
    """Move a whole file into place: a rename locally; into S3 an upload of a local file, or a server-side
    copy of an S3 one, which readers see complete or not at all; then the source goes."""
    if not is_remote(final):
        if is_remote(source):
            raise ValueError(f"cannot move {source} from S3 into the local folder {final}")
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, final)
        return
    if is_remote(source):
        final.fs.copy(source.path, final.path)
    else:
        final.fs.put_file(os.fspath(source), final.path)
    source.unlink()


def rmtree(folder: DataPath) -> None:
    """Remove a folder and everything in it (on S3 every key under the prefix); absent is fine."""
    if not is_remote(folder):
        shutil.rmtree(folder, ignore_errors=True)
        return
    try:
        folder.fs.rm(folder.path, recursive=True)
    except FileNotFoundError:
        pass


def last_modified(folder: DataPath) -> float:
    """When a folder last changed (epoch seconds): its mtime locally; on S3, where a prefix has no time of
    its own, that of the newest key under it."""
    if not is_remote(folder):
        return folder.stat().st_mtime
    found = folder.fs.find(folder.path, detail=True)
    times = [info["LastModified"].timestamp() for info in found.values() if "LastModified" in info]
    return max(times, default=0.0)


def local_folder(folder: DataPath, prefix: str = "trailguard-") -> Path:
    """``folder`` itself when local; for an S3 folder a new local temporary folder to prepare files in."""
    if is_remote(folder):
        return Path(tempfile.mkdtemp(prefix=prefix))
    return folder


@contextmanager
def written_locally(folder: DataPath, last: str | None = None) -> Iterator[Path]:
    """A local folder to write ``folder``'s files in: ``folder`` itself when local; for an S3 folder a
    temporary one whose files are uploaded into it when the block succeeds, ``last`` after all the others
    (a reader that waits for that file finds the rest), and which is removed in any case."""
    local = local_folder(folder)
    if local is folder:
        yield local
        return
    try:
        yield local
        files = sorted((p for p in local.rglob("*") if p.is_file()), key=lambda p: p.name == last)
        for path in files:
            folder.fs.put_file(os.fspath(path), (folder / path.relative_to(local).as_posix()).path)
    finally:
        shutil.rmtree(local, ignore_errors=True)


def lock_file(root: DataPath) -> Path:
    """The file a process locks while it commits into a local ``root`` (inside it). For an S3 root a local
    file named after it, which keeps apart only the processes of one machine: the event store's commit
    holds a lease in the bucket instead (:mod:`trailguard.store.lease`)."""
    if not is_remote(root):
        return root / ".commit.lock"
    name = uuid.uuid5(uuid.NAMESPACE_URL, str(root)).hex
    return Path(tempfile.gettempdir()) / f"trailguard-commit-{name}.lock"
