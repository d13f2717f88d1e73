"""Mailing the report through a real SMTP server (aiosmtpd on 127.0.0.1): content, idempotency, updates,
outages and header injection."""

from __future__ import annotations

import re
import shutil
import socket
from email import policy
from email.parser import BytesParser

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from test_report import DAY, day_rows, event, write_quality, write_scores
from trailguard.report.daily import build_report, load_report
from trailguard.report.mail import (
    ReportSendError,
    SmtpSettings,
    build_message,
    send_report,
    smtp_settings_from_uri,
)

RECIPIENTS = ["secops@example.com", "oncall@example.com"]
SENDER = "trailguard@example.com"


class Inbox:
    """An aiosmtpd handler that keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.logins: list[object] = []  # who had logged in when each message came (None: nobody)

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        self.logins.append(session.auth_data if session.authenticated else None)
        return "250 Message accepted for delivery"

    def parsed(self, index: int = -1):
        return BytesParser(policy=policy.default).parsebytes(self.messages[index][2])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _authenticate(server, session, envelope, mechanism, auth_data):
    def text(value):
        return value.decode() if isinstance(value, bytes) else value

    login = (text(auth_data.login), text(auth_data.password))
    # handled=False: on a wrong password the server answers 535 at once, as a real relay does (handled=True
    # would say nothing, and the client would wait out its timeout)
    return AuthResult(success=login == ("robot", "p@ss:word"), auth_data=login[0], handled=False)


def _server(auth_required: bool):
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port(), authenticator=_authenticate,
                            auth_require_tls=False, auth_required=auth_required)  # fmt: skip
    controller.start()
    return inbox, controller


@pytest.fixture
def smtp_server():
    inbox, controller = _server(auth_required=False)
    try:
        yield inbox, SmtpSettings(host="127.0.0.1", port=controller.port, starttls=False, timeout=5)
    finally:
        controller.stop()


@pytest.fixture
def smtp_server_with_login():
    """A server that refuses mail from anyone who has not logged in (as a real relay does)."""
    inbox, controller = _server(auth_required=True)
    try:
        yield inbox, SmtpSettings(host="127.0.0.1", port=controller.port, starttls=False, timeout=5)
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def built_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mail-base")
    write_scores(root, day_rows())
    write_quality(root)
    build_report(
        root,
        DAY,
        top_k=12,
        feedback_hint="Label events at http://127.0.0.1:8080/dags/record_analyst_label/trigger",
    )
    return root


@pytest.fixture
def root(built_root, tmp_path):
    """A fresh copy of the built report per test: markers from one test never reach another."""
    return shutil.copytree(built_root, tmp_path / "data")


def parts(message):
    found = {"text": None, "html": None, "attachments": {}, "inline": []}
    for part in message.walk():
        if part.is_multipart():
            continue
        kind, disposition = part.get_content_type(), part.get_content_disposition()
        if disposition == "attachment":
            found["attachments"][part.get_filename()] = part
        elif kind == "image/png":
            found["inline"].append(part)
        elif kind == "text/plain":
            found["text"] = part.get_content()
        elif kind == "text/html":
            found["html"] = part.get_content()
    return found


def test_report_mail_received_with_everything(root, smtp_server):
    inbox, smtp = smtp_server
    report = load_report(root, DAY)
    result = send_report(report, smtp=smtp, recipients=RECIPIENTS, sender=SENDER)
    assert result.status == "sent" and result.sent and len(inbox.messages) == 1
    mail_from, rcpt_tos, raw = inbox.messages[0]
    assert mail_from == SENDER and rcpt_tos == RECIPIENTS
    message = inbox.parsed()
    subject = message["Subject"]
    assert subject.startswith(
        "TrailGuard daily risk report 2026-11-20: 12 findings >= 70 (top: CloudTrail DeleteTrail"
    )
    assert "\r" not in subject and "\n" not in subject
    assert message["Bcc"] is None and message["X-Evil"] is None and message["X-Injected"] is None
    assert not re.search(rb"^(Bcc|X-Evil|X-Injected):", raw, flags=re.MULTILINE | re.IGNORECASE)
    assert message["Message-ID"] == result.message_id and message["To"] == ", ".join(RECIPIENTS)

    found = parts(message)
    for body in (found["text"], found["html"]):
        assert "StopLogging" in body and "ListSecrets" in body and "stop-1" in body
    assert (
        "CloudTrail logging stopped" in found["text"]
        and "200 AccessDenied calls in 10 minutes" in found["text"]
    )
    assert "CloudTrail logging stopped" in found["html"] and "&lt;script&gt;" in found["html"]
    assert "<script>" not in found["html"]
    assert "record_analyst_label/trigger" in found["text"]
    csv_part = found["attachments"]["trailguard-top-events-2026-11-20.csv"]
    assert csv_part.get_content_type() == "text/csv"
    assert csv_part.get_payload(decode=True) == (root / "reports" / DAY / "top_events.csv").read_bytes()
    quality = found["attachments"]["trailguard-quality-2026-11-20.html"]
    assert b"TrailGuard data quality" in quality.get_payload(decode=True)
    assert len(found["inline"]) == 1
    png = found["inline"][0]
    assert png.get_payload(decode=True) == report.chart_png and png.get_payload(decode=True)[:4] == b"\x89PNG"
    cid = png["Content-ID"].strip("<>")
    assert f'src="cid:{cid}"' in found["html"]
    assert len(raw) < 500_000

    marker = (root / "reports" / DAY / "sent.json").read_text()
    assert result.message_id in marker and "sha256:" in marker and "secops@example.com" in marker
    assert (root / "reports" / DAY / "report.eml").exists()


def test_second_send_is_skipped_and_force_sends(root, smtp_server):
    inbox, smtp = smtp_server
    report = load_report(root, DAY)
    first = send_report(report, smtp=smtp, recipients=RECIPIENTS, sender=SENDER)
    again = send_report(load_report(root, DAY), smtp=smtp, recipients=RECIPIENTS, sender=SENDER)
    assert again.status == "already_sent" and not again.sent and "already sent" in again.message
    assert again.message_id == first.message_id and len(inbox.messages) == 1
    # rebuilt from the same scores: same content, still not sent again
    rebuilt = build_report(root, DAY, top_k=12)
    assert send_report(rebuilt, smtp=smtp, recipients=RECIPIENTS).status == "already_sent"
    forced = send_report(rebuilt, smtp=smtp, recipients=RECIPIENTS, sender=SENDER, force=True)
    assert forced.status == "sent" and len(inbox.messages) == 2
    assert "update" not in inbox.parsed()["Subject"]


def test_changed_report_sends_an_update_listing_new_events(root, smtp_server):
    inbox, smtp = smtp_server
    first = send_report(load_report(root, DAY), smtp=smtp, recipients=RECIPIENTS, sender=SENDER)
    late = [event("late-1", 700, 97.5, eventName="DeleteBucket", eventSource="s3.amazonaws.com",
                  principal="arn:aws:iam::111122223333:user/eve", reasons="bucket with logs deleted")]  # fmt: skip
    write_scores(root, day_rows() + late)
    report = build_report(root, DAY, top_k=12)
    result = send_report(report, smtp=smtp, recipients=RECIPIENTS, sender=SENDER)
    assert result.status == "update_sent" and result.new_events == ("late-1",)
    assert len(inbox.messages) == 2
    message = inbox.parsed()
    assert message["Subject"].startswith("TrailGuard daily risk report 2026-11-20 update: 1 new event,")
    assert message["In-Reply-To"] == first.message_id
    found = parts(message)
    assert "Update to the report mailed" in found["text"]
    assert re.search(r"NEW #2 +risk 97\.5 +DeleteBucket by arn:aws:iam::111122223333:user/eve +\(eventID late-1\)",
                     found["text"])  # fmt: skip
    assert "of that mail no longer in the top 12" in found["text"]  # the 12th finding was pushed out
    assert "DeleteBucket" in found["html"] and "NEW" in found["html"]
    # the update is the new baseline: the same content again is not re-sent
    assert send_report(load_report(root, DAY), smtp=smtp, recipients=RECIPIENTS).status == "already_sent"
    assert len(inbox.messages) == 2


def test_smtp_down_raises_and_writes_no_marker(root):
    report = load_report(root, DAY)
    refused = SmtpSettings(host="127.0.0.1", port=free_port(), starttls=False, timeout=2)
    with pytest.raises(ReportSendError, match=r"could not send the report via SMTP 127\.0\.0\.1:\d+.*retry"):
        send_report(report, smtp=refused, recipients=RECIPIENTS)
    with socket.socket() as silent:  # accepts connections, never greets: a hung server
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        hung = SmtpSettings(host="127.0.0.1", port=silent.getsockname()[1], starttls=False, timeout=0.5)
        with pytest.raises(ReportSendError, match="timed out"):
            send_report(report, smtp=hung, recipients=RECIPIENTS)
    assert not (root / "reports" / DAY / "sent.json").exists()
    assert (root / "reports" / DAY / "report.eml").exists()  # the mail is kept


def test_starttls_is_required_unless_disabled(root, smtp_server):
    inbox, smtp = smtp_server
    plain_server = SmtpSettings(host=smtp.host, port=smtp.port, starttls=True, timeout=5)
    with pytest.raises(ReportSendError, match="does not offer STARTTLS"):
        send_report(load_report(root, DAY), smtp=plain_server, recipients=RECIPIENTS)
    assert inbox.messages == []


def test_login_with_settings_from_uri(root, smtp_server_with_login):
    inbox, smtp = smtp_server_with_login
    settings = smtp_settings_from_uri(
        f"smtp://robot:p%40ss%3Aword@127.0.0.1:{smtp.port}?disable_tls=true&from=bot@example.com"
    )
    result = send_report(load_report(root, DAY), smtp=settings, recipients="secops@example.com")
    assert result.status == "sent" and inbox.messages[0][0] == "bot@example.com"
    assert inbox.messages[0][1] == ["secops@example.com"]
    assert inbox.logins == ["robot"]  # the message came after a successful login as robot


def test_a_wrong_password_is_refused_and_nothing_is_sent(root, smtp_server_with_login):
    inbox, smtp = smtp_server_with_login
    settings = smtp_settings_from_uri(f"smtp://robot:wrong@127.0.0.1:{smtp.port}?disable_tls=true")
    with pytest.raises(ReportSendError, match="SMTPAuthenticationError"):
        send_report(load_report(root, DAY), smtp=settings, recipients="secops@example.com")
    assert inbox.messages == []


def test_without_credentials_a_server_requiring_login_refuses(root, smtp_server_with_login):
    inbox, smtp = smtp_server_with_login
    with pytest.raises(ReportSendError):
        send_report(load_report(root, DAY), smtp=smtp, recipients="secops@example.com")
    assert inbox.messages == []


def test_no_smtp_writes_a_loadable_eml(root):
    report = load_report(root, DAY)
    result = send_report(report, smtp=None, recipients="secops@example.com, oncall@example.com")
    assert result.status == "written" and not result.sent and "not sent" in result.message
    assert result.eml_path == root / "reports" / DAY / "report.eml"
    message = BytesParser(policy=policy.default).parsebytes(result.eml_path.read_bytes())
    assert message["Subject"].startswith("TrailGuard daily risk report 2026-11-20")
    assert message["To"] == "secops@example.com, oncall@example.com"
    found = parts(message)
    assert "StopLogging" in found["text"] and len(found["inline"]) == 1
    assert "trailguard-top-events-2026-11-20.csv" in found["attachments"]
    assert not (root / "reports" / DAY / "sent.json").exists()


def test_recipients_and_subject_cannot_inject_headers(root):
    report = load_report(root, DAY)
    with pytest.raises(ValueError, match="recipient"):
        build_message(report, sender=SENDER, recipients=["secops@example.com\r\nBcc: evil@example.net"])
    with pytest.raises(ValueError, match="sender"):
        build_message(report, sender="x@example.com\nBcc: evil@example.net", recipients=RECIPIENTS)
    with pytest.raises(ValueError, match="no recipients"):
        build_message(report, sender=SENDER, recipients=" , ")
    message = build_message(
        report, sender=SENDER, recipients=RECIPIENTS, subject="Hello\r\nBcc: evil@example.net"
    )
    assert message["Subject"] == "Hello Bcc: evil@example.net" and message["Bcc"] is None
    parsed = BytesParser(policy=policy.default).parsebytes(bytes(message))
    assert parsed["Bcc"] is None and parsed["Subject"] == "Hello Bcc: evil@example.net"


def test_smtp_settings_from_uri():
    s = smtp_settings_from_uri("smtp://user:pa%2Fss@mail.example.com:1025?disable_tls=true&timeout=5")
    assert (s.host, s.port, s.username, s.password, s.starttls, s.ssl, s.timeout) == (
        "mail.example.com", 1025, "user", "pa/ss", False, False, 5.0)  # fmt: skip
    assert "pa/ss" not in repr(s)
    s = smtp_settings_from_uri("smtp://smtp.example.com")
    assert (s.port, s.starttls, s.ssl, s.username) == (25, True, False, None)
    s = smtp_settings_from_uri("smtps://u:p@smtp.example.com")
    assert (s.port, s.starttls, s.ssl) == (465, False, True)
    for bad in ("http://example.com", "smtp://", "smtp://h:notaport"):
        with pytest.raises(ValueError):
            smtp_settings_from_uri(bad)
