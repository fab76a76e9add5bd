"""Image retention: when the sweep removed an inspection's image bytes.

- ``inspection.image_removed_at``: set by `inspect_app.storage.retention.sweep_images` when
  the image file is removed under the plant's retention policy. The row itself stays (the
  decision and its labels are evidence for ever); the image route answers 410 Gone for it.
  Existing rows keep NULL: their images are all still stored.

One new nullable column: no row is rewritten.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inspection") as batch:
        batch.add_column(sa.Column("image_removed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inspection") as batch:
        batch.drop_column("image_removed_at")
