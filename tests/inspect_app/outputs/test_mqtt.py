"""MQTT against a real Mosquitto: QoS 1 per line and kind, a retained last state, and every
decision reaching a persistent subscriber exactly once after dedup across a broker restart."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from inspect_app.lines import add_line
from inspect_app.outputs import outbox
from inspect_app.outputs.core import Backoff
from inspect_app.outputs.worker import OutputWorker
from inspect_app.storage.tables import Inspection, OutboxMessage, OutputDelivery

pytestmark = pytest.mark.slow


def _decide(session: Session, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        row = Inspection(
            line_id="line-1", image_sha256=f"{i:064d}", image_format="png", width=1,
            height=1, brightness=1.0, contrast=1.0, sharpness=1.0, level="full",
            pass_threshold=0.9, fail_threshold=0.9, route="auto",
            decision="pass" if i % 3 else "fail", decided_by="model",
        )  # fmt: skip
        session.add(row)
        session.flush()
        outbox.enqueue_decision(session, row, cause="model")
        session.commit()


def _drain(worker: OutputWorker, done: Callable[[], bool], rounds: int = 600) -> None:
    import time

    for _ in range(rounds):
        worker.run_once()
        if done():
            return
        time.sleep(0.02)
    with Session(worker.engine) as s:
        rows = [
            (r.message_id, r.attempts, r.delivered_at is not None, r.last_error)
            for r in s.exec(select(OutputDelivery))
        ]
    pytest.fail(f"not everything arrived: {rows}")


def _retained(port: int, topic: str) -> dict[str, Any]:
    """What a subscriber that connects now reads at once on `topic`."""
    got: list[dict[str, Any]] = []
    arrived = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="late-reader")

    def on_message(c, userdata, message):  # type: ignore[no-untyped-def]
        got.append({"retain": message.retain, **json.loads(message.payload)})
        arrived.set()

    client.on_message = on_message
    client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert arrived.wait(30), f"nothing retained on {topic}"
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0]


def test_every_decision_arrives_once_across_a_broker_restart(
    session: Session, engine: Engine, mosquitto: Any, mqtt_subscriber: Any
) -> None:
    add_line(session, "line-1", "shadow")
    outbox.add_destination(
        session, "line-1", kind="mqtt", url=mosquitto.url, actor="sam", reason="the PLC listens"
    )
    subscriber = mqtt_subscriber("inspect/line-1/#")
    worker = OutputWorker(engine, backoff=Backoff(0.05, 0.2), timeout_seconds=2,
                          lease_seconds=10)  # fmt: skip
    _decide(session, 5)
    _drain(worker, lambda: len(subscriber.accepted) == 5)
    assert subscriber.retained["inspect/line-1/decision/last"]["seq"] == 5

    mosquitto.stop()  # the broker goes away: deliveries fail and back off, nothing is lost
    _decide(session, 5, start=5)
    for _ in range(3):
        worker.run_once()
    with Session(engine) as s:
        failing = s.exec(
            select(OutputDelivery).where(col(OutputDelivery.delivered_at).is_(None))
        ).first()
        assert failing is not None and failing.attempts >= 1 and failing.last_error
    mosquitto.start()  # same port, same persistence: the subscriber's session survives
    _drain(worker, lambda: len(subscriber.accepted) == 10)

    with Session(engine) as s:
        ids = [
            m.delivery_id for m in s.exec(select(OutboxMessage).order_by(col(OutboxMessage.seq)))
        ]
    assert [p["delivery_id"] for p in subscriber.accepted] == ids  # each once, in order
    assert [p["seq"] for p in subscriber.accepted] == list(range(1, 11))
    last = _retained(mosquitto.port, "inspect/line-1/decision/last")
    assert last["retain"] and last["seq"] == 10
    worker.stop()
