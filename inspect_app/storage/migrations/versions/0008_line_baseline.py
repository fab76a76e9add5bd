"""A line's own drift reference, re-baselined by a supervisor on a window of its parts.

- ``linebaseline``: per line, the input-metric quantiles and the embeddings of the chosen
  window, for the model version it was taken under. No existing row changes.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "linebaseline",
        sa.Column("line_id", sa.String(length=64), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("window_since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("n_parts", sa.Integer(), nullable=False),
        sa.Column("metric_quantiles", sa.JSON(), nullable=False),
        sa.Column("coordinates", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["line_id"], ["line.id"]),
        sa.PrimaryKeyConstraint("line_id"),
    )


def downgrade() -> None:
    op.drop_table("linebaseline")
