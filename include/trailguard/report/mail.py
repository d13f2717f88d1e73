"""Mailing the daily report: once, never lost, and never silently changed.

:func:`build_message` makes a multipart mail (text and HTML with the chart inline by ``cid:``, the CSV and
the data-quality page attached); its two bodies are the templates ``report/templates/email.txt`` and
``email.html`` (the report page without the page's CSP). :func:`send_report` sends it over SMTP and records ``sent.json`` beside
the report (message id, recipients, time, a hash of ``top_events.csv``): a rerun with the same content
sends nothing, a changed report (late events rescored) sends an *update* that lists what is new, and
``force=True`` sends anyway. Without SMTP settings the mail is only written as ``report.eml``; it is
written in every case before sending, so an SMTP outage (a clear :class:`ReportSendError`, no marker)
loses nothing. Subjects and addresses are stripped of control characters: CloudTrail values such as
``eventName`` reach the subject and must not inject headers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import smtplib
import ssl as ssl_lib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from trailguard.report.daily import HIGH_RISK, Notice, Report, clean_text
from trailguard.store.events import write_bytes_atomic
from trailguard.store.fs import DataPath

log = logging.getLogger(__name__)

DEFAULT_SENDER = "trailguard@localhost"
MARKER_NAME = "sent.json"
EML_NAME = "report.eml"
SUBJECT_LIMIT = 200
MAX_ATTACHED_PAGE = 5 * 1024 * 1024  # a bigger quality page is left out of the mail (it stays on disk)
HISTORY_LIMIT = 20  # earlier sends kept in the marker

_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_MESSAGE_ID = re.compile(r"<[!-;=?-~]{1,250}>")  # printable ASCII without < > or spaces
_TRUE = {"1", "true", "yes", "on"}
_SERVICES = {
    "cloudtrail": "CloudTrail", "iam": "IAM", "sts": "STS", "s3": "S3", "ec2": "EC2", "kms": "KMS",
    "signin": "Sign-in", "guardduty": "GuardDuty", "secretsmanager": "Secrets Manager", "lambda": "Lambda",
    "organizations": "Organizations", "config": "Config", "logs": "CloudWatch Logs", "ssm": "SSM",
    "rds": "RDS", "sso": "IAM Identity Center", "securityhub": "Security Hub",
}  # fmt: skip


class ReportSendError(RuntimeError):
    """The SMTP server could not take the report; nothing was marked as sent, so a retry sends it."""


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to send. ``ssl`` is implicit TLS (port 465) and wins over ``starttls``, as in Airflow."""

    host: str
    port: int = 25
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = True
    ssl: bool = False
    timeout: float = 30.0
    sender: str | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"


def smtp_settings_from_uri(uri: str) -> SmtpSettings:
    """Settings from ``smtp://user:pass@host:1025?disable_tls=true`` (the CLI's ``TRAILGUARD_SMTP_URL``).

    ``smtp://`` uses STARTTLS unless ``disable_tls=true``; ``smtps://`` (or ``ssl=true``) is implicit TLS.
    Other query keys: ``timeout`` (seconds), ``from`` (sender). User and password are URL-decoded.
    """
    parts = urlsplit(uri.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError("not an SMTP URL: expected smtp://[user:password@]host[:port][?disable_tls=true]")
    query = {key.lower(): value for key, value in parse_qsl(parts.query)}
    use_ssl = (scheme == "smtps" or _truthy(query.get("ssl"))) and not _truthy(query.get("disable_ssl"))
    starttls = not use_ssl and not _truthy(query.get("disable_tls"))
    if "starttls" in query:
        starttls = not use_ssl and _truthy(query["starttls"])
    try:
        port = parts.port or (465 if use_ssl else 25)
        timeout = float(query.get("timeout", 30))
    except ValueError as exc:
        raise ValueError(f"SMTP URL for {parts.hostname}: bad port or timeout ({exc})") from None
    return SmtpSettings(
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        starttls=starttls,
        ssl=use_ssl,
        timeout=timeout,
        sender=query.get("from") or query.get("from_email") or None,
    )


@dataclass
class SendResult:
    """What happened to the day's mail; ``message`` is the line to log."""

    status: str  # sent | update_sent | already_sent | written
    day: str
    message: str
    subject: str | None = None
    recipients: tuple[str, ...] = ()
    message_id: str | None = None
    eml_path: DataPath | None = None
    marker_path: DataPath | None = None
    new_events: tuple[str, ...] = ()
    refused: dict[str, str] = field(default_factory=dict)

    @property
    def sent(self) -> bool:
        return self.status in ("sent", "update_sent")

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status, "day": self.day, "message": self.message, "subject": self.subject,
            "recipients": list(self.recipients), "message_id": self.message_id,
            "eml_path": None if self.eml_path is None else str(self.eml_path),
            "marker_path": None if self.marker_path is None else str(self.marker_path),
            "new_events": list(self.new_events), "refused": dict(self.refused),
        }  # fmt: skip


# -- the message ------------------------------------------------------------------------------------------
def content_hash(report: Report) -> str:
    """The hash of what was reported (top_events.csv as written): the same content is never mailed twice."""
    data = report.csv_path.read_bytes() if report.csv_path.exists() else report.csv_bytes()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def read_send_marker(report: Report) -> dict[str, Any] | None:
    """The record of the last send of this report, or None when it was never sent."""
    path = report.folder / MARKER_NAME
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        log.warning("%s is unreadable: treating the report as never sent", path)
        return None


def default_subject(report: Report, *, new_events: int | None = None) -> str:
    """``TrailGuard daily risk report D: N findings >= 70 (top: CloudTrail StopLogging)``; ``update`` for a
    follow-up. N counts findings whose lead event scores at least 70."""
    head = f"TrailGuard daily risk report {report.day}"
    if new_events is not None:
        head += f" update: {new_events} new event{'s' if new_events != 1 else ''},"
    else:
        head += ":"
    subject = f"{head} {report.high_risk_findings} findings >= {HIGH_RISK:g}"
    if report.integrity and report.integrity.get("status") == "tampered":
        subject += ", CloudTrail evidence TAMPERED"
    if len(report.top_events):
        top = report.top_events.iloc[0]
        service = clean_text(top.get("eventSource"), 80).removesuffix(".amazonaws.com")
        name = clean_text(top.get("eventName"), 60)
        subject += f" (top: {' '.join(x for x in (_SERVICES.get(service, service), name) if x) or '-'})"
    return clean_text(subject, SUBJECT_LIMIT)


def build_message(
    report: Report,
    *,
    sender: str | None,
    recipients: str | Iterable[str],
    subject: str | None = None,
    previous: Mapping[str, Any] | None = None,
) -> EmailMessage:
    """The report as a mail; with ``previous`` (the marker of an earlier send) an update that says what is new."""
    addresses = parse_recipients(recipients)
    from_address = _address(sender or DEFAULT_SENDER, "sender")
    notice, new_groups, new_ids = (None, frozenset(), ())
    if previous is not None:
        notice, new_groups, new_ids = _update_notice(report, previous)
    if subject is None:
        subject = default_subject(report, new_events=None if previous is None else len(new_ids))
    domain = from_address.rsplit("@", 1)[1]
    chart_cid = make_msgid(domain=domain)

    msg = EmailMessage()
    msg["Subject"] = clean_text(subject, SUBJECT_LIMIT) or f"TrailGuard daily risk report {report.day}"
    msg["From"] = from_address
    msg["To"] = ", ".join(addresses)
    msg["Date"] = format_datetime(datetime.now(timezone.utc))
    msg["Message-ID"] = make_msgid(domain=domain)
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-TrailGuard-Report-Date"] = report.day
    msg["X-TrailGuard-Content-Hash"] = content_hash(report)
    earlier = str((previous or {}).get("message_id") or "")
    if _MESSAGE_ID.fullmatch(earlier):
        msg["In-Reply-To"] = earlier
        msg["References"] = earlier

    msg.set_content(report.text(notice=notice, new_groups=new_groups))
    msg.add_alternative(
        report.render_html(
            image_src="cid:" + chart_cid[1:-1], for_email=True, notice=notice, new_groups=new_groups
        ),
        subtype="html",
    )
    if report.chart_png:
        msg.get_payload()[1].add_related(
            report.chart_png, maintype="image", subtype="png", cid=chart_cid, disposition="inline",
            filename=f"trailguard-risk-{report.day}.png",
        )  # fmt: skip
    csv_data = report.csv_path.read_bytes() if report.csv_path.exists() else report.csv_bytes()
    msg.add_attachment(
        csv_data, maintype="text", subtype="csv", filename=f"trailguard-top-events-{report.day}.csv"
    )
    page = report.quality_page
    if page is not None and page.exists():
        if page.stat().st_size <= MAX_ATTACHED_PAGE:
            msg.add_attachment(page.read_bytes(), maintype="text", subtype="html",
                               filename=f"trailguard-quality-{report.day}.html")  # fmt: skip
        else:
            log.warning("%s is larger than %d bytes: not attached", page, MAX_ATTACHED_PAGE)
    return msg


def parse_recipients(recipients: str | Iterable[str]) -> list[str]:
    """Bare addresses from a list or a comma/semicolon separated string; anything else is refused."""
    items = [recipients] if isinstance(recipients, str) else list(recipients)
    out: list[str] = []
    for item in items:
        for part in re.split(r"[,;]", str(item)):
            if part.strip():
                address = _address(part, "recipient")
                if address not in out:
                    out.append(address)
    if not out:
        raise ValueError("no recipients: give at least one e-mail address")
    return out


def _address(text: str, role: str) -> str:
    """A bare address from ``a@b.c`` or ``Name <a@b.c>``; control characters (a header injection attempt)
    make it invalid rather than being quietly joined into another address."""
    cleaned = clean_text(text, 320)
    _, address = parseaddr(cleaned)
    valid = (
        cleaned == str(text).strip()
        and _ADDRESS.fullmatch(address or "") is not None
        and (cleaned == address or cleaned.endswith(f"<{address}>"))
    )
    if not valid:
        raise ValueError(f"not a valid {role} e-mail address: {cleaned!r}")
    return address


def _update_notice(
    report: Report, previous: Mapping[str, Any]
) -> tuple[Notice, frozenset[str], tuple[str, ...]]:
    """What changed since the last mail: findings not in it, findings whose score or count moved, and how
    many of its findings left the top."""
    before = {e.get("group"): e for e in previous.get("events", []) if isinstance(e, Mapping)}
    rows = report.top_events.to_dict("records")
    new = [r for r in rows if r["group_id"] not in before]
    changed = [
        (r, before[r["group_id"]])
        for r in rows
        if r["group_id"] in before
        and (float(r["risk_score"]) != float(before[r["group_id"]].get("risk_score", -1))
             or int(r["count"]) != int(before[r["group_id"]].get("count", -1)))
    ]  # fmt: skip
    gone = len(set(before) - {r["group_id"] for r in rows})
    when = clean_text(previous.get("sent_at"), 40) or "earlier"
    lines = [f"{len(new)} new event{'s' if len(new) != 1 else ''} not in that mail" + (":" if new else ".")]
    lines += [
        f"NEW #{r['rank']}  risk {float(r['risk_score']):.1f}  {clean_text(r.get('eventName'), 80)} by "
        f"{clean_text(r.get('principal'), 120) or '-'}  (eventID {clean_text(r.get('eventID'), 128)})"
        for r in new
    ]
    lines += [
        f"changed #{r['rank']}  {clean_text(r.get('eventName'), 80)}: risk {float(old.get('risk_score', 0)):.1f} -> "
        f"{float(r['risk_score']):.1f}, count {old.get('count')} -> {r['count']}"
        for r, old in changed
    ]
    if gone:
        lines.append(f"{gone} event{'s' if gone != 1 else ''} of that mail no longer in the top {len(rows)}")
    if not new and not changed and not gone:
        lines.append("The same events; their details (times, reasons or order) changed.")
    notice = Notice(
        title=f"Update to the report mailed {when}: late events were scored since.", lines=tuple(lines)
    )
    return notice, frozenset(r["group_id"] for r in new), tuple(str(r["eventID"]) for r in new)


# -- sending ----------------------------------------------------------------------------------------------
def send_report(
    report: Report,
    *,
    smtp: SmtpSettings | None,
    recipients: str | Iterable[str],
    sender: str | None = None,
    force: bool = False,
) -> SendResult:
    """Mail the report once. Same content as the last send: nothing is sent; changed content: an update;
    ``force``: send anyway. Without ``smtp`` only ``report.eml`` is written (and no marker)."""
    digest = content_hash(report)
    previous = read_send_marker(report)
    marker_path = report.folder / MARKER_NAME
    if previous is not None and previous.get("content_hash") == digest and not force:
        return SendResult(
            status="already_sent", day=report.day, subject=previous.get("subject"),
            recipients=tuple(previous.get("recipients", ())), message_id=previous.get("message_id"),
            marker_path=marker_path,
            message=f"report {report.day} already sent at {previous.get('sent_at')} with the same content "
            f"(message {previous.get('message_id')}): not sent again; force=True sends anyway",
        )  # fmt: skip
    update_of = previous if previous is not None and previous.get("content_hash") != digest else None
    msg = build_message(
        report, sender=sender or (smtp.sender if smtp else None), recipients=recipients, previous=update_of
    )
    new_events = () if update_of is None else _update_notice(report, update_of)[2]
    addresses = parse_recipients(recipients)
    eml_path = write_bytes_atomic(bytes(msg), report.folder / EML_NAME)
    common = {"day": report.day, "subject": str(msg["Subject"]), "recipients": tuple(addresses),
              "message_id": str(msg["Message-ID"]), "eml_path": eml_path, "new_events": new_events}  # fmt: skip
    if smtp is None:
        return SendResult(
            status="written", marker_path=None, **common,
            message=f"no SMTP server configured: the mail for {report.day} was written to {eml_path}, not sent",
        )  # fmt: skip

    refused = _deliver(msg, smtp, addresses, eml_path)
    kind = "update" if update_of is not None else "report"
    entry = {
        "date": report.day, "kind": kind, "message_id": str(msg["Message-ID"]), "subject": str(msg["Subject"]),
        "recipients": addresses, "refused": refused, "sent_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "smtp": smtp.endpoint, "content_hash": digest, "forced": bool(force),
        "events": [{"eventID": r["eventID"], "group": r["group_id"], "risk_score": r["risk_score"], "count": r["count"]}
                   for r in report.top_events.to_dict("records")],
    }  # fmt: skip
    history = list((previous or {}).get("history", []))
    if previous is not None:
        history.append({k: v for k, v in previous.items() if k not in ("history", "events")})
    entry["history"] = history[-HISTORY_LIMIT:]
    write_bytes_atomic(json.dumps(entry, indent=2, default=str).encode("utf-8"), marker_path)
    delivered = [a for a in addresses if a not in refused]
    text = (f"{'update for' if kind == 'update' else 'report'} {report.day} sent via {smtp.endpoint} to "
            f"{', '.join(delivered)}" + (f" ({len(new_events)} new events)" if kind == "update" else ""))  # fmt: skip
    if refused:
        text += f"; refused by the server: {', '.join(refused)}"
    log.log(logging.WARNING if refused else logging.INFO, "%s", text)
    return SendResult(
        status="update_sent" if kind == "update" else "sent", marker_path=marker_path, refused=refused,
        message=text, **common,
    )  # fmt: skip


def _deliver(
    msg: EmailMessage, smtp: SmtpSettings, addresses: list[str], eml_path: DataPath
) -> dict[str, str]:
    """Send over SMTP; any failure becomes a ReportSendError that says where the mail is kept."""
    context = ssl_lib.create_default_context()
    try:
        if smtp.ssl:
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                smtp.host, smtp.port, timeout=smtp.timeout, context=context
            )
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
        try:
            client.ehlo()
            if smtp.starttls and not smtp.ssl:
                if not client.has_extn("starttls"):
                    raise ReportSendError(
                        f"SMTP server {smtp.endpoint} does not offer STARTTLS; refusing to send in clear text. "
                        "For a local test server use ?disable_tls=true (or the connection extra disable_tls)"
                    )
                client.starttls(context=context)
                client.ehlo()
            if smtp.username:
                client.login(smtp.username, smtp.password or "")
            refused = client.send_message(msg, to_addrs=addresses)
        finally:
            try:
                client.quit()
            except (OSError, smtplib.SMTPException):
                client.close()
    except ReportSendError as exc:
        raise ReportSendError(f"{exc}. The mail is kept at {eml_path}") from None
    except (OSError, smtplib.SMTPException) as exc:
        raise ReportSendError(
            f"could not send the report via SMTP {smtp.endpoint}: {type(exc).__name__}: {exc}. "
            f"The mail is kept at {eml_path}; nothing was marked as sent, so a retry sends it"
        ) from exc
    return {
        address: f"{code} {reply.decode('utf-8', 'replace')}" for address, (code, reply) in refused.items()
    }


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in _TRUE if value is not None else False
