"""Line outputs: the transactional outbox and where it delivers (inspect_app.outputs).

- ``outputdestination``: a line's webhooks and MQTT brokers.
- ``outputsequence``: each line's last outbox sequence number.
- ``outboxmessage``: a message per final decision and alarm state change.
- ``outputdelivery``: each message's delivery to each destination.

No existing row changes.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outputdestination",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("line_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("url", sa.String(length=1000), nullable=False),
        sa.Column("secret", sa.String(length=256), nullable=True),
        sa.Column("topic_prefix", sa.String(length=128), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("pending_from_seq", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["line_id"], ["line.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_outputdestination_line_id"), "outputdestination", ["line_id"], unique=False
    )
    op.create_table(
        "outputsequence",
        sa.Column("line_id", sa.String(length=64), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["line_id"], ["line.id"]),
        sa.PrimaryKeyConstraint("line_id"),
    )
    op.create_table(
        "outboxmessage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("line_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["line_id"], ["line.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("delivery_id"),
        sa.UniqueConstraint("line_id", "seq", name="uq_outbox_line_seq"),
    )
    op.create_table(
        "outputdelivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("destination_id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=1000), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("replays", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["destination_id"], ["outputdestination.id"]),
        sa.ForeignKeyConstraint(["message_id"], ["outboxmessage.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("destination_id", "message_id", name="uq_delivery_destination_message"),
    )
    op.create_index(
        op.f("ix_outputdelivery_destination_id"), "outputdelivery", ["destination_id"], unique=False
    )
    op.create_index(
        op.f("ix_outputdelivery_message_id"), "outputdelivery", ["message_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_outputdelivery_message_id"), table_name="outputdelivery")
    op.drop_index(op.f("ix_outputdelivery_destination_id"), table_name="outputdelivery")
    op.drop_table("outputdelivery")
    op.drop_table("outboxmessage")
    op.drop_table("outputsequence")
    op.drop_index(op.f("ix_outputdestination_line_id"), table_name="outputdestination")
    op.drop_table("outputdestination")
