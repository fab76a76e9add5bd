"""Nothing decided is lost or duplicated after dedup when the service is SIGKILLed in the
middle of a delivery and the broker restarts while it is down: the real `serve` process,
a real loopback webhook receiver and a real Mosquitto with a persistent subscriber."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, col, select

from inspect_app.accounts import add_camera_key
from inspect_app.lines import add_line
from inspect_app.outputs import outbox
from inspect_app.settings import Settings
from inspect_app.storage.db import make_engine, upgrade_database
from inspect_app.storage.tables import Inspection, Line, OutboxMessage

pytestmark = pytest.mark.slow

SECRET = "a shared secret of the line's MES"  # as the receiver fixture checks


def _post(url: str, camera_key: str, image: bytes, capture_id: str) -> None:
    response = httpx.post(
        f"{url}/api/v1/lines/line-1/images",
        content=image,
        headers={"X-Api-Key": camera_key, "Content-Type": "image/png"},
        params={"capture_id": capture_id},
        timeout=60,
    )
    assert response.status_code == 201, response.text


def test_every_decision_reaches_both_outputs_once_across_sigkill_and_broker_restart(
    tmp_path: Path,
    tiny_checkpoint: Path,
    running_service: Callable[..., Any],
    webhook_receiver: Any,
    mosquitto: Any,
    mqtt_subscriber: Any,
    toy_png: Callable[..., bytes],
    monkeypatch: pytest.MonkeyPatch,
    wait_for: Callable[..., None],
) -> None:
    data_dir = tmp_path / "service"
    data_dir.mkdir()
    engine = make_engine(Settings(data_dir=data_dir).resolved_database_url)
    upgrade_database(engine)
    with Session(engine, expire_on_commit=False) as db:
        add_line(db, "line-1", "shadow")
        line = db.get(Line, "line-1")
        assert line is not None  # the model decides every usable part (seeded: no evidence)
        line.level, line.pass_threshold, line.fail_threshold = "full", 0.51, 0.51
        db.add(line)
        db.commit()
        camera_key = add_camera_key(db, "line-1")
        outbox.add_destination(db, "line-1", kind="webhook", url=webhook_receiver.url,
                               secret=SECRET, actor="sam", reason="the MES")  # fmt: skip
        outbox.add_destination(db, "line-1", kind="mqtt", url=mosquitto.url, actor="sam",
                               reason="the PLC")  # fmt: skip
    # short timings so a killed process's lease (5 s) and the backoff pass quickly
    for name, value in [("POLL_SECONDS", "0.1"), ("BACKOFF_SECONDS", "0.1"),
                        ("BACKOFF_MAX_SECONDS", "0.5"), ("TIMEOUT_SECONDS", "2"),
                        ("LEASE_SECONDS", "5")]:  # fmt: skip
        monkeypatch.setenv(f"INSPECT_OUTPUTS_{name}", value)
    subscriber = mqtt_subscriber("inspect/line-1/#")
    log = tmp_path / "serve.log"

    webhook_receiver.hold_seq = 3  # take message 3, then keep the sender waiting
    with running_service(data_dir, weights=tiny_checkpoint, log=log) as service:
        for i in range(5):
            _post(service.url, camera_key, toy_png("ok" if i % 2 else "scratch", i), f"a-{i}")
        wait_for(webhook_receiver.held.is_set, "message 3 at the webhook")
        service.process.send_signal(signal.SIGKILL)  # it never learns that 3 arrived
        service.process.wait(30)
    webhook_receiver.release.set()
    mosquitto.restart()  # while the service is down; the subscriber's session persists

    with running_service(data_dir, weights=tiny_checkpoint, log=log) as service:
        for i in range(5, 8):
            _post(service.url, camera_key, toy_png("ok" if i % 2 else "crack", i), f"b-{i}")
        with Session(engine) as db:
            decided = db.exec(
                select(Inspection.id).where(col(Inspection.decided_by).is_not(None))
            ).all()
        assert decided, "the model decided no part: nothing to deliver"

        def arrived() -> bool:
            n = len(decided)
            return len(webhook_receiver.accepted) >= n and len(subscriber.accepted) >= n

        wait_for(arrived, "every decision at both outputs")

    with Session(engine) as db:
        messages = list(db.exec(select(OutboxMessage).order_by(col(OutboxMessage.seq))))
    engine.dispose()
    ids = [m.delivery_id for m in messages]
    assert sorted(m.payload["inspection_id"] for m in messages) == sorted(decided)
    # each decision exactly once after dedup, in the line's order, at both outputs
    assert [p["delivery_id"] for p in webhook_receiver.accepted] == ids
    assert [p["delivery_id"] for p in subscriber.accepted] == ids
    assert webhook_receiver.duplicates >= 1  # message 3 again, after the restart
    assert webhook_receiver.bad_signatures == 0
    assert [p["seq"] for p in webhook_receiver.accepted] == list(range(1, len(ids) + 1))
