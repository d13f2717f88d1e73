"""A local mail catcher for `make up`: an SMTP server on 127.0.0.1 that keeps every message as a `.eml`
file, and a tiny read-only web page listing them. Nothing is ever relayed.

    python scripts/smtp_catcher.py --smtp-port 1025 --ui-port 8025 --mail-dir .run/mail
"""

from __future__ import annotations

import argparse
import email
import email.policy
import html
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

log = logging.getLogger("smtp_catcher")

_NAME = re.compile(r"^\d{8}T\d{12}Z-[0-9a-f]{8}\.eml$")


class SaveToFolder:
    """aiosmtpd handler: each message becomes one `.eml` file (written to a temp name, then renamed)."""

    def __init__(self, mail_dir: Path) -> None:
        self.mail_dir = mail_dir

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd's hook name)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"{stamp}-{uuid.uuid4().hex[:8]}.eml"
        # The envelope says who really receives the message (Bcc included); keep it with the message.
        head = (
            f"X-Envelope-From: {envelope.mail_from}\r\nX-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n"
        ).encode()
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        fd, tmp = tempfile.mkstemp(dir=self.mail_dir, prefix=".incoming-")
        with os.fdopen(fd, "wb") as out:
            out.write(head + content)
        os.replace(tmp, self.mail_dir / name)
        log.info("saved %s from %s to %s", name, envelope.mail_from, ", ".join(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


# -- web view ---------------------------------------------------------------------------------------------
def _messages(mail_dir: Path) -> list[Path]:
    return sorted((p for p in mail_dir.glob("*.eml") if _NAME.match(p.name)), reverse=True)


def _parse(path: Path) -> EmailMessage:
    with path.open("rb") as handle:
        return email.message_from_binary_file(handle, policy=email.policy.default)  # type: ignore[return-value]


def _header(msg: EmailMessage, name: str) -> str:
    try:
        return str(msg.get(name, ""))
    except Exception:  # a malformed header is shown raw rather than breaking the page
        return str(msg.get_all(name, [""])[0])


def _page(title: str, body: str) -> bytes:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border-bottom:1px solid #ddd;padding:.3em .8em;text-align:left}"
        "pre{white-space:pre-wrap;background:#f6f6f6;padding:1em}</style></head><body>"
        f"{body}</body></html>"
    ).encode()


def _list_page(mail_dir: Path) -> bytes:
    rows = []
    for path in _messages(mail_dir):
        msg = _parse(path)
        received = datetime.strptime(path.name[:22], "%Y%m%dT%H%M%S%fZ").strftime("%Y-%m-%d %H:%M:%S")
        cells = [received, _header(msg, "From"), _header(msg, "X-Envelope-To") or _header(msg, "To")]
        link = f"<a href='/message/{html.escape(path.name, quote=True)}'>{html.escape(_header(msg, 'Subject') or '(no subject)')}</a>"
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + f"<td>{link}</td></tr>")
    table = (
        "<table><tr><th>Received (UTC)</th><th>From</th><th>To</th><th>Subject</th></tr>"
        + "".join(rows)
        + "</table>"
        if rows
        else "<p>No messages yet.</p>"
    )
    title = f"TrailGuard mail catcher: {len(rows)} message(s)"
    return _page(title, f"<h1>{html.escape(title)}</h1><p>Folder: {html.escape(str(mail_dir))}</p>{table}")


def _message_page(path: Path) -> bytes:
    msg = _parse(path)
    headers = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in msg.items()
    )
    parts = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        kind = part.get_content_type()
        filename = part.get_filename()
        if part.get_content_maintype() == "text" and not filename:
            try:
                text = part.get_content()
            except Exception:
                text = part.get_payload(decode=True).decode("utf-8", "replace")
            parts.append(f"<h3>{html.escape(kind)}</h3><pre>{html.escape(text)}</pre>")
        else:
            size = len(part.get_payload(decode=True) or b"")
            parts.append(
                f"<h3>{html.escape(kind)}</h3><p>attachment {html.escape(filename or '')}, {size} bytes</p>"
            )
    subject = _header(msg, "Subject") or "(no subject)"
    body = (
        f"<p><a href='/'>all messages</a></p><h1>{html.escape(subject)}</h1>"
        f"<p>File: {html.escape(str(path))}</p><table>{headers}</table>{''.join(parts)}"
    )
    return _page(subject, body)


def make_handler(mail_dir: Path) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's hook name)
            path = unquote(self.path.split("?", 1)[0])
            if path == "/":
                self._send(HTTPStatus.OK, _list_page(mail_dir))
            elif path.startswith("/message/") and _NAME.match(name := path.removeprefix("/message/")):
                target = mail_dir / name
                if target.is_file():
                    self._send(HTTPStatus.OK, _message_page(target))
                else:
                    self._send(HTTPStatus.NOT_FOUND, _page("not found", "<p>No such message.</p>"))
            elif path == "/health":
                self._send(HTTPStatus.OK, b"OK", "text/plain")
            else:
                self._send(HTTPStatus.NOT_FOUND, _page("not found", "<p>Not found.</p>"))

        def _send(self, status: HTTPStatus, body: bytes, kind: str = "text/html; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
            log.debug("ui %s " + format, self.address_string(), *args)

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--smtp-port", type=int, default=int(os.environ.get("TRAILGUARD_SMTP_PORT") or 1025))
    parser.add_argument("--ui-port", type=int, default=int(os.environ.get("TRAILGUARD_MAIL_UI_PORT") or 8025))
    parser.add_argument("--mail-dir", type=Path, default=Path(".run/mail"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every SMTP line at INFO

    from aiosmtpd.controller import Controller

    mail_dir = args.mail_dir.resolve()
    mail_dir.mkdir(parents=True, exist_ok=True)
    controller = Controller(SaveToFolder(mail_dir), hostname=args.host, port=args.smtp_port)
    web = ThreadingHTTPServer((args.host, args.ui_port), make_handler(mail_dir))
    web.daemon_threads = True

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    controller.start()
    threading.Thread(target=web.serve_forever, name="mail-ui", daemon=True).start()
    log.info(
        "SMTP on %s:%d, web view on http://%s:%d, saving to %s",
        args.host,
        args.smtp_port,
        args.host,
        args.ui_port,
        mail_dir,
    )
    stop.wait()
    log.info("stopping")
    web.shutdown()
    web.server_close()
    controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
