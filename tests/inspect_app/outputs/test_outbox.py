"""The outbox on both databases: a message exactly when a final decision or alarm change
commits, and the worker delivering them to a real loopback webhook receiver, in order,
signed, retried after a 500, replayable."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from inspect_app.accounts import add_user
from inspect_app.domain import TaskReason
from inspect_app.events import list_events
from inspect_app.lines import add_line
from inspect_app.outputs import outbox
from inspect_app.outputs.core import Backoff, DeliveryState
from inspect_app.outputs.worker import OutputWorker
from inspect_app.review_queue import claim_next_task, relabel, submit_label
from inspect_app.storage.tables import Inspection, OutboxMessage, OutputDelivery

SECRET = "a shared secret of the line's MES"  # as the receiver fixture checks


def _messages(engine: Engine, line_id: str = "line-1") -> list[OutboxMessage]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(OutboxMessage)
                .where(OutboxMessage.line_id == line_id)
                .order_by(col(OutboxMessage.seq))
            )
        )


def _model_decision(session: Session, line_id: str, decision: str = "pass") -> Inspection:
    """A part the model decided, written as the pipeline writes it (outbox in the commit)."""
    import uuid

    row = Inspection(
        line_id=line_id, image_sha256=uuid.uuid4().hex * 2, image_format="png",
        width=64, height=64, brightness=120.0, contrast=30.0, sharpness=200.0,
        level="full", pass_threshold=0.9, fail_threshold=0.9, route="auto",
        decision=decision, decided_by="model", model_version="test",
    )  # fmt: skip
    session.add(row)
    session.flush()
    outbox.enqueue_decision(session, row, cause="model")
    session.commit()
    return row


def test_final_decisions_are_written_with_their_change_and_only_then(
    session: Session, engine: Engine, seed_review_task: Callable[..., int]
) -> None:
    add_line(session, "line-1", "shadow")
    inspector = add_user(session, "ines", "inspector", "a long test password")
    supervisor = add_user(session, "sam", "supervisor", "a long test password")
    audit_task = seed_review_task(session, "line-1", reason=TaskReason.AUDIT)
    seed_review_task(session, "line-1")
    assert _messages(engine) == []  # pending parts and audits have no new final decision yet

    claimed = claim_next_task(session, inspector, lease_seconds=60)  # the decide task first
    assert claimed is not None and claimed.task_id != audit_task
    submit_label(session, claimed.task_id, inspector, "scratch")
    audit = claim_next_task(session, inspector, lease_seconds=60)
    assert audit is not None
    submit_label(session, audit.task_id, inspector, "crack")  # an audit: the model's stands

    relabel(session, claimed.inspection_id, supervisor, "crack")  # still fail: no message
    relabel(session, claimed.inspection_id, supervisor, "ok", note="it was dust")

    messages = _messages(engine)
    assert [(m.seq, m.payload["cause"], m.payload["decision"]) for m in messages] == [
        (1, "label", "fail"),
        (2, "relabel", "pass"),
    ]
    assert all(m.payload["inspection_id"] == claimed.inspection_id for m in messages)
    assert len({m.delivery_id for m in messages}) == 2

    # a change rolled back takes its message (and its sequence number) with it
    row = Inspection(
        line_id="line-1", image_sha256="e" * 64, image_format="png", width=1, height=1,
        brightness=1.0, contrast=1.0, sharpness=1.0, level="full", pass_threshold=0.9,
        fail_threshold=0.9, route="auto", decision="pass", decided_by="model",
    )  # fmt: skip
    session.add(row)
    session.flush()
    outbox.enqueue_decision(session, row, cause="model")
    session.rollback()
    assert len(_messages(engine)) == 2
    kept = _model_decision(session, "line-1")
    assert _messages(engine)[-1].seq == 3 and _messages(engine)[-1].payload["inspection_id"] == (
        kept.id
    )


def test_each_line_has_its_own_sequence(session: Session, engine: Engine) -> None:
    add_line(session, "line-1", "shadow")
    add_line(session, "line-2", "shadow")
    for line in ("line-1", "line-2", "line-1"):
        _model_decision(session, line)
    outbox.enqueue_alarm(session, "line-2", {"alarm": "a", "to_status": "firing"})
    session.commit()
    assert [m.seq for m in _messages(engine, "line-1")] == [1, 2]
    assert [(m.seq, m.kind) for m in _messages(engine, "line-2")] == [(1, "decision"), (2, "alarm")]


def _drain(worker: OutputWorker, done: Callable[[], bool], rounds: int = 400) -> None:
    for _ in range(rounds):
        worker.run_once()
        if done():
            return
        time.sleep(0.01)
    pytest.fail("the worker did not deliver everything")


def test_the_worker_delivers_in_order_signed_and_retries_after_a_500(
    session: Session, engine: Engine, webhook_receiver: Any
) -> None:
    add_line(session, "line-1", "shadow")
    _model_decision(session, "line-1")  # before the destination: not sent to it
    dest = outbox.add_destination(
        session, "line-1", kind="webhook", url=webhook_receiver.url, secret=SECRET,
        actor="sam", reason="the MES takes decisions now",
    )  # fmt: skip
    for decision in ("pass", "fail", "pass", "fail"):
        _model_decision(session, "line-1", decision)
    webhook_receiver.fail_next = 2
    worker = OutputWorker(engine, backoff=Backoff(0.01, 0.05), timeout_seconds=2,
                          lease_seconds=10)  # fmt: skip

    _drain(worker, lambda: len(webhook_receiver.accepted) == 4)

    assert [p["seq"] for p in webhook_receiver.accepted] == [2, 3, 4, 5]
    assert [p["decision"] for p in webhook_receiver.accepted] == ["pass", "fail", "pass", "fail"]
    # the failing head stalled the line: nothing newer was sent before it got through
    assert [p["seq"] for p in webhook_receiver.requests] == [2, 2, 2, 3, 4, 5]
    assert webhook_receiver.bad_signatures == 0 and webhook_receiver.duplicates == 0
    with Session(engine) as s:
        head = s.exec(
            select(OutputDelivery)
            .join(OutboxMessage, col(OutboxMessage.id) == col(OutputDelivery.message_id))
            .where(OutboxMessage.seq == 2)
        ).one()
        assert head.attempts == 3 and head.delivered_at is not None
        assert head.last_error is not None and "HTTP 500" in head.last_error
    views = outbox.list_messages(session, line_id="line-1")
    assert [v.seq for v in views] == [5, 4, 3, 2, 1]
    assert [d.state for v in views[:4] for d in v.deliveries] == [DeliveryState.DELIVERED] * 4
    assert views[4].deliveries == []  # before the destination existed
    assert outbox.list_destinations(session, "line-1")[0].undelivered == 0

    # replay 3..4: sent again with their own delivery ids, which the receiver drops
    assert outbox.replay(session, "line-1", from_seq=3, to_seq=4, actor="sam",
                         reason="MES restored a backup") == 2  # fmt: skip
    waiting = outbox.list_messages(session, line_id="line-1", state=DeliveryState.WAITING)
    assert [v.seq for v in waiting] == [4, 3]
    assert not outbox.list_messages(session, line_id="line-1", state=DeliveryState.FAILING)
    _drain(worker, lambda: webhook_receiver.duplicates == 2)
    assert [p["seq"] for p in webhook_receiver.requests[-2:]] == [3, 4]
    assert len(webhook_receiver.accepted) == 4
    kinds = [e.kind for e in list_events(session, line_id="line-1")]
    assert "output_replay" in kinds and "output_added" in kinds
    assert dest.id is not None
    worker.stop()


def test_one_worker_at_a_time_holds_a_destination(session: Session, engine: Engine) -> None:
    add_line(session, "line-1", "shadow")
    dest = outbox.add_destination(
        session, "line-1", kind="mqtt", url="mqtt://127.0.0.1:1", actor="sam", reason="test"
    )
    first, second = OutputWorker(engine), OutputWorker(engine)
    assert first._claim(dest.id) and not second._claim(dest.id)
    first.stop()  # releases its leases
    assert second._claim(dest.id)
    second.stop()


def test_a_destination_change_is_an_event_and_pausing_stops_delivery(
    session: Session, engine: Engine, webhook_receiver: Any
) -> None:
    add_line(session, "line-1", "shadow")
    dest = outbox.add_destination(
        session, "line-1", kind="webhook", url=webhook_receiver.url, secret=SECRET,
        actor="sam", reason="test",
    )  # fmt: skip
    paused = outbox.update_destination(
        session, dest.id, actor="sam", reason="MES maintenance", enabled=False
    )
    assert not paused.enabled
    _model_decision(session, "line-1")
    worker = OutputWorker(engine, backoff=Backoff(0.01, 0.05), timeout_seconds=2,
                          lease_seconds=10)  # fmt: skip
    assert worker.run_once() == 0 and webhook_receiver.requests == []
    outbox.update_destination(session, dest.id, actor="sam", reason="back", enabled=True)
    _drain(worker, lambda: len(webhook_receiver.accepted) == 1)
    changes = [e for e in list_events(session, line_id="line-1") if e.kind == "output_changed"]
    assert [(e.actor, e.reason, e.details["enabled"]) for e in changes] == [
        ("sam", "back", True),
        ("sam", "MES maintenance", False),
    ]
    worker.stop()


@pytest.mark.postgres
def test_two_processes_workers_share_destinations_without_reordering(
    fresh_postgres_url: str, webhook_receiver: Any
) -> None:
    """Two workers on one PostgreSQL (separate engines, as two `serve` processes), both
    running, while decisions keep committing: each message once, in order."""
    from inspect_app.storage.db import make_engine, upgrade_database

    engines = [make_engine(fresh_postgres_url) for _ in range(2)]
    upgrade_database(engines[0])
    with Session(engines[0], expire_on_commit=False) as db:
        add_line(db, "line-1", "shadow")
        outbox.add_destination(
            db, "line-1", kind="webhook", url=webhook_receiver.url, secret=SECRET,
            actor="sam", reason="test",
        )  # fmt: skip
    timings = {"poll_seconds": 0.01, "timeout_seconds": 2, "lease_seconds": 10}
    workers = [OutputWorker(e, backoff=Backoff(0.01, 0.05), **timings) for e in engines]  # type: ignore[arg-type]
    for worker in workers:
        worker.start()
    try:
        with Session(engines[1]) as db:
            for i in range(30):
                _model_decision(db, "line-1", "pass" if i % 2 else "fail")
        deadline = time.monotonic() + 60
        while len(webhook_receiver.accepted) < 30 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        for worker in workers:
            worker.stop()
        for e in engines:
            e.dispose()
    assert [p["seq"] for p in webhook_receiver.accepted] == list(range(1, 31))
    assert webhook_receiver.duplicates == 0
