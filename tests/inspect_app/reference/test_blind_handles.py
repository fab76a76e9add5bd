"""A reference part is shown by numbers of its own, from the id spaces of live parts: what
the inspector gets of it (the claim, the image URL, the verdict's reply, the undo) has the
shape of a live part's and never carries the source inspection's id."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable

import pytest
from sqlmodel import Session, func, select

from inspect_app import review_queue as rq
from inspect_app.accounts import add_user
from inspect_app.api.routes.reviews import ClaimedTaskPublic
from inspect_app.domain import Role
from inspect_app.lines import add_line
from inspect_app.reference import service, serving
from inspect_app.storage.tables import (
    Inspection,
    Label,
    OutboxMessage,
    ReferenceAnswer,
    ReviewTask,
    User,
)

LEASE = 60.0
AddParts = Callable[..., list[int]]


class Always(random.Random):
    """The serving lottery always says yes."""

    def random(self) -> float:
        return 0.0


def _world(session: Session, add_labeled_parts: AddParts) -> tuple[User, User, int, list[int]]:
    """(supervisor, inspector, the reference's source inspection id, live inspection ids):
    one reference among old parts, and live tasks waiting (decide and audit)."""
    add_line(session, "line-1")
    sue = add_user(session, "sue", Role.SUPERVISOR, "supervisor-pw")
    ann = add_user(session, "ann", Role.INSPECTOR, "inspector-pw")
    assert sue.id is not None
    (source,) = add_labeled_parts(session, "line-1", [0.2], ["scratch"], user_id=sue.id)
    service.add_reference(session, source, "scratch", reason="lab-verified", actor=sue)
    live = add_labeled_parts(session, "line-1", [0.4, 0.3], [None, None], user_id=sue.id)
    live += add_labeled_parts(session, "line-1", [0.99], [None], user_id=sue.id, route="audit")
    service.set_reference_settings(
        session, "line-1", reference_rate=0.5, reason="measure", actor=sue
    )
    return sue, ann, source, live


def _public(task: rq.ClaimedTask) -> dict[str, object]:
    return ClaimedTaskPublic.of(task).model_dump(mode="json")


def test_a_reference_looks_like_a_live_part_and_carries_no_source_id(
    session: Session, add_labeled_parts: AddParts
) -> None:
    _, ann, source, live_ids = _world(session, add_labeled_parts)
    largest_inspection = session.exec(select(func.max(Inspection.id))).one()
    largest_task = session.exec(select(func.max(ReviewTask.id))).one()
    reference = rq.claim_next_task(session, ann, lease_seconds=LEASE, reference_rng=Always())
    assert reference is not None and reference.inspection_id == source  # the queue knows
    rq.release_task(session, reference.task_id, ann)
    live = rq.claim_next_task(session, ann, lease_seconds=LEASE, reference_rng=random.Random(0))
    assert (
        live is not None and live.inspection_id in live_ids and live.shown_id == live.inspection_id
    )

    ref_out, live_out = _public(reference), _public(live)
    assert {k: type(v) for k, v in ref_out.items()} == {k: type(v) for k, v in live_out.items()}
    # a number of its own, where a new part's would be: past every inspection and task
    assert ref_out["inspection_id"] == reference.shown_id != source
    assert (
        isinstance(ref_out["inspection_id"], int) and ref_out["inspection_id"] > largest_inspection
    )
    assert isinstance(ref_out["task_id"], int) and ref_out["task_id"] > largest_task
    assert ref_out["image_url"] == f"/api/v1/inspections/{reference.shown_id}/image"
    shown_ids = {ref_out["inspection_id"], ref_out["task_id"]}
    assert source not in shown_ids and str(source) not in str(ref_out["image_url"]).split("/")

    if session.get_bind().dialect.name == "postgresql":
        # taken from the tables' own sequences: no live part or task ever gets them
        assert _later_rows_pass(session, reference.shown_id, reference.task_id)


def _later_rows_pass(session: Session, part_id: int, task_id: int) -> bool:
    row = Inspection(
        line_id="line-1", image_sha256=uuid.uuid4().hex * 2, image_format="png",
        width=64, height=64, brightness=120.0, contrast=30.0, sharpness=200.0,
        level="shadow", pass_threshold=0.9, fail_threshold=0.9, route="review",
        decision="pending",
    )  # fmt: skip
    session.add(row)
    session.flush()
    task = ReviewTask(inspection_id=row.id, line_id="line-1", reason="decide")  # type: ignore[arg-type]
    session.add(task)
    session.commit()
    return row.id is not None and row.id > part_id and task.id is not None and task.id > task_id


def test_verdict_image_and_undo_take_the_parts_number_and_write_nothing_live(
    session: Session, add_labeled_parts: AddParts
) -> None:
    sue, ann, source, _ = _world(session, add_labeled_parts)
    labels_before = session.exec(select(func.count()).select_from(Label)).one()
    decisions_before = {i.id: i.decision for i in session.exec(select(Inspection))}
    outbox_before = session.exec(select(func.count()).select_from(OutboxMessage)).one()

    task = rq.claim_next_task(session, ann, lease_seconds=LEASE, reference_rng=Always())
    assert task is not None and task.inspection_id == source
    part = task.shown_id
    # the number is the part's image to its inspector, and to nobody else
    served = serving.for_part(session, ann, part)
    assert served is not None and served.inspection_id == source
    assert serving.for_part(session, sue, part) is None

    saved = rq.submit_label(session, task.task_id, ann, "ok")  # wrong: it is a scratch
    assert (saved.inspection_id, saved.task_id) == (part, task.task_id)
    assert saved.id is not None and saved.id not in {source, part}
    # the reply states what a live part the line waits for would: the verdict's decision
    assert serving.reply_decision(session, ann, saved) == "pass"
    corrected = rq.relabel(session, part, ann, "scratch")  # the desk's undo, by the number
    assert corrected.inspection_id == part and corrected.id != saved.id
    assert serving.reply_decision(session, ann, corrected) == "fail"

    answer = session.exec(select(ReferenceAnswer)).one()
    assert (answer.label, answer.status, answer.served_part_id) == ("scratch", "answered", part)
    # never a label, a decision, or an outbox message
    assert session.exec(select(func.count()).select_from(Label)).one() == labels_before
    session.expire_all()
    assert {i.id: i.decision for i in session.exec(select(Inspection))} == decisions_before
    assert session.exec(select(func.count()).select_from(OutboxMessage)).one() == outbox_before
    # after the answer the number still shows its image to its inspector, while no live
    # part has it
    assert serving.for_part(session, ann, part) is not None


def test_a_live_label_keeps_its_inspections_decision(
    session: Session, add_labeled_parts: AddParts
) -> None:
    _, ann, _, live_ids = _world(session, add_labeled_parts)
    task = rq.claim_next_task(session, ann, lease_seconds=LEASE, reference_rng=random.Random(0))
    assert task is not None and task.inspection_id in live_ids
    saved = rq.submit_label(session, task.task_id, ann, "crack")
    assert serving.reply_decision(session, ann, saved) is None  # the inspection's stands


def test_on_sqlite_a_live_part_that_gets_the_number_later_wins_once_answered(
    session: Session, add_labeled_parts: AddParts
) -> None:
    if session.get_bind().dialect.name != "sqlite":
        pytest.skip("PostgreSQL never gives a live part a reference's number")
    sue, ann, _, _ = _world(session, add_labeled_parts)
    task = rq.claim_next_task(session, ann, lease_seconds=LEASE, reference_rng=Always())
    assert task is not None
    assert sue.id is not None
    (later,) = add_labeled_parts(session, "line-1", [0.5], ["ok"], user_id=sue.id)
    assert later == task.shown_id  # SQLite hands out the next id again
    assert serving.for_part(session, ann, later) is not None  # held: the reference first
    rq.submit_label(session, task.task_id, ann, "scratch")
    assert serving.for_part(session, ann, later) is None  # answered: the live part's
