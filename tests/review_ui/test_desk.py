"""The inspector's desk against a real database (SQLite and PostgreSQL) and the real queue."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from inspect_app.domain import TaskReason, TaskStatus
from inspect_app.settings import Settings
from inspect_app.storage.tables import Event, Inspection, Label, ReviewTask, utcnow
from review_ui.auth import AccessDenied, NotLoggedIn
from review_ui.context import ReviewContext
from review_ui.desk import BadInput, InspectorDesk, shift_start
from tests.review_ui.conftest import add_lines, add_people


def make_desk(engine: Engine, tmp_path: Path, lease_seconds: float = 60.0) -> InspectorDesk:
    app = FastAPI()
    app.state.settings = Settings(data_dir=tmp_path, review_lease_seconds=lease_seconds)
    app.state.engine = engine
    return InspectorDesk(ReviewContext(app), idle_seconds=90.0)


@pytest.fixture
def desk(engine: Engine, tmp_path: Path) -> InspectorDesk:
    add_people(engine, ("ines", "inspector"), ("ivan", "inspector"), ("sam", "supervisor"))
    add_lines(engine, ("line-1", "shadow"))
    return make_desk(engine, tmp_path)


@pytest.fixture
def tasks(engine: Engine, seed_review_task: Callable[..., int]) -> Callable[..., list[int]]:
    def add(n: int, **kw: object) -> list[int]:
        with Session(engine, expire_on_commit=False) as db:
            return [seed_review_task(db, "line-1", **kw) for _ in range(n)]

    return add


def current_labels(engine: Engine) -> dict[int, str]:
    with Session(engine) as db:
        rows = db.exec(select(Label).where(col(Label.superseded).is_(False))).all()
        return {r.inspection_id: r.label for r in rows}


def task_row(engine: Engine, task_id: int) -> ReviewTask:
    with Session(engine) as db:
        task = db.get(ReviewTask, task_id)
        assert task is not None
        return task


def test_open_claims_the_oldest_decision_and_a_verdict_shows_the_next(
    desk: InspectorDesk, engine: Engine, tasks: Callable[..., list[int]]
) -> None:
    audit = tasks(1, reason=TaskReason.AUDIT)
    first, second = tasks(2)
    view = desk.open("tab-1", "ines")
    assert view.mode == "task" and view.part is not None
    assert view.part.task_id == first  # decisions before audits, oldest first
    assert view.counters is not None and view.counters.waiting == 3

    after = desk.verdict("tab-1", "ines", "scratch", "  faint line near the lens ")
    assert after.part is not None and after.part.task_id == second
    assert after.message_kind == "ok" and after.clear_note
    assert after.counters is not None and after.counters.my_labels == 1
    with Session(engine) as db:
        label = db.exec(select(Label)).one()
        inspection = db.get(Inspection, label.inspection_id)
    assert (label.label, label.note, label.duration_ms is not None) == (
        "scratch",
        "faint line near the lens",
        True,
    )
    assert inspection is not None and inspection.decision == "fail"  # pending resolved

    desk.verdict("tab-1", "ines", "ok", None)
    last = desk.verdict("tab-1", "ines", "ok", None)
    assert last.part is None and last.mode == "empty"
    assert task_row(engine, audit[0]).status == TaskStatus.DONE.value


def test_undo_shows_the_last_part_and_the_next_key_relabels_it(
    desk: InspectorDesk, engine: Engine, tasks: Callable[..., list[int]]
) -> None:
    first, second = tasks(2)
    desk.open("tab-1", "ines")
    desk.verdict("tab-1", "ines", "crack", None)
    labeled = task_row(engine, first).inspection_id

    undo = desk.undo("tab-1", "ines")
    assert undo.mode == "correcting" and undo.part is not None
    assert undo.part.inspection_id == labeled and undo.verdict_given == "crack"
    assert task_row(engine, second).claimed_by is not None  # the next part stays held

    back = desk.verdict("tab-1", "ines", "pit", None)
    assert back.mode == "task" and back.part is not None and back.part.task_id == second
    assert current_labels(engine) == {labeled: "pit"}
    with Session(engine) as db:
        assert len(db.exec(select(Label)).all()) == 2  # the first one kept, superseded
        assert db.exec(select(Event).where(Event.kind == "relabel")).one()


def test_escape_cancels_a_correction_without_a_relabel(
    desk: InspectorDesk, engine: Engine, tasks: Callable[..., list[int]]
) -> None:
    tasks(2)
    desk.open("tab-1", "ines")
    desk.verdict("tab-1", "ines", "ok", None)
    desk.undo("tab-1", "ines")
    view = desk.cancel("tab-1", "ines")
    assert view.mode == "task"
    with Session(engine) as db:
        assert len(db.exec(select(Label)).all()) == 1


def test_nothing_to_undo_in_a_fresh_tab(
    desk: InspectorDesk, tasks: Callable[..., list[int]]
) -> None:
    tasks(1)
    desk.open("tab-1", "ines")
    view = desk.undo("tab-1", "ines")
    assert view.mode == "task" and view.message_kind == "warn"


def test_skip_escalates_to_a_supervisor_with_the_note(
    desk: InspectorDesk, engine: Engine, tasks: Callable[..., list[int]]
) -> None:
    first, second = tasks(2)
    desk.open("tab-1", "ines")
    view = desk.skip("tab-1", "ines", "glare over the corner")
    assert view.part is not None and view.part.task_id == second
    task = task_row(engine, first)
    assert (task.status, task.note) == (TaskStatus.ESCALATED.value, "glare over the corner")

    supervisor = desk.open("tab-2", "sam")  # supervisors get escalated parts too
    assert supervisor.part is not None and supervisor.part.task_id == first
    assert supervisor.part.escalated and supervisor.part.note == "glare over the corner"


def test_two_inspectors_never_hold_the_same_part(
    desk: InspectorDesk, tasks: Callable[..., list[int]]
) -> None:
    tasks(2)
    a = desk.open("tab-a", "ines")
    b = desk.open("tab-b", "ivan")
    assert a.part is not None and b.part is not None
    assert a.part.task_id != b.part.task_id
    assert desk.open("tab-c", "ines").part.task_id == a.part.task_id  # type: ignore[union-attr]


def test_a_verdict_on_a_part_lost_meanwhile_is_not_saved_and_the_next_one_shows(
    desk: InspectorDesk, engine: Engine, tasks: Callable[..., list[int]]
) -> None:
    first, second = tasks(2)
    desk.open("tab-1", "ines")
    with Session(engine) as db:  # the lease ran out while the inspector was away
        task = db.get(ReviewTask, first)
        assert task is not None
        task.lease_expires_at = utcnow() - timedelta(seconds=1)
        db.add(task)
        db.commit()
    assert desk.open("tab-x", "ivan").part.task_id == first  # type: ignore[union-attr]

    view = desk.verdict("tab-1", "ines", "ok", None)
    assert view.message_kind == "warn" and "Not saved" in view.message
    assert view.part is not None and view.part.task_id == second
    assert current_labels(engine) == {}


def test_tick_renews_an_active_inspectors_lease_once_half_of_it_is_gone(
    desk: InspectorDesk,
    engine: Engine,
    tmp_path: Path,
    tasks: Callable[..., list[int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import review_ui.desk as desk_module

    (first,) = tasks(1)
    short = make_desk(engine, tmp_path, lease_seconds=30.0)
    short.open("tab-1", "ines")
    granted = _aware(task_row(engine, first).lease_expires_at)
    # the desk sees 20 s of the 30 s lease gone (past half); the lease itself still holds
    monkeypatch.setattr(desk_module, "utcnow", lambda: utcnow() + timedelta(seconds=20))
    view = short.tick("tab-1", "ines", idle_ms=2_000)
    assert not view.changed and view.part is not None and view.part.task_id == first
    assert _aware(task_row(engine, first).lease_expires_at) > granted


def test_tick_after_long_inactivity_pauses_and_hands_the_part_back(
    desk: InspectorDesk, engine: Engine, tasks: Callable[..., list[int]]
) -> None:
    (first,) = tasks(1)
    desk.open("tab-1", "ines")
    view = desk.tick("tab-1", "ines", idle_ms=91_000)
    assert view.mode == "paused" and view.part is None
    assert task_row(engine, first).status == TaskStatus.OPEN.value
    # any verdict key after a pause only resumes: nothing is labeled blind
    resumed = desk.verdict("tab-1", "ines", "ok", None)
    assert resumed.mode == "task" and current_labels(engine) == {}


def test_tick_picks_up_a_part_that_arrived_while_the_queue_was_empty(
    desk: InspectorDesk, tasks: Callable[..., list[int]]
) -> None:
    assert desk.open("tab-1", "ines").mode == "empty"
    quiet = desk.tick("tab-1", "ines", idle_ms=0)
    assert quiet.mode == "empty" and not quiet.changed
    (task_id,) = tasks(1)
    view = desk.tick("tab-1", "ines", idle_ms=0)
    assert view.changed and view.part is not None and view.part.task_id == task_id


def test_closing_the_tab_releases_the_part_unless_another_tab_shows_it(
    desk: InspectorDesk, engine: Engine, tasks: Callable[..., list[int]]
) -> None:
    (first,) = tasks(1)
    desk.open("tab-1", "ines")
    desk.open("tab-2", "ines")  # a reload: the new tab shows the same held part
    desk.leave("tab-1", "ines")
    assert task_row(engine, first).status == TaskStatus.CLAIMED.value
    desk.leave("tab-2", "ines")
    assert task_row(engine, first).status == TaskStatus.OPEN.value
    assert desk.open_tabs() == 0


def test_every_action_checks_the_user(desk: InspectorDesk, engine: Engine) -> None:
    with pytest.raises(NotLoggedIn):
        desk.open("tab-1", None)
    with pytest.raises(NotLoggedIn):
        desk.open("tab-1", "nobody")
    with Session(engine) as db:
        from inspect_app.accounts import get_user

        user = get_user(db, "ivan")
        user.active = False
        db.add(user)
        db.commit()
    with pytest.raises(NotLoggedIn):
        desk.verdict("tab-1", "ivan", "ok", None)


def test_bad_input_is_refused_clearly(desk: InspectorDesk) -> None:
    with pytest.raises(BadInput, match="unknown class"):
        desk.verdict("tab-1", "ines", "dent", None)
    with pytest.raises(BadInput, match="at most 2000"):
        desk.verdict("tab-1", "ines", "ok", "x" * 2001)


def test_access_denied_names_the_role_needed() -> None:
    from inspect_app.domain import Role
    from inspect_app.storage.tables import User
    from review_ui.auth import require_role

    with pytest.raises(AccessDenied, match="supervisors and above"):
        require_role(User(name="ines", role="inspector", password_hash="x"), Role.SUPERVISOR, "x")


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        ("2025-03-04T05:59:00", "2025-03-03T22:00:00"),
        ("2025-03-04T06:00:00", "2025-03-04T06:00:00"),
        ("2025-03-04T13:59:59", "2025-03-04T06:00:00"),
        ("2025-03-04T23:10:00", "2025-03-04T22:00:00"),
    ],
)
def test_shift_start(now: str, expected: str) -> None:
    tz = datetime.now().astimezone().tzinfo
    assert shift_start(datetime.fromisoformat(now).replace(tzinfo=tz)) == datetime.fromisoformat(
        expected
    ).replace(tzinfo=tz)


def _aware(value: datetime | None) -> datetime:
    from inspect_app.timeutil import as_utc

    result = as_utc(value)
    assert result is not None
    return result
