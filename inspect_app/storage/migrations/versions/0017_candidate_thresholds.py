"""A candidate's own thresholds on its deployment row.

- ``deployment.candidate_thresholds`` (JSON, nullable): the thresholds the candidate decides
  its parts at while it rolls out, chosen when it was promoted from shadow (recommended on its
  own shadow evidence, or stated by a supervisor) and written to the line at finalize:
  ``{"pass_threshold": 0.51 | null, "fail_threshold": 0.99 | null, "source": "recommended" |
  "supervisor"}`` (null on a side: never on that side). A new model's probabilities are
  calibrated differently, so the champion's thresholds are not its own.

Existing rows keep every value; their candidates get NULL, which means "the line's thresholds",
exactly what they decided at before this revision.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | Sequence[str] | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deployment") as batch:
        batch.add_column(sa.Column("candidate_thresholds", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployment") as batch:
        batch.drop_column("candidate_thresholds")
