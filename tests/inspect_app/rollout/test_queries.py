"""The rollout's read side: how a line's parts were split between champion and candidate,
and the events that changed what runs."""

from __future__ import annotations

import uuid

import pytest
from sqlmodel import Session

from inspect_app.events import record_event
from inspect_app.lines import add_line
from inspect_app.rollout.deployments import LineMissing
from inspect_app.rollout.queries import candidate_traffic, deployment_events
from inspect_app.storage.tables import Inspection


def _part(session: Session, line_id: str, arm: str | None, version: str | None) -> None:
    session.add(
        Inspection(
            line_id=line_id, image_sha256=uuid.uuid4().hex * 2, image_format="png",
            width=64, height=64, brightness=120.0, contrast=30.0, sharpness=200.0,
            model_version=version, level="shadow", pass_threshold=0.98, fail_threshold=0.98,
            route="review", decision="pending", arm=arm,
        )
    )  # fmt: skip


def test_traffic_is_the_candidates_share_per_bucket_of_decided_parts(session: Session) -> None:
    add_line(session, "line-1")
    add_line(session, "line-2")
    arms = ["champion"] * 4 + ["candidate", "champion", "candidate", "candidate"] + ["candidate"]
    for i, arm in enumerate(arms):
        _part(session, "line-1", arm, "v2" if arm == "candidate" else "v1")
        if i == 2:
            _part(session, "line-1", None, None)  # decided by nobody (a human_only part)
            _part(session, "line-2", "candidate", "v3")  # another line's
    session.commit()

    buckets = candidate_traffic(session, "line-1", bucket_parts=4)
    assert [(b.parts, b.candidate_parts) for b in buckets] == [(4, 0), (4, 3), (1, 1)]
    assert [b.candidate_share for b in buckets] == [0.0, 0.75, 1.0]
    assert [b.candidate_versions for b in buckets] == [(), ("v2",), ("v2",)]
    assert buckets[0].started_at <= buckets[0].ended_at <= buckets[1].started_at
    assert buckets[0].ended_at.tzinfo is not None
    # bounded to the newest parts
    newest = candidate_traffic(session, "line-1", bucket_parts=4, max_parts=5)
    assert [(b.parts, b.candidate_parts) for b in newest] == [(4, 3), (1, 1)]
    assert candidate_traffic(session, "line-2")[0].candidate_share == 1.0
    with pytest.raises(LineMissing, match="no line 'line-9'"):
        candidate_traffic(session, "line-9")
    with pytest.raises(ValueError, match="at least 1"):
        candidate_traffic(session, "line-1", bucket_parts=0)


def test_deployment_events_are_the_lines_and_every_registration_newest_first(
    session: Session,
) -> None:
    add_line(session, "line-1")
    add_line(session, "line-2")
    for kind, line_id in [
        ("model_registered", None),
        ("deployment_change", "line-1"),
        ("level_change", "line-1"),  # not a deployment's
        ("deployment_change", "line-2"),  # another line's
        ("rollout_promote", "line-1"),
        ("rollout_rollback", "line-1"),
    ]:
        record_event(session, kind=kind, actor="sam", reason=kind, line_id=line_id)
    session.commit()
    events = deployment_events(session, "line-1")
    assert [(e.kind, e.line_id) for e in events] == [
        ("rollout_rollback", "line-1"),
        ("rollout_promote", "line-1"),
        ("deployment_change", "line-1"),
        ("model_registered", None),
    ]
    assert [e.kind for e in deployment_events(session, "line-1", limit=2)] == [
        "rollout_rollback",
        "rollout_promote",
    ]
