"""The issue's test: two service processes (`inspect-app serve`, real HTTP) share one
PostgreSQL database, and concurrent claimers on both never receive the same task."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx
import pytest
from sqlmodel import Session

from inspect_app.accounts import add_user, issue_token
from inspect_app.domain import TaskReason
from inspect_app.lines import add_line
from inspect_app.storage.db import make_engine, upgrade_database

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

N_TASKS = 60
N_CLAIMERS = 8  # half on each process


def test_claimers_on_two_processes_never_share_a_task(
    fresh_postgres_url: str, seed_review_task: Callable[..., int], two_services: list[str]
) -> None:
    engine = make_engine(fresh_postgres_url)
    upgrade_database(engine)
    with Session(engine, expire_on_commit=False) as db:
        add_line(db, "line-1")
        tokens = [
            issue_token(db, add_user(db, f"inspector{i}", "inspector", "inspector password"))
            for i in range(N_CLAIMERS)
        ]
        for i in range(N_TASKS):
            seed_review_task(db, "line-1", reason=TaskReason.AUDIT if i % 4 else TaskReason.DECIDE)
    engine.dispose()

    claims: list[tuple[int, int]] = []  # (task id, which process)
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(N_CLAIMERS)

    def claimer(index: int) -> None:
        process = index % 2
        headers = {"Authorization": f"Bearer {tokens[index]}"}
        with httpx.Client(base_url=two_services[process], headers=headers, timeout=60) as http:
            start.wait()
            while True:
                claim = http.post("/api/v1/reviews/claim")
                if claim.status_code == 204:
                    return
                if claim.status_code != 200:
                    errors.append(f"claim: {claim.status_code} {claim.text}")
                    return
                task_id = claim.json()["task_id"]
                with lock:
                    claims.append((task_id, process))
                label = http.post(f"/api/v1/reviews/{task_id}/label", json={"label": "ok"})
                if label.status_code != 200:
                    errors.append(f"label {task_id}: {label.status_code} {label.text}")
                    return

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(N_CLAIMERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors
    task_ids = [task_id for task_id, _ in claims]
    assert len(task_ids) == N_TASKS
    assert len(set(task_ids)) == N_TASKS
    per_process = [sum(1 for _, p in claims if p == i) for i in range(2)]
    print(f"claims served per process: {per_process}")
