from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from inspect_app import automation
from inspect_app import review_queue as rq
from inspect_app.accounts import add_user
from inspect_app.domain import DefectClass, Role, TaskReason
from inspect_app.lines import add_line
from inspect_app.storage.db import make_engine, upgrade_database
from inspect_app.storage.tables import Inspection, Label, ReviewTask, User, utcnow

LEASE = 60.0
Seed = Callable[..., int]
AddParts = Callable[..., list[int]]


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


@pytest.fixture
def sue(session: Session) -> User:
    return add_user(session, "sue", Role.SUPERVISOR, "supervisor-pw")


def _expire_lease(session: Session, task_id: int) -> None:
    """As if the lease's time had passed (an inspector who walked away)."""
    session.exec(
        update(ReviewTask)
        .where(col(ReviewTask.id) == task_id)
        .values(lease_expires_at=utcnow() - timedelta(seconds=1))
    )
    session.commit()


def _inspection_of(session: Session, task_id: int) -> Inspection:
    task = session.get(ReviewTask, task_id, populate_existing=True)
    assert task is not None
    inspection = session.get(Inspection, task.inspection_id, populate_existing=True)
    assert inspection is not None
    return inspection


def test_decisions_come_before_audits_and_the_oldest_first(
    session: Session, seed_review_task: Seed, line: str, ann: User
) -> None:
    t0 = utcnow() - timedelta(minutes=10)
    old_audit = seed_review_task(session, line, reason=TaskReason.AUDIT, created_at=t0)
    new_decide = seed_review_task(session, line, created_at=t0 + timedelta(minutes=5))
    old_decide = seed_review_task(session, line, created_at=t0 + timedelta(minutes=1))
    new_audit = seed_review_task(
        session, line, reason=TaskReason.AUDIT, created_at=t0 + timedelta(minutes=2)
    )
    order = []
    while (task := rq.claim_next_task(session, ann, lease_seconds=LEASE)) is not None:
        order.append(task.task_id)
        rq.submit_label(session, task.task_id, ann, "ok")
    assert order == [old_decide, new_decide, old_audit, new_audit]


def test_an_empty_queue_gives_nothing(session: Session, line: str, ann: User) -> None:
    assert rq.claim_next_task(session, ann, lease_seconds=LEASE) is None


def test_a_line_filter_claims_from_that_line_only(
    session: Session, seed_review_task: Seed, line: str, ann: User
) -> None:
    add_line(session, "line-2")
    seed_review_task(session, line)
    other = seed_review_task(session, "line-2")
    task = rq.claim_next_task(session, ann, lease_seconds=LEASE, line_id="line-2")
    assert task is not None and (task.task_id, task.line_id) == (other, "line-2")


def test_claiming_again_returns_the_task_already_held(
    session: Session, seed_review_task: Seed, line: str, ann: User
) -> None:
    seed_review_task(session, line)
    seed_review_task(session, line)
    first = rq.claim_next_task(session, ann, lease_seconds=LEASE)
    again = rq.claim_next_task(session, ann, lease_seconds=LEASE)
    assert first is not None and again is not None
    assert again.task_id == first.task_id
    assert again.lease_expires_at >= first.lease_expires_at


def test_two_inspectors_get_different_tasks(
    session: Session, seed_review_task: Seed, line: str, ann: User, bob: User
) -> None:
    seed_review_task(session, line)
    seed_review_task(session, line)
    a = rq.claim_next_task(session, ann, lease_seconds=LEASE)
    b = rq.claim_next_task(session, bob, lease_seconds=LEASE)
    assert a is not None and b is not None and a.task_id != b.task_id
    assert rq.claim_next_task(session, add_user(session, "cy", "inspector", "pw-12345678"),
                              lease_seconds=LEASE) is None  # fmt: skip


def test_an_expired_lease_returns_the_task_to_the_queue(
    session: Session, seed_review_task: Seed, line: str, ann: User, bob: User
) -> None:
    task_id = seed_review_task(session, line)
    assert rq.claim_next_task(session, ann, lease_seconds=LEASE) is not None
    assert rq.claim_next_task(session, bob, lease_seconds=LEASE) is None
    _expire_lease(session, task_id)
    taken = rq.claim_next_task(session, bob, lease_seconds=LEASE)
    assert taken is not None and taken.task_id == task_id
    with pytest.raises(rq.TaskNotClaimed, match="not claimed by ann"):
        rq.submit_label(session, task_id, ann, "ok")
    rq.submit_label(session, task_id, bob, "ok")


def test_the_holder_cannot_label_after_the_lease_expired(
    session: Session, seed_review_task: Seed, line: str, ann: User
) -> None:
    task_id = seed_review_task(session, line)
    rq.claim_next_task(session, ann, lease_seconds=LEASE)
    _expire_lease(session, task_id)
    with pytest.raises(rq.TaskNotClaimed, match="expired"):
        rq.submit_label(session, task_id, ann, "ok")
    with pytest.raises(rq.TaskNotClaimed, match="expired"):
        rq.renew_lease(session, task_id, ann, lease_seconds=LEASE)


def test_a_label_resolves_a_pending_decision(
    session: Session, seed_review_task: Seed, line: str, ann: User
) -> None:
    task_id = seed_review_task(session, line)
    rq.claim_next_task(session, ann, lease_seconds=LEASE)
    label = rq.submit_label(session, task_id, ann, "crack", note="corner", duration_ms=1500)
    inspection = _inspection_of(session, task_id)
    assert (inspection.decision, inspection.decided_by) == ("fail", "human")
    assert inspection.decided_at is not None
    assert (label.label, label.note, label.duration_ms, label.task_id) == (
        "crack", "corner", 1500, task_id
    )  # fmt: skip
    task = session.get(ReviewTask, task_id, populate_existing=True)
    assert task is not None and task.status == "done"
    assert rq.queue_depth(session, line) == 0


def test_an_audit_label_never_changes_the_models_decision(
    session: Session, seed_review_task: Seed, line: str, ann: User
) -> None:
    task_id = seed_review_task(session, line, reason=TaskReason.AUDIT)
    rq.claim_next_task(session, ann, lease_seconds=LEASE)
    rq.submit_label(session, task_id, ann, "scratch")
    inspection = _inspection_of(session, task_id)
    assert (inspection.decision, inspection.decided_by) == ("pass", "model")


def test_labels_need_the_claim_and_a_known_class(
    session: Session, seed_review_task: Seed, line: str, ann: User, bob: User
) -> None:
    task_id = seed_review_task(session, line)
    with pytest.raises(rq.TaskNotFound):
        rq.submit_label(session, 9999, ann, "ok")
    with pytest.raises(rq.TaskNotClaimed, match="not claimed by ann"):
        rq.submit_label(session, task_id, ann, "ok")
    rq.claim_next_task(session, ann, lease_seconds=LEASE)
    with pytest.raises(rq.InvalidLabel, match="unknown class 'dent'"):
        rq.submit_label(session, task_id, ann, "dent")
    with pytest.raises(rq.TaskNotClaimed, match="not claimed by bob"):
        rq.submit_label(session, task_id, bob, "ok")
    rq.submit_label(session, task_id, ann, "ok")
    with pytest.raises(rq.TaskNotClaimed, match="already labeled"):
        rq.submit_label(session, task_id, ann, "pit")


def test_after_label_hears_of_every_committed_label(
    session: Session,
    seed_review_task: Seed,
    line: str,
    ann: User,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    heard: list[tuple[str, int, int]] = []

    def after_label(s: Session, line_id: str, inspection_id: int) -> None:
        committed = s.exec(select(Label).where(Label.inspection_id == inspection_id)).all()
        heard.append((line_id, inspection_id, len(committed)))

    monkeypatch.setattr(automation, "after_label", after_label)
    task_id = seed_review_task(session, line)
    claimed = rq.claim_next_task(session, ann, lease_seconds=LEASE)
    assert claimed is not None
    rq.submit_label(session, task_id, ann, "ok")
    rq.relabel(session, claimed.inspection_id, ann, "pit")
    assert heard == [(line, claimed.inspection_id, 1), (line, claimed.inspection_id, 2)]


def test_a_relabel_supersedes_and_the_decision_follows(
    session: Session, seed_review_task: Seed, line: str, ann: User
) -> None:
    task_id = seed_review_task(session, line)
    claimed = rq.claim_next_task(session, ann, lease_seconds=LEASE)
    assert claimed is not None
    first = rq.submit_label(session, task_id, ann, "scratch")
    second = rq.relabel(session, claimed.inspection_id, ann, "ok", note="it was dust")
    labels = session.exec(
        select(Label).where(Label.inspection_id == claimed.inspection_id).order_by(Label.id)
    ).all()
    assert [(x.id, x.label, x.superseded) for x in labels] == [
        (first.id, "scratch", True), (second.id, "ok", False)
    ]  # fmt: skip
    assert _inspection_of(session, task_id).decision == "pass"


def test_only_the_author_or_a_supervisor_may_relabel(
    session: Session, seed_review_task: Seed, line: str, ann: User, bob: User, sue: User
) -> None:
    task_id = seed_review_task(session, line)
    claimed = rq.claim_next_task(session, ann, lease_seconds=LEASE)
    assert claimed is not None
    with pytest.raises(rq.NothingToRelabel):
        rq.relabel(session, claimed.inspection_id, ann, "ok")
    rq.submit_label(session, task_id, ann, "ok")
    with pytest.raises(rq.RelabelNotAllowed):
        rq.relabel(session, claimed.inspection_id, bob, "pit")
    rq.relabel(session, claimed.inspection_id, sue, "pit")
    assert _inspection_of(session, task_id).decision == "fail"
    with pytest.raises(rq.InspectionNotFound):
        rq.relabel(session, 9999, sue, "ok")


def test_an_escalated_task_goes_to_supervisors_only(
    session: Session, seed_review_task: Seed, line: str, ann: User, bob: User, sue: User
) -> None:
    task_id = seed_review_task(session, line)
    rq.claim_next_task(session, ann, lease_seconds=LEASE)
    rq.escalate_task(session, task_id, ann, "cannot tell scratch from dust")
    with pytest.raises(rq.TaskNotClaimed):
        rq.submit_label(session, task_id, ann, "ok")
    assert rq.claim_next_task(session, bob, lease_seconds=LEASE) is None
    assert rq.queue_depth(session, line) == 1
    taken = rq.claim_next_task(session, sue, lease_seconds=LEASE)
    assert taken is not None and taken.task_id == task_id
    assert taken.escalated and taken.note == "cannot tell scratch from dust"
    # the supervisor walks away: it goes back to supervisors, not to the inspectors
    _expire_lease(session, task_id)
    assert rq.claim_next_task(session, bob, lease_seconds=LEASE) is None
    assert rq.claim_next_task(session, sue, lease_seconds=LEASE) is not None
    rq.submit_label(session, task_id, sue, "scratch")
    assert _inspection_of(session, task_id).decision == "fail"


def test_releasing_puts_a_task_back(
    session: Session, seed_review_task: Seed, line: str, ann: User, bob: User, sue: User
) -> None:
    task_id = seed_review_task(session, line)
    rq.claim_next_task(session, ann, lease_seconds=LEASE)
    with pytest.raises(rq.TaskNotClaimed):
        rq.release_task(session, task_id, bob)
    rq.release_task(session, task_id, ann)
    taken = rq.claim_next_task(session, bob, lease_seconds=LEASE)
    assert taken is not None and taken.task_id == task_id
    rq.escalate_task(session, task_id, bob, "unclear")
    rq.claim_next_task(session, sue, lease_seconds=LEASE)
    rq.release_task(session, task_id, sue)
    assert rq.claim_next_task(session, ann, lease_seconds=LEASE) is None
    again = rq.claim_next_task(session, sue, lease_seconds=LEASE)
    assert again is not None and again.escalated


def test_renewing_extends_the_holders_lease(
    session: Session, seed_review_task: Seed, line: str, ann: User, bob: User
) -> None:
    task_id = seed_review_task(session, line)
    claimed = rq.claim_next_task(session, ann, lease_seconds=5)
    assert claimed is not None
    renewed = rq.renew_lease(session, task_id, ann, lease_seconds=600)
    assert renewed > claimed.lease_expires_at
    with pytest.raises(rq.TaskNotClaimed):
        rq.renew_lease(session, task_id, bob, lease_seconds=600)
    with pytest.raises(ValueError, match="positive"):
        rq.renew_lease(session, task_id, ann, lease_seconds=0)


def test_the_model_output_is_shown_only_where_the_level_shows_it(
    session: Session, seed_review_task: Seed, line: str, ann: User
) -> None:
    probabilities = {"ok": 0.1, "scratch": 0.7, "crack": 0.1, "pit": 0.05, "discoloration": 0.05}
    blind = seed_review_task(session, line, probabilities=probabilities, true_class="scratch")
    t = rq.claim_next_task(session, ann, lease_seconds=LEASE)
    assert t is not None and t.task_id == blind
    assert (t.predicted_class, t.confidence, t.probabilities) == (None, None, None)
    assert not hasattr(t, "true_class")
    rq.submit_label(session, blind, ann, "scratch")
    seed_review_task(session, line, probabilities=probabilities, show_model=True)
    shown = rq.claim_next_task(session, ann, lease_seconds=LEASE)
    assert shown is not None
    assert (shown.predicted_class, shown.confidence) == ("scratch", 0.7)
    assert shown.probabilities == probabilities


def test_queue_depth_and_oldest_waiting(
    session: Session, seed_review_task: Seed, line: str, ann: User
) -> None:
    assert rq.queue_depth(session, line) == 0 and rq.oldest_waiting(session, line) is None
    t0 = utcnow() - timedelta(minutes=3)
    first = seed_review_task(session, line, created_at=t0)
    seed_review_task(session, line, created_at=t0 + timedelta(minutes=1))
    assert rq.queue_depth(session, line) == 2 and rq.queue_depth(session) == 2
    assert rq.oldest_waiting(session, line) == t0
    rq.claim_next_task(session, ann, lease_seconds=LEASE)
    rq.submit_label(session, first, ann, "ok")
    assert rq.queue_depth(session, line) == 1
    assert rq.oldest_waiting(session, line) == t0 + timedelta(minutes=1)


def _claim_concurrently(engine: Engine, users: list[User], n_tasks: int) -> list[int]:
    """Each inspector claims and labels until the queue is empty; returns every claim."""
    claims: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(len(users))

    def work(user: User) -> None:
        try:
            with Session(engine, expire_on_commit=False) as s:
                start.wait()
                while (task := rq.claim_next_task(s, user, lease_seconds=LEASE)) is not None:
                    with lock:
                        claims.append(task.task_id)
                    rq.submit_label(s, task.task_id, user, "ok")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(u,)) for u in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return claims


def _concurrent_claimers_never_share(engine: Engine, seed_review_task: Seed) -> None:
    n_tasks = 40
    with Session(engine, expire_on_commit=False) as s:
        add_line(s, "line-1")
        users = [add_user(s, f"inspector{i}", Role.INSPECTOR, "inspector-pw") for i in range(6)]
        for i in range(n_tasks):
            seed_review_task(s, "line-1", reason=TaskReason.AUDIT if i % 3 else TaskReason.DECIDE)
    claims = _claim_concurrently(engine, users, n_tasks)
    assert len(claims) == n_tasks
    assert len(set(claims)) == n_tasks
    with Session(engine) as s:
        assert len(s.exec(select(Label)).all()) == n_tasks


def test_concurrent_claimers_never_share_a_task_on_a_sqlite_file(
    tmp_path: Path, seed_review_task: Seed
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'queue.db'}")
    upgrade_database(engine)
    try:
        _concurrent_claimers_never_share(engine, seed_review_task)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_concurrent_claimers_never_share_a_task_on_postgresql(
    fresh_postgres_url: str, seed_review_task: Seed
) -> None:
    engine = make_engine(fresh_postgres_url)
    upgrade_database(engine)
    try:
        _concurrent_claimers_never_share(engine, seed_review_task)
    finally:
        engine.dispose()


def test_labels_given_since_counts_the_labels_that_still_stand(
    session: Session, line: str, ann: User, bob: User, sue: User, add_labeled_parts: AddParts
) -> None:
    started = utcnow() - timedelta(hours=1)
    first, second = add_labeled_parts(session, line, [0.99, 0.1], ["ok", "pit"], user_id=ann.id)
    add_labeled_parts(session, line, [0.9], ["ok"], user_id=bob.id)
    assert rq.labels_given_since(session, ann, started) == 2
    rq.relabel(session, first, ann, "scratch")  # her own redo: still one label of hers
    assert rq.labels_given_since(session, ann, started) == 2
    rq.relabel(session, second, sue, "crack")  # a supervisor's correction replaces hers
    assert rq.labels_given_since(session, ann, started) == 1
    assert rq.labels_given_since(session, sue, started) == 1
    assert rq.labels_given_since(session, bob, started) == 1
    assert rq.labels_given_since(session, ann, utcnow() + timedelta(hours=1)) == 0


def test_a_verdict_must_name_a_class() -> None:
    assert rq.as_label("scratch") is DefectClass.SCRATCH
    with pytest.raises(rq.InvalidLabel, match="unknown class 'dent': one of ok, scratch"):
        rq.as_label("dent")
