"""Marking a part of the Evidence page's disagreement gallery as a reference part: the same
service call as the API and the CLI, the outcome in words, every refusal an event with who."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from inspect_app import agreement
from inspect_app.accounts import get_user
from inspect_app.settings import Settings
from inspect_app.storage.tables import Event, ReferencePart
from review_ui.context import ReviewContext
from review_ui.evidence_views import gallery_html
from review_ui.supervisor import disagreements, gallery_choices, mark_reference_part
from tests.review_ui.conftest import LiveService, add_lines, add_people, review_client


@pytest.fixture
def world(engine: Engine) -> Engine:
    add_people(engine, ("ines", "inspector"), ("sam", "supervisor"))
    add_lines(engine, ("line-1", "shadow"))
    return engine


def _events(db: Session, kind: str) -> list[Event]:
    return list(db.exec(select(Event).where(Event.kind == kind).order_by(col(Event.id))))


def test_a_gallery_part_is_marked_with_its_verified_class(
    world: Engine, tmp_path: Path, add_labeled_parts: Callable[..., list[int]]
) -> None:
    app = FastAPI()
    app.state.settings = Settings(data_dir=tmp_path)
    app.state.engine = world
    context = ReviewContext(app)
    with Session(world, expire_on_commit=False) as db:
        sam, ines = get_user(db, "sam"), get_user(db, "ines")
        assert sam is not None and ines is not None and ines.id is not None
        # the model said ok (P(ok) 0.9), the inspector said scratch: a disagreement
        ids = add_labeled_parts(db, "line-1", [0.9, 0.95], ["scratch", "ok"], user_id=ines.id)
        rows = agreement.labeled_inspections(db, "line-1", model_version="test")
        items = disagreements(db, context, rows)
        choices = gallery_choices(items)
        assert [value for _, value in choices] == [ids[0]]  # only the part they disagree on
        assert choices[0][0].startswith(f"#{ids[0]} · human scratch · model ok")

        done = mark_reference_part(db, sam, choices[0][1], "scratch", " lab: a real scratch ")
        assert done.applied and f"Part #{ids[0]} is reference part" in done.html
        part = db.exec(select(ReferencePart)).one()
        assert (part.inspection_id, part.label, part.created_by) == (ids[0], "scratch", "sam")
        (added,) = _events(db, "reference_part_added")
        assert added.actor == "sam" and added.reason == "lab: a real scratch"
        assert added.line_id == "line-1"
        # the gallery says so, and the picker no longer offers it
        items = disagreements(db, context, rows)
        assert [d.reference for d in items] == [True] and gallery_choices(items) == []
        assert "reference part</b>" in gallery_html(items)

        # refusals: said in words, recorded with who and why, nothing marked
        again = mark_reference_part(db, sam, ids[0], "scratch", "once more")
        assert not again.applied and "already reference part" in again.html
        no_reason = mark_reference_part(db, sam, ids[1], "ok", "   ")
        assert not no_reason.applied and "a reason is required" in no_reason.html
        nothing = mark_reference_part(db, sam, None, "ok", "forgot to pick")
        assert not nothing.applied and "pick a part" in nothing.html
        bad_class = mark_reference_part(db, sam, ids[1], "dent", "not a class")
        assert not bad_class.applied and "verified class" in bad_class.html
        fraction = mark_reference_part(db, sam, 1.5, "ok", "a hand-made request")
        assert not fraction.applied and "pick a part" in fraction.html
        inspector = mark_reference_part(db, ines, ids[1], "ok", "I am sure")
        assert not inspector.applied and "supervisors only" in inspector.html

        refused = _events(db, "reference_part_refused")
        assert [(e.actor, e.details["inspection_id"]) for e in refused] == [  # type: ignore[index]
            ("sam", ids[0]),
            ("sam", ids[1]),
            ("sam", None),
            ("sam", ids[1]),
            ("sam", None),
            ("ines", ids[1]),
        ]
        assert "already reference part" in refused[0].details["refusal"]  # type: ignore[index]
        assert refused[0].line_id == "line-1" and refused[2].line_id is None
        assert all(e.details["via"] == "review UI" for e in refused)  # type: ignore[index]
        assert len(db.exec(select(ReferencePart)).all()) == 1


@pytest.mark.slow
def test_the_evidence_page_offers_the_gallery_parts_and_marks_one(
    live_service: LiveService, add_labeled_parts: Callable[..., list[int]]
) -> None:
    """Through the served page's own handlers: the Evidence page fills the picker with the
    gallery's parts; the button marks the picked one, a supervisor only."""
    engine = live_service.engine
    add_people(engine, ("ines", "inspector"), ("sam", "supervisor"))
    add_lines(engine, ("line-1", "shadow"))
    with Session(engine, expire_on_commit=False) as db:
        ines = get_user(db, "ines")
        assert ines is not None and ines.id is not None
        (part,) = add_labeled_parts(db, "line-1", [0.9], ["pit"], user_id=ines.id)
    sam = review_client(live_service.review_url, "sam")
    shown = sam.predict("line-1", "current model", "All time", api_name="/evidence")
    picker = shown[-1]
    assert [value for _, value in picker["choices"]] == [part]
    result = sam.predict(part, "pit", "lab-verified pit", api_name="/mark_reference")
    assert f"Part #{part} is reference part" in result
    inspector = review_client(live_service.review_url, "ines")
    with pytest.raises(Exception, match="may not"):
        inspector.predict(part, "ok", "mine", api_name="/mark_reference")
    with Session(engine) as db:
        (marked,) = db.exec(select(ReferencePart)).all()
        assert (marked.inspection_id, marked.label, marked.created_by) == (part, "pit", "sam")
