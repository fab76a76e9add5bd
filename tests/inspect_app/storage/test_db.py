from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import inspect

from inspect_app.storage.db import init_db, make_engine


@pytest.mark.postgres
def test_service_processes_starting_together_create_the_schema_once(
    fresh_postgres_url: str,
) -> None:
    """Several processes on one new PostgreSQL database all run init_db at start-up."""
    code = (
        "from inspect_app.storage.db import init_db, make_engine; "
        f"init_db(make_engine({fresh_postgres_url!r}))"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    failures = [p.communicate(timeout=120)[1] for p in processes if p.wait(timeout=120) != 0]
    assert not failures, failures[0][-2000:]
    engine = make_engine(fresh_postgres_url)
    assert {"line", "reviewtask", "label", "event"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_init_db_is_idempotent(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    init_db(engine)
    init_db(engine)
    assert "inspection" in inspect(engine).get_table_names()
    engine.dispose()
