"""The audit trail: who changed what, when and why, in the database and in the log.

An event is written in the caller's transaction (flushed, not committed), so it exists
exactly when the change it describes does.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlmodel import Session, col, select

from inspect_app.storage.tables import Event

logger = logging.getLogger(__name__)


def _jsonable(details: dict[str, Any]) -> dict[str, Any]:
    """Enums, datetimes and numpy scalars become plain JSON so any database can store them."""
    return json.loads(json.dumps(details, default=str))


def record_event(
    session: Session,
    *,
    kind: str,
    actor: str,
    reason: str = "",
    line_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> Event:
    """Add an event to the session and log it; the caller's commit makes it durable."""
    if not kind:
        raise ValueError("an event needs a kind")
    if not actor:
        raise ValueError("an event needs an actor (a user's name, a key prefix or 'system')")
    event = Event(
        kind=kind,
        actor=actor,
        reason=reason,
        line_id=line_id,
        details=_jsonable(details) if details is not None else None,
    )
    session.add(event)
    session.flush()
    logger.info(
        "event %s: line=%s actor=%s reason=%r details=%s",
        kind,
        line_id or "-",
        actor,
        reason,
        json.dumps(event.details, sort_keys=True) if event.details is not None else "{}",
    )
    return event


def list_events(
    session: Session, *, line_id: str | None = None, kind: str | None = None, limit: int = 100
) -> list[Event]:
    """Newest first: what an operator reads first when reconstructing an incident."""
    query = select(Event)
    if line_id is not None:
        query = query.where(Event.line_id == line_id)
    if kind is not None:
        query = query.where(Event.kind == kind)
    query = query.order_by(col(Event.at).desc(), col(Event.id).desc()).limit(limit)
    return list(session.exec(query))
