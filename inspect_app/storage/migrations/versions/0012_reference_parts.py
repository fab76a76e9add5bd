"""Known-answer parts: reference parts, inspectors' answers on them, and inspectors' flags.

- ``line.reference_rate``: the chance a claim on the line serves a reference part (default 0:
  existing lines serve none until a supervisor sets a rate).
- ``line.gate_excludes_flagged``: the evidence gate leaves flagged inspectors' labels out
  (default false: the gate as before).
- ``referencepart``: inspections a supervisor verified, with the known label.
- ``referenceanswer``: each serving of a reference part to an inspector and the verdict.
- ``inspectorflag``: whether an inspector is below the set accuracy (one event per crossing).

No existing row changes.

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("line") as batch:
        batch.add_column(
            sa.Column("reference_rate", sa.Float(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column(
                "gate_excludes_flagged",
                sa.Boolean(),
                nullable=False,
                server_default=sa.text("false"),
            )
        )
    op.create_table(
        "referencepart",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("inspection_id", sa.Integer(), nullable=False),
        sa.Column("line_id", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("removed_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["inspection_id"], ["inspection.id"]),
        sa.ForeignKeyConstraint(["line_id"], ["line.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("inspection_id"),
    )
    op.create_index("ix_referencepart_line_id", "referencepart", ["line_id"])
    op.create_table(
        "referenceanswer",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("reference_id", sa.Integer(), nullable=False),
        sa.Column("inspection_id", sa.Integer(), nullable=False),
        sa.Column("line_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("served_task_id", sa.Integer(), nullable=False),
        sa.Column("served_reason", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("served_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expected", sa.String(length=32), nullable=False),
        sa.Column("label", sa.String(length=32), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["inspection_id"], ["inspection.id"]),
        sa.ForeignKeyConstraint(["line_id"], ["line.id"]),
        sa.ForeignKeyConstraint(["reference_id"], ["referencepart.id"]),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_referenceanswer_reference_id", "referenceanswer", ["reference_id"])
    op.create_index("ix_referenceanswer_user_served", "referenceanswer", ["user_id", "served_at"])
    op.create_table(
        "inspectorflag",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"]),
        sa.PrimaryKeyConstraint("user_id"),
    )


def downgrade() -> None:
    op.drop_table("inspectorflag")
    op.drop_index("ix_referenceanswer_user_served", table_name="referenceanswer")
    op.drop_index("ix_referenceanswer_reference_id", table_name="referenceanswer")
    op.drop_table("referenceanswer")
    op.drop_index("ix_referencepart_line_id", table_name="referencepart")
    op.drop_table("referencepart")
    with op.batch_alter_table("line") as batch:
        batch.drop_column("gate_excludes_flagged")
        batch.drop_column("reference_rate")
