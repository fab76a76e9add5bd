"""Timestamps become ``timestamptz`` on PostgreSQL, the type sqlmodel >= 0.0.45 maps to.

sqlmodel 0.0.45 made ``datetime`` fields ``UTCDateTime`` (``DateTime(timezone=True)``):
aware UTC values in and out. Round 1's columns are ``timestamp without time zone`` holding
UTC wall times (the engine's session zone is UTC), so each is converted reading its value as
UTC: the instant stored does not change. One ALTER TABLE per table rewrites it once.
SQLite has a single DATETIME affinity and already stores UTC: nothing to do there.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMPS = {
    "event": ("at",),
    "line": ("created_at", "updated_at"),
    "user": ("created_at",),
    "apitoken": ("created_at", "revoked_at"),
    "camerakey": ("created_at", "revoked_at"),
    "inspection": ("captured_at", "received_at", "decided_at"),
    "reviewtask": ("claimed_at", "lease_expires_at", "created_at", "completed_at"),
    "label": ("created_at",),
}


def _convert(to_type: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, columns in _TIMESTAMPS.items():
        clauses = ", ".join(
            f"ALTER COLUMN {column} TYPE {to_type} USING {column} AT TIME ZONE 'UTC'"
            for column in columns
        )
        op.execute(f'ALTER TABLE "{table}" {clauses}')


def upgrade() -> None:
    _convert("timestamp with time zone")


def downgrade() -> None:
    _convert("timestamp without time zone")
