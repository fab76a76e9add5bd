"""A plant's inspection history for the database benches, bulk-inserted with SQLAlchemy core.

`bench/query_scaling.py` and `bench/review_latency.py` both time queries against a database
that already holds a plant's worth of parts. Rows made one ORM object at a time would take
longer to build than the runs take to measure, so both insert plain rows in chunks of
`CHUNK`, with `insert(...).returning(...)`, one transaction per call.

Rows follow the pipeline's rules. A part the model decided (`auto` or `audit`) has the model's
decision. A part routed to a human is `pass` once labeled and `pending` until then. Every
part not decided automatically gets a review task, done once labeled. What differs between
the benches (the confidence mix, the routes, the eras, how labels fall) stays in each bench.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Engine
from sqlmodel import Session

from inspect_app.accounts import add_user
from inspect_app.domain import CLASS_NAMES, Role, Route, TaskReason, TaskStatus
from inspect_app.lines import add_line
from inspect_app.storage.tables import Inspection, Label, ReviewTask, User

LINES = ("line-1", "line-2", "line-3")
CHUNK = 5_000
MODEL_DECIDES = (Route.AUTO.value, Route.AUDIT.value)


def add_plant(engine: Engine) -> User:
    """The three lines (at shadow) and the inspector every history label is by."""
    with Session(engine, expire_on_commit=False) as db:
        for line in LINES:
            add_line(db, line, "shadow")
        return add_user(db, "history", Role.INSPECTOR, "history-password")


def inspection_row(
    rng: random.Random,
    line: str,
    at: datetime,
    *,
    p_ok: float,
    version: str,
    level: str,
    route: str,
    labeled: bool,
    gated: bool = False,
) -> dict[str, Any]:
    """One inspection as the pipeline would have stored it (see the module)."""
    rest = (1 - p_ok) / 4
    probabilities = {c: rest for c in CLASS_NAMES} | {"ok": p_ok}
    predicted = max(probabilities, key=probabilities.__getitem__)
    if route in MODEL_DECIDES:
        decision, decided_by = ("pass" if p_ok >= 0.5 else "fail"), "model"
    else:
        decision, decided_by = ("pass", "human") if labeled else ("pending", None)
    return dict(
        line_id=line, source="http", received_at=at, image_sha256=uuid.uuid4().hex * 2,
        image_format="png", width=256, height=256, brightness=120.0 + rng.gauss(0, 3),
        contrast=30.0, sharpness=200.0, model_version=version, probabilities=probabilities,
        predicted_class=predicted, confidence=probabilities[predicted], p_defect=1 - p_ok,
        level=level, pass_threshold=0.98, fail_threshold=0.98, route=route, show_model=False,
        decision=decision, decided_by=decided_by,
        gate_codes="blur" if gated else None,
        gate_reason="the image is out of focus" if gated else None,
    )  # fmt: skip


def insert_history(
    engine: Engine,
    rows: Sequence[dict[str, Any]],
    labeled: Sequence[bool],
    user_id: int,
    label_of: Callable[[], str],
) -> None:
    """`rows`, a review task for each part routed to a human, and a label (`label_of()`, by
    `user_id`) on each task whose part is `labeled`."""
    with engine.begin() as conn:
        for first in range(0, len(rows), CHUNK):
            chunk = rows[first : first + CHUNK]
            ids = list(
                conn.scalars(
                    insert(Inspection).returning(Inspection.id, sort_by_parameter_order=True),
                    chunk,
                )
            )
            tasks, task_of = [], []
            for k, (iid, row) in enumerate(zip(ids, chunk, strict=True)):
                if row["route"] == Route.AUTO.value:
                    continue
                audit = row["route"] == Route.AUDIT.value
                done = labeled[first + k]
                tasks.append(
                    dict(
                        inspection_id=iid, line_id=row["line_id"],
                        reason=(TaskReason.AUDIT if audit else TaskReason.DECIDE).value,
                        priority=1 if audit else 0, show_model=False,
                        status=(TaskStatus.DONE if done else TaskStatus.OPEN).value,
                        created_at=row["received_at"],
                        completed_at=row["received_at"] if done else None,
                    )
                )  # fmt: skip
                task_of.append((iid, done, row["received_at"]))
            if not tasks:
                continue
            task_ids = list(
                conn.scalars(
                    insert(ReviewTask).returning(ReviewTask.id, sort_by_parameter_order=True),
                    tasks,
                )
            )
            labels = [
                dict(
                    inspection_id=iid, task_id=tid, user_id=user_id, label=label_of(),
                    model_shown=False, duration_ms=2000, created_at=at, superseded=False,
                )
                for tid, (iid, done, at) in zip(task_ids, task_of, strict=True)
                if done
            ]  # fmt: skip
            if labels:
                conn.execute(insert(Label), labels)
