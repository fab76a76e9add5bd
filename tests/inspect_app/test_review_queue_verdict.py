"""`review_queue.label_and_claim_next`: a verdict and the next part in one transaction, with
the same rules as `submit_label` followed by `claim_next_task`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from inspect_app import automation
from inspect_app import review_queue as rq
from inspect_app.accounts import add_user
from inspect_app.domain import Role, TaskReason, TaskStatus
from inspect_app.lines import add_line
from inspect_app.storage.db import make_engine, upgrade_database
from inspect_app.storage.tables import Inspection, Label, ReviewTask, User

LEASE = 60.0
Seed = Callable[..., int]


@pytest.fixture
def line(session: Session) -> str:
    add_line(session, "line-1")
    return "line-1"


@pytest.fixture
def ann(session: Session) -> User:
    return add_user(session, "ann", Role.INSPECTOR, "inspector-pw")


@pytest.fixture
def bob(session: Session) -> User:
    return add_user(session, "bob", Role.INSPECTOR, "inspector-pw")


def test_a_verdict_saves_the_label_and_claims_the_next_part_in_queue_order(
    session: Session, seed_review_task: Seed, line: str, ann: User
) -> None:
    first = seed_review_task(session, line)
    audit = seed_review_task(session, line, reason=TaskReason.AUDIT)
    second = seed_review_task(session, line)
    task = rq.claim_next_task(session, ann, lease_seconds=LEASE)
    assert task is not None and task.task_id == first
    seen = [task.task_id]
    while task is not None:
        label, task = rq.label_and_claim_next(
            session, task.task_id, ann, "scratch", lease_seconds=LEASE, duration_ms=900
        )
        assert label.id is not None and label.label == "scratch" and label.duration_ms == 900
        if task is not None:
            seen.append(task.task_id)
            assert task.lease_expires_at > label.created_at
    assert seen == [first, second, audit]  # decisions first, then the audit: the same order
    tasks = session.exec(select(ReviewTask).execution_options(populate_existing=True)).all()
    assert {t.status for t in tasks} == {"done"}
    decisions = {
        i.id: (i.decision, i.decided_by)
        for i in session.exec(select(Inspection).execution_options(populate_existing=True))
    }
    by_task = {t.id: t.inspection_id for t in tasks}
    assert decisions[by_task[first]] == ("fail", "human")
    assert decisions[by_task[audit]] == ("pass", "model")  # an audit never changes it
    assert len(session.exec(select(Label)).all()) == 3


def test_the_label_and_the_claim_are_one_commit(
    session: Session, seed_review_task: Seed, line: str, ann: User
) -> None:
    seed_review_task(session, line)
    seed_review_task(session, line)
    task = rq.claim_next_task(session, ann, lease_seconds=LEASE)
    assert task is not None
    engine = session.get_bind()
    writes: list[str] = []

    def count(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            writes.append("write")

    def commit(conn) -> None:  # type: ignore[no-untyped-def]
        writes.append("commit")

    event.listen(engine, "before_cursor_execute", count)
    event.listen(engine, "commit", commit)
    try:
        _label, nxt = rq.label_and_claim_next(session, task.task_id, ann, "ok", lease_seconds=LEASE)
    finally:
        event.remove(engine, "before_cursor_execute", count)
        event.remove(engine, "commit", commit)
    assert nxt is not None
    # every write (the label, the decision and its outbox message, the claim) before the
    # first commit; what follows is the after-label hooks, which write nothing here
    first_commit = writes.index("commit")
    assert "write" not in writes[first_commit:]
    assert writes[:first_commit].count("write") >= 3


def test_a_refused_verdict_saves_nothing_and_claims_nothing(
    session: Session, seed_review_task: Seed, line: str, ann: User, bob: User
) -> None:
    held = seed_review_task(session, line)
    seed_review_task(session, line)
    task = rq.claim_next_task(session, bob, lease_seconds=LEASE)
    assert task is not None and task.task_id == held
    with pytest.raises(rq.TaskNotClaimed, match="not claimed by ann"):
        rq.label_and_claim_next(session, held, ann, "ok", lease_seconds=LEASE)
    with pytest.raises(rq.TaskNotFound):
        rq.label_and_claim_next(session, 999_999, ann, "ok", lease_seconds=LEASE)
    assert session.exec(select(Label)).all() == []
    mine = session.exec(
        select(ReviewTask).where(ReviewTask.claimed_by == ann.id)  # ann holds nothing
    ).all()
    assert mine == []
    with pytest.raises(rq.InvalidLabel):
        rq.label_and_claim_next(session, held, bob, "smudge", lease_seconds=LEASE)
    with pytest.raises(ValueError, match="lease_seconds"):
        rq.label_and_claim_next(session, held, bob, "ok", lease_seconds=0)


def test_the_last_verdict_leaves_an_empty_queue_and_a_saved_label(
    session: Session, seed_review_task: Seed, line: str, ann: User
) -> None:
    only = seed_review_task(session, line)
    task = rq.claim_next_task(session, ann, lease_seconds=LEASE)
    assert task is not None and task.task_id == only
    _label, nxt = rq.label_and_claim_next(session, only, ann, "ok", lease_seconds=LEASE)
    assert nxt is None
    assert session.exec(select(Label.task_id)).all() == [only]
    assert rq.queue_depth(session) == 0


def test_the_after_label_hooks_hear_of_the_verdict_once_it_is_committed(
    session: Session,
    seed_review_task: Seed,
    line: str,
    ann: User,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed_review_task(session, line)
    seed_review_task(session, line)
    heard: list[tuple[str, int, int]] = []

    def after_label(s: Session, line_id: str, inspection_id: int) -> None:
        # a fresh connection sees the label: the hook runs after the commit
        with Session(s.get_bind()) as other:
            saved = other.exec(select(Label).where(Label.inspection_id == inspection_id)).all()
        heard.append((line_id, inspection_id, len(saved)))

    monkeypatch.setattr(automation, "after_label", after_label)
    task = rq.claim_next_task(session, ann, lease_seconds=LEASE)
    assert task is not None
    rq.label_and_claim_next(session, task.task_id, ann, "ok", lease_seconds=LEASE)
    assert heard == [(line, task.inspection_id, 1)]


def _label_concurrently(engine: Engine, users: list[User]) -> list[int]:
    """Each inspector labels back to back with `label_and_claim_next` until the queue is
    empty; returns every task each was given."""
    given: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(len(users))

    def work(user: User) -> None:
        try:
            with Session(engine, expire_on_commit=False) as s:
                start.wait()
                task = rq.claim_next_task(s, user, lease_seconds=LEASE)
                while task is not None:
                    with lock:
                        given.append(task.task_id)
                    _label, task = rq.label_and_claim_next(
                        s, task.task_id, user, "ok", lease_seconds=LEASE
                    )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(u,)) for u in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return given


def _never_share(engine: Engine, seed_review_task: Seed) -> None:
    n_tasks = 40
    with Session(engine, expire_on_commit=False) as s:
        add_line(s, "line-1")
        users = [add_user(s, f"inspector{i}", Role.INSPECTOR, "inspector-pw") for i in range(6)]
        for i in range(n_tasks):
            seed_review_task(s, "line-1", reason=TaskReason.AUDIT if i % 3 else TaskReason.DECIDE)
    given = _label_concurrently(engine, users)
    assert sorted(given) == sorted(set(given)) and len(given) == n_tasks
    with Session(engine) as s:
        labels = s.exec(select(Label.task_id)).all()
        assert sorted(labels) == sorted(given)  # each part labeled once, by its holder
        assert s.exec(select(ReviewTask).where(col(ReviewTask.status) != "done")).all() == []


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'queue.db'}")
    upgrade_database(engine)
    yield engine
    engine.dispose()


def test_inspectors_labeling_at_once_never_share_a_part_on_a_sqlite_file(
    sqlite_file: Engine, seed_review_task: Seed
) -> None:
    _never_share(sqlite_file, seed_review_task)


@pytest.mark.postgres
def test_inspectors_labeling_at_once_never_share_a_part_on_postgresql(
    fresh_postgres_url: str, seed_review_task: Seed
) -> None:
    engine = make_engine(fresh_postgres_url)
    upgrade_database(engine)
    try:
        _never_share(engine, seed_review_task)
    finally:
        engine.dispose()


def test_the_waiting_index_is_partial_on_sqlite_too(sqlite_file: Engine) -> None:
    """Revision 0016: on SQLite the claim's index holds waiting tasks only, so a planner
    with statistics never walks the done ones (a full index scan before it)."""
    with sqlite_file.connect() as conn:
        sql = conn.execute(
            text("SELECT sql FROM sqlite_master WHERE name = 'ix_task_waiting'")
        ).scalar_one()
    assert "WHERE status IN ('open', 'claimed', 'escalated')" in sql


def test_every_status_but_done_is_waiting() -> None:
    """The claim, the queue's depth and its oldest part name the waiting statuses (so the
    indexes serve them); a status added later must be named there too, or it vanishes."""
    assert set(rq.WAITING_STATUSES) == {s.value for s in TaskStatus} - {TaskStatus.DONE.value}
