"""Query scaling: how the queue's claim, the gate's evidence, the agreement report and the
monitoring queries grow from 10k to 1M inspections, as ratios measured in one run.

Each size is a fresh database holding a plant's history: a SQLite file (WAL, as the service
runs it), or with ``--database postgresql`` a database on a throwaway durable PostgreSQL server
(``bench/postgres_server.py``; ``--database-url`` for one of your own):

- the *history*: parts an older model (``v1``) decided at ``partial`` on three lines, most
  of them automatically, a tenth audited and labeled, a few sent to review and labeled, a
  few refused by the image gate; this is what grows with the size;
- the *current era* on ``line-1``, the same at every size: ``--era`` parts the current model
  (``v2``) predicted at ``shadow``, each labeled blind (the gate's evidence), and
  ``--waiting`` parts in the queue.

A plant's database grows with its history while the evidence for a decision today is the
current model's era, so a query that reads that era should cost the same at every size;
one whose ratio grows is scanning history (a missing index, or a count that should be kept
incrementally). Built fast: one block of ``--block`` parts is inserted row by row with
SQLAlchemy core, then copied with ``INSERT ... SELECT`` until the size is reached.

Printed per query: the median time at each size and the ratio of the largest size to the
smallest (target <= 1.5 for the claim and the gate's evidence), and the database's plan of
the claim's and the gate's evidence queries at the largest size (``EXPLAIN QUERY PLAN`` on
SQLite; ``EXPLAIN (ANALYZE, BUFFERS)`` on PostgreSQL, so the plan shows the rows it really
read). Run: ``nice -n 5 .venv/bin/python bench/query_scaling.py [--database postgresql]``
(``--help``; ``--sizes 10000,100000`` for a shorter run).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from plant_history import LINES, add_plant, insert_history, inspection_row  # bench/ helper
from postgres_server import durable_postgres  # bench/ helper
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, select

from inspect_app import agreement, review_queue
from inspect_app.accounts import add_user
from inspect_app.domain import CLASS_NAMES, Role, Route
from inspect_app.monitoring import queries as monitoring
from inspect_app.storage.db import make_engine, upgrade_database
from inspect_app.storage.tables import Line, User, utcnow

GOAL_RATIO = 1.5
GOAL_QUERIES = ("claim", "gate evidence")


def _ok_mostly(rng: random.Random) -> str:
    return "ok" if rng.random() < 0.9 else rng.choice(CLASS_NAMES)


def _copy_history(engine: Engine, block_rows: int, copies: int) -> None:
    """Append `copies` copies of the first `block_rows` inspections (ids 1..block_rows), with
    their tasks and labels, by INSERT ... SELECT: a million rows in seconds."""
    columns = [c["name"] for c in inspect(engine).get_columns("inspection")]
    inspection_cols = ", ".join(c for c in columns if c != "id")
    with engine.begin() as conn:
        n_tasks = conn.execute(
            text("SELECT count(*) FROM reviewtask WHERE inspection_id <= :b"), {"b": block_rows}
        ).scalar_one()
        for _ in range(copies):
            offset = conn.execute(text("SELECT max(id) FROM inspection")).scalar_one()
            task_offset = conn.execute(text("SELECT max(id) FROM reviewtask")).scalar_one()
            conn.execute(
                text(
                    f"INSERT INTO inspection ({inspection_cols}) SELECT {inspection_cols} "
                    "FROM inspection WHERE id <= :b ORDER BY id"
                ),
                {"b": block_rows},
            )
            conn.execute(
                text(
                    "INSERT INTO reviewtask (inspection_id, line_id, reason, priority, "
                    "show_model, status, created_at, completed_at) SELECT inspection_id + :o, "
                    "line_id, reason, priority, show_model, status, created_at, completed_at "
                    "FROM reviewtask WHERE id <= :t ORDER BY id"
                ),
                {"o": offset, "t": n_tasks},
            )
            conn.execute(
                text(
                    "INSERT INTO label (inspection_id, task_id, user_id, label, model_shown, "
                    "duration_ms, created_at, superseded) SELECT inspection_id + :o, "
                    "task_id + :to, user_id, label, model_shown, duration_ms, created_at, "
                    "superseded FROM label WHERE task_id <= :t ORDER BY id"
                ),
                {"o": offset, "to": task_offset, "t": n_tasks},
            )


def build(url: str, size: int, args: argparse.Namespace) -> Engine:
    """A database of `size` inspections: history, then the current era (see the module)."""
    engine = make_engine(url)
    upgrade_database(engine)
    rng = random.Random(args.seed)
    historian = add_plant(engine)
    with Session(engine) as db:
        add_user(db, "bench-inspector", Role.INSPECTOR, "bench-password")
    assert historian.id is not None
    era = args.era + args.waiting
    history = max(0, size - era)
    block = min(args.block, history)
    now = utcnow()

    def part(
        line: str, at: datetime, version: str, level: str, route: Route, labeled: bool = True
    ) -> dict[str, Any]:
        p_ok = rng.random() ** 0.2  # mostly confident ok, as a good line is
        gated = rng.random() < 0.002
        return inspection_row(rng, line, at, p_ok=p_ok, version=version, level=level,
                              route=route.value, labeled=labeled, gated=gated)  # fmt: skip

    label_of = partial(_ok_mostly, rng)
    rows = []
    for i in range(block):
        roll = rng.random()
        route = Route.AUTO if roll < 0.85 else Route.AUDIT if roll < 0.95 else Route.REVIEW
        at = now - timedelta(days=60) + timedelta(seconds=i)
        rows.append(part(LINES[i % 3], at, "v1", "partial", route))
    insert_history(engine, rows, [True] * block, historian.id, label_of)
    if block:
        _copy_history(engine, block, history // block - 1)
    rest = history - (history // block) * block if block else 0
    yesterday = now - timedelta(days=1)
    rows = [part("line-1", yesterday, "v1", "partial", Route.AUTO) for _ in range(rest)]
    labeled = [True] * rest
    for i in range(era):  # the current era: labeled blind, then the parts still waiting
        at = now - timedelta(hours=12) + timedelta(seconds=i)
        labeled.append(i < args.era)
        rows.append(part("line-1", at, "v2", "shadow", Route.REVIEW, labeled=labeled[-1]))
    insert_history(engine, rows, labeled, historian.id, label_of)
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        else:  # fresh statistics, as autovacuum would have them on a plant's database
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    return engine


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of `fn` in ms, after one untimed call (warm caches, as in service)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def queries(db: Session) -> dict[str, Callable[[], object]]:
    """The timed queries, each as the service calls it."""
    user = db.exec(select(User).where(User.name == "bench-inspector")).one()
    line = db.get(Line, "line-1")
    assert line is not None
    partial = Line(
        **{**line.model_dump(), "level": "partial", "updated_at": utcnow() - timedelta(days=90)}
    )

    def claim() -> None:
        task = review_queue.claim_next_task(db, user, lease_seconds=60)
        assert task is not None
        review_queue.release_task(db, task.task_id, user)

    return {
        "claim": claim,
        "gate evidence": lambda: agreement.gate_evidence(db, "line-1"),
        "agreement report": lambda: agreement.agreement_report(db, "line-1"),
        "live audit counts": lambda: agreement.live_audit_counts(db, partial, "v1"),
        "monitoring: input series": lambda: monitoring.input_metric_series(
            db, "line-1", "brightness"
        ),
        "monitoring: gate refusals": lambda: monitoring.gate_refusals(db, "line-1"),
        "monitoring: gate counts": lambda: monitoring.gate_counts(db, "line-1"),
        "queue depth": lambda: review_queue.queue_depth(db),
        "oldest waiting": lambda: review_queue.oldest_waiting(db),
    }


def measure(engine: Engine, repeat: int) -> dict[str, float]:
    with Session(engine, expire_on_commit=False) as db:
        return {name: timed(fn, repeat) for name, fn in queries(db).items()}


def _selects_sent(engine: Engine, fn: Callable[[], object]) -> list[tuple[str, Any]]:
    captured: list[tuple[str, Any]] = []

    def grab(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT"):
            captured.append((statement, params))

    event.listen(engine, "before_cursor_execute", grab)
    try:
        fn()
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    return captured


def plans(engine: Engine, names: tuple[str, ...] = GOAL_QUERIES) -> str:
    """The database's plan of every SELECT the named queries send, as sent (parameters
    included). PostgreSQL's EXPLAIN ANALYZE runs the statement inside a transaction that is
    rolled back, so a claim's row lock is not kept."""
    postgres = engine.dialect.name == "postgresql"
    prefix = "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " if postgres else "EXPLAIN QUERY PLAN "
    out: list[str] = []
    with Session(engine, expire_on_commit=False) as db:
        calls = queries(db)
        for name in names:
            for statement, params in _selects_sent(engine, calls[name]):
                with engine.connect() as conn:
                    raw = conn.connection.dbapi_connection
                    assert raw is not None
                    cursor = raw.cursor()
                    cursor.execute(prefix + statement, params)
                    rows = cursor.fetchall()
                    raw.rollback()
                head = " ".join(statement.split())[:110]
                out.append(f"{name}: {head} ...")
                out += [f"    {row[-1] if not postgres else row[0]}" for row in rows]
    return "\n".join(out)


def _sqlite_database(folder: Path, size: int) -> str:
    path = folder / f"{size}.db"
    path.unlink(missing_ok=True)
    return f"sqlite:///{path}"


def _postgres_database(server: str, size: int) -> str:
    """A fresh database named for the size on the server `server` points at."""
    name = f"scaling_{size}"
    admin = make_url(server)
    with psycopg.connect(admin.set(drivername="postgresql").render_as_string(False)) as conn:
        conn.autocommit = True
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    return admin.set(database=name).render_as_string(False)


def _run(
    sizes: list[int], databases: Callable[[int], str], args: argparse.Namespace
) -> tuple[dict[int, dict[str, float]], str]:
    results: dict[int, dict[str, float]] = {}
    plan = ""
    for size in sizes:
        t0 = time.perf_counter()
        engine = build(databases(size), size, args)
        built = time.perf_counter() - t0
        results[size] = measure(engine, args.repeat)
        load = os.getloadavg()[0]
        print(f"{size:>9,} inspections: built in {built:.0f} s, measured; load {load:.2f}")
        if size == sizes[-1]:
            plan = plans(engine)
        engine.dispose()
    return results, plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--era", type=int, default=2_000, help="labeled parts of the current era")
    parser.add_argument("--waiting", type=int, default=500, help="parts in the queue")
    parser.add_argument("--block", type=int, default=10_000, help="history rows copied")
    parser.add_argument("--repeat", type=int, default=15, help="timed calls per query")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--database-url",
        help="PostgreSQL: a server's URL whose user may create databases "
        "(default: start a durable throwaway one)",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print("load average before: {:.2f} {:.2f} {:.2f} (2 cores, shared)".format(*os.getloadavg()))
    with ExitStack() as stack:
        if args.database == "postgresql":
            server = args.database_url or stack.enter_context(durable_postgres())
            databases: Callable[[int], str] = partial(_postgres_database, server)
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="query-scaling-"))
            databases = partial(_sqlite_database, Path(tmp))
        results, plan = _run(sizes, databases, args)
    small, large = sizes[0], sizes[-1]
    print(
        "\n"
        + f"{'query':<28}"
        + "".join(f"{f'{s:,} ms':>14}" for s in sizes)
        + f"{f'{large // 1000}k/{small // 1000}k':>12}"
    )
    for name in results[small]:
        ratio = results[large][name] / results[small][name]
        goal = ""
        if name in GOAL_QUERIES:
            goal = f"   goal <= {GOAL_RATIO}: {'met' if ratio <= GOAL_RATIO else 'MISSED'}"
        print(
            f"{name:<28}"
            + "".join(f"{results[s][name]:>14.2f}" for s in sizes)
            + f"{ratio:>12.2f}{goal}"
        )
    print(f"\n{args.database} plans at {large:,}:\n{plan}")
    print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
