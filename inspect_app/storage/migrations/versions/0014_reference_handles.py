"""What an inspector is shown of a reference part: numbers of its own, never the source's.

- ``referenceanswer.served_part_id``: the part's id as the inspector saw it (image URL,
  "part #", undo), a fresh number from the inspections' id space.
- ``referenceanswer.served_label_id``: the id the saved verdict was shown with, from the
  labels' id space.
- index ``ix_referenceanswer_user_part`` (user_id, served_part_id): the image route and the
  undo look a number up per inspector.

Rows from before this revision showed the source inspection's own id: their
``served_part_id`` is set to it, so an undo of such an answer still finds it.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("referenceanswer") as batch:
        batch.add_column(sa.Column("served_part_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("served_label_id", sa.Integer(), nullable=True))
    op.execute("UPDATE referenceanswer SET served_part_id = inspection_id")
    op.create_index(
        "ix_referenceanswer_user_part",
        "referenceanswer",
        ["user_id", "served_part_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_referenceanswer_user_part", table_name="referenceanswer")
    with op.batch_alter_table("referenceanswer") as batch:
        batch.drop_column("served_label_id")
        batch.drop_column("served_part_id")
