"""Review latency: the server-side time from an inspector's verdict to the next part ready.

What the review UI does on every verdict key is ``review_queue.label_and_claim_next``: the
label and the next part's claim in one transaction (`review_ui.desk.InspectorDesk.verdict`);
an API client does the same in two calls, ``submit_label`` then ``claim_next_task``
(``--paths pair``). This times verdict -> next part ready, with the database already
holding a plant's worth of history:

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

Both databases in one run, so the six figures (SQLite and PostgreSQL x 1 / 8 paced / 8 back
to back) come from the same machine load: SQLite a file in a temp dir (WAL,
synchronous=FULL as the service runs it), and PostgreSQL a throwaway server the bench starts
with its durable defaults (`postgres_server.durable_postgres`; ``--database-url
postgresql://...`` to use an empty database of your own instead). ``--databases sqlite``
runs one.

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
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from functools import partial
from pathlib import Path

from plant_history import LINES, add_plant, insert_history, inspection_row  # bench/ helper
from postgres_server import durable_postgres  # bench/ helper
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from inspect_app import review_queue
from inspect_app.accounts import add_user
from inspect_app.domain import CLASS_NAMES, DefectClass, Role, Route
from inspect_app.storage.db import make_engine, upgrade_database
from inspect_app.storage.tables import User, utcnow

GOAL_P95_MS = 50.0


def seed(engine: Engine, n_inspections: int, n_waiting: int, rng: random.Random) -> None:
    """`n_inspections` inspections over 30 days, each with its review task (a tenth audits,
    the rest routed to a human); all but the last `n_waiting` labeled by 'history'."""
    historian = add_plant(engine)
    assert historian.id is not None
    start = utcnow() - timedelta(days=30)
    step = timedelta(days=30) / max(1, n_inspections)
    labeled = [i < n_inspections - n_waiting for i in range(n_inspections)]
    rows = [
        inspection_row(
            rng, LINES[i % len(LINES)], start + i * step, p_ok=rng.random(), version="bench",
            level="shadow", route=(Route.AUDIT if rng.random() < 0.1 else Route.REVIEW).value,
            labeled=labeled[i],
        )
        for i in range(n_inspections)
    ]  # fmt: skip
    insert_history(engine, rows, labeled, historian.id, partial(rng.choice, CLASS_NAMES))


def inspectors(engine: Engine, n: int) -> list[User]:
    with Session(engine, expire_on_commit=False) as db:
        existing = {u.name: u for u in db.exec(select(User))}
        users = []
        for i in range(n):
            name = f"bench-inspector-{i}"
            users.append(existing.get(name) or add_user(db, name, Role.INSPECTOR, "bench-password"))
        return users


def verdict_and_next(
    db: Session, path: str, task_id: int, user: User, label: DefectClass, lease: float
) -> tuple[review_queue.ClaimedTask | None, float]:
    """One verdict and the next part, by `path`; returns the part and when the label was
    saved (perf_counter; for ``merged`` the same commit saves both)."""
    if path == "merged":
        _label, task = review_queue.label_and_claim_next(
            db, task_id, user, label, lease_seconds=lease, duration_ms=1500
        )
        return task, time.perf_counter()
    review_queue.submit_label(db, task_id, user, label, duration_ms=1500)
    saved = time.perf_counter()
    return review_queue.claim_next_task(db, user, lease_seconds=lease), saved


def run(
    engine: Engine,
    users: list[User],
    verdicts: int,
    lease: float,
    think_ms: float,
    path: str = "merged",
) -> tuple[list[float], list[float], list[float]]:
    """Each user labels, looking at each part for about `think_ms` (0: back to back); returns
    every verdict -> next-task time in ms (the looking is not timed), and the part of it
    spent claiming (``pair`` only: ``merged`` claims in the label's transaction), and the
    CPU time of the inspector's thread per verdict (this process's share of the work: on a
    loaded machine it says what the code costs where the wall times say what it waited).

    Note that with CPython's GIL this process's Python work is serial, as the service's is."""
    per_user = max(1, verdicts // len(users))
    times: list[float] = []
    claims: list[float] = []
    cpu: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(len(users))
    errors: list[BaseException] = []

    def work(user: User) -> None:
        mine: list[float] = []
        mine_claims: list[float] = []
        mine_cpu: list[float] = []
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
                    t0, c0 = time.perf_counter(), time.thread_time()
                    task, t1 = verdict_and_next(db, path, task.task_id, user, label, lease)
                    t2 = time.perf_counter()
                    mine_cpu.append(1000 * (time.thread_time() - c0))
                    mine.append(1000 * (t2 - t0))
                    mine_claims.append(1000 * (t2 - t1))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        with lock:
            times.extend(mine)
            claims.extend(mine_claims)
            cpu.extend(mine_cpu)

    threads = [threading.Thread(target=work, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return times, claims, cpu


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def query_plan(engine: Engine) -> str:
    """The database's plan for the queue's next-candidate query (what claim_next_task asks,
    with its own SQL, so the plan is the one the claim gets)."""
    with Session(engine) as db:
        user = db.exec(select(User)).first()
        assert user is not None
        query = review_queue._candidates(db, user, utcnow(), None).limit(16)
        compiled = query.compile(engine, compile_kwargs={"literal_binds": True})
        sql = str(compiled)
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.execute(text("EXPLAIN QUERY PLAN " + sql)).all()
            return "\n".join(f"  {row[-1]}" for row in rows)
        rows = conn.execute(text("EXPLAIN ANALYZE " + sql)).all()
        return "\n".join(f"  {row[0]}" for row in rows)


HEADER = (
    "inspectors", "think ms", "path", "verdicts", "p50 ms", "p95 ms", "p99 ms", "max ms",
    "verdicts/s", "cpu ms",
)  # fmt: skip


def bench_database(
    url: str, args: argparse.Namespace, runs: list[tuple[int, float]], paths: list[str]
) -> list[tuple[str, int, float, str, float]]:
    """Seed one database and time every run on it; returns (database, inspectors, think,
    path, p95) per run for the summary."""
    engine = make_engine(url)
    upgrade_database(engine)
    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    seed(engine, args.inspections, args.waiting, rng)
    name = engine.dialect.name
    if name == "postgresql":
        # what autovacuum does soon after a bulk load: without statistics the planner takes
        # the fresh tables for empty and prefers a bitmap scan and a sort to the partial index
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
    print(
        f"\ndatabase: {engine.url.render_as_string(hide_password=True)} ({name})\n"
        f"seeded {args.inspections:,} inspections, {args.waiting:,} waiting, "
        f"in {time.perf_counter() - t0:.1f} s; load average {_load()}"
    )
    print("queue candidate query plan:\n" + query_plan(engine))
    users = inspectors(engine, max(n for n, _ in runs))
    print("\n" + " ".join(f"{h:>10}" for h in HEADER) + "   claim p50/p95 ms")
    results = []
    for n, think in runs:
        for path in paths:
            started = time.perf_counter()
            times, claims, cpu = run(
                engine, users[:n], args.verdicts, lease=60.0, think_ms=think, path=path
            )
            wall = time.perf_counter() - started
            p95 = percentile(times, 95)
            claimed = (
                f"{statistics.median(claims):.1f} / {percentile(claims, 95):.1f}"
                if path == "pair"
                else "(in the label's commit)"
            )
            print(
                f"{n:>10} {think:>10.0f} {path:>10} {len(times):>10} "
                f"{statistics.median(times):>10.1f} {p95:>10.1f} "
                f"{percentile(times, 99):>10.1f} {max(times):>10.1f} "
                f"{len(times) / wall:>10.1f} {statistics.median(cpu):>10.2f}   {claimed}   "
                f"load {_load()}"
            )
            results.append((name, n, think, path, p95))
    engine.dispose()
    return results


def _load() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--databases", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql"
    )
    parser.add_argument(
        "--database-url", help="PostgreSQL: an empty database (default: start a durable one)"
    )
    parser.add_argument("--inspections", type=int, default=100_000)
    parser.add_argument("--waiting", type=int, default=3_000, help="unlabeled tasks in the queue")
    parser.add_argument("--verdicts", type=int, default=400, help="timed verdicts per run")
    parser.add_argument(
        "--runs",
        default="1:0,8:1500,8:0",
        help="inspectors:think-ms per run, comma-separated (think 0 = back to back, a stress test)",
    )
    parser.add_argument(
        "--paths",
        default="merged",
        help="comma-separated: merged (the desk: one transaction), pair (two API calls)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    runs = [(int(n), float(think)) for n, think in (r.split(":") for r in args.runs.split(","))]
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if not set(databases) <= {"sqlite", "postgresql"} or not set(paths) <= {"merged", "pair"}:
        parser.error("--databases takes sqlite and postgresql, --paths merged and pair")
    if args.waiting < args.verdicts * len(runs) * len(paths) + 8:
        parser.error("--waiting must cover every run's verdicts, or a run ends on an empty queue")
    print(f"load average before: {_load()} (2 cores, shared: figures are noisy)")
    results = []
    with tempfile.TemporaryDirectory(prefix="review-latency-") as tmp:
        if "sqlite" in databases:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            results += bench_database(url, args, runs, paths)
        if "postgresql" in databases:
            with (
                durable_postgres()
                if args.database_url is None
                else _given(args.database_url) as url
            ):
                results += bench_database(url, args, runs, paths)
    print(f"\nverdict -> next part, p95 (goal <= {GOAL_P95_MS:.0f} ms):")
    for name, n, think, path, p95 in results:
        pace = "back to back" if not think else f"at {think:.0f} ms"
        verdict = "met" if p95 <= GOAL_P95_MS else "MISSED"
        print(f"  {name:>10}  {n} inspector(s) {pace:<14} {path:>6}: {p95:7.1f} ms  {verdict}")
    print(f"load average after: {_load()}")


if __name__ == "__main__":
    main()
