"""Automation destinations for real: SNS and EventBridge on a moto server over HTTP (read back from SQS),
Lambda's invoke request, Slack and a signed webhook on local HTTP servers; each finding once, across reruns."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jsonschema
import pytest
from trailguard.report.daily import build_report
from trailguard.respond.destinations import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Delivery,
    Destination,
    parse_destinations,
)
from trailguard.respond.message import (
    FINDING_SCHEMA,
    MAX_EVENT_IDS,
    build_message,
    build_messages,
    chat_text,
    findings_from_report,
)
from trailguard.respond.notify import Ledger, ledger_path, notify
from trailguard.store.settings import ConfigError

from tests.report.test_report import DAY, day_rows, write_quality, write_scores


class Recorder:
    """A local HTTP server on 127.0.0.1 that keeps every request and answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[dict] = []
        self.status = status
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                recorder.requests.append(
                    {
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                    }
                )
                self.send_response(recorder.status)
                self.send_header("Content-Type", "application/json")
                payload = b"" if recorder.status == 202 else b"{}"
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder():
    server = Recorder()
    yield server
    server.close()


@pytest.fixture(scope="module")
def report_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("respond")
    write_scores(root, day_rows())
    write_quality(root)
    build_report(root, DAY, top_k=10)
    return root


@pytest.fixture
def messages(report_root):
    built, rejected = build_messages(findings_from_report(report_root, DAY), DAY)
    assert not rejected
    return built


def _hostile() -> dict:
    return {"finding_id": "evt-1", "score": 97.26, "principal": "<!channel> <https://evil|click>",
            "techniques": "T1562.008,T99,evil", "reasons": "one; two\x1b[31m; " + "x" * 5000,
            "report_url": "javascript:alert(1)", "account": "111122223333", "region": "us-east-1"}  # fmt: skip


def test_message_is_bounded_cleaned_and_valid():
    message = build_message(_hostile(), DAY)
    jsonschema.validate(message, FINDING_SCHEMA)
    assert message["score"] == 97.3 and message["severity"] == "high"
    assert message["techniques"] == ["T1562.008"]
    assert message["report_url"] is None
    assert message["event_ids"] == ["evt-1"]
    assert all(len(r) <= 320 and "\x1b" not in r for r in message["reasons"])
    with pytest.raises(ValueError, match="score"):
        build_message({"finding_id": "x"}, DAY)
    messages, rejected = build_messages([{"finding_id": "n", "score": float("nan")}, {"score": 5}], DAY)
    assert messages == [] and len(rejected) == 2 and "not a number" in rejected[0]
    assert chat_text(message).startswith(
        "TrailGuard high risk 97.3: evt-1\nwho: <!channel>"
    )  # escaped for Slack only


def test_findings_from_the_days_report(report_root, messages):
    top = json.loads((report_root / "reports" / DAY / "report.json").read_text())["top_events"]
    assert [m["finding_id"] for m in messages] == [row["finding_id"] for row in top]
    for message, row in zip(messages, top, strict=True):
        jsonschema.validate(message, FINDING_SCHEMA)
        assert message["finding_id"].startswith("F-")
        assert message["event_ids"][0] == row["eventID"]  # the lead event first, then the rest of the finding
        ids = row["event_ids"].split()
        assert set(message["event_ids"]) <= set(ids) and len(message["event_ids"]) == min(
            len(ids), MAX_EVENT_IDS
        )
        assert message["event_count"] >= len(ids)
        assert message["tactics"] == [t for t in row["tactics"].split(",") if t]
        assert message["report_url"].startswith("file://") and message["report_url"].endswith("report.html")
    stop = next(m for m in messages if "stop-1" in m["event_ids"])
    assert stop["techniques"] == ["T1562.008"] and stop["score"] == 96.0
    assert stop["principal"] == "arn:aws:iam::111122223333:user/mallory"


def test_configuration_errors_say_what_to_fix():
    assert parse_destinations("", default_min_score=70) == []
    for raw, words in [
        ("{not json", "not valid JSON"),
        ('[{"type": "pager", "target": "x"}]', "unknown type 'pager'"),
        ('[{"type": "sns"}]', "'target' is missing"),
        ('[{"type": "webhook", "target": "http://example.com/hook"}]', "https://"),
        ('[{"type": "sns", "target": "arn", "min_score": 120}]', "min_score"),
        ('[{"type": "sns", "target": "a"}, {"type": "sns", "target": "b"}]', "used twice"),
        ('[{"type": "sns", "target": "a", "topic": "b"}]', "unknown key"),
    ]:
        with pytest.raises(ConfigError, match=words):
            parse_destinations(raw, default_min_score=70)
    (d,) = parse_destinations('{"type": "webhook", "target": "https://h.example/x", "secret": "s3"}',
                              default_min_score=70)  # fmt: skip
    assert d.name == "webhook" and d.min_score == 70 and "s3" not in repr(d)


def test_sns_to_sqs_once_across_reruns(moto_server, aws_client, report_root, messages, tmp_path):
    sqs, sns = aws_client("sqs"), aws_client("sns")
    queue = sqs.create_queue(QueueName="findings-sns")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    topic = sns.create_topic(Name="trailguard-findings")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    (dest,) = parse_destinations(json.dumps([{"name": "secops-sns", "type": "sns", "target": topic, "min_score": 85,
                                              "endpoint_url": moto_server}]), default_min_score=70)  # fmt: skip
    high = [m for m in messages if m["score"] >= 85]
    assert 0 < len(high) < len(messages)

    dry = notify(messages, [dest], Ledger(tmp_path, DAY), dry_run=True)
    assert len(dry.destinations[0].would_send) == len(high) and not ledger_path(tmp_path, DAY).exists()
    assert _drain(sqs, queue) == []

    result = notify(messages, [dest], Ledger(tmp_path, DAY))
    assert result.destinations[0].sent == [m["finding_id"] for m in high]
    assert result.destinations[0].below_min_score == len(messages) - len(high)
    received = [json.loads(json.loads(body)["Message"]) for body in _drain(sqs, queue)]
    assert sorted(r["finding_id"] for r in received) == sorted(m["finding_id"] for m in high)
    for r in received:
        jsonschema.validate(r, FINDING_SCHEMA)

    again = notify(messages, [dest], Ledger(tmp_path, DAY))
    assert again.sent == 0 and again.destinations[0].already_sent == len(high)
    assert _drain(sqs, queue) == []


def test_eventbridge_rule_to_sqs(moto_server, aws_client, messages, tmp_path):
    sqs, events = aws_client("sqs"), aws_client("events")
    queue = sqs.create_queue(QueueName="findings-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.create_event_bus(Name="security")
    events.put_rule(
        Name="trailguard-high",
        EventBusName="security",
        EventPattern=json.dumps({"source": ["trailguard"], "detail-type": ["TrailGuard Finding"]}),
    )
    events.put_targets(
        Rule="trailguard-high", EventBusName="security", Targets=[{"Id": "q", "Arn": queue_arn}]
    )
    dest = Destination(name="bus", type="eventbridge", target="security", min_score=0, region="us-east-1",
                       endpoint_url=moto_server)  # fmt: skip

    result = notify(messages, [dest], Ledger(tmp_path, DAY), max_per_run=3)
    assert len(result.destinations[0].sent) == 3 and result.destinations[0].deferred == len(messages) - 3
    events_in = [json.loads(body) for body in _drain(sqs, queue)]
    assert len(events_in) == 3
    assert {e["source"] for e in events_in} == {"trailguard"}
    assert {e["detail-type"] for e in events_in} == {"TrailGuard Finding"}
    for e in events_in:
        jsonschema.validate(e["detail"], FINDING_SCHEMA)
    assert [e["detail"]["score"] for e in events_in] == sorted((m["score"] for m in messages), reverse=True)[
        :3
    ]

    rest = notify(messages, [dest], Ledger(tmp_path, DAY), max_per_run=100)
    assert len(rest.destinations[0].sent) == len(messages) - 3 and rest.destinations[0].already_sent == 3
    assert len(_drain(sqs, queue)) == len(messages) - 3


def test_missing_topic_is_a_configuration_error(moto_server, messages, tmp_path):
    dest = Destination(name="gone", type="sns", target="arn:aws:sns:us-east-1:123456789012:nope", min_score=0,
                       endpoint_url=moto_server)  # fmt: skip
    result = notify(messages, [dest], Ledger(tmp_path, DAY))
    (failed,) = result.failed
    assert failed.transient is False and "NotFound" in failed.error
    assert failed.deferred == len(messages) and not ledger_path(tmp_path, DAY).exists()


def test_lambda_invoke_request(recorder, messages, tmp_path):
    recorder.status = 202
    dest = Destination(name="responder", type="lambda", target="trailguard-respond", min_score=90,
                       region="us-east-1", endpoint_url=recorder.url)  # fmt: skip
    result = notify(messages, [dest], Ledger(tmp_path, DAY))
    high = [m for m in messages if m["score"] >= 90]
    assert len(result.destinations[0].sent) == len(high) == len(recorder.requests) > 0
    request = recorder.requests[0]
    assert request["path"] == "/2015-03-31/functions/trailguard-respond/invocations"
    assert request["headers"]["x-amz-invocation-type"] == "Event"
    assert "AWS4-HMAC-SHA256" in request["headers"]["authorization"]  # signed by botocore, not hand-rolled
    payload = json.loads(request["body"])
    jsonschema.validate(payload, FINDING_SCHEMA)
    assert payload["finding_id"] == high[0]["finding_id"]


def test_slack_text_cannot_mention_or_link(recorder, tmp_path):
    dest = Destination(name="slack", type="slack", target=recorder.url + "/services/T/B/X", min_score=0)
    result = notify([build_message(_hostile(), DAY)], [dest], Ledger(tmp_path, DAY))
    assert result.sent == 1
    text = json.loads(recorder.requests[0]["body"])["text"]
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text and "<https" not in text
    assert "TrailGuard high risk 97.3" in text


def test_webhook_is_signed_and_failures_are_classified(recorder, messages, tmp_path):
    dest = Destination(name="soar", type="webhook", target=recorder.url + "/hook", min_score=0, secret="k3y")
    result = notify(messages[:2], [dest], Ledger(tmp_path, DAY))
    assert result.sent == 2
    for request in recorder.requests:
        headers = request["headers"]
        expected = hmac.new(
            b"k3y", headers[TIMESTAMP_HEADER.lower()].encode() + b"." + request["body"], hashlib.sha256
        )
        assert hmac.compare_digest(headers[SIGNATURE_HEADER.lower()], "sha256=" + expected.hexdigest())
        jsonschema.validate(json.loads(request["body"]), FINDING_SCHEMA)
    assert len({r["headers"]["x-trailguard-delivery"] for r in recorder.requests}) == 2

    recorder.status = 503
    busy = notify(messages, [dest], Ledger(tmp_path, DAY))
    assert busy.failed[0].transient is True and "503" in busy.failed[0].error
    assert busy.destinations[0].already_sent == 2
    recorder.status = 404
    wrong = notify(messages, [dest], Ledger(tmp_path, DAY))
    assert wrong.failed[0].transient is False


def test_unreachable_webhook_is_transient(messages, tmp_path):
    from tests.conftest import _free_port

    dest = Destination(name="down", type="webhook", target=f"http://127.0.0.1:{_free_port()}/", min_score=0)
    result = notify(messages[:1], [dest], Ledger(tmp_path, DAY), delivery=Delivery(timeout=2))
    assert result.failed[0].transient is True and "cannot connect" in result.failed[0].error


def _drain(sqs, queue: str) -> list[str]:
    bodies = []
    while True:
        got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not got:
            return bodies
        for m in got:
            bodies.append(m["Body"])
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])


def test_notify_command(recorder, report_root, tmp_path, monkeypatch, capsys):
    import shutil

    from trailguard.cli import main

    root = tmp_path / "data"
    shutil.copytree(report_root, root)
    hook = {
        "name": "soar",
        "type": "webhook",
        "target": recorder.url + "/hook",
        "min_score": 85,
        "secret": "k",
    }
    monkeypatch.setenv("TRAILGUARD_NOTIFY_DESTINATIONS", json.dumps([hook]))
    assert main(["--data", str(root), "notify", "--date", DAY, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run" in out and "would send 4" in out and "TrailGuard high risk 99" in out
    assert recorder.requests == [] and not ledger_path(root, DAY).exists()

    assert main(["--data", str(root), "notify", "--date", DAY, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["destinations"]["soar"]["sent"] == 4 == len(recorder.requests)
    assert main(["--data", str(root), "notify", "--date", DAY]) == 0
    assert "sent 0, already sent 4" in capsys.readouterr().out and len(recorder.requests) == 4

    assert main(["--data", str(root), "notify", "--date", "2026-11-19"]) == 1
    assert "no report for 2026-11-19" in capsys.readouterr().err
    monkeypatch.setenv("TRAILGUARD_NOTIFY_DESTINATIONS", '[{"type": "pager"}]')
    assert main(["--data", str(root), "notify", "--date", DAY]) == 2
    assert "unknown type 'pager'" in capsys.readouterr().err


def test_demo_previews_what_automation_would_receive(report_root, monkeypatch):
    from trailguard.demo.runner import notify_preview

    monkeypatch.delenv("TRAILGUARD_NOTIFY_DESTINATIONS", raising=False)
    lines = notify_preview(report_root, DAY)
    text = "\n".join(lines)
    assert "no TRAILGUARD_NOTIFY_DESTINATIONS set" in text and "example-webhook" in text
    assert "would send 10" in text and "TrailGuard high risk 96: cloudtrail StopLogging" in text
    assert not ledger_path(report_root, DAY).exists()
