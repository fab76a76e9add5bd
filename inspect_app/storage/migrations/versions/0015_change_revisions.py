"""Change revisions: a counter per kind of change that processes cache.

- ``changerevision``: (scope, revision); scope ``lines`` counts the changes of lines and
  camera keys (`inspect_app.storage.revisions`), so the ingestion path's cached line policies
  and camera keys are checked with one small read instead of looked up per image.

No existing row changes.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "changerevision",
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("scope"),
    )
    op.bulk_insert(table, [{"scope": "lines", "revision": 0}])


def downgrade() -> None:
    op.drop_table("changerevision")
