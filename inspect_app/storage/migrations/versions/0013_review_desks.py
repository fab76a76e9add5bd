"""Review desks in the database: one row per browser tab of the review UI's Inspect page.

- ``reviewdesk``: the tab's Gradio session hash, its user, the desk's state as JSON (the
  part on screen, the verdict ``u`` can undo, a correction or pause under way), created and
  last seen. Every process answers a tab's events from it, so the review UI needs no
  sticky sessions; rows of tabs not heard from in 12 hours are removed as new tabs open.

A new table only: no existing row changes. Desks held in a process's memory before the
upgrade are not carried over: an open tab starts a fresh desk on its next event (its held
part is claimed again, as after a reload).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reviewdesk",
        sa.Column("session_hash", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"]),
        sa.PrimaryKeyConstraint("session_hash"),
    )
    op.create_index(op.f("ix_reviewdesk_user_id"), "reviewdesk", ["user_id"], unique=False)
    op.create_index(
        op.f("ix_reviewdesk_last_seen_at"), "reviewdesk", ["last_seen_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_reviewdesk_last_seen_at"), table_name="reviewdesk")
    op.drop_index(op.f("ix_reviewdesk_user_id"), table_name="reviewdesk")
    op.drop_table("reviewdesk")
