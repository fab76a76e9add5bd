"""The Outputs page's views and replay, without a browser, against a real database."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session

from inspect_app.accounts import get_user
from inspect_app.events import list_events
from inspect_app.outputs import outbox
from inspect_app.storage.tables import Inspection
from review_ui.outputs_page import outputs_html, replay_from_ui
from tests.review_ui.conftest import add_lines, add_people


def test_a_supervisor_sees_deliveries_and_replays_with_a_reason(engine: Engine) -> None:
    add_people(engine, ("sam", "supervisor"))
    add_lines(engine, ("line-1", "shadow"))
    with Session(engine, expire_on_commit=False) as db:
        assert "None: add one" in outputs_html(db, "line-1", "all")
        outbox.add_destination(db, "line-1", kind="webhook", url="http://127.0.0.1:9/h",
                               secret="x" * 16, actor="sam", reason="MES")  # fmt: skip
        row = Inspection(
            line_id="line-1", image_sha256="a" * 64, image_format="png", width=1, height=1,
            brightness=1.0, contrast=1.0, sharpness=1.0, level="full", pass_threshold=0.9,
            fail_threshold=0.9, route="auto", decision="fail", decided_by="model",
        )  # fmt: skip
        db.add(row)
        db.flush()
        outbox.enqueue_decision(db, row, cause="model")
        db.commit()
        page = outputs_html(db, "line-1", "waiting")
        assert "http://127.0.0.1:9/h" in page and "fail" in page and "waiting" in page
        assert "No message" in outputs_html(db, "line-1", "delivered")
        sam = get_user(db, "sam")
        assert "reason" in replay_from_ui(db, sam, "line-1", 1, None, " ")
        assert "1 deliveries queued" in replay_from_ui(db, sam, "line-1", 1, None, "MES lost it")
        assert "Refused" in replay_from_ui(db, sam, "line-1", 5, 2, "x")
        replays = [e for e in list_events(db, line_id="line-1") if e.kind == "output_replay"]
        assert [(e.actor, e.reason) for e in replays] == [("sam", "MES lost it")]
