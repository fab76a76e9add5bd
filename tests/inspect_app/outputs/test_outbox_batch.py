"""The outbox write of a group commit: many decisions of one transaction take consecutive
numbers per line with one counter update, after what earlier commits took."""

from __future__ import annotations

import uuid

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from inspect_app.lines import add_line
from inspect_app.outputs import outbox
from inspect_app.storage.tables import Inspection, OutboxMessage, OutputSequence


def _decided(line_id: str, decision: str) -> Inspection:
    return Inspection(
        line_id=line_id, image_sha256=uuid.uuid4().hex * 2, image_format="png", width=64,
        height=64, brightness=120.0, contrast=30.0, sharpness=200.0, level="full",
        pass_threshold=0.9, fail_threshold=0.9, route="auto", decision=decision,
        decided_by="model", model_version="test",
    )  # fmt: skip


def test_one_transactions_decisions_are_numbered_in_order_per_line(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        add_line(session, "line-1", "shadow")
        add_line(session, "line-2", "shadow")
        first = _decided("line-1", "pass")
        session.add(first)
        session.flush()
        outbox.enqueue_decision(session, first, cause="model")  # an earlier commit: seq 1
        session.commit()

        order = [("line-1", "fail"), ("line-2", "pass"), ("line-1", "pass"), ("line-1", "fail")]
        rows = [_decided(line, decision) for line, decision in order]
        session.add_all(rows)
        session.flush()
        messages = outbox.enqueue_decisions(session, rows, cause="model")
        session.commit()

        assert [(m.line_id, m.seq) for m in messages] == [
            ("line-1", 2), ("line-2", 1), ("line-1", 3), ("line-1", 4)
        ]  # fmt: skip
        assert [m.payload["inspection_id"] for m in messages] == [r.id for r in rows]
        assert [m.payload["seq"] for m in messages] == [2, 1, 3, 4]
        assert len({m.delivery_id for m in messages}) == 4
        stored = session.exec(
            select(OutboxMessage.line_id, OutboxMessage.seq).order_by(col(OutboxMessage.id))
        ).all()
        # one multi-row insert per line, in sequence order
        assert stored == [("line-1", 1), ("line-1", 2), ("line-1", 3), ("line-1", 4),
                          ("line-2", 1)]  # fmt: skip
        counters = dict(session.exec(select(OutputSequence.line_id, OutputSequence.last_seq)).all())
        assert counters == {"line-1": 4, "line-2": 1}
