"""Inspection safety: the image gate's verdict per inspection, monitoring series, alarm state.

- ``inspection``: the gate's extra input metrics (clipped shares, colour means), its verdict
  (``gate_codes``, ``gate_reason``, ``ood_distance``) and the reduced embedding the
  embedding-drift test reads. All nullable: rows from before the gate keep NULL, which reads
  as "not gated" (the gate did not exist), never as "refused".
- ``line.evidence_since``: set when an alarm stops auto-decisions, so a raise is judged on
  labels gathered after the alarm only.
- ``monitorsample``, ``alarmstate``, ``alarmruleoverride``, ``driftreport``: the monitoring
  series, where each alarm stands, supervisors' per-line rule edits, and drift test results.

New nullable columns and new tables only: no row is rewritten.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inspection") as batch:
        for name in ("clipped_dark", "clipped_bright", "mean_blue", "mean_green", "mean_red"):
            batch.add_column(sa.Column(name, sa.Float(), nullable=True))
        batch.add_column(sa.Column("gate_codes", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("gate_reason", sa.String(length=1000), nullable=True))
        batch.add_column(sa.Column("ood_distance", sa.Float(), nullable=True))
        batch.add_column(sa.Column("embedding", sa.JSON(), nullable=True))
    with op.batch_alter_table("line") as batch:
        batch.add_column(sa.Column("evidence_since", sa.DateTime(timezone=True), nullable=True))

    op.create_table(
        "monitorsample",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("line_id", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=True),
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("window", sa.Integer(), nullable=False),
        sa.Column("last_inspection_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["line_id"], ["line.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_monitorsample_line_metric_at", "monitorsample", ["line_id", "metric", "at"])
    op.create_table(
        "alarmstate",
        sa.Column("line_id", sa.String(length=64), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["line_id"], ["line.id"]),
        sa.PrimaryKeyConstraint("line_id", "rule"),
    )
    op.create_table(
        "alarmruleoverride",
        sa.Column("line_id", sa.String(length=64), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["line_id"], ["line.id"]),
        sa.PrimaryKeyConstraint("line_id", "rule"),
    )
    op.create_table(
        "driftreport",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("line_id", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("window", sa.Integer(), nullable=False),
        sa.Column("p_value", sa.Float(), nullable=True),
        sa.Column("drifted", sa.Boolean(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.Column("responsible", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["line_id"], ["line.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_driftreport_line_at", "driftreport", ["line_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_driftreport_line_at", table_name="driftreport")
    op.drop_table("driftreport")
    op.drop_table("alarmruleoverride")
    op.drop_table("alarmstate")
    op.drop_index("ix_monitorsample_line_metric_at", table_name="monitorsample")
    op.drop_table("monitorsample")
    with op.batch_alter_table("line") as batch:
        batch.drop_column("evidence_since")
    with op.batch_alter_table("inspection") as batch:
        for name in (
            "embedding",
            "ood_distance",
            "gate_reason",
            "gate_codes",
            "mean_red",
            "mean_green",
            "mean_blue",
            "clipped_bright",
            "clipped_dark",
        ):
            batch.drop_column(name)
