from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import inspect, text

from inspect_app.storage.db import current_revision, make_engine, upgrade_database


@pytest.mark.postgres
def test_service_processes_starting_together_create_the_schema_once(
    fresh_postgres_url: str,
) -> None:
    """Several processes on one new PostgreSQL database all upgrade it at start-up."""
    code = (
        "from inspect_app.storage.db import current_revision, make_engine, upgrade_database; "
        f"upgrade_database(make_engine({fresh_postgres_url!r}))"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    failures = [p.communicate(timeout=120)[1] for p in processes if p.wait(timeout=120) != 0]
    assert not failures, failures[0][-2000:]
    engine = make_engine(fresh_postgres_url)
    assert {"line", "reviewtask", "label", "event"} <= set(inspect(engine).get_table_names())
    with engine.connect() as conn:  # one version row: the schema was made once, at head
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    assert versions == [current_revision(engine).head]
    engine.dispose()


def test_upgrade_database_is_idempotent(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    upgrade_database(engine)
    assert upgrade_database(engine).applied == ()
    assert "inspection" in inspect(engine).get_table_names()
    engine.dispose()
