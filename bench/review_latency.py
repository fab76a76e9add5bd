"""Review latency: the server-side time from an inspector's verdict to the next part ready.

What the review UI does on every verdict key is ``review_queue.submit_label`` followed by
``review_queue.claim_next_task`` (`review_ui.desk.InspectorDesk.verdict`); this times that
pair, with the database already holding a plant's worth of history:

- ``--inspections`` (default 100,000) inspections, bulk-inserted with SQLAlchemy core
  (``insert(...)`` with a list of rows, in chunks), each with its review task; all but
  ``--waiting`` of them already labeled (task done, a label row), the rest waiting in the
  queue: decisions and audits mixed, as the pipeline leaves them;
- then inspectors (threads, each with its own session, as the UI's handlers run) claim and
  label, ``--verdicts`` verdicts in all per run: 1 inspector; 8 inspectors at a human pace
  (each looks at a part for ~1.5 s, randomised, not timed: the plant's situation); and 8
  back to back (a stress test: it measures the server's capacity, not an inspector's wait);
- printed: p50/p95/p99/max of verdict -> next task ready, in milliseconds (and the part of
  it spent claiming), against the goal p95 <= 50 ms, and the database's plan for the queue's
  candidate query, so a slow queue names its missing index.

SQLite by default (a file in a temp dir, WAL, synchronous=FULL as the service runs it);
``--database-url postgresql://...`` for PostgreSQL (an empty database).

Run: ``.venv/bin/python bench/review_latency.py`` (see ``--help``).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import insert, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from inspect_app import review_queue
from inspect_app.accounts import add_user
from inspect_app.domain import CLASS_NAMES, DefectClass, Role, Route, TaskReason, TaskStatus
from inspect_app.lines import add_line
from inspect_app.storage.db import make_engine, upgrade_database
from inspect_app.storage.tables import Inspection, Label, ReviewTask, User, utcnow

LINES = ("line-1", "line-2", "line-3")
CHUNK = 5_000
GOAL_P95_MS = 50.0


def seed(engine: Engine, n_inspections: int, n_waiting: int, rng: random.Random) -> None:
    """`n_inspections` inspections with tasks; all but `n_waiting` labeled by 'history'."""
    with Session(engine, expire_on_commit=False) as db:
        for line in LINES:
            add_line(db, line, "shadow")
        historian = add_user(db, "history", Role.INSPECTOR, "history-password")
    start = utcnow() - timedelta(days=30)
    step = timedelta(days=30) / max(1, n_inspections)
    done_until = n_inspections - n_waiting
    with engine.begin() as conn:
        for first in range(0, n_inspections, CHUNK):
            count = min(CHUNK, n_inspections - first)
            inspections, meta = [], []
            for i in range(first, first + count):
                p_ok = rng.random()
                rest = (1 - p_ok) / 4
                probabilities = {c: rest for c in CLASS_NAMES} | {"ok": p_ok}
                predicted = max(probabilities, key=probabilities.__getitem__)
                audit = rng.random() < 0.1
                labeled = i < done_until
                at = start + i * step
                inspections.append(
                    dict(
                        line_id=LINES[i % len(LINES)], source="http", received_at=at,
                        image_sha256=uuid.uuid4().hex * 2, image_format="png",
                        width=256, height=256, brightness=120.0, contrast=30.0, sharpness=200.0,
                        model_version="bench", probabilities=probabilities,
                        predicted_class=predicted, confidence=probabilities[predicted],
                        p_defect=1 - p_ok, level="shadow", pass_threshold=0.98,
                        fail_threshold=0.98,
                        route=(Route.AUDIT if audit else Route.REVIEW).value, show_model=False,
                        decision="pass" if (audit or labeled) else "pending",
                        decided_by="human" if labeled else ("model" if audit else None),
                    )
                )  # fmt: skip
                meta.append((audit, labeled, at))
            ids = list(
                conn.scalars(
                    insert(Inspection).returning(Inspection.id, sort_by_parameter_order=True),
                    inspections,
                )
            )
            tasks = [
                dict(
                    inspection_id=iid, line_id=row["line_id"],
                    reason=(TaskReason.AUDIT if audit else TaskReason.DECIDE).value,
                    priority=1 if audit else 0, show_model=False,
                    status=(TaskStatus.DONE if labeled else TaskStatus.OPEN).value,
                    created_at=at, completed_at=at if labeled else None,
                )
                for iid, row, (audit, labeled, at) in zip(ids, inspections, meta, strict=True)
            ]  # fmt: skip
            task_ids = list(
                conn.scalars(
                    insert(ReviewTask).returning(ReviewTask.id, sort_by_parameter_order=True),
                    tasks,
                )
            )
            labels = [
                dict(
                    inspection_id=iid, task_id=tid, user_id=historian.id,
                    label=rng.choice(CLASS_NAMES), model_shown=False, duration_ms=2000,
                    created_at=at, superseded=False,
                )
                for iid, tid, (_audit, labeled, at) in zip(ids, task_ids, meta, strict=True)
                if labeled
            ]  # fmt: skip
            if labels:
                conn.execute(insert(Label), labels)


def inspectors(engine: Engine, n: int) -> list[User]:
    with Session(engine, expire_on_commit=False) as db:
        existing = {u.name: u for u in db.exec(select(User))}
        users = []
        for i in range(n):
            name = f"bench-inspector-{i}"
            users.append(existing.get(name) or add_user(db, name, Role.INSPECTOR, "bench-password"))
        return users


def run(
    engine: Engine, users: list[User], verdicts: int, lease: float, think_ms: float
) -> tuple[list[float], list[float]]:
    """Each user labels, looking at each part for about `think_ms` (0: back to back); returns
    every verdict -> next-task time in ms (the looking is not timed), and the part of it
    spent in claim_next_task."""
    per_user = max(1, verdicts // len(users))
    times: list[float] = []
    claims: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(len(users))
    errors: list[BaseException] = []

    def work(user: User) -> None:
        mine: list[float] = []
        mine_claims: list[float] = []
        rng = random.Random(user.id)
        try:
            with Session(engine, expire_on_commit=False) as db:
                task = review_queue.claim_next_task(db, user, lease_seconds=lease)
                start.wait()
                for _ in range(per_user):
                    if task is None:
                        break
                    if think_ms:
                        time.sleep(think_ms / 1000 * rng.uniform(0.5, 1.5))
                    label = rng.choice(list(DefectClass))
                    t0 = time.perf_counter()
                    review_queue.submit_label(db, task.task_id, user, label, duration_ms=1500)
                    t1 = time.perf_counter()
                    task = review_queue.claim_next_task(db, user, lease_seconds=lease)
                    t2 = time.perf_counter()
                    mine.append(1000 * (t2 - t0))
                    mine_claims.append(1000 * (t2 - t1))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        with lock:
            times.extend(mine)
            claims.extend(mine_claims)

    threads = [threading.Thread(target=work, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return times, claims


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def query_plan(engine: Engine) -> str:
    """The database's plan for the queue's next-candidate query (what claim_next_task asks)."""
    sql = (
        "SELECT id FROM reviewtask WHERE status = 'open' OR (status = 'claimed' AND "
        "(lease_expires_at IS NULL OR lease_expires_at <= CURRENT_TIMESTAMP)) "
        "ORDER BY priority, created_at, id LIMIT 16"
    )
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.execute(text("EXPLAIN QUERY PLAN " + sql)).all()
            return "\n".join(f"  {row[-1]}" for row in rows)
        rows = conn.execute(text("EXPLAIN ANALYZE " + sql)).all()
        return "\n".join(f"  {row[0]}" for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="default: SQLite in a temp dir")
    parser.add_argument("--inspections", type=int, default=100_000)
    parser.add_argument("--waiting", type=int, default=3_000, help="unlabeled tasks in the queue")
    parser.add_argument("--verdicts", type=int, default=400, help="timed verdicts per run")
    parser.add_argument(
        "--runs",
        default="1:0,8:1500,8:0",
        help="inspectors:think-ms per run, comma-separated (think 0 = back to back, a stress test)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="review-latency-")
    url = args.database_url or f"sqlite:///{Path(tmp.name) / 'bench.db'}"
    engine = make_engine(url)
    upgrade_database(engine)
    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    seed(engine, args.inspections, args.waiting, rng)
    print(
        f"database: {engine.url.render_as_string(hide_password=True)} ({engine.dialect.name})\n"
        f"seeded {args.inspections:,} inspections, {args.waiting:,} waiting, "
        f"in {time.perf_counter() - t0:.1f} s; machine load {os.getloadavg()[0]:.2f}"
    )
    print("queue candidate query plan:\n" + query_plan(engine))
    runs = [(int(n), float(think)) for n, think in (r.split(":") for r in args.runs.split(","))]
    users = inspectors(engine, max(n for n, _ in runs))
    header = (
        "inspectors",
        "think ms",
        "verdicts",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "verdicts/s",
    )
    print("\n" + " ".join(f"{h:>10}" for h in header) + "   claim p50/p95 ms")
    for n, think in runs:
        started = time.perf_counter()
        times, claims = run(engine, users[:n], args.verdicts, lease=60.0, think_ms=think)
        wall = time.perf_counter() - started
        p95 = percentile(times, 95)
        print(
            f"{n:>10} {think:>10.0f} {len(times):>10} {statistics.median(times):>10.1f} "
            f"{p95:>10.1f} "
            f"{percentile(times, 99):>10.1f} {max(times):>10.1f} {len(times) / wall:>10.1f}   "
            f"{statistics.median(claims):.1f} / {percentile(claims, 95):.1f}   "
            f"goal p95 <= {GOAL_P95_MS:.0f} ms: {'met' if p95 <= GOAL_P95_MS else 'MISSED'}"
        )
    print(f"machine load after: {os.getloadavg()[0]:.2f} (2 cores, shared: figures are noisy)")
    engine.dispose()
    tmp.cleanup()


if __name__ == "__main__":
    main()
