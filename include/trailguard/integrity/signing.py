"""Write digest files as CloudTrail does, signed with a key of our own: for the demo and the tests.

The demo must be reproducible byte for byte, so its key pair is derived from the demo's seed
(:func:`seeded_rsa_key`); RSA PKCS#1 v1.5 signatures are deterministic, so equal input gives equal
files. Such a key is for demonstrations only: anyone with the seed has the private key.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from trailguard.integrity.digest import HASH_ALGORITHM, METADATA_SUFFIX, SIGNATURE_ALGORITHM, sign
from trailguard.integrity.keys import fingerprint_of

_SMALL_PRIMES = tuple(p for p in range(3, 2000, 2) if all(p % q for q in range(3, int(p**0.5) + 1, 2)))
_E = 65537


@dataclass(frozen=True)
class ListedLogFile:
    """A log file as a digest lists it."""

    bucket: str
    key: str
    sha256: str  # of the uncompressed content
    oldest: str | None = None
    newest: str | None = None


@dataclass(frozen=True)
class Link:
    """The previous digest of a chain."""

    bucket: str
    key: str
    sha256: str  # of its uncompressed content
    signature: str


def iso(moment: datetime) -> str:
    return f"{moment:%Y-%m-%dT%H:%M:%SZ}"


def digest_document(
    *,
    account: str,
    bucket: str,
    key: str,
    start: datetime,
    end: datetime,
    public_key: rsa.RSAPublicKey,
    log_files: Sequence[ListedLogFile],
    previous: Link | None,
) -> dict:
    """A digest's JSON fields, in CloudTrail's order."""
    return {
        "awsAccountId": account,
        "digestStartTime": iso(start),
        "digestEndTime": iso(end),
        "digestS3Bucket": bucket,
        "digestS3Object": key,
        "digestPublicKeyFingerprint": fingerprint_of(public_key),
        "digestSignatureAlgorithm": SIGNATURE_ALGORITHM,
        "newestEventTime": max((f.newest for f in log_files if f.newest), default=None),
        "oldestEventTime": min((f.oldest for f in log_files if f.oldest), default=None),
        "previousDigestS3Bucket": previous.bucket if previous else None,
        "previousDigestS3Object": previous.key if previous else None,
        "previousDigestHashValue": previous.sha256 if previous else None,
        "previousDigestHashAlgorithm": HASH_ALGORITHM if previous else None,
        "previousDigestSignature": previous.signature if previous else None,
        "logFiles": [
            {
                "s3Bucket": f.bucket,
                "s3Object": f.key,
                "hashValue": f.sha256,
                "hashAlgorithm": HASH_ALGORITHM,
                "newestEventTime": f.newest,
                "oldestEventTime": f.oldest,
            }
            for f in log_files
        ],
    }


def signed(document: dict, private_key: rsa.RSAPrivateKey) -> tuple[bytes, dict[str, str], Link]:
    """The digest's uncompressed bytes, the S3 user metadata CloudTrail gives it, and the link the next
    digest of the chain names."""
    content = orjson.dumps(document)
    signature = sign(content, document, private_key)
    metadata = {"signature": signature, "signature-algorithm": SIGNATURE_ALGORITHM}
    link = Link(
        document["digestS3Bucket"], document["digestS3Object"], hashlib.sha256(content).hexdigest(), signature
    )
    return content, metadata, link


def write_metadata_sidecar(digest_path: Path, metadata: dict[str, str]) -> Path:
    """The sidecar that carries a digest's S3 metadata in a folder (see :mod:`trailguard.integrity.digest`)."""
    sidecar = digest_path.with_name(digest_path.name + METADATA_SUFFIX)
    sidecar.write_bytes(orjson.dumps(metadata, option=orjson.OPT_SORT_KEYS) + b"\n")
    return sidecar


def public_pem(key: rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@functools.lru_cache(maxsize=4)
def seeded_rsa_key(seed: str, bits: int = 2048) -> rsa.RSAPrivateKey:
    """An RSA key pair derived from ``seed`` (the same seed, the same key): for demos and tests only."""
    rng = random.Random(f"trailguard-rsa:{seed}:{bits}")
    while True:
        p, q = _prime(rng, bits // 2), _prime(rng, bits - bits // 2)
        if p != q and (p * q).bit_length() == bits:
            break
    p, q = max(p, q), min(p, q)
    d = pow(_E, -1, (p - 1) * (q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=d,
        dmp1=rsa.rsa_crt_dmp1(d, p),
        dmq1=rsa.rsa_crt_dmq1(d, q),
        iqmp=rsa.rsa_crt_iqmp(p, q),
        public_numbers=rsa.RSAPublicNumbers(_E, p * q),
    )
    return numbers.private_key()


def _prime(rng: random.Random, bits: int) -> int:
    while True:
        candidate = rng.getrandbits(bits) | (3 << (bits - 2)) | 1
        if (candidate - 1) % _E == 0 or any(candidate % p == 0 for p in _SMALL_PRIMES):
            continue
        if _probably_prime(candidate, rng):
            return candidate


def _probably_prime(n: int, rng: random.Random, rounds: int = 40) -> bool:
    """Miller-Rabin with ``rounds`` random bases (error below 2**-80)."""
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(rounds):
        x = pow(rng.randrange(2, n - 1), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True
