"""Automation destinations: what they are (parsed from one JSON list) and how a message reaches each.

AWS destinations go through boto3 (SNS ``Publish``, EventBridge ``PutEvents``, Lambda ``Invoke`` with
``InvocationType=Event``), with botocore's standard retry mode for throttling. Slack incoming webhooks
and generic webhooks are a JSON POST (not AWS, no SDK needed); a webhook with a secret carries an
HMAC-SHA256 signature of ``<timestamp>.<body>``, so the receiver can check who sent it and when.

Errors come out as :class:`DeliveryError` with ``transient`` set for what a retry may fix (throttling,
5xx, a refused connection) and unset for what only a change of configuration fixes (no such topic,
access denied, a 404 webhook): the DAG retries the first and fails the second at once.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from trailguard.respond.message import (
    ALERT_DETAIL_TYPE,
    ALERT_SCHEMA_ID,
    DETAIL_TYPE,
    EVENT_SOURCE,
    chat_text,
    message_json,
    slack_escape,
)
from trailguard.store.settings import ConfigError

log = logging.getLogger(__name__)

TYPES = ("sns", "eventbridge", "lambda", "slack", "webhook")
AWS_TYPES = ("sns", "eventbridge", "lambda")
SIGNATURE_HEADER = "X-TrailGuard-Signature"
TIMESTAMP_HEADER = "X-TrailGuard-Timestamp"
DELIVERY_HEADER = "X-TrailGuard-Delivery"
HTTP_TIMEOUT = 10.0
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_TRANSIENT_CODES = {
    "Throttling", "ThrottlingException", "ThrottledException", "TooManyRequestsException", "RequestLimitExceeded",
    "ServiceUnavailable", "ServiceUnavailableException", "InternalError", "InternalFailure", "InternalErrorException",
    "KMSThrottlingException", "EC2ThrottledException", "SlowDown", "RequestTimeout",
}  # fmt: skip
_KEYS = {
    "name",
    "type",
    "target",
    "min_score",
    "secret",
    "region",
    "endpoint_url",
    "aws_conn_id",
    "conn_id",
    "alerts",
}


class DeliveryError(RuntimeError):
    """A message did not reach a destination; ``transient`` says whether a retry may succeed."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class Destination:
    """One place findings go. ``target``: topic ARN, event bus name or ARN, function name or ARN, or URL."""

    name: str
    type: str
    target: str
    min_score: float
    secret: str | None = field(default=None, repr=False)
    region: str | None = None
    endpoint_url: str | None = None
    aws_conn_id: str | None = None  # Airflow only: the connection whose credentials the AWS client uses
    conn_id: str | None = None  # Airflow only: a connection holding the URL (host) and the secret (password)
    alerts: bool = False  # also receives operational alerts (failed tasks, silent trails)

    def describe(self) -> str:
        target = self.target if self.type in AWS_TYPES else _redacted_url(self.target)
        return f"{self.name} ({self.type} {target}, score >= {self.min_score:g})"


def _redacted_url(url: str) -> str:
    """Scheme and host only: a Slack webhook URL is itself the secret."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}/…"


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def _check_url(name: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and _is_loopback(parts.hostname):
        return  # a local receiver (tests, a sidecar); anything else must be https
    raise ConfigError(
        f"destination {name}: target must be an https:// URL (http only to localhost), got {url[:80]!r}"
    )


def parse_destinations(raw: str | list | None, *, default_min_score: float) -> list[Destination]:
    """Destinations from JSON (``TRAILGUARD_NOTIFY_DESTINATIONS`` or the Variable ``trailguard_notify_destinations``):
    a list of ``{"name", "type", "target", "min_score"?, "secret"?, "region"?, "endpoint_url"?}``.

    Raises :class:`ConfigError` with what to fix for anything malformed: a wrong destination should stop
    the run, not silently drop findings.
    """
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return []
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"notify destinations are not valid JSON ({exc.msg} at character {exc.pos})"
            ) from None
    if isinstance(raw, Mapping):
        raw = [raw]
    if not isinstance(raw, list):
        raise ConfigError("notify destinations must be a JSON list of objects with name, type and target")
    out: list[Destination] = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, Mapping):
            raise ConfigError(f"notify destination #{index} is not an object")
        kind = str(entry.get("type", "")).strip().lower()
        name = str(entry.get("name") or kind or f"#{index}")
        if kind not in TYPES:
            raise ConfigError(f"destination {name}: unknown type {kind!r}; use one of {', '.join(TYPES)}")
        if not _NAME.fullmatch(name):
            raise ConfigError(f"destination {name[:70]!r}: a name is 1-64 letters, digits, '_', '-' or '.'")
        unknown = set(entry) - _KEYS
        if unknown:
            raise ConfigError(f"destination {name}: unknown key(s) {', '.join(sorted(unknown))}")
        target = str(entry.get("target") or "").strip()
        if not target and not entry.get("conn_id"):
            raise ConfigError(f"destination {name}: 'target' is missing (topic ARN, bus, function or URL)")
        if target and kind in ("slack", "webhook"):
            _check_url(name, target)
        try:
            min_score = float(entry.get("min_score", default_min_score))
        except (TypeError, ValueError):
            raise ConfigError(f"destination {name}: min_score must be a number 0-100") from None
        if not 0 <= min_score <= 100:
            raise ConfigError(f"destination {name}: min_score must be a number 0-100")
        if any(d.name == name for d in out):
            raise ConfigError(f"destination {name}: the name is used twice (it keys the sent-ledger)")
        out.append(
            Destination(
                name=name,
                type=kind,
                target=target,
                min_score=min_score,
                secret=entry.get("secret") or None,
                region=entry.get("region") or None,
                endpoint_url=entry.get("endpoint_url") or None,
                aws_conn_id=entry.get("aws_conn_id") or None,
                conn_id=entry.get("conn_id") or None,
                alerts=bool(entry.get("alerts", False)),
            )
        )
    return out


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The webhook signature header value: ``sha256=`` + hex HMAC-SHA256 of ``<timestamp>.<body>``."""
    digest = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def region_of(arn: str) -> str | None:
    parts = arn.split(":")
    return parts[3] if arn.startswith("arn:") and len(parts) > 4 and parts[3] else None


def client_config() -> Any:
    """botocore's standard retry mode (throttling and 5xx retried with backoff) and short timeouts."""
    from botocore.config import Config

    return Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=5, read_timeout=15)


def default_client_factory(service: str, destination: Destination) -> Any:
    """A boto3 client from the standard credential chain, in the target's region (from its ARN)."""
    import boto3

    kwargs: dict[str, Any] = {"config": client_config()}
    region = destination.region or region_of(destination.target)
    if region:
        kwargs["region_name"] = region
    if destination.endpoint_url:
        kwargs["endpoint_url"] = destination.endpoint_url
    return boto3.client(service, **kwargs)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201
        return None  # a webhook answering with a redirect is an error, not a hop to follow


@dataclass
class Delivery:
    """Sends a message to a destination; ``client_factory(service, destination)`` makes the boto3 clients
    (the Airflow glue passes one that uses its AWS connection)."""

    client_factory: Callable[[str, Destination], Any] = default_client_factory
    timeout: float = HTTP_TIMEOUT
    _clients: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)

    def send(self, destination: Destination, message: Mapping[str, Any], delivery_key: str) -> str:
        """Deliver; returns the destination's id for it (message id, event id, HTTP status)."""
        sender = getattr(self, f"_send_{destination.type}")
        try:
            return sender(destination, message, delivery_key)
        except (DeliveryError, ConfigError):
            raise
        except Exception as exc:  # botocore's errors, classified without importing botocore at module level
            raise _classify(destination, exc) from exc

    def _client(self, service: str, destination: Destination) -> Any:
        key = (service, destination.name)
        if key not in self._clients:
            self._clients[key] = self.client_factory(service, destination)
        return self._clients[key]

    def _send_sns(self, destination: Destination, message: Mapping[str, Any], delivery_key: str) -> str:
        kwargs: dict[str, Any] = {
            "TopicArn": destination.target,
            "Message": message_json(message),
            "Subject": _subject(message),
            "MessageAttributes": {"schema": {"DataType": "String", "StringValue": message["schema"]}},
        }
        if "score" in message:  # subscription filter policies can select on score and severity
            kwargs["MessageAttributes"].update(
                score={"DataType": "Number", "StringValue": f"{message['score']:g}"},
                severity={"DataType": "String", "StringValue": message["severity"]},
            )
        if destination.target.endswith(".fifo"):
            kwargs.update(MessageGroupId="trailguard", MessageDeduplicationId=delivery_key[:128])
        return self._client("sns", destination).publish(**kwargs)["MessageId"]

    def _send_eventbridge(
        self, destination: Destination, message: Mapping[str, Any], delivery_key: str
    ) -> str:
        entry = {
            "Source": EVENT_SOURCE,
            "DetailType": ALERT_DETAIL_TYPE if message["schema"] == ALERT_SCHEMA_ID else DETAIL_TYPE,
            "Detail": message_json(message),
            "EventBusName": destination.target,
        }
        response = self._client("events", destination).put_events(Entries=[entry])
        result = response["Entries"][0]
        if response.get("FailedEntryCount") or result.get("ErrorCode"):
            code = result.get("ErrorCode", "unknown")
            raise DeliveryError(
                f"{destination.name}: EventBridge refused the event ({code}: {result.get('ErrorMessage', '')})",
                transient=code in _TRANSIENT_CODES,
            )
        return result["EventId"]

    def _send_lambda(self, destination: Destination, message: Mapping[str, Any], delivery_key: str) -> str:
        response = self._client("lambda", destination).invoke(
            FunctionName=destination.target,
            InvocationType="Event",
            Payload=message_json(message).encode("utf-8"),
        )
        status = int(response.get("StatusCode", 0))
        if status != 202:
            raise DeliveryError(
                f"{destination.name}: Lambda answered {status}, expected 202", transient=status >= 500
            )
        return response.get("ResponseMetadata", {}).get("RequestId") or str(status)

    def _send_slack(self, destination: Destination, message: Mapping[str, Any], delivery_key: str) -> str:
        text = (
            chat_text(message)
            if "score" in message
            else "\n".join([message["subject"], *message["lines"]])[:3000]
        )
        body = json.dumps({"text": slack_escape(text)}, ensure_ascii=False).encode("utf-8")
        return self._post(destination, body, {})

    def _send_webhook(self, destination: Destination, message: Mapping[str, Any], delivery_key: str) -> str:
        body = message_json(message).encode("utf-8")
        headers = {DELIVERY_HEADER: delivery_key}
        if destination.secret:
            timestamp = str(int(time.time()))
            headers.update(
                {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(destination.secret, timestamp, body)}
            )
        return self._post(destination, body, headers)

    def _post(self, destination: Destination, body: bytes, headers: dict[str, str]) -> str:
        if not destination.target:
            raise ConfigError(
                f"destination {destination.name}: no URL (connection {destination.conn_id} not resolved)"
            )
        _check_url(destination.name, destination.target)
        request = urllib.request.Request(
            destination.target,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": "trailguard",
                **headers,
            },
        )
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(request, timeout=self.timeout) as response:
                return str(response.status)
        except urllib.error.HTTPError as exc:
            transient = exc.code == 429 or exc.code >= 500
            raise DeliveryError(
                f"{destination.describe()}: HTTP {exc.code} {exc.reason}", transient=transient
            ) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeliveryError(
                f"{destination.describe()}: cannot connect ({reason})", transient=True
            ) from None


def _subject(message: Mapping[str, Any]) -> str:
    """An SNS subject: ASCII-printable, at most 100 characters (SNS refuses others)."""
    if "score" in message:
        text = f"TrailGuard {message['severity']} risk {message['score']:g}: {message.get('title', '')}"
    else:
        text = str(message.get("subject", "TrailGuard alert"))
    text = "".join(c if " " <= c <= "~" else "?" for c in text)
    return text[:100]


def _classify(destination: Destination, exc: Exception) -> DeliveryError:
    """botocore's exceptions as transient (throttling, 5xx, network) or not (missing resource, access)."""
    from botocore.exceptions import (
        ClientError,
        NoCredentialsError,
        NoRegionError,
        ParamValidationError,
    )
    from botocore.exceptions import (
        ConnectionError as BotoConnectionError,
    )

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        transient = code in _TRANSIENT_CODES or status >= 500
        return DeliveryError(
            f"{destination.describe()}: {code or status}: {error.get('Message', '')}", transient=transient
        )
    if isinstance(exc, BotoConnectionError):
        return DeliveryError(f"{destination.describe()}: cannot connect ({exc})", transient=True)
    if isinstance(exc, NoCredentialsError | NoRegionError | ParamValidationError):
        return DeliveryError(f"{destination.describe()}: {exc}", transient=False)
    return DeliveryError(f"{destination.describe()}: {type(exc).__name__}: {exc}", transient=True)
