"""The retention sweep clears the outbox: a message past outbox_days goes once every
destination of its line has it delivered (or its line has none to wait for); one still owed
to a destination stays however old, and a dry run changes nothing."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select
from typer.testing import CliRunner

from inspect_app.cli import app as cli
from inspect_app.lines import add_line
from inspect_app.outputs import outbox
from inspect_app.settings import Settings
from inspect_app.storage.db import make_engine
from inspect_app.storage.images import LocalImageStore
from inspect_app.storage.retention import SWEEP_EVENT, RetentionPolicy, sweep_images
from inspect_app.storage.tables import (
    Event,
    Inspection,
    OutboxMessage,
    OutputDelivery,
    OutputDestination,
)
from inspect_app.timeutil import utcnow

NOW = utcnow()
DAY = timedelta(days=1)
POLICY = RetentionPolicy(outbox_days=30)
SECRET = "a shared secret of the line's MES"


def _message(session: Session, line_id: str, days_old: float) -> int:
    """A model decision's message, written as the pipeline writes it, `days_old` days ago;
    returns its seq."""
    row = Inspection(
        line_id=line_id, image_sha256=uuid.uuid4().hex * 2, image_format="png",
        width=64, height=64, brightness=120.0, contrast=30.0, sharpness=200.0,
        level="full", pass_threshold=0.9, fail_threshold=0.9, route="auto",
        decision="pass", decided_by="model", model_version="test",
    )  # fmt: skip
    session.add(row)
    session.flush()
    message = outbox.enqueue_decision(session, row, cause="model")
    message.created_at = NOW - days_old * DAY
    session.add(message)
    session.commit()
    return message.seq


def _destination(session: Session, line_id: str, *, from_seq: int | None = 1) -> int:
    view = outbox.add_destination(
        session, line_id, kind="webhook", url="http://127.0.0.1:9/hook", secret=SECRET,
        from_seq=from_seq, actor="sam", reason="the MES listens here",
    )  # fmt: skip
    return view.id


def _delivery(
    session: Session, dest: int, line_id: str, seq: int, *, delivered: bool, error: str | None
) -> None:
    message = session.exec(
        select(OutboxMessage).where(OutboxMessage.line_id == line_id, OutboxMessage.seq == seq)
    ).one()
    assert message.id is not None
    session.add(
        OutputDelivery(
            destination_id=dest,
            message_id=message.id,
            attempts=1,
            last_error=error,
            last_attempt_at=NOW - DAY * 40,
            delivered_at=NOW - DAY * 40 if delivered else None,
        )
    )
    session.commit()


def _pending_from(session: Session, dest: int, seq: int) -> None:
    session.exec(
        update(OutputDestination)
        .where(col(OutputDestination.id) == dest)
        .values(pending_from_seq=seq)
    )
    session.commit()


def _left(engine: Engine) -> set[tuple[str, int]]:
    with Session(engine) as session:
        return set(session.exec(select(OutboxMessage.line_id, OutboxMessage.seq)))


@pytest.fixture
def world(session: Session) -> Session:
    """line-1: two webhooks; a has everything up to seq 4, b failed on seq 2 and never tried
    seq 3 (its mark is 2), a third one switched off owes nothing of line-1 but seq 5.
    line-2: no destination. line-3: a destination added after its old message."""
    for line in ("line-1", "line-2", "line-3", "line-4"):
        add_line(session, line)
    for days in (40, 40, 40, 2):  # seq 1..4
        _message(session, "line-1", days)
    a = _destination(session, "line-1")
    b = _destination(session, "line-1")
    for seq in (1, 2, 3, 4):
        _delivery(session, a, "line-1", seq, delivered=True, error=None)
    _pending_from(session, a, 5)
    _delivery(session, b, "line-1", 1, delivered=True, error=None)
    _delivery(session, b, "line-1", 2, delivered=False, error="HTTP 500")
    _pending_from(session, b, 2)
    _message(session, "line-2", 40)
    _message(session, "line-2", 1)
    _message(session, "line-3", 50)
    _destination(session, "line-3", from_seq=None)  # from after its last message
    # line-4: a switched-off destination still owes its old message
    _message(session, "line-4", 60)
    off = _destination(session, "line-4")
    outbox.update_destination(session, off, actor="sam", reason="MES down", enabled=False)
    return session


def test_only_messages_delivered_everywhere_and_old_go(
    world: Session, engine: Engine, tmp_path: Path
) -> None:
    store = LocalImageStore(tmp_path / "images")
    before = _left(engine)
    dry = sweep_images(engine, store, POLICY, now=NOW, dry_run=True)
    assert dry.outbox_removed == 3 and _left(engine) == before  # a dry run changes nothing
    assert dry.outbox_removed_by_line == {"line-1": 1, "line-2": 1, "line-3": 1}

    report = sweep_images(engine, store, POLICY, now=NOW, actor="ops")
    assert report.outbox_removed == 3
    # line-1 seq 2 (failing at b) and 3 (not yet tried at b) and line-4 seq 1 (owed to a
    # destination switched off) are old but owed: kept and counted
    assert report.outbox_undelivered == 3
    assert _left(engine) == before - {("line-1", 1), ("line-2", 1), ("line-3", 1)}
    with Session(engine) as session:
        # the deliveries of a removed message went with it; the others stay
        deliveries = session.exec(select(func.count()).select_from(OutputDelivery)).one()
        assert deliveries == 4  # a: seq 2, 3, 4; b: seq 2
        event = session.exec(select(Event).where(Event.kind == SWEEP_EVENT)).one()
        assert event.actor == "ops"
        assert event.details["outbox_removed"] == 3  # type: ignore[index]
        assert event.details["outbox_removed_by_line"] == {  # type: ignore[index]
            "line-1": 1, "line-2": 1, "line-3": 1}  # fmt: skip
    assert any("3 outbox messages delivered everywhere" in s for s in report.summary())
    # the numbering goes on where it was
    with Session(engine) as session:
        assert _message(session, "line-2", 0) == 3

    # once b has delivered seq 2 and 3, the next sweep removes them
    with Session(engine) as session:
        b = max(d.id for d in outbox.list_destinations(session, "line-1"))
        session.exec(
            update(OutputDelivery)
            .where(col(OutputDelivery.destination_id) == b)
            .values(delivered_at=NOW, last_error=None)
        )
        session.commit()
        _pending_from(session, b, 4)
    again = sweep_images(engine, store, POLICY, now=NOW)
    assert again.outbox_removed == 2 and again.outbox_undelivered == 1  # line-4's is owed
    assert ("line-1", 2) not in _left(engine) and ("line-4", 1) in _left(engine)


def test_a_replayed_message_is_owed_again_and_kept(world: Session, engine: Engine) -> None:
    store = LocalImageStore(Path("/nonexistent-store-is-not-read"))
    outbox.replay(world, "line-1", from_seq=1, to_seq=1, actor="sam", reason="MES lost it")
    report = sweep_images(engine, store, POLICY, now=NOW)
    assert ("line-1", 1) in _left(engine)
    assert report.outbox_removed == 2  # line-2 and line-3 only


def test_the_age_is_a_setting_and_the_cli_reports_it(
    world: Session, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings().outbox_retention_days == 30.0
    monkeypatch.setenv("INSPECT_OUTBOX_RETENTION_DAYS", "45")
    assert RetentionPolicy.from_settings(Settings()).outbox_days == 45.0
    with pytest.raises(ValueError, match="outbox_days"):
        RetentionPolicy(outbox_days=0)
    # 45 days: only line-3's 50-day-old message and nothing younger
    report = sweep_images(
        engine, LocalImageStore(tmp_path / "images"), RetentionPolicy(outbox_days=45), now=NOW
    )
    assert report.outbox_removed_by_line == {"line-3": 1}


def test_the_cli_sweep_prints_the_outbox_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INSPECT_DATABASE_URL", raising=False)
    data_dir = tmp_path / "var"
    settings = Settings(data_dir=data_dir)
    runner = CliRunner()
    assert (
        runner.invoke(cli, ["lines", "add", "line-1", "--data-dir", str(data_dir)]).exit_code == 0
    )
    engine = make_engine(settings.resolved_database_url)
    with Session(engine, expire_on_commit=False) as session:
        _message(session, "line-1", 40)
    dry = runner.invoke(cli, ["images", "sweep", "--dry-run", "--data-dir", str(data_dir)])
    assert dry.exit_code == 0, dry.output
    assert "would remove 1 outbox messages delivered everywhere (1 of line-1)" in dry.output
    done = runner.invoke(cli, ["images", "sweep", "--data-dir", str(data_dir)])
    assert "removed 1 outbox messages delivered everywhere (1 of line-1)" in done.output
    assert _left(engine) == set()
    engine.dispose()
