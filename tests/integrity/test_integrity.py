"""CloudTrail digest validation on hand-built, really signed digests: valid chains and every tamper case.

Each test writes a small trail in AWS's layout into a folder (log files and hourly digests signed with an
RSA key, the signature in the metadata sidecar), tampers with it as an attacker would, and checks the
outcome ``verify_day`` records in ``integrity/date=D/result.json``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from trailguard.ingest.sources import LocalFolderSource
from trailguard.integrity.day import key_provider, read_result, verify_day
from trailguard.integrity.digest import DigestError, parse_digest
from trailguard.integrity.keys import KeyRing, fetch_public_keys, fingerprint_of, load_key_folder
from trailguard.integrity.signing import (
    Link,
    ListedLogFile,
    digest_document,
    public_pem,
    signed,
    write_metadata_sidecar,
)
from trailguard.integrity.verify import delivery_gaps, hash_log_file

DAY = date(2026, 11, 20)
ACCOUNT = "111122223333"
REGION = "eu-west-1"
BUCKET = "trail-bucket"
NOW = datetime(2026, 11, 22, tzinfo=timezone.utc)


def _ring(key: rsa.RSAPrivateKey) -> KeyRing:
    ring = KeyRing(origin="test keys")
    ring.add(fingerprint_of(key.public_key()), key.public_key())
    return ring


class Trail:
    """Hours of log files and chained, signed digests for one account/region, written like CloudTrail."""

    def __init__(
        self,
        root: Path,
        key: rsa.RSAPrivateKey,
        *,
        hours: int = 6,
        org: str = "",
        empty_hours: tuple[int, ...] = (),
    ) -> None:
        self.root, self.key = root, key
        self.base = f"AWSLogs/{org + '/' if org else ''}{ACCOUNT}"
        self.logs: dict[int, list[str]] = {}
        self.digests: list[str] = []
        midnight = datetime.combine(DAY, datetime.min.time(), timezone.utc)
        previous = None
        for hour in range(hours):
            start = midnight + timedelta(hours=hour, minutes=5)
            end = start + timedelta(hours=1)
            listed = []
            for n in range(0 if hour in empty_hours else 2):
                delivered = start + timedelta(minutes=10 + 20 * n)
                key_ = f"{self.base}/CloudTrail/{REGION}/{delivered:%Y/%m/%d}/{ACCOUNT}_CloudTrail_{REGION}_{delivered:%Y%m%dT%H%M}Z_f{hour}x{n}.json.gz"
                content = orjson.dumps(
                    {
                        "Records": [
                            {"eventID": f"e-{hour}-{n}", "eventTime": f"{delivered:%Y-%m-%dT%H:%M:%SZ}"}
                        ]
                    }
                )
                self._write(key_, gzip.compress(content, mtime=0))
                listed.append(ListedLogFile(BUCKET, key_, hashlib.sha256(content).hexdigest()))
                self.logs.setdefault(hour, []).append(key_)
            digest_key = (
                f"{self.base}/CloudTrail-Digest/{REGION}/{end:%Y/%m/%d}/"
                f"{ACCOUNT}_CloudTrail-Digest_{REGION}_main-trail_us-east-1_{end:%Y%m%dT%H%M%S}Z.json.gz"
            )
            previous = self.write_digest(digest_key, start, end, listed, previous)
            self.digests.append(digest_key)

    def write_digest(self, digest_key, start, end, listed, previous, key=None):
        doc = digest_document(
            account=ACCOUNT,
            bucket=BUCKET,
            key=digest_key,
            start=start,
            end=end,
            public_key=self.key.public_key(),
            log_files=listed,
            previous=previous,
        )
        content, metadata, link = signed(doc, key or self.key)
        path = self._write(digest_key, gzip.compress(content, mtime=0))
        write_metadata_sidecar(path, metadata)
        return link

    def _write(self, key: str, data: bytes) -> Path:
        path = self.root / "logs" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def path(self, key: str) -> Path:
        return self.root / "logs" / key

    def edit_json(self, key: str, change) -> None:
        path = self.path(key)
        doc = json.loads(gzip.decompress(path.read_bytes()))
        change(doc)
        path.write_bytes(gzip.compress(json.dumps(doc).encode(), mtime=0))

    def verify(self, keys=None, **kwargs):
        ring = keys if keys is not None else _ring(self.key)
        return verify_day(
            self.root / "data", LocalFolderSource(self.root / "logs"), DAY, ring, now=NOW, **kwargs
        )


def _statuses(result) -> dict[str, int]:
    return result.summary["by_status"]


def test_a_valid_chain_over_several_hours_is_valid(tmp_path, key):
    trail = Trail(tmp_path, key, hours=6, empty_hours=(3,))
    result = trail.verify()
    assert result.status == "valid", result.lines()
    assert _statuses(result) == {"valid": 6}
    assert result.summary["log_files_valid"] == 10 and result.summary["log_files_listed"] == 10
    stored = read_result(tmp_path / "data", DAY)
    assert stored["status"] == "valid" and len(stored["rows"]) == 6
    empty = next(r for r in stored["rows"] if r["hour"] == "2026-11-20T04:00Z")
    assert empty["status"] == "valid" and empty["log_files_listed"] == 0  # a digest for an hour without logs


def test_a_deleted_log_file_is_missing(tmp_path, key):
    trail = Trail(tmp_path, key)
    gone = trail.logs[2][1]
    trail.path(gone).unlink()
    result = trail.verify()
    assert result.status == "tampered"
    row = next(r for r in result.rows if r.status == "log_file_missing")
    assert row.missing_files == [gone] and row.log_files_valid == 1 and row.hour == "2026-11-20T03:00Z"
    assert "tampered" in result.lines()[0] and any("log_file_missing" in line for line in result.lines()[1:])


def test_one_changed_byte_makes_a_log_file_modified(tmp_path, key):
    trail = Trail(tmp_path, key)
    target = trail.logs[1][0]
    content = bytearray(gzip.decompress(trail.path(target).read_bytes()))
    content[content.index(b"e-1-0")] = ord("E")
    trail.path(target).write_bytes(gzip.compress(bytes(content), mtime=0))
    result = trail.verify()
    row = next(r for r in result.rows if r.status == "log_file_modified")
    assert row.modified_files == [target] and result.summary["log_files_modified"] == 1
    assert result.summary["log_files_valid"] == 11


def test_hashes_recorded_at_ingestion_are_what_is_checked(tmp_path, key):
    """The digest vouches for what ingestion read: a recorded hash of the same object is used unread."""
    trail = Trail(tmp_path, key, hours=2)
    target = trail.logs[0][0]
    stat = trail.path(target).stat()
    ingested = {target: (stat.st_size, f"mtime:{stat.st_mtime_ns}", "0" * 64)}  # what was read differs
    result = trail.verify(ingested=ingested)
    assert next(r for r in result.rows if r.status == "log_file_modified").modified_files == [target]


def test_a_deleted_digest_is_missing(tmp_path, key):
    trail = Trail(tmp_path, key)
    gone = trail.digests[2]
    trail.path(gone).unlink()
    result = trail.verify()
    missing = [r for r in result.rows if r.status == "digest_missing"]
    assert [r.digest_key for r in missing] == [gone] and missing[0].hour == "2026-11-20T03:00Z"
    assert result.status == "tampered"
    assert _statuses(result)["valid"] == 5  # the others still verify


def test_an_edited_digest_has_an_invalid_signature_and_breaks_the_chain(tmp_path, key):
    trail = Trail(tmp_path, key)
    edited = trail.digests[1]
    trail.edit_json(edited, lambda doc: doc["logFiles"].pop())  # hide a log file from the digest
    result = trail.verify()
    by_key = {r.digest_key: r for r in result.rows}
    assert by_key[edited].status == "signature_invalid"
    assert by_key[trail.digests[2]].status == "chain_broken"  # its link names the digest as it was signed


def test_a_chain_that_skips_a_digest_is_broken(tmp_path, key):
    """Correctly signed, but linked past the previous digest: the chain itself is broken."""
    trail = Trail(tmp_path, key, hours=4)
    d0 = parse_digest(
        trail.digests[0],
        trail.path(trail.digests[0]).read_bytes(),
        json.loads(trail.path(trail.digests[0] + ".metadata.json").read_text()),
    )

    third = parse_digest(trail.digests[2], trail.path(trail.digests[2]).read_bytes())
    trail.write_digest(
        trail.digests[2], third.start, third.end, [], Link(BUCKET, d0.key, d0.sha256, d0.signature)
    )
    result = trail.verify()
    row = next(r for r in result.rows if r.digest_key == trail.digests[2])
    assert row.status == "chain_broken" and "not to the digest before it" in row.problems[0]


def test_a_digest_signed_with_another_key_is_invalid(tmp_path, key, other_key):
    trail = Trail(tmp_path, key, hours=3)
    start = datetime(2026, 11, 20, 3, 5, tzinfo=timezone.utc)
    forged = trail.digests[2].replace("T030500Z", "T040500Z").replace("T0305", "T0405")
    doc_prev = parse_digest(
        trail.digests[2],
        trail.path(trail.digests[2]).read_bytes(),
        json.loads(trail.path(trail.digests[2] + ".metadata.json").read_text()),
    )

    trail.write_digest(
        forged,
        start,
        start + timedelta(hours=1),
        [],
        Link(BUCKET, doc_prev.key, doc_prev.sha256, doc_prev.signature),
        key=other_key,
    )
    result = trail.verify()
    row = next(r for r in result.rows if r.digest_key == forged)
    assert row.status == "signature_invalid" and result.status == "tampered"


def test_no_key_for_the_fingerprint_means_unverified_not_valid(tmp_path, key, other_key):
    trail = Trail(tmp_path, key, hours=2)
    result = trail.verify(keys=_ring(other_key))
    assert result.status == "unverified" and _statuses(result) == {"no_key_available": 2}
    assert "test keys" in result.rows[0].problems[0]


def test_organisation_trail_paths_verify(tmp_path, key):
    trail = Trail(tmp_path, key, hours=3, org="o-abcdef1234")
    trail.path(trail.logs[0][0]).unlink()
    result = trail.verify()
    assert {r.account for r in result.rows} == {ACCOUNT}
    assert _statuses(result) == {"log_file_missing": 1, "valid": 2}


def test_a_key_folder_of_pem_files_and_a_saved_list_public_keys_answer(tmp_path, key, other_key):
    folder = tmp_path / "keys"
    folder.mkdir()
    (folder / "demo.pem").write_bytes(public_pem(key.public_key()))
    import base64

    from cryptography.hazmat.primitives import serialization

    der = other_key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    (folder / "list-public-keys.json").write_text(
        json.dumps({"PublicKeyList": [{"Fingerprint": "ab" * 16, "Value": base64.b64encode(der).decode()}]})
    )
    (folder / "broken.pem").write_text("not a key")
    ring = load_key_folder(folder)
    assert ring.get(fingerprint_of(key.public_key())) is not None and ring.get("AB" * 16) is not None
    assert len(ring.problems) == 1 and ring.problems[0].startswith("broken.pem:")
    trail = Trail(tmp_path, key, hours=2)
    assert trail.verify(keys=key_provider(folder)).status == "valid"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "top-level JSON is a list"),
        (orjson.dumps({"digestEndTime": 5}), "digestEndTime is a int"),
        (orjson.dumps({"digestEndTime": "2026-11-20T01:00:00Z", "logFiles": "all"}), "logFiles is a string"),
        (
            orjson.dumps({"digestEndTime": "2026-11-20T01:00:00Z", "logFiles": [{}] * 300_001}),
            "over the limit",
        ),
        (gzip.compress(b"{" * 10, mtime=0)[:15], "gzip"),  # mtime=0: the same test id in every process
    ],
)
def test_hostile_digests_are_quarantined_with_the_reason(tmp_path, key, content, reason):
    trail = Trail(tmp_path, key, hours=2)
    bad = trail.digests[1].replace("T020500Z", "T023000Z")
    trail.path(bad).write_bytes(content if content[:2] == b"\x1f\x8b" else gzip.compress(content, mtime=0))
    result = trail.verify()
    row = next(r for r in result.rows if r.digest_key == bad)
    assert row.status == "digest_invalid" and reason in row.problems[0]
    reasons = list((tmp_path / "data" / "quarantine" / "objects").glob("*.reason.json"))
    assert len(reasons) == 1 and reason in json.loads(reasons[0].read_text())["reason"]


def test_a_digest_too_large_to_be_one_is_not_read(tmp_path, key, monkeypatch):
    import trailguard.integrity.day as day_module

    trail = Trail(tmp_path, key, hours=2)
    monkeypatch.setattr(day_module, "MAX_DIGEST_BYTES", 100)
    result = trail.verify()
    assert _statuses(result) == {"digest_invalid": 2}
    assert "over the 100 byte limit for a digest: not read" in result.rows[0].problems[0]


def test_a_gzip_bomb_stops_at_the_limit():
    bomb = gzip.compress(b" " * (80 * 1024 * 1024), compresslevel=9)
    with pytest.raises(DigestError, match="limit"):
        parse_digest("x", bomb)


def test_hash_log_file_is_the_uncompressed_content_hash():
    content = b'{"Records": []}' * 100_000
    assert hash_log_file(gzip.compress(content)) == hashlib.sha256(content).hexdigest()
    assert hash_log_file(content) == hashlib.sha256(content).hexdigest()


def test_delivery_gaps_only_for_streams_that_normally_deliver():
    base = f"AWSLogs/{ACCOUNT}/CloudTrail/{REGION}/2026/11/20/{ACCOUNT}_CloudTrail_{REGION}_20261120T"
    busy = [f"{base}{h:02d}15Z_a.json.gz" for h in range(24) if h not in (9, 10)]
    quiet = [
        f"AWSLogs/{ACCOUNT}/CloudTrail/us-west-2/2026/11/20/{ACCOUNT}_CloudTrail_us-west-2_20261120T0315Z_b.json.gz"
    ]
    rows = delivery_gaps(DAY, busy + quiet, until=datetime(2026, 11, 20, 23, tzinfo=timezone.utc))
    assert [(r.region, r.hour) for r in rows] == [
        (REGION, "2026-11-20T09:00Z"),
        (REGION, "2026-11-20T10:00Z"),
    ]
    assert "not proof of tampering" in rows[0].problems[0]


def test_log_files_without_digests_are_not_verified_rows(tmp_path, key):
    trail = Trail(tmp_path, key, hours=2)
    for d in trail.digests:
        trail.path(d).unlink()
    result = trail.verify()
    assert result.status == "unverified" and _statuses(result) == {"not_verified": 1}


def test_rerun_overwrites_the_result(tmp_path, key):
    trail = Trail(tmp_path, key, hours=2)
    trail.verify()
    trail.path(trail.logs[0][0]).unlink()
    trail.verify()
    assert read_result(tmp_path / "data", DAY)["status"] == "tampered"
    assert len(list((tmp_path / "data" / "integrity" / "date=2026-11-20").iterdir())) == 1


def test_list_public_keys_against_the_moto_server(moto_server, key, tmp_path):
    """moto (5.x) does not implement cloudtrail:ListPublicKeys: the failure is one line, the digests
    are 'no key available' (not valid, not tampered), and the key folder is the offline way."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    def client_for(region: str):
        once = Config(retries={"max_attempts": 1})  # moto answers 500; retrying it only takes time
        return boto3.client("cloudtrail", endpoint_url=moto_server, region_name=region, config=once)

    with pytest.raises(ClientError, match="500"):
        fetch_public_keys(client_for(REGION), NOW - timedelta(days=3), NOW)
    trail = Trail(tmp_path, key, hours=2)
    result = trail.verify(keys=key_provider(None, client_for=client_for))
    assert result.status == "unverified"
    assert "ListPublicKeys in eu-west-1 failed" in result.rows[0].problems[0]


def test_a_folder_source_lists_only_the_day_folders_it_verifies(tmp_path, key):
    """The listing for a day is its day folders (and the day before's), the same objects a full walk gives."""
    trail = Trail(tmp_path, key, hours=2)
    old = trail.path(
        f"AWSLogs/{ACCOUNT}/CloudTrail/{REGION}/2026/10/01/{ACCOUNT}_CloudTrail_{REGION}_20261001T0000Z_x.json.gz"
    )
    old.parent.mkdir(parents=True)
    old.write_bytes(b"{}")
    source = LocalFolderSource(tmp_path / "logs")
    day_listing = {o.key: (o.size, o.etag) for o in source.objects_with_digests(DAY - timedelta(days=1), DAY)}
    full = {o.key: (o.size, o.etag) for o in source.objects(DAY - timedelta(days=1), DAY)}
    assert day_listing == full and len(full) == 2 * 2 + 2 * 2  # 4 logs, 2 digests + 2 sidecars
    from_awslogs = LocalFolderSource(tmp_path / "logs" / "AWSLogs")
    assert len(list(from_awslogs.objects_with_digests(DAY, DAY))) == len(full)
