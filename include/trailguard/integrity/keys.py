"""CloudTrail's public keys, by fingerprint: from ``cloudtrail:ListPublicKeys`` or from a folder (offline).

CloudTrail signs each region's digests with a key pair of that region and names the public key in every
digest by its fingerprint (``digestPublicKeyFingerprint``). Two ways to get the keys:

* **online**: ``cloudtrail:ListPublicKeys`` through boto3 (each region has its own keys: call it in the
  digest's region); it returns DER-encoded PKCS#1 RSA keys with their fingerprint and validity;
* **offline**: a folder of key files given by the user, read by :func:`load_key_folder`:

  - ``<fingerprint>.pem`` / ``.der`` / ``.pub``: one key (PEM or DER, PKCS#1 or SubjectPublicKeyInfo);
    when the file name is not a 32-hex-digit fingerprint, the fingerprint is the MD5 (hex) of the key's
    DER PKCS#1 encoding (:func:`fingerprint_of`, what the demo's generated key uses);
  - ``*.json``: the output of ``aws cloudtrail list-public-keys`` saved as is (``PublicKeyList`` with
    base64 ``Value`` and ``Fingerprint``), so keys fetched once can be used without credentials later.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

log = logging.getLogger(__name__)

_FINGERPRINT = re.compile(r"^[0-9a-f]{32}$")
KEY_SUFFIXES = (".pem", ".der", ".pub")
MAX_KEY_FILE_BYTES = 1024 * 1024


class KeyFileError(ValueError):
    """A key file or a ListPublicKeys answer that cannot be used; the message says which and why."""


@dataclass
class KeyRing:
    """Public keys by fingerprint, with where they came from (for messages) and what could not be read."""

    keys: dict[str, rsa.RSAPublicKey] = field(default_factory=dict)
    origin: str = ""
    problems: list[str] = field(default_factory=list)

    def get(self, fingerprint: str) -> rsa.RSAPublicKey | None:
        return self.keys.get(fingerprint.lower())

    def add(self, fingerprint: str, key: rsa.RSAPublicKey) -> None:
        self.keys[fingerprint.lower()] = key

    def merge(self, other: KeyRing) -> KeyRing:
        self.keys.update(other.keys)
        self.problems.extend(other.problems)
        self.origin = ", ".join(o for o in (self.origin, other.origin) if o)
        return self

    def __len__(self) -> int:
        return len(self.keys)


def fingerprint_of(key: rsa.RSAPublicKey) -> str:
    """MD5 (hex) of the key's DER PKCS#1 encoding: the fingerprint given to a key file without one."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    return hashlib.md5(der, usedforsecurity=False).hexdigest()


def load_public_key(data: bytes) -> rsa.RSAPublicKey:
    """An RSA public key from PEM or DER bytes (PKCS#1 as CloudTrail hands them out, or SPKI)."""
    loaders = (
        (serialization.load_pem_public_key,)
        if data.lstrip().startswith(b"-----")
        else (serialization.load_der_public_key,)
    )
    try:
        key = loaders[0](data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"not a PEM or DER public key: {exc}") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyFileError(f"a {type(key).__name__}, not an RSA public key")
    return key


def load_key_folder(folder: str | Path) -> KeyRing:
    """Every key file of a folder (see the module docstring); unreadable files are listed in ``problems``."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"key folder {root} does not exist or is not a folder")
    ring = KeyRing(origin=f"key folder {root}")
    for path in sorted(root.iterdir()):
        if not path.is_file():
            continue
        suffix = path.suffix.lower()
        if suffix not in (*KEY_SUFFIXES, ".json"):
            continue
        try:
            if path.stat().st_size > MAX_KEY_FILE_BYTES:
                raise KeyFileError(f"over {MAX_KEY_FILE_BYTES} bytes")
            data = path.read_bytes()
            if suffix == ".json":
                _add_listed(ring, _listed_keys(data))
            else:
                key = load_public_key(data)
                stem = path.name[: -len(suffix)].lower()
                ring.add(stem if _FINGERPRINT.match(stem) else fingerprint_of(key), key)
        except (KeyFileError, OSError) as exc:
            ring.problems.append(f"{path.name}: {exc}")
            log.warning("key file %s skipped: %s", path, exc)
    return ring


def fetch_public_keys(client: Any, start: datetime, end: datetime) -> KeyRing:
    """The keys ``cloudtrail:ListPublicKeys`` gives for a time range (``client`` is a boto3 CloudTrail
    client of the digests' region), following ``NextToken``."""
    ring = KeyRing(
        origin=f"cloudtrail:ListPublicKeys in {getattr(getattr(client, 'meta', None), 'region_name', '?')}"
    )
    kwargs: dict[str, Any] = {"StartTime": start, "EndTime": end}
    for _ in range(100):  # a handful of keys per region: a loop that never ends is a broken endpoint
        answer = client.list_public_keys(**kwargs)
        _add_listed(ring, answer.get("PublicKeyList", []))
        token = answer.get("NextToken")
        if not token:
            break
        kwargs["NextToken"] = token
    return ring


def _listed_keys(data: bytes) -> list[Any]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise KeyFileError(f"not valid JSON: {exc}") from exc
    listed = doc.get("PublicKeyList") if isinstance(doc, dict) else None
    if not isinstance(listed, list):
        raise KeyFileError("no PublicKeyList list (expected the output of aws cloudtrail list-public-keys)")
    return listed


def _add_listed(ring: KeyRing, listed: Iterable[Any]) -> None:
    """Keys as ListPublicKeys lists them: ``Value`` (DER bytes from boto3, base64 text in the CLI's JSON)."""
    for index, item in enumerate(listed):
        try:
            if not isinstance(item, dict):
                raise KeyFileError("not an object")
            fingerprint, value = item.get("Fingerprint"), item.get("Value")
            if not isinstance(fingerprint, str) or not _FINGERPRINT.match(fingerprint.lower()):
                raise KeyFileError("Fingerprint is not 32 hex digits")
            if isinstance(value, str):
                value = base64.b64decode(value, validate=True)
            if not isinstance(value, bytes | bytearray):
                raise KeyFileError("Value is not key bytes")
            ring.add(fingerprint, load_public_key(bytes(value)))
        except (KeyFileError, ValueError) as exc:
            ring.problems.append(f"PublicKeyList[{index}]: {exc}")
