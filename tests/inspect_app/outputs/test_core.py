"""The pure rules: signatures a receiver can check, the backoff schedule, topics, settings."""

from __future__ import annotations

import pytest

from inspect_app.outputs.core import (
    Backoff,
    DestinationError,
    alarm_payload,
    body_of,
    check_destination,
    last_state_topic,
    signature,
    signed_headers,
    topic,
    verify_signature,
)

SECRET = "0123456789abcdef-secret"


def test_a_receiver_accepts_our_signature_and_refuses_tampering_and_stale_timestamps() -> None:
    body = body_of({"delivery_id": "d1", "seq": 1, "decision": "pass"})
    headers = signed_headers(SECRET, 1_700_000_000, body, "d1")
    ts, sig = headers["X-Inspect-Timestamp"], headers["X-Inspect-Signature"]
    assert sig.startswith("v1=") and len(sig) == 3 + 64
    assert verify_signature(SECRET, ts, body, sig, now=1_700_000_100)
    assert not verify_signature(SECRET, ts, body.replace(b"pass", b"fail"), sig, now=1_700_000_100)
    assert not verify_signature("another secret of 16+", ts, body, sig, now=1_700_000_100)
    # the same bytes signed for another time do not pass as this one
    assert not verify_signature(SECRET, "1700000001", body, sig, now=1_700_000_100)
    # a captured request played back later is refused
    assert not verify_signature(SECRET, ts, body, sig, now=1_700_000_000 + 301)
    assert not verify_signature(SECRET, None, body, sig, now=1_700_000_000)
    assert not verify_signature(SECRET, "soon", body, sig, now=1_700_000_000)


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    body = b'{"a":1}'
    expected = hmac.new(SECRET.encode(), b"42." + body, hashlib.sha256).hexdigest()
    assert signature(SECRET, 42, body) == f"v1={expected}"


def test_the_body_is_the_same_bytes_on_every_attempt() -> None:
    assert body_of({"b": 1, "a": [1, 2]}) == body_of({"a": [1, 2], "b": 1}) == b'{"a":[1,2],"b":1}'


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(base_seconds=1.0, max_seconds=30.0)
    assert [backoff.delay(n) for n in range(0, 8)] == [0.0, 1, 2, 4, 8, 16, 30, 30]
    assert backoff.delay(10_000) == 30.0
    with pytest.raises(ValueError):
        Backoff(base_seconds=5.0, max_seconds=1.0)


def test_topics_per_line_and_kind() -> None:
    assert topic("inspect", "line-1", "decision") == "inspect/line-1/decision"
    assert last_state_topic("inspect", "line-1", "alarm") == "inspect/line-1/alarm/last"


@pytest.mark.parametrize(
    ("kind", "url", "secret", "problem"),
    [
        ("webhook", "ftp://mes/hook", "x" * 16, "http"),
        ("webhook", "http://mes/hook", "short", "secret"),
        ("webhook", "http://mes/hook", None, "secret"),
        ("mqtt", "http://broker:1883", None, "mqtt://"),
        ("mqtt", "mqtt://broker:port", None, "malformed"),
        ("webhook", "http://[::1/hook", "x" * 16, "malformed"),
        ("webhook", "http://mes/hook\x00", "x" * 16, "NUL"),
        ("fax", "http://mes", None, "kind"),
    ],
)
def test_destinations_that_cannot_work_are_refused(
    kind: str, url: str, secret: str | None, problem: str
) -> None:
    with pytest.raises(DestinationError, match=problem):
        check_destination(kind, url, secret)


def test_an_alarm_message_carries_the_transition() -> None:
    message = alarm_payload(
        delivery_id="d", seq=3, line_id="line-1",
        transition={"alarm": "gate_refusals_high", "from_status": "pending",
                    "to_status": "firing", "value": 0.4, "internal": "x"},
    )  # fmt: skip
    assert message["kind"] == "alarm" and message["to_status"] == "firing"
    assert "internal" not in message
