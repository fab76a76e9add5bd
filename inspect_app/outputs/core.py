"""The rules of line outputs, with no I/O: what a message says, how a webhook body is signed
and checked, how long a failing destination waits, which MQTT topic a message goes to.

Delivery is at least once: a message can arrive twice (a crash between the receiver's answer
and the record of it), always with the same `delivery_id` and the same bytes, so a receiver
that keeps the ids it has seen gets each message exactly once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

SIGNATURE_HEADER = "X-Inspect-Signature"
TIMESTAMP_HEADER = "X-Inspect-Timestamp"
DELIVERY_HEADER = "X-Inspect-Delivery"
SIGNATURE_SCHEME = "v1"  # v1=<hex HMAC-SHA256 of "<timestamp>.<body>">
# A receiver refuses a timestamp further than this from its clock, so a captured request
# cannot be played back later (a retry is signed afresh, so it is never refused).
DEFAULT_TOLERANCE_SECONDS = 300.0


class DestinationKind(StrEnum):
    WEBHOOK = "webhook"
    MQTT = "mqtt"


class MessageKind(StrEnum):
    DECISION = "decision"  # a part's final decision (the model's, a label's, a relabel's)
    ALARM = "alarm"  # an alarm rule changed state on the line


class DeliveryState(StrEnum):
    """What supervisors filter on: delivered; waiting (never tried, or stalled behind an
    older message); failing (tried and not delivered yet)."""

    DELIVERED = "delivered"
    WAITING = "waiting"
    FAILING = "failing"


class DestinationError(ValueError):
    """A destination's settings that cannot work; the message says what to change."""


def check_destination(kind: str, url: str, secret: str | None) -> DestinationKind:
    """The kind, once the URL fits it: an http(s) URL with a secret for a webhook, an
    mqtt://host:port for a broker."""
    try:
        parsed_kind = DestinationKind(kind)
    except ValueError:
        kinds = ", ".join(k.value for k in DestinationKind)
        raise DestinationError(f"unknown destination kind {kind!r}: one of {kinds}") from None
    if any(c in url for c in "\x00\r\n") or (secret is not None and "\x00" in secret):
        raise DestinationError("a URL or secret may not contain NUL or line breaks")
    try:
        parts = urlsplit(url)
        host, _ = parts.hostname, parts.port  # each raises on a malformed URL
    except ValueError as exc:
        raise DestinationError(f"malformed URL {url!r}: {exc}") from None
    if parsed_kind is DestinationKind.WEBHOOK:
        if parts.scheme not in ("http", "https") or not host:
            raise DestinationError(f"a webhook needs an http:// or https:// URL, got {url!r}")
        if not secret or len(secret) < 16:
            raise DestinationError("a webhook needs a shared secret of at least 16 characters")
    elif parts.scheme != "mqtt" or not host:
        raise DestinationError(f"an MQTT destination needs mqtt://host[:port], got {url!r}")
    return parsed_kind


def decision_payload(
    *,
    delivery_id: str,
    seq: int,
    line_id: str,
    cause: str,
    inspection: dict[str, Any],
) -> dict[str, Any]:
    """A final decision as the line's software reads it. `cause`: model (decided at once),
    label (a human decided a pending part) or relabel (a human changed that decision): the
    latest message of an inspection, by `seq`, holds."""
    return {
        "delivery_id": delivery_id,
        "seq": seq,
        "line_id": line_id,
        "kind": MessageKind.DECISION.value,
        "cause": cause,
        **inspection,
    }


def alarm_payload(
    *, delivery_id: str, seq: int, line_id: str, transition: dict[str, Any]
) -> dict[str, Any]:
    """An alarm's change of state (alarms.Transition.to_dict()) as a message."""
    keep = ("alarm", "metric", "severity", "from_status", "to_status", "value", "threshold",
            "clear_threshold", "at", "reason", "actions")  # fmt: skip
    return {
        "delivery_id": delivery_id,
        "seq": seq,
        "line_id": line_id,
        "kind": MessageKind.ALARM.value,
        **{k: transition.get(k) for k in keep},
    }


def body_of(payload: dict[str, Any]) -> bytes:
    """The bytes sent: the same on every attempt, so a signature check and a dedup by
    content both hold across retries."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The header value: ``v1=`` and the hex HMAC-SHA256 of ``<timestamp>.<body>``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SIGNATURE_SCHEME}={mac.hexdigest()}"


def signed_headers(secret: str, timestamp: int, body: bytes, delivery_id: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
        DELIVERY_HEADER: delivery_id,
    }


def verify_signature(
    secret: str,
    timestamp: str | None,
    body: bytes,
    header: str | None,
    *,
    now: float,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
) -> bool:
    """What a receiver checks: the timestamp is recent and the signature is ours (compared in
    constant time). `now` is the receiver's clock in Unix seconds."""
    if timestamp is None or header is None:
        return False
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent) > tolerance_seconds:
        return False
    return hmac.compare_digest(signature(secret, sent, body), header)


@dataclass(frozen=True)
class Backoff:
    """Wait `base_seconds * 2**(attempts - 1)` after a failed attempt, at most `max_seconds`:
    a receiver that is down for an hour is asked about a dozen times, not thousands, and one
    back up is found within `max_seconds`."""

    base_seconds: float = 1.0
    max_seconds: float = 300.0

    def __post_init__(self) -> None:
        if not 0 < self.base_seconds <= self.max_seconds:
            raise ValueError("backoff needs 0 < base_seconds <= max_seconds")

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failed attempt (1 for the first)."""
        if attempts < 1:
            return 0.0
        # 2**60 seconds is past any cap; keep the exponent from overflowing a float
        return min(self.max_seconds, self.base_seconds * 2.0 ** min(attempts - 1, 60))


def topic(prefix: str, line_id: str, kind: str) -> str:
    """Every message of a kind on a line: ``<prefix>/<line>/<kind>`` (QoS 1, not retained)."""
    return f"{prefix}/{line_id}/{kind}"


def last_state_topic(prefix: str, line_id: str, kind: str) -> str:
    """The line's latest message of a kind, retained, so a subscriber that connects later
    reads where the line stands at once: ``<prefix>/<line>/<kind>/last``."""
    return f"{topic(prefix, line_id, kind)}/last"


def delivery_state(delivered: bool, last_error: str | None) -> DeliveryState:
    """A replay clears the error, so a message asked for again is waiting, not failing."""
    if delivered:
        return DeliveryState.DELIVERED
    return DeliveryState.FAILING if last_error is not None else DeliveryState.WAITING
