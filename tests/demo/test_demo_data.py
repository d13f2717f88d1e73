"""The demo CloudTrail generator: S3 layout and names as AWS writes them, valid records, the bad files it
promises, labelled attacks that really are in the logs, determinism and volume."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import re
import zlib
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import pytest
from trailguard.demo import attacks, generator, organisation
from trailguard.ingest.normalise import RecordError, normalise
from tests.conftest import FIXTURES

END = date(2026, 11, 20)
DAYS = 10
EVENTS = 6_000

LOG_NAME = re.compile(
    r"AWSLogs/(?P<acct>\d{12})/CloudTrail/(?P<region>[a-z]{2}-[a-z]+-\d)/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/"
    r"(?P=acct)_CloudTrail_(?P=region)_(?P=y)(?P=m)(?P=d)T(?P<hhmm>\d{4})Z_[A-Za-z0-9]{16}\.json\.gz"
)
DIGEST_NAME = re.compile(
    r"AWSLogs/(?P<acct>\d{12})/CloudTrail-Digest/(?P<region>[a-z]{2}-[a-z]+-\d)/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/"
    r"(?P=acct)_CloudTrail-Digest_(?P=region)_[\w-]+_us-east-1_(?P=y)(?P=m)(?P=d)T\d{6}Z\.json\.gz"
)
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
EVENT_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
TECHNIQUE = re.compile(r"T\d{4}(\.\d{3})?")


def _relative_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _load(path: Path) -> object:
    return json.loads(gzip.decompress(path.read_bytes()))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[generator.DemoSummary, dict]:
    out = tmp_path_factory.mktemp("demo")
    progress: list[int] = []
    summary = generator.generate(out, end=END, days=DAYS, events=EVENTS, seed=7, progress=progress.append)
    return summary, {"progress": progress, "meta": json.loads((out / "demo_summary.json").read_text())}


@pytest.fixture(scope="module")
def logs(demo) -> dict:
    """Every log file parsed: good records by eventID, the bad files by key."""
    summary, _ = demo
    records: dict[str, dict] = {}
    keys_of: dict[str, str] = {}
    problems: dict[str, str] = {}
    for path in sorted((summary.out_dir / "AWSLogs").glob("*/CloudTrail/*/*/*/*/*.json.gz")):
        key = str(path.relative_to(summary.out_dir))
        try:
            body = _load(path)
        except (OSError, EOFError, zlib.error, ValueError) as exc:
            problems[key] = type(exc).__name__
            continue
        if not isinstance(body, dict) or not isinstance(body.get("Records"), list):
            problems[key] = "no Records"
            continue
        for record in body["Records"]:
            try:
                normalise(record, key)
            except RecordError as exc:
                problems[key] = f"bad record: {exc}"
                continue
            assert record["eventID"] not in records, f"duplicate eventID {record['eventID']}"
            records[record["eventID"]] = record
            keys_of[record["eventID"]] = key
    return {"records": records, "keys_of": keys_of, "problems": problems}


def test_layout_and_file_names_are_exactly_as_aws_delivers_them(demo) -> None:
    summary, _ = demo
    files = _relative_files(summary.out_dir)
    logs_ = [f for f in files if "/CloudTrail/" in f]
    digests = [f for f in files if "/CloudTrail-Digest/" in f and f.endswith(".json.gz")]
    sidecars = [f for f in files if "/CloudTrail-Digest/" in f and f.endswith(".json.gz.metadata.json")]
    keys = [f for f in files if f.startswith("cloudtrail-public-keys/")]
    assert set(files) - set(logs_) - set(digests) - set(sidecars) - set(keys) == {"ground_truth.csv", "demo_summary.json"}
    assert len(logs_) == summary.files
    for name in logs_:
        assert LOG_NAME.fullmatch(name), name
    assert digests and all(DIGEST_NAME.fullmatch(name) for name in digests)
    assert sorted(sidecars) == sorted(d + ".metadata.json" for d in digests)
    assert len(keys) == 1 and re.fullmatch(r"cloudtrail-public-keys/[0-9a-f]{32}\.pem", keys[0])
    accounts = {LOG_NAME.fullmatch(n)["acct"] for n in logs_}
    regions = {LOG_NAME.fullmatch(n)["region"] for n in logs_}
    assert accounts == set(organisation.ACCOUNT[e].id for e in ("prod", "dev", "security"))
    assert regions == {"us-east-1", "eu-west-1", "us-west-2"}
    # a few thousand files at most for the default size means a handful of records per file here
    assert 100 < summary.files < organisation.FILES_PER_DAY * (DAYS + 1)


def test_every_file_gunzips_to_records_except_the_announced_bad_ones(demo, logs) -> None:
    summary, extra = demo
    announced = {bad["key"]: bad["kind"] for bad in extra["meta"]["bad_file_keys"]}
    assert summary.bad_files == len(announced) == 4
    assert set(logs["problems"]) == set(announced)
    kinds = {announced[key]: problem for key, problem in logs["problems"].items()}
    assert kinds["truncated_gzip"] in ("EOFError", "BadGzipFile", "error")
    assert kinds["not_json"] == "JSONDecodeError"
    assert kinds["no_records"] == "no Records"
    assert kinds["bad_records"].startswith("bad record")
    # the spoilt file still holds good records: all but two are accepted
    spoilt = next(k for k, kind in announced.items() if kind == "bad_records")
    body = _load(summary.out_dir / spoilt)
    rejected = []
    for record in body["Records"]:
        try:
            normalise(record, spoilt)
        except RecordError as exc:
            rejected.append(str(exc))
    assert len(rejected) == 2 and len(body["Records"]) > 2
    assert any("eventID" in r for r in rejected) and any("eventTime" in r for r in rejected)
    assert summary.records == len(logs["records"])


def test_records_have_the_real_cloudtrail_shape(logs) -> None:
    records = logs["records"].values()
    for record in records:
        assert UUID4.fullmatch(record["eventID"]), record["eventID"]
        assert EVENT_TIME.fullmatch(record["eventTime"])
        assert record["eventCategory"] == "Management" and record["managementEvent"] is True
        assert record["eventType"] in ("AwsApiCall", "AwsConsoleSignIn", "AwsServiceEvent")
        assert record["recipientAccountId"] == record["userIdentity"].get(
            "accountId", record["recipientAccountId"]
        ) or record["userIdentity"]["type"] in ("AWSAccount", "AWSService")
    kinds = Counter(r["userIdentity"].get("type") for r in records)
    assert {"IAMUser", "AssumedRole", "AWSService", "WebIdentityUser", "AWSAccount", "Root"} <= set(kinds)
    assert any("vpcEndpointId" in r and r["sourceIPAddress"].startswith("10.") for r in records)
    assert any(
        r["userIdentity"].get("invokedBy") == r["sourceIPAddress"] == "lambda.amazonaws.com" for r in records
    )
    assert any(r["eventType"] == "AwsServiceEvent" for r in records)
    # global services log in us-east-1, as in reality
    assert {
        r["awsRegion"] for r in records if r["eventSource"] in ("iam.amazonaws.com", "signin.amazonaws.com")
    } == {"us-east-1"}
    reads = sum(1 for r in records if r.get("readOnly"))
    errors = sum(1 for r in records if r.get("errorCode"))
    assert reads > 0.8 * len(records)
    assert 0.005 < errors / len(records) < 0.05


@pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"public CloudTrail fixtures not found at {FIXTURES}")
def test_field_names_all_occur_in_real_public_records(logs) -> None:
    real_top: set[str] = set()
    real_identity = {"identityProvider"}  # documented for WebIdentityUser, absent from the fixtures
    for path in FIXTURES.glob("*.ndjson"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            real_top |= {k for k in record if not k.startswith(("_", "p_"))}
            if isinstance(record.get("userIdentity"), dict):
                real_identity |= set(record["userIdentity"])
    ours_top = {k for r in logs["records"].values() for k in r}
    ours_identity = {k for r in logs["records"].values() for k in r["userIdentity"]}
    assert ours_top <= real_top, ours_top - real_top
    assert ours_identity <= real_identity, ours_identity - real_identity


def test_delivery_time_follows_the_records_it_holds(demo) -> None:
    summary, extra = demo
    bad = {b["key"] for b in extra["meta"]["bad_file_keys"]}
    for path in (summary.out_dir / "AWSLogs").glob("*/CloudTrail/*/*/*/*/*.json.gz"):
        key = str(path.relative_to(summary.out_dir))
        if key in bad:
            continue
        match = LOG_NAME.fullmatch(key)
        stamp = f"{match['y']}-{match['m']}-{match['d']}T{match['hhmm'][:2]}:{match['hhmm'][2:]}"
        records = _load(path)["Records"]
        region = {r["awsRegion"] for r in records}
        assert region == {match["region"]} and {r["recipientAccountId"] for r in records} == {match["acct"]}
        assert max(r["eventTime"] for r in records)[:16] <= stamp


def test_ground_truth_lists_real_attack_events_for_every_scenario(demo, logs) -> None:
    summary, extra = demo
    with summary.ground_truth.open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["eventID", "date", "scenario", "attack_technique", "risk_score"]
    assert len(rows) == summary.attacks == extra["meta"]["attacks"]
    for row in rows:
        record = logs["records"].get(row["eventID"])
        assert record is not None, f"ground truth {row['eventID']} is not in any good file"
        assert record["eventTime"][:10] == row["date"]
        assert TECHNIQUE.fullmatch(row["attack_technique"])
        assert 80 <= int(row["risk_score"]) <= 100
    scenarios = {s.name for s in attacks.SCENARIOS}
    assert {r["scenario"] for r in rows} == scenarios
    assert {r["scenario"] for r in rows if r["date"] == END.isoformat()} == scenarios
    assert {r["date"] for r in rows} > {END.isoformat()}, "some attacks happen on earlier days too"


def test_attack_events_carry_the_marks_detections_key_on(demo, logs) -> None:
    summary, _ = demo
    with summary.ground_truth.open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["date"] == END.isoformat()]
    by = {}
    for row in rows:
        by.setdefault(row["scenario"], []).append(logs["records"][row["eventID"]])
    names = {s: {r["eventName"] for r in recs} for s, recs in by.items()}
    assert {"StopLogging"} <= names["cloudtrail_tampering"]
    assert "DeleteDetector" in names["guardduty_disabled"]
    assert "PutBucketPolicy" in names["s3_bucket_made_public"]
    login = [
        r for r in by["console_login_new_country"] if r["responseElements"] == {"ConsoleLogin": "Success"}
    ]
    assert len(login) == 1 and login[0]["additionalEventData"]["MFAUsed"] == "No"
    key = next(r for r in by["access_key_for_other_user"] if r["eventName"] == "CreateAccessKey")
    assert key["requestParameters"]["userName"] != key["userIdentity"]["userName"]
    ssh = next(r for r in by["security_group_open_ssh"])
    permission = ssh["requestParameters"]["ipPermissions"]["items"][0]
    assert permission["fromPort"] == 22 and permission["ipRanges"]["items"][0]["cidrIp"] == "0.0.0.0/0"
    secrets = [r for r in by["secrets_bulk_read"] if r["eventName"] == "GetSecretValue"]
    assert len({r["requestParameters"]["secretId"] for r in secrets}) >= 20
    assert len({r["userIdentity"]["arn"] for r in secrets}) == 1
    recon = by["recon_access_denied"]
    assert len(recon) >= 30 and sum(1 for r in recon if r.get("errorCode")) > len(recon) / 2
    root = [r for r in by["root_console_login_no_mfa"] if r["eventName"] == "ConsoleLogin"]
    assert root[0]["userIdentity"]["type"] == "Root" and root[0]["additionalEventData"]["MFAUsed"] == "No"
    # ...and the benign look-alikes exist in normal traffic
    attack_ids = {r["eventID"] for recs in by.values() for r in recs}
    normal = [r for r in logs["records"].values() if r["eventID"] not in attack_ids]
    assert any(r["eventName"] == "AuthorizeSecurityGroupIngress" for r in normal)


def test_console_logins_have_mfa_yes_and_no_and_some_failures(logs) -> None:
    logins = [r for r in logs["records"].values() if r["eventName"] == "ConsoleLogin"]
    outcomes = Counter(
        (r["responseElements"]["ConsoleLogin"], r["additionalEventData"]["MFAUsed"]) for r in logins
    )
    assert outcomes[("Success", "Yes")] > outcomes[("Success", "No")] > 0
    failures = [r for r in logins if r["responseElements"]["ConsoleLogin"] == "Failure"]
    assert failures and all(r["errorMessage"] == "Failed authentication" for r in failures)
    assert all(r["eventType"] == "AwsConsoleSignIn" and r["awsRegion"] == "us-east-1" for r in logins)


def test_users_sign_in_from_their_own_addresses(logs, demo) -> None:
    summary, _ = demo
    with summary.ground_truth.open() as fh:
        attack_ids = {r["eventID"] for r in csv.DictReader(fh)}
    homes = {u.name: set(u.ips) for u in organisation.USERS}
    for record in logs["records"].values():
        if record["eventName"] == "ConsoleLogin" and record["eventID"] not in attack_ids:
            assert record["sourceIPAddress"] in homes[record["userIdentity"]["userName"]]


def test_attacks_are_never_in_bad_files(demo, logs) -> None:
    summary, extra = demo
    bad = {b["key"] for b in extra["meta"]["bad_file_keys"]}
    with summary.ground_truth.open() as fh:
        assert not any(logs["keys_of"][r["eventID"]] in bad for r in csv.DictReader(fh))


def test_progress_reports_the_running_total(demo) -> None:
    summary, extra = demo
    progress = extra["progress"]
    assert len(progress) == summary.files
    assert progress == sorted(progress) and progress[-1] == summary.records


def test_digests_chain_and_hash_the_log_files(demo) -> None:
    summary, extra = demo
    digests = sorted((summary.out_dir / "AWSLogs").glob("*/CloudTrail-Digest/us-east-1/*/*/*/*.json.gz"))
    tampered = {t["key"]: t["kind"] for t in extra["meta"]["tampered_files"]}
    previous = None
    listed = 0
    for path in digests:
        body = _load(path)
        if previous is None:
            assert body["previousDigestHashValue"] is None
        else:
            assert (
                body["previousDigestHashValue"]
                == hashlib.sha256(gzip.decompress(previous.read_bytes())).hexdigest()
            )
        for log in body["logFiles"]:
            if tampered.get(log["s3Object"]) == "deleted":
                assert not (summary.out_dir / log["s3Object"]).exists()
                continue
            content = gzip.decompress((summary.out_dir / log["s3Object"]).read_bytes())
            matches = hashlib.sha256(content).hexdigest() == log["hashValue"]
            assert matches != (tampered.get(log["s3Object"]) == "edited")
            listed += 1
        previous = path
    assert len(digests) == 24 * generator.DIGEST_DAYS and listed > 0


def test_the_last_day_is_tampered_and_verification_says_where(demo, tmp_path: Path) -> None:
    """The day before the last verifies; on the last, one deleted and one edited log file of the digest
    account, normal files (the ground truth stays whole), each found by verification."""
    from trailguard.ingest.sources import LocalFolderSource
    from trailguard.integrity.day import key_provider, verify_day

    summary, extra = demo
    tampered = extra["meta"]["tampered_files"]
    assert sorted(t["kind"] for t in tampered) == ["deleted", "edited"]
    assert all(f"/{organisation.ACCOUNT['prod'].id}/" in t["key"] and f"/{END:%Y/%m/%d}/" in t["key"] for t in tampered)
    keys = key_provider(summary.out_dir / extra["meta"]["public_keys"])
    source = LocalFolderSource(summary.out_dir / "AWSLogs")  # the demo DAG's source: keys start at the account
    before = verify_day(tmp_path, source, END - timedelta(days=1), keys)
    assert before.status == "valid" and before.summary["log_files_valid"] > 0
    last = verify_day(tmp_path, source, END, keys)
    assert last.status == "tampered"
    found = {f"AWSLogs/{f}" if not f.startswith("AWSLogs/") else f: r.status for r in last.rows
             for f in r.missing_files + r.modified_files}
    assert found == {t["key"]: {"deleted": "log_file_missing", "edited": "log_file_modified"}[t["kind"]] for t in tampered}


def test_same_arguments_give_identical_bytes(tmp_path: Path) -> None:
    first = generator.generate(tmp_path / "a", days=2, events=2_000, seed=11)
    second = generator.generate(tmp_path / "b", days=2, events=2_000, seed=11)
    other = generator.generate(tmp_path / "c", days=2, events=2_000, seed=12)
    files = _relative_files(first.out_dir)
    assert files == _relative_files(second.out_dir)
    for name in files:
        assert (first.out_dir / name).read_bytes() == (second.out_dir / name).read_bytes(), name
    assert files != _relative_files(other.out_dir)
    header = next(first.out_dir.glob("AWSLogs/*/CloudTrail/*/*/*/*/*.json.gz")).read_bytes()[:10]
    assert header[3] & 0x08 == 0 and header[4:8] == b"\0\0\0\0", "gzip header without file name and mtime"


@pytest.mark.parametrize("events", [3_000, 9_000])
def test_events_scales_the_volume(tmp_path: Path, events: int) -> None:
    summary = generator.generate(tmp_path, days=3, events=events, bad_files=False)
    assert summary.bad_files == 0
    assert 0.9 * events <= summary.records - summary.attacks <= 1.1 * events


def test_rerun_replaces_the_previous_demo_and_refuses_foreign_logs(tmp_path: Path) -> None:
    big = generator.generate(tmp_path, days=2, events=3_000)
    small = generator.generate(tmp_path, days=1, events=500)
    assert small.files < big.files
    assert sum(1 for _ in (tmp_path / "AWSLogs").rglob("*_CloudTrail_*")) == small.files
    assert not (tmp_path / ".demo-partial").exists()
    foreign = tmp_path / "mirror"
    (foreign / "AWSLogs" / "123456789012").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not a previous demo"):
        generator.generate(foreign, days=1, events=100)


def test_default_end_is_fixed() -> None:
    assert generator.DEFAULT_END == END
