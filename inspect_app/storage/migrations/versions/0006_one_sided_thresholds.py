"""One-sided partial automation: a line's threshold (and the one an inspection was routed
under) may be NULL, meaning "never" on that side (`inspect_app.domain.NEVER`): e.g. auto-fail
when confident and never auto-pass.

- ``line.pass_threshold``, ``line.fail_threshold``: nullable.
- ``inspection.pass_threshold``, ``inspection.fail_threshold``: nullable, so the policy each
  part was routed under is recorded exactly and evidence of a one-sided setting is never
  pooled with a two-sided one.

No value changes: every existing row keeps its number (NULL never appeared before). On
PostgreSQL dropping NOT NULL is instant; SQLite rebuilds both tables in batch mode, inside
the upgrade's one transaction.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("line", "inspection")
_COLUMNS = ("pass_threshold", "fail_threshold")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            for column in _COLUMNS:
                batch.alter_column(column, existing_type=sa.Float(), nullable=True)


def downgrade() -> None:
    # A "never" has no number that means the same, so it goes back as the default 0.98, which
    # needs evidence at partial like any number: a downgraded line is never looser than before.
    for table in _TABLES:
        for column in _COLUMNS:
            op.execute(sa.text(f"UPDATE {table} SET {column} = 0.98 WHERE {column} IS NULL"))
        with op.batch_alter_table(table) as batch:
            for column in _COLUMNS:
                batch.alter_column(column, existing_type=sa.Float(), nullable=False)
