"""A reference part on the inspector's desk: the page shows, saves and corrects it by its
own number, never its source inspection's, and the correction changes only the answer."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from inspect_app.accounts import get_user
from inspect_app.lines import add_line
from inspect_app.reference import service, serving
from inspect_app.storage.tables import Label, ReferenceAnswer
from review_ui import inspector
from tests.review_ui.conftest import add_people
from tests.review_ui.test_desk import make_desk


class Always(random.Random):
    def random(self) -> float:
        return 0.0


def test_the_desk_shows_saves_and_corrects_a_reference_by_its_own_number(
    engine: Engine,
    tmp_path: Path,
    add_labeled_parts: Callable[..., list[int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    add_people(engine, ("ines", "inspector"), ("sam", "supervisor"))
    with Session(engine, expire_on_commit=False) as db:
        add_line(db, "line-1")
        sam = get_user(db, "sam")
        assert sam is not None and sam.id is not None
        sources = add_labeled_parts(db, "line-1", [0.2] * 3, ["scratch"] * 3, user_id=sam.id)
        for source in sources:
            service.add_reference(db, source, "scratch", reason="lab-verified", actor=sam)
        add_labeled_parts(db, "line-1", [0.4, 0.4], [None, None], user_id=sam.id)
        service.set_reference_settings(db, "line-1", reference_rate=0.5, reason="m", actor=sam)
        labels_before = db.exec(select(func.count()).select_from(Label)).one()
    monkeypatch.setattr(serving, "_rng", Always())
    desk = make_desk(engine, tmp_path)

    view = desk.open("tab-1", "ines")
    assert view.part is not None and view.part.inspection_id in sources
    number = view.part.shown_id
    assert number not in sources
    assert view.state["inspection_id"] == number
    card = inspector._card(view)
    assert f"#{number} · task {view.part.task_id}" in card
    assert not any(f"#{source} " in card for source in sources)

    saved = desk.verdict("tab-1", "ines", "ok", "")
    assert f"Saved part #{number} as OK" in saved.message
    back = desk.undo("tab-1", "ines")
    assert back.mode == "correcting" and back.state["inspection_id"] == number
    assert f"#{number}" in back.message
    fixed = desk.verdict("tab-1", "ines", "scratch", "")
    assert f"Corrected part #{number}" in fixed.message, fixed.message

    with Session(engine) as db:
        answers = db.exec(select(ReferenceAnswer).where(ReferenceAnswer.label.is_not(None))).all()  # type: ignore[union-attr]
        assert [(a.served_part_id, a.label) for a in answers] == [(number, "scratch")]
        assert db.exec(select(func.count()).select_from(Label)).one() == labels_before
