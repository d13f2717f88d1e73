"""One CloudTrail digest file: read defensively, its signing string, its RSA signature checked.

AWS's published method (CloudTrail User Guide, "Custom implementations of CloudTrail log file integrity
validation"; the AWS CLI's ``validate-logs`` does the same):

* the digest object is gzipped JSON; its signature is *not* inside it but in the S3 object's user
  metadata: ``signature`` (hex) and ``signature-algorithm`` (``SHA256withRSA``);
* the signed string is, joined by ``\\n``: ``digestEndTime`` exactly as written, ``digestS3Bucket/
  digestS3Object``, the hex SHA-256 of the *uncompressed* digest file, and ``previousDigestSignature``
  (the text ``null`` for the first digest of a chain);
* the signature is RSA PKCS#1 v1.5 over SHA-256 of that string, checked with the public key whose
  fingerprint is ``digestPublicKeyFingerprint``;
* each entry of ``logFiles`` gives ``hashValue``: the hex SHA-256 of the log file's uncompressed content.

A file in a folder has no S3 metadata: its metadata travels in a sidecar ``<digest file name>.metadata.json``
holding the same user metadata S3 has, ``{"signature": "...", "signature-algorithm": "SHA256withRSA"}``
(what ``aws s3api head-object`` prints under ``Metadata``). The demo writes these sidecars.

Every field is attacker-controlled: sizes, counts and types are checked, and anything odd raises
:class:`DigestError` with a one-line reason (the caller quarantines the bytes with it).
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

SIGNATURE_ALGORITHM = "SHA256withRSA"
HASH_ALGORITHM = "SHA-256"
METADATA_SUFFIX = ".metadata.json"
MAX_DIGEST_BYTES = 64 * 1024 * 1024  # uncompressed; a busy region's hour lists a few thousand files (~1 MB)
MAX_LOG_FILES = 200_000
MAX_TEXT = 2048  # longest field text accepted (an S3 key is at most 1024 bytes)
MAX_SIGNATURE_HEX = 2048  # an RSA-4096 signature is 1024 hex digits

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")
# ..._CloudTrail-Digest_<region>_<trail>_<home region>_YYYYMMDDTHHMMSSZ[_backfill].json.gz
_DIGEST_NAME = re.compile(r"_CloudTrail-Digest_.*_(\d{8}T\d{6}Z)(?:_backfill)?\.json\.gz$")


class DigestError(ValueError):
    """A digest file that cannot be read or trusted as a digest; the message is the one-line reason."""


@dataclass(frozen=True)
class LogFileEntry:
    """One log file a digest vouches for."""

    bucket: str
    key: str
    sha256: str


@dataclass(frozen=True)
class Digest:
    """The fields of a digest file that validation uses, checked for type and shape."""

    found_at: str  # where we read it (source key)
    account: str
    start: datetime
    end: datetime
    end_text: str  # digestEndTime exactly as written: it is part of the signed string
    bucket: str
    key: str
    fingerprint: str
    previous_bucket: str | None
    previous_key: str | None
    previous_sha256: str | None
    previous_signature: str | None
    log_files: tuple[LogFileEntry, ...]
    sha256: str  # of the uncompressed digest file
    signature: str | None  # hex, from the object's metadata
    signature_algorithm: str | None

    def string_to_sign(self) -> bytes:
        """The exact bytes CloudTrail signed (see the module docstring)."""
        return signing_string(self.end_text, self.bucket, self.key, self.sha256, self.previous_signature)


def signing_string(
    end_time: str, bucket: str, key: str, sha256: str, previous_signature: str | None
) -> bytes:
    """digestEndTime, bucket/key, the uncompressed digest's hex SHA-256 and the previous digest's signature
    (``null`` at the start of a chain), one a line."""
    previous = previous_signature if previous_signature is not None else "null"
    return f"{end_time}\n{bucket}/{key}\n{sha256}\n{previous}".encode()


def is_digest_key(key: str) -> bool:
    """True for a digest file's key (not its metadata sidecar, not a log file)."""
    normalised = key.replace("\\", "/")
    return "/CloudTrail-Digest/" in normalised and _DIGEST_NAME.search(normalised) is not None


def digest_key_time(key: str) -> datetime | None:
    """The end time written in a digest file's name (to place a digest that is missing)."""
    match = _DIGEST_NAME.search(key.replace("\\", "/"))
    if not match:
        return None
    try:
        return datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def gunzip_bounded(data: bytes, limit: int = MAX_DIGEST_BYTES) -> bytes:
    """Inflate gzip (or pass plain bytes through) without ever holding more than ``limit`` bytes: a
    small hostile file cannot expand into gigabytes."""
    if data[:2] != b"\x1f\x8b":
        if len(data) > limit:
            raise DigestError(f"{len(data)} bytes is over the {limit} byte limit for a digest")
        return data
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise DigestError(f"not a readable gzip file: {exc}") from exc
    if len(out) > limit:
        raise DigestError(f"uncompressed size is over the {limit} byte limit for a digest")
    if not inflater.eof:
        raise DigestError("gzip stream ends early (truncated file)")
    return out


def parse_digest(
    found_at: str,
    data: bytes,
    metadata: Mapping[str, Any] | None = None,
    *,
    max_bytes: int = MAX_DIGEST_BYTES,
    max_log_files: int = MAX_LOG_FILES,
) -> Digest:
    """A digest file's bytes (as stored, usually gzip) and its object metadata as a :class:`Digest`."""
    if not data:
        raise DigestError("empty file (0 bytes)")
    content = gunzip_bounded(data, max_bytes)
    try:
        doc = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise DigestError(f"not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise DigestError(f"top-level JSON is a {_kind(doc)}, expected an object")
    end_text = _text(doc, "digestEndTime")
    entries = doc.get("logFiles")
    if not isinstance(entries, list):
        raise DigestError(f"logFiles is a {_kind(entries)}, expected a list")
    if len(entries) > max_log_files:
        raise DigestError(f"logFiles lists {len(entries)} files, over the limit of {max_log_files}")
    previous_signature = _optional_text(doc, "previousDigestSignature", MAX_SIGNATURE_HEX)
    if previous_signature is not None and not _HEX.match(previous_signature):
        raise DigestError("previousDigestSignature is not hexadecimal")
    previous_sha256 = _optional_text(doc, "previousDigestHashValue")
    if previous_sha256 is not None and not _HEX64.match(previous_sha256):
        raise DigestError("previousDigestHashValue is not a hex SHA-256")
    signature, algorithm = _signature(metadata)
    return Digest(
        found_at=found_at,
        account=_text(doc, "awsAccountId"),
        start=_time(doc, "digestStartTime"),
        end=_time(doc, "digestEndTime"),
        end_text=end_text,
        bucket=_text(doc, "digestS3Bucket"),
        key=_text(doc, "digestS3Object"),
        fingerprint=_text(doc, "digestPublicKeyFingerprint").lower(),
        previous_bucket=_optional_text(doc, "previousDigestS3Bucket"),
        previous_key=_optional_text(doc, "previousDigestS3Object"),
        previous_sha256=previous_sha256,
        previous_signature=previous_signature,
        log_files=tuple(_log_file(i, entry) for i, entry in enumerate(entries)),
        sha256=hashlib.sha256(content).hexdigest(),
        signature=signature,
        signature_algorithm=algorithm,
    )


def verify_signature(digest: Digest, public_key: rsa.RSAPublicKey) -> str | None:
    """None when ``public_key`` signed this digest; otherwise the one-line reason it does not hold."""
    if digest.signature is None:
        return "no signature in the digest object's metadata"
    if digest.signature_algorithm not in (None, SIGNATURE_ALGORITHM):
        return f"signature algorithm {digest.signature_algorithm[:40]!r} is not {SIGNATURE_ALGORITHM}"
    try:
        public_key.verify(
            bytes.fromhex(digest.signature), digest.string_to_sign(), padding.PKCS1v15(), hashes.SHA256()
        )
    except InvalidSignature:
        return "signature does not match the digest's content, location and chain"
    except ValueError as exc:  # odd hex length
        return f"signature is not valid hexadecimal: {exc}"
    return None


def sign(digest_content: bytes, fields: Mapping[str, Any], private_key: rsa.RSAPrivateKey) -> str:
    """The hex signature CloudTrail would put in the metadata of a digest with these fields and content
    (used by the demo and the tests to build signed digests)."""
    text = signing_string(
        str(fields["digestEndTime"]),
        str(fields["digestS3Bucket"]),
        str(fields["digestS3Object"]),
        hashlib.sha256(digest_content).hexdigest(),
        fields.get("previousDigestSignature"),
    )
    return private_key.sign(text, padding.PKCS1v15(), hashes.SHA256()).hex()


def _signature(metadata: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    if not metadata:
        return None, None
    lowered = {str(k).lower().removeprefix("x-amz-meta-"): v for k, v in list(metadata.items())[:64]}
    signature, algorithm = lowered.get("signature"), lowered.get("signature-algorithm")
    if signature is not None and (not isinstance(signature, str) or len(signature) > MAX_SIGNATURE_HEX):
        raise DigestError("metadata 'signature' is not a hex string of a plausible length")
    if algorithm is not None and not isinstance(algorithm, str):
        raise DigestError(f"metadata 'signature-algorithm' is a {_kind(algorithm)}, expected a string")
    return (signature.strip().lower() if signature else None), algorithm


def _log_file(index: int, entry: Any) -> LogFileEntry:
    if not isinstance(entry, dict):
        raise DigestError(f"logFiles[{index}] is a {_kind(entry)}, expected an object")
    algorithm = entry.get("hashAlgorithm", HASH_ALGORITHM)
    if algorithm != HASH_ALGORITHM:
        raise DigestError(
            f"logFiles[{index}].hashAlgorithm is {str(algorithm)[:40]!r}, only SHA-256 is known"
        )
    value = _text(entry, "hashValue", where=f"logFiles[{index}].")
    if not _HEX64.match(value):
        raise DigestError(f"logFiles[{index}].hashValue is not a hex SHA-256")
    return LogFileEntry(
        bucket=_text(entry, "s3Bucket", where=f"logFiles[{index}]."),
        key=_text(entry, "s3Object", where=f"logFiles[{index}]."),
        sha256=value,
    )


def _text(doc: dict, name: str, *, where: str = "") -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value:
        raise DigestError(f"{where}{name} is a {_kind(value)}, expected a non-empty string")
    if len(value) > MAX_TEXT:
        raise DigestError(f"{where}{name} is {len(value)} characters long, over the limit of {MAX_TEXT}")
    return value


def _optional_text(doc: dict, name: str, limit: int = MAX_TEXT) -> str | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise DigestError(f"{name} is a {_kind(value)}, expected a string or null")
    if len(value) > limit:
        raise DigestError(f"{name} is {len(value)} characters long, over the limit of {limit}")
    return value


def _time(doc: dict, name: str) -> datetime:
    value = _text(doc, name)
    if not _TIME.match(value):
        raise DigestError(f"{name} {value[:40]!r} is not a UTC time like 2026-11-20T01:07:31Z")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise DigestError(f"{name} {value[:40]!r} is not a real time: {exc}") from exc


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "list", str: "string", bool: "boolean"}.get(
        type(value), type(value).__name__
    )
