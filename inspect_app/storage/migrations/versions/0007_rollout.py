"""Model lifecycle: the registry, a deployment per line, every version's prediction, bandits.

- ``modelversion``: registered models, immutable (the checkpoint is copied into the data
  folder under its content hash).
- ``modelfile``: the registered checkpoints' and profiles' bytes, by SHA-256, so a process
  loads a version whatever data folder it was registered through.
- ``deployment``: a line's champion, its candidate and the rollout mode. A line without a row
  is served by the service's configured model, as before this revision.
- ``modelprediction``: what each version that ran said about a part (decider and shadow).
- ``banditarm``: Thompson sampling's counts per line and version.
- ``inspection.arm``, ``inspection.assignment_p``, ``inspection.deployment_revision``: which
  arm decided, with what probability it was chosen, under which deployment;
  ``inspection.audit_p``: the audit lottery's rate for the part. NULL on existing rows: they
  were decided by the one configured model, with probability 1.

New tables and nullable columns only: no existing row is rewritten.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "modelversion",
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("architecture", sa.JSON(), nullable=False),
        sa.Column("class_names", sa.JSON(), nullable=False),
        sa.Column("temperature", sa.Float(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("data_seed", sa.Integer(), nullable=True),
        sa.Column("parent_version", sa.String(length=64), nullable=True),
        sa.Column("lineage", sa.JSON(), nullable=False),
        sa.Column("profile_sha256", sa.String(length=64), nullable=True),
        sa.Column("notes", sa.String(length=2000), nullable=False),
        sa.Column("registered_by", sa.String(length=64), nullable=False),
        sa.Column("registered_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("version"),
        sa.UniqueConstraint("sha256"),
    )
    op.create_table(
        "modelfile",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("sha256"),
    )
    op.create_table(
        "banditarm",
        sa.Column("line_id", sa.String(length=64), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("successes", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.ForeignKeyConstraint(["line_id"], ["line.id"]),
        sa.PrimaryKeyConstraint("line_id", "model_version"),
    )
    op.create_table(
        "deployment",
        sa.Column("line_id", sa.String(length=64), nullable=False),
        sa.Column("champion", sa.String(length=64), nullable=False),
        sa.Column("candidate", sa.String(length=64), nullable=True),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("share", sa.Float(), nullable=False),
        sa.Column("shadow_share", sa.Float(), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("step_min_labels", sa.Integer(), nullable=False),
        sa.Column("step_started_at", _utc(), nullable=True),
        sa.Column("candidate_audit_rate", sa.Float(), nullable=False),
        sa.Column("exploration", sa.Float(), nullable=False),
        sa.Column("quarantined", sa.Boolean(), nullable=False),
        sa.Column("quarantine_reason", sa.String(length=1000), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.ForeignKeyConstraint(["candidate"], ["modelversion.version"]),
        sa.ForeignKeyConstraint(["champion"], ["modelversion.version"]),
        sa.ForeignKeyConstraint(["line_id"], ["line.id"]),
        sa.PrimaryKeyConstraint("line_id"),
    )
    op.create_table(
        "modelprediction",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("inspection_id", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=8), nullable=False),
        sa.Column("probabilities", sa.JSON(), nullable=True),
        sa.Column("predicted_class", sa.String(length=32), nullable=True),
        sa.Column("p_defect", sa.Float(), nullable=True),
        sa.Column("model_ms", sa.Float(), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(["inspection_id"], ["inspection.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("inspection_id", "model_version", name="uq_prediction_version"),
    )
    op.create_index(
        "ix_prediction_version_inspection",
        "modelprediction",
        ["model_version", "inspection_id"],
        unique=False,
    )
    with op.batch_alter_table("inspection") as batch:
        batch.add_column(sa.Column("arm", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("assignment_p", sa.Float(), nullable=True))
        batch.add_column(sa.Column("deployment_revision", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("audit_p", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inspection") as batch:
        batch.drop_column("audit_p")
        batch.drop_column("deployment_revision")
        batch.drop_column("assignment_p")
        batch.drop_column("arm")
    op.drop_index("ix_prediction_version_inspection", table_name="modelprediction")
    op.drop_table("modelprediction")
    op.drop_table("deployment")
    op.drop_table("banditarm")
    op.drop_table("modelfile")
    op.drop_table("modelversion")
