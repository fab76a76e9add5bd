"""Reference parts served blind in the review queue: at the rate, looking like live tasks,
and never changing a decision or the evidence."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import pytest
from sqlmodel import Session, func, select

from inspect_app import agreement, automation
from inspect_app import review_queue as rq
from inspect_app.accounts import add_user
from inspect_app.domain import Role
from inspect_app.events import list_events
from inspect_app.lines import add_line
from inspect_app.reference import service
from inspect_app.storage.tables import (
    Inspection,
    InspectorFlag,
    Label,
    Line,
    ReferenceAnswer,
    ReviewTask,
    User,
)

LEASE = 60.0
AddParts = Callable[..., list[int]]


@pytest.fixture
def sue(session: Session) -> User:
    return add_user(session, "sue", Role.SUPERVISOR, "supervisor-pw")


@pytest.fixture
def ann(session: Session) -> User:
    return add_user(session, "ann", Role.INSPECTOR, "inspector-pw")


def _world(
    session: Session, add_labeled_parts: AddParts, sue: User, *, refs: int, live: int, rate: float
) -> tuple[list[int], list[int]]:
    """A line with `refs` labeled parts marked as references (half ok, half scratch) and
    `live` open blind-audit tasks; returns (reference inspection ids, live inspection ids)."""
    add_line(session, "line-1")
    assert sue.id is not None
    labels = ["ok" if i % 2 else "scratch" for i in range(refs)]
    ref_ids = add_labeled_parts(
        session, "line-1", [0.9] * refs, labels, user_id=sue.id, route="audit"
    )
    for inspection_id, label in zip(ref_ids, labels, strict=True):
        service.add_reference(session, inspection_id, label, reason="verified twice", actor=sue)
    live_ids = add_labeled_parts(
        session, "line-1", [0.99] * live, [None] * live, user_id=sue.id, route="audit"
    )
    service.set_reference_settings(
        session, "line-1", reference_rate=rate, reason="measure inspectors", actor=sue
    )
    return ref_ids, live_ids


def test_served_at_about_the_rate_and_looking_like_a_live_task(
    session: Session, add_labeled_parts: AddParts, sue: User, ann: User
) -> None:
    ref_ids, _ = _world(session, add_labeled_parts, sue, refs=40, live=200, rate=0.2)
    rng = random.Random(7)
    served_refs = 0
    claims = 0
    live_task = None
    ref_task = None
    while claims < 150:
        task = rq.claim_next_task(session, ann, lease_seconds=LEASE, reference_rng=rng)
        assert task is not None
        claims += 1
        if task.inspection_id in ref_ids:
            served_refs += 1
            ref_task = ref_task or task
        else:
            live_task = live_task or task
        rq.submit_label(session, task.task_id, ann, "ok")
    # 150 claims at 0.2: 30 expected; the seed fixes the count, the band says "about"
    assert 15 <= served_refs <= 45
    assert ref_task is not None and live_task is not None
    # the same fields, none marking the reference; the model never shown on either (audits)
    assert [f.name for f in dataclasses.fields(ref_task)] == [
        f.name for f in dataclasses.fields(live_task)
    ]
    assert ref_task.reason == live_task.reason == "audit"
    assert ref_task.predicted_class is None and ref_task.probabilities is None
    assert ref_task.confidence is None and not ref_task.escalated
    assert ref_task.task_id > 0
    # no reference part twice to the same inspector within the window (40 parts, < 40 served)
    answered = session.exec(select(ReferenceAnswer.reference_id)).all()
    assert len(answered) == served_refs and len(set(answered)) == served_refs


def test_no_reference_when_the_rate_is_zero_or_the_queue_is_empty(
    session: Session, add_labeled_parts: AddParts, sue: User, ann: User
) -> None:
    _world(session, add_labeled_parts, sue, refs=10, live=0, rate=0.5)
    # nothing live waiting: an empty queue stays empty (a reference would give itself away)
    assert rq.claim_next_task(session, ann, lease_seconds=LEASE) is None
    assert sue.id is not None
    add_labeled_parts(session, "line-1", [0.99] * 5, [None] * 5, user_id=sue.id, route="audit")
    service.set_reference_settings(session, "line-1", reference_rate=0.0, reason="off", actor=sue)
    for _ in range(5):
        task = rq.claim_next_task(session, ann, lease_seconds=LEASE, reference_rng=random.Random(1))
        assert task is not None
        rq.submit_label(session, task.task_id, ann, "ok")
    assert session.exec(select(func.count()).select_from(ReferenceAnswer)).one() == 0


def test_an_answer_never_changes_a_decision_a_label_or_the_gates_evidence(
    session: Session, add_labeled_parts: AddParts, sue: User, ann: User
) -> None:
    ref_ids, _ = _world(session, add_labeled_parts, sue, refs=4, live=3, rate=0.5)
    before_decisions = {
        i.id: (i.decision, i.decided_by) for i in session.exec(select(Inspection)).all()
    }
    before_labels = session.exec(select(func.count()).select_from(Label)).one()
    gate_before = agreement.gate_evidence(session, "line-1")
    report_before = agreement.agreement_report(session, "line-1")

    class Always(random.Random):
        def random(self) -> float:
            return 0.0

    task = rq.claim_next_task(session, ann, lease_seconds=LEASE, reference_rng=Always(3))
    assert task is not None and task.inspection_id in ref_ids
    # a reload shows the same part again, a renewal works as on a live task
    again = rq.claim_next_task(session, ann, lease_seconds=LEASE, reference_rng=Always(3))
    assert again is not None and again.task_id == task.task_id
    rq.renew_lease(session, task.task_id, ann, lease_seconds=LEASE)
    # the opposite of the verified answer on every reference part
    verified = {p.inspection_id: p.label for p in service.list_references(session)}
    wrong = "ok" if verified[task.inspection_id] != "ok" else "crack"
    saved = rq.submit_label(session, task.task_id, ann, wrong)
    assert saved.label == wrong and saved.task_id == task.task_id
    # undo on the desk corrects the reference answer, not the inspection's label
    rq.relabel(session, task.inspection_id, ann, verified[task.inspection_id])

    after_decisions = {
        i.id: (i.decision, i.decided_by)
        for i in session.exec(select(Inspection).execution_options(populate_existing=True))
    }
    assert after_decisions == before_decisions
    assert session.exec(select(func.count()).select_from(Label)).one() == before_labels
    gate_after = agreement.gate_evidence(session, "line-1")
    assert gate_after.n == gate_before.n
    report_after = agreement.agreement_report(session, "line-1")
    assert report_after.labeled == report_before.labeled
    # live tasks untouched: all three still open
    open_tasks = session.exec(
        select(func.count()).select_from(ReviewTask).where(ReviewTask.status == "open")
    ).one()
    assert open_tasks == 3
    answer = session.exec(select(ReferenceAnswer)).one()
    assert answer.status == "answered" and answer.label == verified[task.inspection_id]
    # the inspector's shift count includes it, as for a live part
    assert rq.labels_given_since(session, ann, answer.served_at) == 1


def test_release_and_escalate_of_a_reference_leave_no_answer(
    session: Session, add_labeled_parts: AddParts, sue: User, ann: User
) -> None:
    _world(session, add_labeled_parts, sue, refs=4, live=3, rate=0.5)

    class Always(random.Random):
        def random(self) -> float:
            return 0.0

    first = rq.claim_next_task(session, ann, lease_seconds=LEASE, reference_rng=Always(1))
    assert first is not None
    rq.release_task(session, first.task_id, ann)
    second = rq.claim_next_task(session, ann, lease_seconds=LEASE, reference_rng=Always(2))
    assert second is not None and second.inspection_id != first.inspection_id
    rq.escalate_task(session, second.task_id, ann, "unclear")
    with pytest.raises(rq.TaskNotClaimed):
        rq.submit_label(session, second.task_id, ann, "ok")
    statuses = session.exec(select(ReferenceAnswer.status)).all()
    assert sorted(statuses) == ["released", "released"]
    assert session.exec(select(func.count()).select_from(ReviewTask).where(
        ReviewTask.status == "escalated")).one() == 0  # fmt: skip


def test_an_inspector_below_the_level_is_flagged_once_per_crossing(
    session: Session, add_labeled_parts: AddParts, sue: User, ann: User
) -> None:
    ref_ids, _ = _world(session, add_labeled_parts, sue, refs=60, live=100, rate=0.5)

    class Always(random.Random):
        def random(self) -> float:
            return 0.0

    verified = {p.inspection_id: p.label for p in service.list_references(session)}
    rng = Always(5)
    for _ in range(30):  # every answer wrong: flagged after MIN_ANSWERS (20)
        task = rq.claim_next_task(session, ann, lease_seconds=LEASE, reference_rng=rng)
        assert task is not None and task.inspection_id in ref_ids
        wrong = "ok" if verified[task.inspection_id] != "ok" else "pit"
        rq.submit_label(session, task.task_id, ann, wrong)
    flagged = list_events(session, kind="inspector_flagged")
    assert len(flagged) == 1 and flagged[0].details["inspector"] == "ann"  # type: ignore[index]
    row = session.get(InspectorFlag, ann.id)
    assert row is not None and row.flagged
    assert service.flagged_users(session) == {ann.id: "ann"}
    figures = {f.inspector: f for f in service.inspector_accuracies(session)}
    assert figures["ann"].answers == 30 and figures["ann"].binary.count == 0
    assert figures["ann"].flagged


def test_the_gate_can_leave_a_flagged_inspectors_labels_out(
    session: Session, add_labeled_parts: AddParts, sue: User, ann: User
) -> None:
    add_line(session, "line-1")
    assert sue.id is not None and ann.id is not None
    add_labeled_parts(session, "line-1", [0.99, 0.2], ["ok", "pit"], user_id=sue.id)
    add_labeled_parts(session, "line-1", [0.99, 0.99, 0.1], ["ok", "ok", "ok"], user_id=ann.id)
    session.add(InspectorFlag(user_id=ann.id, flagged=True))
    session.commit()
    everyone = agreement.gate_evidence(session, "line-1", model_version="test")
    assert everyone.n == 5
    flagged = service.flagged_users(session).values()
    trusted = agreement.gate_evidence(
        session, "line-1", model_version="test", exclude_labelers=flagged
    )
    assert trusted.n == 2 and "without the labels of ann" in trusted.source
    # ... and the line's setting makes the gate (raise, recommendation, what-if) do so
    line = session.get(Line, "line-1")
    assert line is not None
    assert "without" not in automation.recommend_for_line(session, line).source
    service.set_reference_settings(
        session, "line-1", gate_excludes_flagged=True, reason="ann is under review", actor=sue
    )
    session.refresh(line)
    assert "without the labels of ann" in automation.recommend_for_line(session, line).source
