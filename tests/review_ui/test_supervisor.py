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
from inspect_app.storage.images import LocalImageStore
from inspect_app.storage.tables import Event, Inspection, Line, utcnow
from review_ui.context import ReviewContext
from review_ui.supervisor import (
    apply_change,
    apply_targets,
    disagreements,
    event_rows,
    line_rows,
    recommended_settings,
)
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
    store = LocalImageStore(tmp_path / "images")
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


def _force_partial(engine: Engine, line_id: str) -> None:
    with Session(engine) as db:
        line = db.get(Line, line_id)
        assert line is not None
        line.level = "partial"
        db.add(line)
        db.commit()


def test_never_on_one_side_is_applied_and_shown_as_never(world: Engine) -> None:
    _force_partial(world, "line-2")
    with Session(world, expire_on_commit=False) as db:
        outcome = apply_change(
            db, get_user(db, "sam"), "line-2", level="partial", pass_threshold=None,
            fail_threshold=None, audit_rate_percent=None, reason="escapes reported",
            pass_never=True,
        )  # fmt: skip
        line = db.get(Line, "line-2")
        rows = {r.line_id: r for r in line_rows(db, utcnow())}
        events = event_rows(db, "line-2")
    assert outcome.applied and "pass ≥ never" in outcome.html
    assert line is not None and (line.pass_threshold, line.fail_threshold) == (None, 0.98)
    assert rows["line-2"].pass_threshold is None
    assert "pass_threshold 0.98 → never" in events[0].summary


def test_unticking_never_without_a_threshold_says_what_is_missing(world: Engine) -> None:
    _force_partial(world, "line-2")
    with Session(world, expire_on_commit=False) as db:
        sam = get_user(db, "sam")
        apply_change(db, sam, "line-2", level="partial", pass_threshold=None, fail_threshold=None,
                     audit_rate_percent=None, reason="x", pass_never=True)  # fmt: skip
        outcome = apply_change(
            db, sam, "line-2", level="partial", pass_threshold=None, fail_threshold=None,
            audit_rate_percent=None, reason="auto-pass again",
        )  # fmt: skip
        line = db.get(Line, "line-2")
    assert not outcome.applied and "give a pass threshold to turn it on" in outcome.html
    assert line is not None and line.pass_threshold is None


def test_targets_are_applied_in_percent_and_refused_for_inspectors(world: Engine) -> None:
    with Session(world, expire_on_commit=False) as db:
        outcome = apply_targets(
            db, get_user(db, "sam"), "line-1", max_escape_percent=0.1,
            max_false_reject_percent=None, min_labels=300, auto_demote=None,
            reason="customer spec",
        )  # fmt: skip
        refused = apply_targets(
            db, get_user(db, "ines"), "line-1", max_escape_percent=5.0,
            max_false_reject_percent=None, min_labels=None, auto_demote=None, reason="looser",
        )  # fmt: skip
        bad = apply_targets(
            db, get_user(db, "sam"), "line-1", max_escape_percent=None,
            max_false_reject_percent=None, min_labels=2.5, auto_demote=None, reason="x",
        )  # fmt: skip
        line = db.get(Line, "line-1")
        events = event_rows(db, "line-1")
    assert outcome.applied and "Targets applied" in outcome.html
    assert line is not None and (line.max_escape_rate, line.min_labels) == (0.001, 300)
    assert not refused.applied and "supervisors only" in refused.html
    assert not bad.applied and "whole number" in bad.html
    assert events[0].kind == "targets_change" and "max_escape_rate 0.005 → 0.001" in (
        events[0].summary
    )


def test_the_recommendation_fills_the_form_with_never_for_an_unsupported_side(
    world: Engine, add_labeled_parts: Callable[..., list[int]]
) -> None:
    with Session(world, expire_on_commit=False) as db:
        assert recommended_settings(db, "line-1")[0] is None  # no labels: nothing to fill
        ines = get_user(db, "ines")
        add_labeled_parts(db, "line-1", [0.9995] * 700, ["crack"] * 3 + ["ok"] * 697,
                          user_id=ines.id)  # fmt: skip
        add_labeled_parts(db, "line-1", [0.001] * 300, ["pit"] * 300, user_id=ines.id)
        settings, why = recommended_settings(db, "line-1")
        assert settings is not None
        assert (settings.level, settings.pass_never, settings.fail_never) == (
            "partial",
            True,
            False,
        )
        assert settings.pass_threshold is None and settings.fail_threshold is not None
        assert "pass never" in why
        # Applied as filled in, it passes the gate on the fail side alone.
        outcome = apply_change(
            db, get_user(db, "sam"), "line-1", level=settings.level, pass_threshold=None,
            fail_threshold=settings.fail_threshold, audit_rate_percent=None,
            reason="the recommendation", pass_never=settings.pass_never,
        )  # fmt: skip
    assert outcome.applied, outcome.html
