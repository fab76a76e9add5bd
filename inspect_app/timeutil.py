"""Time zones at the edges: every time the service handles is an aware UTC time.

SQLite, and PostgreSQL's ``timestamp`` columns, hand back naive values; the service wrote
them as UTC. A camera or a client may send a naive time, which the API documents as UTC,
or an aware one in its own zone. One helper turns all of these into aware UTC, so that
comparisons and arithmetic never mix naive and aware times.
"""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(value: datetime | None) -> datetime | None:
    """The same instant as an aware UTC time: naive means UTC, aware is converted."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def utcnow() -> datetime:
    """Now, as an aware UTC time (the service never reads the machine's local zone)."""
    return datetime.now(UTC)
