"""What a supervisor reads about a line's rollout besides its deployment and its comparison:
how the line's parts were split between champion and candidate over time, and the events
that changed what runs. The review UI's Models page reads these; the API can too.

Read-only and bounded (a line runs for years): the traffic series covers the line's newest
parts only, the event list the newest events.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from inspect_app.events import list_events
from inspect_app.rollout.deployments import LineMissing
from inspect_app.rollout.policy import Arm
from inspect_app.storage.tables import Event, Inspection, Line
from inspect_app.timeutil import as_utc

TRAFFIC_BUCKET_PARTS = 50  # parts per point: a 5% canary shows as 2-3 of 50, not 0 or 1
TRAFFIC_MAX_PARTS = 5000  # the newest parts the series covers
EVENTS_LIMIT = 50

# The events that change or explain what runs on a line (`rollout.deployments`,
# `rollout.registry`). `model_registered` has no line: every line may run the version.
LINE_DEPLOYMENT_KINDS: tuple[str, ...] = (
    "deployment_change",
    "rollout_promote",
    "rollout_rollback",
    "rollout_rearm",
    "model_switch",
)
REGISTRY_KINDS: tuple[str, ...] = ("model_registered",)


@dataclass(frozen=True)
class TrafficBucket:
    """Consecutive parts of a line that a model decided, and how many the candidate took."""

    first_inspection_id: int
    last_inspection_id: int
    started_at: datetime  # the first part's arrival
    ended_at: datetime  # the last part's
    parts: int
    candidate_parts: int
    candidate_versions: tuple[str, ...]  # which candidate(s) decided them, in order seen

    @property
    def candidate_share(self) -> float:
        return self.candidate_parts / self.parts if self.parts else 0.0


def candidate_traffic(
    session: Session,
    line_id: str,
    *,
    bucket_parts: int = TRAFFIC_BUCKET_PARTS,
    max_parts: int = TRAFFIC_MAX_PARTS,
) -> list[TrafficBucket]:
    """The share of the line's parts the candidate decided, per `bucket_parts` consecutive
    parts, oldest first; the newest bucket may be partly filled.

    A part counts when a model decided it under a deployment (`Inspection.arm` is set):
    parts from a human_only line, gate-refused frames decided by nobody, and parts from
    before rollouts existed are left out, so a share is never diluted by parts no model
    could have taken."""
    if bucket_parts < 1 or max_parts < 1:
        raise ValueError("bucket_parts and max_parts must be at least 1")
    if session.get(Line, line_id) is None:
        raise LineMissing(f"no line {line_id!r}")
    rows = session.exec(
        select(Inspection.id, Inspection.received_at, Inspection.arm, Inspection.model_version)
        .where(Inspection.line_id == line_id, col(Inspection.arm).is_not(None))
        .order_by(col(Inspection.id).desc())
        .limit(max_parts)
    ).all()
    rows = list(reversed(rows))
    buckets = []
    for start in range(0, len(rows), bucket_parts):
        chunk = rows[start : start + bucket_parts]
        candidate = [version for _, _, arm, version in chunk if arm == Arm.CANDIDATE.value]
        buckets.append(
            TrafficBucket(
                first_inspection_id=int(chunk[0][0]),
                last_inspection_id=int(chunk[-1][0]),
                started_at=as_utc(chunk[0][1]) or chunk[0][1],
                ended_at=as_utc(chunk[-1][1]) or chunk[-1][1],
                parts=len(chunk),
                candidate_parts=len(candidate),
                candidate_versions=tuple(dict.fromkeys(v for v in candidate if v is not None)),
            )
        )
    return buckets


def deployment_events(session: Session, line_id: str, limit: int = EVENTS_LIMIT) -> list[Event]:
    """The line's deployment events and every registration, newest first, at most `limit`."""
    events = [
        event
        for kind in LINE_DEPLOYMENT_KINDS
        for event in list_events(session, line_id=line_id, kind=kind, limit=limit)
    ]
    events += [
        event for kind in REGISTRY_KINDS for event in list_events(session, kind=kind, limit=limit)
    ]
    events.sort(key=lambda e: (as_utc(e.at) or e.at, e.id or 0), reverse=True)
    return events[:limit]
