"""Memory bounded by configuration, not by the input: limits on what one source object may hold.

A hostile file can be small and expand without end (a gzip of whitespace), or hold millions of tiny
records (``{"Records":[0,0,0,...]}``) that each become a Python object. Three limits bound an ingest's
memory whatever the files hold:

* ``max_file_bytes``: the size of a file once gunzipped. Decompression streams and stops one byte past the
  limit, so a bomb costs at most the limit in memory and time.
* ``max_records``: records in one file. Files larger than ``SCAN_ABOVE_BYTES`` are scanned first (a
  vectorised pass that finds the records' boundaries without building them), so an over-full file is
  refused before any record becomes an object; smaller files cannot hold enough records to matter.
* ``max_record_bytes``: the JSON text of one record. A longer record is rejected on its own, with its
  reason, and the file's original bytes are kept in quarantine.

Bound (documented in .env.example): about ``max_file_bytes`` for the document, plus its records'
columns, plus ``20 x max_record_bytes`` while one odd record is parsed, per process.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from trailguard.store.settings import Settings

try:  # ISA-L inflates about twice as fast as zlib, with zlib's API
    from isal.isal_zlib import decompressobj as _decompressobj
    from isal.isal_zlib import error as _inflate_error
except ImportError:  # pragma: no cover - isal is in the lock
    from zlib import decompressobj as _decompressobj
    from zlib import error as _inflate_error

INFLATE_ERRORS = (OSError, EOFError, zlib.error, _inflate_error)

# Below this a document is decoded directly: even if it held nothing but empty records, their objects stay
# within a few hundred MB (measured: a 2 MB file of ``{},`` costs about 250 MB while it is rejected).
SCAN_ABOVE_BYTES = 2 * 1024 * 1024


class LimitError(ValueError):
    """A file over one of the limits; the message says which and how to raise it."""


@dataclass(frozen=True)
class IngestLimits:
    """What one source object may hold (settings ``TRAILGUARD_INGEST_MAX_*``)."""

    max_file_bytes: int = 256 * 1024 * 1024
    max_records: int = 200_000
    max_record_bytes: int = 8 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> IngestLimits:
        return cls(
            settings.ingest_max_file_bytes,
            settings.ingest_max_records_per_file,
            settings.ingest_max_record_bytes,
        )


def gunzip(data: bytes, limit: int) -> bytes:
    """Inflate gzip data (one or more members), stopping once the output passes ``limit`` bytes.

    An ordinary file is inflated by one call, as a one-shot decompress would; a bomb stops at the limit.
    """
    out: list[bytes] = []
    size = 0
    while True:
        inflater = _decompressobj(wbits=31)
        chunk = inflater.decompress(data, limit + 1 - size)
        size += len(chunk)
        out.append(chunk)
        if size > limit or inflater.unconsumed_tail:
            raise LimitError(
                f"expands past the {limit:,}-byte limit on a file's size (read {limit:,} bytes and stopped; "
                "TRAILGUARD_INGEST_MAX_FILE_BYTES)"
            )
        if not inflater.eof:
            raise EOFError("Compressed file ended before the end-of-stream marker was reached")
        data = inflater.unused_data
        if not data or not data.lstrip(b"\x00"):  # trailing padding after the last member is allowed
            break
    return out[0] if len(out) == 1 else b"".join(out)


RECORDS_START = re.compile(rb'\A\s*\{\s*"Records"\s*:\s*\[')
_TAIL = re.compile(rb"\s*\}\s*\Z")  # matched at the closing bracket (match anchors there)
_BLOCK = 1024 * 1024
_LOOKUP = np.zeros(256, dtype=bool)
_LOOKUP[list(b'"\\{}[],')] = True
_QUOTE, _BACKSLASH, _COMMA = ord('"'), ord("\\"), ord(",")
_OPEN = np.zeros(256, dtype=np.int8)
_OPEN[list(b"{[")] = 1
_OPEN[list(b"}]")] = -1


def record_spans(document: bytes, limits: IngestLimits) -> list[tuple[int, int]]:
    """The (start, end) byte offsets of each record of a ``{"Records": [...]}`` document, found without
    decoding it (strings, escapes and nesting are followed in vectorised blocks of 1 MB).

    Raises LimitError when the file holds more than ``limits.max_records`` records (stopping there), and
    ValueError when the document is not one Records list in an object.
    """
    start = RECORDS_START.match(document)
    if start is None:
        raise ValueError('a file this large must be {"Records": [...]}')
    separators = [start.end() - 1]
    parity, depth, run = 0, 2, 0  # inside a string?, nesting depth, backslashes ending the last block
    close = -1
    view = np.frombuffer(document, dtype=np.uint8)
    for lo in range(start.end(), len(document), _BLOCK):
        block = view[lo : lo + _BLOCK]
        where = np.flatnonzero(_LOOKUP[block])
        chars = block[where]
        quote = chars == _QUOTE
        # a quote after an odd run of backslashes is escaped: count the run before each quote
        quotes = where[quote]
        positions = np.arange(len(block), dtype=np.int64)
        last_plain = np.maximum.accumulate(np.where(block == _BACKSLASH, -1, positions))
        before = np.where(quotes > 0, last_plain[np.maximum(quotes - 1, 0)], -1)
        runs = quotes - 1 - before
        runs[before < 0] += run  # the run began in the previous block
        real = quote.copy()
        real[quote] = runs % 2 == 0
        del positions, last_plain
        strings = np.cumsum(real) + parity
        outside = (strings % 2 == 0) & ~quote
        step = np.where(outside, _OPEN[chars], 0).astype(np.int64)
        after = depth + np.cumsum(step)
        commas = where[outside & (chars == _COMMA) & (after == 2)] + lo
        ends = np.flatnonzero(after < 2)
        if len(ends):
            close = int(where[ends[0]]) + lo
            commas = commas[commas < close]
        separators.extend(commas.tolist())
        if len(separators) > limits.max_records:  # n separators so far: at least n records
            raise LimitError(
                f"holds more than the limit of {limits.max_records:,} records in one file "
                "(TRAILGUARD_INGEST_MAX_RECORDS_PER_FILE)"
            )
        if close >= 0:
            break
        parity = int(strings[-1] % 2) if len(strings) else parity
        depth = int(after[-1]) if len(after) else depth
        trailing = len(block) - len(bytes(block[-4096:]).rstrip(b"\\")) - max(len(block) - 4096, 0)
        run = run + trailing if trailing == len(block) else trailing
    if close < 0 or not _TAIL.match(document, close + 1):
        raise ValueError("the Records list is not closed, or more follows it")
    separators.append(close)
    spans = [(a + 1, b) for a, b in zip(separators, separators[1:], strict=False)]
    if len(spans) == 1 and not document[spans[0][0] : spans[0][1]].strip():
        return []
    return spans
