"""What the supervisors' pages read and change, against a real database and the real rules."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from inspect_app import agreement, review_queue
from inspect_app.accounts import get_user
from inspect_app.settings import Settings
from inspect_app.storage.images import ImageStore
from inspect_app.storage.tables import Event, Inspection, Line, utcnow
from review_ui.context import ReviewContext
from review_ui.supervisor import apply_change, disagreements, event_rows, line_rows
from tests.review_ui.conftest import add_lines, add_people, part_image


@pytest.fixture
def world(engine: Engine) -> Engine:
    add_people(engine, ("ines", "inspector"), ("sam", "supervisor"))
    add_lines(engine, ("line-1", "shadow"), ("line-2", "assist"))
    return engine


def test_a_raise_without_evidence_is_refused_with_the_figures_and_recorded(world: Engine) -> None:
    with Session(world, expire_on_commit=False) as db:
        sam = get_user(db, "sam")
        outcome = apply_change(
            db,
            sam,
            "line-1",
            level="partial",
            pass_threshold=0.99,
            fail_threshold=None,
            audit_rate_percent=None,
            reason="looks good",
        )
        line = db.get(Line, "line-1")
        kinds = [e.kind for e in db.exec(select(Event).where(Event.line_id == "line-1"))]
    assert not outcome.applied
    assert "Refused by the evidence gate" in outcome.html
    assert line is not None and line.level == "shadow"
    assert "level_change_refused" in kinds


def test_a_lowering_is_applied_and_the_audit_rate_is_given_in_percent(world: Engine) -> None:
    with Session(world, expire_on_commit=False) as db:
        outcome = apply_change(
            db,
            get_user(db, "sam"),
            "line-2",
            level="shadow",
            pass_threshold=None,
            fail_threshold=None,
            audit_rate_percent=5.0,
            reason="model update pending",
        )
        line = db.get(Line, "line-2")
        events = event_rows(db, "line-2")
    assert outcome.applied and "result-ok" in outcome.html
    assert line is not None and (line.level, line.audit_rate) == ("shadow", 0.05)
    assert events[0].kind == "level_change" and events[0].actor == "sam"
    assert "level assist → shadow" in events[0].summary


@pytest.mark.parametrize(
    ("who", "line_id", "reason", "message"),
    [
        ("ines", "line-1", "why not", "supervisors only"),  # the rule's own role check
        ("sam", "line-9", "typo", "no line &#x27;line-9&#x27;"),  # escaped HTML
        ("sam", "line-1", "  ", "a reason is required"),
    ],
)
def test_what_cannot_be_applied_says_why(
    world: Engine, who: str, line_id: str, reason: str, message: str
) -> None:
    with Session(world, expire_on_commit=False) as db:
        outcome = apply_change(
            db,
            get_user(db, who),
            line_id,
            level="human_only",
            pass_threshold=None,
            fail_threshold=None,
            audit_rate_percent=None,
            reason=reason,
        )
        line = db.get(Line, "line-1")
    assert not outcome.applied and message in outcome.html
    assert line is not None and line.level == "shadow"


def test_line_rows_count_the_queue_and_todays_work(
    world: Engine, seed_review_task: Callable[..., int]
) -> None:
    with Session(world, expire_on_commit=False) as db:
        old = seed_review_task(db, "line-1", created_at=utcnow() - timedelta(minutes=5))
        seed_review_task(db, "line-1")
        yesterday = db.get(Inspection, 1)
        assert yesterday is not None
        yesterday.received_at = utcnow() - timedelta(days=2)  # before today: not counted
        db.add(yesterday)
        db.commit()
        claimed = review_queue.claim_next_task(db, get_user(db, "ines"), lease_seconds=60)
        assert claimed is not None and claimed.task_id == old
        review_queue.submit_label(db, old, get_user(db, "ines"), "ok")
        rows = {r.line_id: r for r in line_rows(db, utcnow())}
    assert set(rows) == {"line-1", "line-2"}
    one = rows["line-1"]
    assert (one.level, one.queue_depth, one.inspected_today, one.labeled_today) == (
        "shadow",
        1,
        1,
        1,
    )
    assert one.oldest_wait_s is not None and one.oldest_wait_s < 60
    assert rows["line-2"].queue_depth == 0 and rows["line-2"].oldest_wait_s is None


def test_disagreements_are_the_latest_differing_labels_with_thumbnails(
    world: Engine, tmp_path: Path, add_labeled_parts: Callable[..., list[int]]
) -> None:
    app = FastAPI()
    app.state.settings = Settings(data_dir=tmp_path)
    app.state.engine = world
    context = ReviewContext(app)
    store = ImageStore(tmp_path / "images")
    with Session(world, expire_on_commit=False) as db:
        sam = get_user(db, "sam")
        ids = add_labeled_parts(
            db, "line-1", [0.95, 0.9, 0.1, 0.05], ["ok", "crack", "ok", "scratch"], user_id=sam.id
        )
        for i in ids[:2]:  # images for two of them; the others' files are missing
            inspection = db.get(Inspection, i)
            assert inspection is not None
            inspection.image_sha256 = store.put(part_image(i))
            db.add(inspection)
        db.commit()
        rows = agreement.labeled_inspections(db, "line-1")
        found = disagreements(db, context, rows)
    # 0.9 -> model ok, human crack; 0.1 -> model defect, human ok: the two that differ
    assert sorted(d.inspection_id for d in found) == [ids[1], ids[2]]
    by_id = {d.inspection_id: d for d in found}
    assert by_id[ids[1]].image_uri is not None and by_id[ids[1]].image_uri.startswith(
        "data:image/jpeg;base64,"
    )
    assert by_id[ids[2]].image_uri is None  # missing file: shown as missing, not a crash
    assert (by_id[ids[1]].model_call, by_id[ids[1]].human_call, by_id[ids[1]].labeler) == (
        "ok",
        "crack",
        "sam",
    )
