"""`trailguard verify` end to end, on a folder and on an S3 bucket (a moto server over HTTP)."""

from __future__ import annotations

import json

from test_integrity import BUCKET, DAY, NOW, Trail, _ring
from trailguard.cli import main
from trailguard.ingest.sources import S3Source
from trailguard.integrity.day import verify_day
from trailguard.integrity.signing import public_pem


def _keys(tmp_path, key):
    folder = tmp_path / "keys"
    folder.mkdir()
    (folder / "cloudtrail.pem").write_bytes(public_pem(key.public_key()))
    return folder


def test_verify_passes_on_an_untouched_day_and_fails_in_one_line_on_tampering(
    tmp_path, key, capsys, monkeypatch
):
    monkeypatch.delenv("TRAILGUARD_SOURCE", raising=False)
    trail = Trail(tmp_path, key, hours=4)
    args = [
        "--data",
        str(tmp_path / "data"),
        "verify",
        "--date",
        DAY.isoformat(),
        "--source",
        str(tmp_path / "logs"),
        "--keys",
        str(_keys(tmp_path, key)),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("2026-11-20: valid: 4/4 digests valid, 8/8 log files valid")
    trail.path(trail.logs[2][0]).unlink()
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "log_file_missing: 111122223333 eu-west-1 2026-11-20T03:00Z" in captured.out
    assert captured.err.count("\n") == 1 and "removed or changed" in captured.err
    assert main([*args, "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["summary"]["log_files_missing"] == 1


def test_verify_usage_errors_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TRAILGUARD_SOURCE", raising=False)
    assert main(["--data", str(tmp_path), "verify", "--date", "2026-11-20"]) == 2
    assert "--source" in capsys.readouterr().err
    assert (
        main(["--data", str(tmp_path), "verify", "--date", "2026-11-20", "--source", "cloudwatch://g"]) == 2
    )
    assert (
        main(["--data", str(tmp_path), "verify", "--date", "2026-11-20", "--source", str(tmp_path / "nope")])
        == 2
    )
    assert "cannot verify" in capsys.readouterr().err


def test_verify_an_s3_bucket_with_signatures_in_object_metadata(tmp_path, key, aws_client):
    trail = Trail(tmp_path, key, hours=3)
    s3 = aws_client("s3")
    s3.create_bucket(Bucket=BUCKET)
    for path in sorted((tmp_path / "logs").rglob("*")):
        if not path.is_file() or path.name.endswith(".metadata.json"):
            continue
        key_ = path.relative_to(tmp_path / "logs").as_posix()
        sidecar = path.with_name(path.name + ".metadata.json")
        metadata = json.loads(sidecar.read_text()) if sidecar.exists() else {}
        s3.put_object(Bucket=BUCKET, Key=key_, Body=path.read_bytes(), Metadata=metadata)
    source = S3Source(f"s3://{BUCKET}", s3)
    result = verify_day(tmp_path / "data", source, DAY, _ring(key), now=NOW)
    assert result.status == "valid" and result.summary["digests_valid"] == 3, result.lines()
    s3.delete_object(Bucket=BUCKET, Key=trail.logs[1][1])
    s3.put_object(
        Bucket=BUCKET, Key=trail.digests[2], Body=trail.path(trail.digests[2]).read_bytes()
    )  # metadata lost
    result = verify_day(tmp_path / "data", source, DAY, _ring(key), now=NOW)
    assert result.summary["by_status"] == {"log_file_missing": 1, "signature_invalid": 1, "valid": 1}


def test_the_airflow_glue_gives_cloudtrail_clients_per_region(monkeypatch, moto_server):
    """The ingest DAG asks ListPublicKeys in each digest's region through the aws_default connection."""
    from trailguard_airflow import aws_client_factory

    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_DEFAULT",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": moto_server},
            }
        ),
    )
    assert aws_client_factory()("cloudtrail", "eu-west-1").meta.region_name == "eu-west-1"
