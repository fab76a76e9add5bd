"""Several processes sharing everything: image bytes and review-UI logins in the database.

- ``imageblob``: camera images' bytes by SHA-256, for ``INSPECT_IMAGE_STORE=database`` (the
  default on PostgreSQL), written in the transaction of the inspection row; on PostgreSQL
  stored out of line uncompressed (camera images do not compress).
- ``uisession``: review-UI logins (the cookie's hash, user, created, last seen, expiry,
  revocation), so any process behind a load balancer knows the browser.

New tables only: no existing row changes. Images already in a data folder stay there and
are read from it while ``INSPECT_IMAGE_STORE=local``; moving a deployment to the database
store needs the existing files copied into the table (no command for it yet).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "imageblob",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256"),
    )
    if op.get_bind().dialect.name == "postgresql":
        # JPEG and PNG bytes do not compress: store them out of line without trying (TOAST's
        # default would spend CPU on a compression attempt for every image).
        op.execute("ALTER TABLE imageblob ALTER COLUMN data SET STORAGE EXTERNAL")
    op.create_table(
        "uisession",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_hash", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_reason", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_uisession_session_hash"), "uisession", ["session_hash"], unique=True)
    op.create_index(op.f("ix_uisession_user_id"), "uisession", ["user_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_uisession_user_id"), table_name="uisession")
    op.drop_index(op.f("ix_uisession_session_hash"), table_name="uisession")
    op.drop_table("uisession")
    op.drop_table("imageblob")
