"""Inspections in bulk: what a supervisor (or a plant's own analysis) lists and exports.

`GET /api/v1/inspections` and `inspect-app inspections list` both read through
`list_inspections`, so the two never disagree about which parts match a filter.

Pagination is a keyset on the inspection id, oldest first: a page is "ids after the cursor",
so a listing never skips or repeats a part while the line keeps adding new ones (they land
after the last page), and reading page 10,000 costs what page 1 does. `next_cursor` is the
last id of a full page (None when no part follows it).

Supervisors see each part's model output whatever the line's level showed: they are the
ones who read the evidence. The current label is the one that stands (a relabel replaces
the earlier label, `Label.superseded`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_
from sqlmodel import Session, col, select

from inspect_app.domain import Decision, Route, Threshold
from inspect_app.lines import get_line
from inspect_app.storage.tables import Inspection, Label
from inspect_app.timeutil import as_utc

MAX_PAGE = 500  # parts per page at most: a page is one query and one answer in memory
DEFAULT_PAGE = 100


class InvalidQuery(ValueError):
    """A listing that cannot be answered as asked; the message says why."""


@dataclass(frozen=True)
class InspectionFilter:
    """Which parts to list; every field None means "any"."""

    line_id: str | None = None
    since: datetime | None = None  # received at or after
    until: datetime | None = None  # received before; after `since`
    decision: Decision | None = None
    route: Route | None = None
    model_version: str | None = None
    labeled: bool | None = None  # True: has a standing label; False: has none


@dataclass(frozen=True)
class InspectionRecord:
    """One part as the listing shows it: flat, so it is also one CSV row."""

    inspection_id: int
    line: str
    received_at: datetime
    captured_at: datetime | None
    capture_id: str | None
    part_serial: str | None
    source: str
    level: str  # the line's level when the part arrived
    pass_threshold: Threshold  # ... and the thresholds it was routed under ("never": off)
    fail_threshold: Threshold
    route: str
    decision: str
    decided_by: str | None
    decided_at: datetime | None
    model_version: str | None
    predicted_class: str | None
    confidence: float | None
    p_ok: float | None
    gate_codes: str | None  # why the image gate kept the model from deciding (comma-separated)
    label: str | None  # the standing human label, None when not labeled
    labeled_at: datetime | None


@dataclass(frozen=True)
class InspectionPage:
    items: list[InspectionRecord]
    next_cursor: int | None  # pass as `after` for the next page; None: this was the last


def _check(filters: InspectionFilter, after: int | None, limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidQuery(f"limit must be from 1 to {MAX_PAGE}, got {limit}")
    if after is not None and after < 1:
        raise InvalidQuery(f"after must be an inspection id (1 or more), got {after}")
    since, until = as_utc(filters.since), as_utc(filters.until)
    if since is not None and until is not None and until <= since:
        raise InvalidQuery(
            f"the window is empty: until ({until.isoformat()}) must be after since "
            f"({since.isoformat()})"
        )


def list_inspections(
    session: Session,
    filters: InspectionFilter = InspectionFilter(),
    *,
    after: int | None = None,
    limit: int = DEFAULT_PAGE,
) -> InspectionPage:
    """One page of the parts matching `filters`, oldest first, with ids above `after`.

    Raises InvalidQuery (a bad limit, cursor or window) or `lines.LineNotFound` (a filter on
    a line that does not exist: a typo should not look like a line with no parts).
    """
    _check(filters, after, limit)
    if filters.line_id is not None:
        get_line(session, filters.line_id)
    query = select(Inspection, Label.label, Label.created_at).outerjoin(
        Label,
        and_(col(Label.inspection_id) == col(Inspection.id), col(Label.superseded).is_(False)),
    )
    if filters.line_id is not None:
        query = query.where(Inspection.line_id == filters.line_id)
    if filters.since is not None:
        query = query.where(col(Inspection.received_at) >= filters.since)
    if filters.until is not None:
        query = query.where(col(Inspection.received_at) < filters.until)
    if filters.decision is not None:
        query = query.where(Inspection.decision == Decision(filters.decision).value)
    if filters.route is not None:
        query = query.where(Inspection.route == Route(filters.route).value)
    if filters.model_version is not None:
        query = query.where(Inspection.model_version == filters.model_version)
    if filters.labeled is True:
        query = query.where(col(Label.id).is_not(None))
    elif filters.labeled is False:
        query = query.where(col(Label.id).is_(None))
    if after is not None:
        query = query.where(col(Inspection.id) > after)
    # One row more than asked says whether another page follows, without a count.
    rows = session.exec(query.order_by(col(Inspection.id)).limit(limit + 1)).all()
    items = [_record(row, label, labeled_at) for row, label, labeled_at in rows[:limit]]
    more = len(rows) > limit
    return InspectionPage(items=items, next_cursor=items[-1].inspection_id if more else None)


def iter_inspections(
    session: Session, filters: InspectionFilter = InspectionFilter(), *, page: int = MAX_PAGE
) -> Iterator[InspectionRecord]:
    """Every matching part, page by page (for exports: memory stays one page)."""
    after: int | None = None
    while True:
        found = list_inspections(session, filters, after=after, limit=page)
        yield from found.items
        if found.next_cursor is None:
            return
        after = found.next_cursor


def _record(row: Inspection, label: str | None, labeled_at: datetime | None) -> InspectionRecord:
    assert row.id is not None
    return InspectionRecord(
        inspection_id=row.id,
        line=row.line_id,
        received_at=as_utc(row.received_at) or row.received_at,
        captured_at=as_utc(row.captured_at),
        capture_id=row.capture_id,
        part_serial=row.part_serial,
        source=row.source,
        level=row.level,
        pass_threshold=row.pass_threshold,
        fail_threshold=row.fail_threshold,
        route=row.route,
        decision=row.decision,
        decided_by=row.decided_by,
        decided_at=as_utc(row.decided_at),
        model_version=row.model_version,
        predicted_class=row.predicted_class,
        confidence=row.confidence,
        p_ok=row.probabilities.get("ok") if row.probabilities else None,
        gate_codes=row.gate_codes,
        label=label,
        labeled_at=as_utc(labeled_at),
    )
