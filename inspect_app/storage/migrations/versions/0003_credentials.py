"""Credentials that end: token expiry and last use, password changes, login throttling.

- ``apitoken.expires_at``: set when a token is issued. Existing tokens keep NULL, which
  `inspect_app.accounts.token_expiry` reads as created_at + the configured TTL: the
  plant's setting decides, not a value frozen into the rows by this revision.
- ``apitoken.last_used_at``: written at most once a minute per token.
- ``user.password_changed_at``: review UI sessions that logged in before it end.
- ``loginthrottle``: failed logins per user name and per client address, shared by every
  process (`inspect_app.login_throttle`).

All new columns are nullable and no row is rewritten, so on PostgreSQL the ALTERs are
instant; SQLite adds the columns in place (batch mode needs no table rebuild for them).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("apitoken") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("user") as batch:
        batch.add_column(
            sa.Column("password_changed_at", sa.DateTime(timezone=True), nullable=True)
        )
    op.create_table(
        "loginthrottle",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lockouts", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("scope", "key", name="uq_loginthrottle_scope_key"),
    )
    op.create_index("ix_loginthrottle_updated_at", "loginthrottle", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_loginthrottle_updated_at", table_name="loginthrottle")
    op.drop_table("loginthrottle")
    with op.batch_alter_table("user") as batch:
        batch.drop_column("password_changed_at")
    with op.batch_alter_table("apitoken") as batch:
        batch.drop_column("last_used_at")
        batch.drop_column("expires_at")
