"""Indexes the plans at 1M inspections asked for (bench/query_scaling.py, review_latency.py).

- ``ix_task_waiting`` becomes partial on SQLite too (only waiting tasks, in serving order):
  round 1 made it partial on PostgreSQL only, so on SQLite it held every done task and a
  claim could scan them all.
- ``ix_inspection_line_version`` (line, model version, id): the gate's evidence and the
  agreement report read one model's parts on one line, not the line's whole history.
- ``ix_inspection_line_id`` (line, id): a line's newest parts (monitoring series, gate counts,
  the line's current model).
- ``ix_inspection_gate_refused`` (line, id) where the gate refused the frame: the newest
  refusals without reading the line's history (refusals are rare).
- ``ix_label_superseded`` is dropped: nearly every label is current, and SQLite's planner
  drove the gate's evidence query from it, a scan of every current label of every line.

No row changes. Building the indexes reads the tables once (seconds at a million rows).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WAITING = "status IN ('open', 'claimed', 'escalated')"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index("ix_task_waiting", table_name="reviewtask")
        op.create_index(
            "ix_task_waiting",
            "reviewtask",
            ["priority", "created_at", "id"],
            sqlite_where=sa.text(_WAITING),
        )
    op.create_index("ix_inspection_line_version", "inspection", ["line_id", "model_version", "id"])
    op.create_index("ix_inspection_line_id", "inspection", ["line_id", "id"])
    op.create_index(
        "ix_inspection_gate_refused",
        "inspection",
        ["line_id", "id"],
        postgresql_where=sa.text("gate_codes IS NOT NULL"),
        sqlite_where=sa.text("gate_codes IS NOT NULL"),
    )
    op.drop_index("ix_label_superseded", table_name="label")


def downgrade() -> None:
    op.create_index("ix_label_superseded", "label", ["superseded"])
    op.drop_index("ix_inspection_gate_refused", table_name="inspection")
    op.drop_index("ix_inspection_line_id", table_name="inspection")
    op.drop_index("ix_inspection_line_version", table_name="inspection")
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index("ix_task_waiting", table_name="reviewtask")
        op.create_index("ix_task_waiting", "reviewtask", ["priority", "created_at", "id"])
