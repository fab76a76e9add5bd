"""The schema's revisions: head is `tables`, and a plant's database upgrades keeping every row.

A round-1 plant database is made from the frozen DDL in ``round1_schema/`` (what round 1's
create_all produced), not from today's `tables`, which moves on with every round.
"""

from __future__ import annotations

import re
import shutil
import textwrap
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import JSON, DateTime, bindparam, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.engine.interfaces import ReflectedIndex
from sqlmodel import Session, SQLModel

from inspect_app.storage import db as storage_db
from inspect_app.storage import migrations
from inspect_app.storage.db import (
    ROUND1_REVISION,
    ROUND1_TABLES,
    SchemaError,
    current_revision,
    make_engine,
    upgrade_database,
)
from inspect_app.storage.migrations import alembic_config
from inspect_app.storage.tables import Deployment, Label, Line, ModelVersion, ReviewTask

ROUND1_DDL = Path(__file__).parent / "round1_schema"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file (not in memory: upgrades copy files), or PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'plant.db'}"
    return request.getfixturevalue("fresh_postgres_url")


def _wipe(url: str) -> None:
    """Make the database empty again, for a second schema in the same test."""
    if url.startswith("sqlite"):
        database = make_url(url).database
        assert database
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        return
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA public CASCADE")
        conn.exec_driver_sql("CREATE SCHEMA public")
    engine.dispose()


def _create_round1(engine: Engine) -> None:
    """Round 1's create_all, as it ran on plants: tables and no alembic_version."""
    ddl = (ROUND1_DDL / f"{engine.dialect.name}.sql").read_text()
    body = "\n".join(line for line in ddl.splitlines() if not line.startswith("--"))
    with engine.begin() as conn:
        for statement in body.split(";"):
            if statement.strip():
                conn.exec_driver_sql(statement)


def _upgrade_to(engine: Engine, revision: str) -> None:
    """Run the real revisions (no create_all shortcut) up to `revision`."""
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)


def _where(index: ReflectedIndex) -> str:
    """A partial index's condition without PostgreSQL's casts: it prints the same condition
    differently once an ALTER TABLE has rebuilt the index (as 0002 does)."""
    where = str(index.get("dialect_options", {}).get("postgresql_where", ""))
    return re.sub(r"::(character varying|text)(\[\])?|[()\s]", "", where)


def _schema(engine: Engine) -> dict[str, Any]:
    """Everything the database says about its tables, names included (sorted, comparable)."""
    insp = inspect(engine)
    schema: dict[str, Any] = {}
    for table in sorted(set(insp.get_table_names()) - {"alembic_version"}):
        schema[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], c.get("default"))
                for c in insp.get_columns(table)
            ],
            "primary_key": insp.get_pk_constraint(table)["constrained_columns"],
            "foreign_keys": sorted(
                (f.get("name") or "", tuple(f["constrained_columns"]), f["referred_table"])
                for f in insp.get_foreign_keys(table)
            ),
            "unique": sorted(
                (u.get("name") or "", tuple(u["column_names"]))
                for u in insp.get_unique_constraints(table)
            ),
            "indexes": sorted(
                (i["name"] or "", tuple(i["column_names"]), i["unique"], _where(i))
                for i in insp.get_indexes(table)
            ),
        }
    return schema


# -- a plant's rows: every table, as round 1 wrote them (naive UTC times) -------------------

T0 = datetime(2025, 3, 1, 8, 0, 0, 123456)


def _at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _inspection(id: int, line_id: str, **fields: object) -> dict[str, object]:
    row: dict[str, object] = dict(
        id=id, line_id=line_id, capture_id=f"cap-{id}", part_serial=f"SN{id:05d}",
        captured_at=_at(id - 0.5), received_at=_at(id), source="http", true_class=None,
        image_sha256=f"{id:064x}", image_format="png", width=640, height=480,
        brightness=121.5, contrast=30.25, sharpness=210.125,
        model_version="defect-cnn-1", probabilities={"ok": 0.9, "scratch": 0.1},
        predicted_class="ok", confidence=0.9, p_defect=0.1, level="shadow",
        pass_threshold=0.98, fail_threshold=0.97, route="review", show_model=False,
        decision="pending", decided_by=None, decided_at=None,
        decode_ms=1.5, queue_ms=0.25, model_ms=12.0, persist_ms=2.0, total_ms=15.75,
    )  # fmt: skip
    return row | fields


def _task(id: int, inspection_id: int, status: str, **fields: object) -> dict[str, object]:
    row: dict[str, object] = dict(
        id=id, inspection_id=inspection_id, line_id="line-1", reason="decide", priority=0,
        show_model=False, status=status, claimed_by=None, claimed_at=None,
        lease_expires_at=None, created_at=_at(inspection_id), completed_at=None, note=None,
    )  # fmt: skip
    return row | fields


def _label(id: int, inspection_id: int, task_id: int | None, **fields: object) -> dict[str, object]:
    row: dict[str, object] = dict(
        id=id, inspection_id=inspection_id, task_id=task_id, user_id=2, label="ok", note=None,
        model_shown=False, duration_ms=2300, created_at=_at(inspection_id + 1),
        superseded=False,
    )  # fmt: skip
    return row | fields


# fmt: off
PLANT_ROWS: dict[str, list[dict[str, object]]] = {
    "line": [
        dict(id="line-1", level="shadow", pass_threshold=0.98, fail_threshold=0.97,
             audit_rate=0.02, max_escape_rate=0.005, max_false_reject_rate=0.02, min_labels=200,
             auto_demote=True, created_at=_at(-60), updated_at=_at(-30)),
        dict(id="line-2", level="assist", pass_threshold=0.99, fail_threshold=0.95,
             audit_rate=0.05, max_escape_rate=0.01, max_false_reject_rate=0.03, min_labels=50,
             auto_demote=False, created_at=_at(-59), updated_at=_at(-29)),
    ],
    "user": [
        dict(id=1, name="ann", role="supervisor", password_hash="scrypt$ann", active=True,
             created_at=_at(-50)),
        dict(id=2, name="bob", role="inspector", password_hash="scrypt$bob", active=False,
             created_at=_at(-40)),
    ],
    "apitoken": [
        dict(id=1, user_id=1, token_hash="a" * 128, created_at=_at(-20), revoked_at=None),
        dict(id=2, user_id=2, token_hash="b" * 128, created_at=_at(-19), revoked_at=_at(-5)),
    ],
    "camerakey": [
        dict(id=1, line_id="line-1", key_hash="c" * 128, key_prefix="cam1abcd",
             created_at=_at(-10), revoked_at=None),
        dict(id=2, line_id="line-2", key_hash="d" * 128, key_prefix="cam2abcd",
             created_at=_at(-9), revoked_at=_at(-1)),
    ],
    "inspection": [
        _inspection(1, "line-1"),
        _inspection(2, "line-1", decision="pass", decided_by="human", decided_at=_at(3)),
        _inspection(3, "line-1", true_class="crack"),
        _inspection(4, "line-1", decision="fail", decided_by="human", decided_at=_at(5)),
        _inspection(5, "line-2", capture_id=None, part_serial=None, captured_at=None,
                    model_version=None, probabilities=None, predicted_class=None,
                    confidence=None, p_defect=None, level="human_only", source="folder"),
    ],
    "reviewtask": [
        _task(1, 1, "open"),
        _task(2, 2, "done", claimed_by=2, claimed_at=_at(2.5), completed_at=_at(3)),
        _task(3, 3, "claimed", claimed_by=2, claimed_at=_at(3.5), lease_expires_at=_at(5)),
        _task(4, 4, "escalated", note="chipped corner, not in the classes"),
        _task(5, 5, "done", line_id="line-2", reason="audit", priority=1, show_model=True,
              completed_at=_at(7)),
    ],
    "label": [
        _label(1, 2, 2, superseded=True, label="scratch", note="looked again"),
        _label(2, 2, None, user_id=1, created_at=_at(4)),
        _label(3, 4, 4, label="crack", model_shown=True, duration_ms=None),
        _label(4, 5, 5),
    ],
    "event": [
        dict(id=1, at=_at(-60), line_id="line-1", kind="line_added", actor="cli:root",
             reason="", details={"level": "shadow"}),
        dict(id=2, at=_at(-1), line_id=None, kind="user_added", actor="ann", reason="new hire",
             details={"user": "bob", "nested": {"roles": ["inspector"], "n": 1.5}}),
        dict(id=3, at=_at(8), line_id="line-2", kind="level_change", actor="system",
             reason="auto demotion", details=None),
    ],
}
# fmt: on
assert set(PLANT_ROWS) == ROUND1_TABLES


def _fill(engine: Engine) -> None:
    """Insert the plant's rows with plain SQL: frozen like the DDL, whatever tables.py says.

    Round 1's ids come from sequences on PostgreSQL; the rows carry explicit ids, so each
    sequence is moved past them, as it would be on a plant.
    """
    with engine.begin() as conn:
        for table, rows in PLANT_ROWS.items():
            for row in rows:
                typed = [
                    bindparam(k, type_=DateTime() if isinstance(v, datetime) else JSON())
                    for k, v in row.items()
                    if isinstance(v, datetime | dict)
                ]
                columns = ", ".join(row)
                values = ", ".join(f":{k}" for k in row)
                statement = text(f'INSERT INTO "{table}" ({columns}) VALUES ({values})')
                conn.execute(statement.bindparams(*typed), row)
            if engine.dialect.name == "postgresql" and table != "line":
                conn.execute(
                    text(f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'), 100)")
                )


def _plain(value: object) -> object:
    """An instant as naive UTC: round 1's timestamp columns read naive, timestamptz aware."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _rows(
    engine: Engine, *, extra: dict[str, list[str]] | None = None
) -> dict[str, tuple[list[str], list[tuple[object, ...]]]]:
    """Every row of every round-1 table, exactly as the driver returns it: round 1's
    columns (later revisions add some, which these rows have no values for), plus `extra`."""
    with engine.connect() as conn:
        found = {}
        for table in sorted(ROUND1_TABLES):
            names = [*PLANT_ROWS[table][0], *(extra or {}).get(table, [])]
            columns = ", ".join(f'"{column}"' for column in names)
            result = conn.execute(text(f'SELECT {columns} FROM "{table}" ORDER BY id'))
            found[table] = (list(result.keys()), [tuple(map(_plain, r)) for r in result])
        return found


def _revisions_after(revision: str) -> list[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return [s.revision for s in reversed(list(script.iterate_revisions("head", revision)))]


# -- head is tables; 0001 is round 1 ----------------------------------------------------------


def test_head_is_tables(database_url: str) -> None:
    """The revisions, run on an empty database, make exactly the schema `tables` declares;
    this is also why a new database may take create_all instead (`_apply`)."""
    engine = make_engine(database_url)
    _upgrade_to(engine, "head")
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []
    by_revisions = _schema(engine)
    engine.dispose()
    _wipe(database_url)
    engine = make_engine(database_url)
    report = upgrade_database(engine)  # an empty database: create_all and a stamp at head
    assert report.before.revision is None and report.after == report.before.head
    assert current_revision(engine).at_head
    assert _schema(engine) == by_revisions  # partial index and constraint names included
    engine.dispose()


def test_revision_0001_is_round_1s_schema(database_url: str) -> None:
    engine = make_engine(database_url)
    _upgrade_to(engine, ROUND1_REVISION)
    by_revision = _schema(engine)
    engine.dispose()
    _wipe(database_url)
    engine = make_engine(database_url)
    _create_round1(engine)
    assert _schema(engine) == by_revision
    waiting = [
        i for i in inspect(engine).get_indexes("reviewtask") if i["name"] == "ix_task_waiting"
    ]
    if engine.dialect.name == "postgresql":
        assert "status" in str(waiting[0]["dialect_options"]["postgresql_where"])
    engine.dispose()


# -- upgrading a plant's database ------------------------------------------------------------


@pytest.mark.parametrize("start", ["stamped 0001", "round-1 create_all"])
def test_upgrading_a_plant_database_keeps_every_row(database_url: str, start: str) -> None:
    engine = make_engine(database_url)
    if start == "stamped 0001":
        _upgrade_to(engine, ROUND1_REVISION)
    else:
        _create_round1(engine)
    _fill(engine)
    before_rows = _rows(engine)
    assert current_revision(engine).stamped == (start == "stamped 0001")

    report = upgrade_database(engine)

    assert report.before.revision == ROUND1_REVISION
    assert report.applied == tuple(_revisions_after(ROUND1_REVISION))
    assert _rows(engine) == before_rows
    state = current_revision(engine)
    assert state.at_head and state.revision == report.after
    with engine.connect() as conn:  # an upgraded plant has the schema a new database gets
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []
    with Session(engine) as session:  # and the code reads the same instants, now in UTC
        assert session.get(Label, 3).created_at == _at(5).replace(tzinfo=UTC)  # type: ignore[union-attr]
        task = session.get(ReviewTask, 3)
        assert task is not None and task.lease_expires_at == _at(5).replace(tzinfo=UTC)
    if engine.dialect.name == "sqlite":
        assert report.backup is not None and report.backup.name.startswith(
            f"plant.db.pre-{report.applied[0]}-"
        )
        copy = make_engine(f"sqlite:///{report.backup}")
        assert _rows(copy) == before_rows
        assert current_revision(copy).revision == ROUND1_REVISION
        copy.dispose()
    else:
        assert report.backup is None  # PostgreSQL is one transaction; backups are the DBA's
    assert upgrade_database(engine).applied == ()
    engine.dispose()


def test_processes_upgrading_one_plant_database_at_once_upgrade_it_once(
    database_url: str,
) -> None:
    """Two service processes start on the same round-1 database at the same moment: the
    lock makes one upgrade it and the other find it at head (empty PostgreSQL databases:
    tests/inspect_app/storage/test_db.py)."""
    setup = make_engine(database_url)
    _create_round1(setup)
    _fill(setup)
    before_rows = _rows(setup)
    setup.dispose()
    start = threading.Barrier(2)
    reports, errors = [], []

    def start_service() -> None:
        engine = make_engine(database_url)
        start.wait()
        try:
            reports.append(upgrade_database(engine))
        except Exception as exc:  # reported below; a thread cannot fail the test itself
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=start_service) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(len(r.applied) for r in reports) == [0, len(_revisions_after(ROUND1_REVISION))]
    engine = make_engine(database_url)
    assert _rows(engine) == before_rows
    with engine.connect() as conn:
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    assert versions == [current_revision(engine).head]
    engine.dispose()


# -- a revision that fails -------------------------------------------------------------------


@pytest.fixture
def extra_revision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], None]]:
    """Add a test-only revision after head, with the given upgrade() body, to a copy of
    the packaged revisions that the code then runs instead."""
    scripts = tmp_path / "migrations"
    shutil.copytree(
        migrations.MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__")
    )
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()

    def add(body: str) -> None:
        (scripts / "versions" / "9999_test_only.py").write_text(
            "import sqlalchemy as sa\nfrom alembic import op\n\n"
            f"revision = '9999'\ndown_revision = {head!r}\nbranch_labels = None\n"
            "depends_on = None\n\n\ndef upgrade():\n" + textwrap.indent(body, "    ")
        )
        monkeypatch.setattr(migrations, "MIGRATIONS_DIR", scripts)
        storage_db._script.cache_clear()

    yield add
    monkeypatch.undo()
    storage_db._script.cache_clear()


# DDL of every kind, then a failure: on SQLite the batch block rebuilds the inspection table
# (copy, drop, rename), which the review tasks and labels reference.
FAILS_MIDWAY = """\
op.create_table("half_done", sa.Column("id", sa.Integer(), primary_key=True))
with op.batch_alter_table("inspection") as batch:
    batch.add_column(sa.Column("half_done", sa.Integer(), nullable=True))
    batch.drop_column("part_serial")
op.execute("DELETE FROM label")
raise RuntimeError("revision 9999 fails midway")
"""


def test_a_failed_upgrade_leaves_the_database_as_it_was(
    database_url: str, extra_revision: Callable[[str], None]
) -> None:
    engine = make_engine(database_url)
    _create_round1(engine)
    _fill(engine)
    before_rows, before_schema = _rows(engine), _schema(engine)
    extra_revision(FAILS_MIDWAY)

    with pytest.raises(SchemaError, match="failed and was rolled back") as failure:
        upgrade_database(engine)

    assert "revision 9999 fails midway" in str(failure.value)
    assert _rows(engine) == before_rows
    assert _schema(engine) == before_schema
    assert "alembic_version" not in inspect(engine).get_table_names()  # not even the stamp
    state = current_revision(engine)
    assert (state.revision, state.stamped) == (ROUND1_REVISION, False)
    if engine.dialect.name == "sqlite":
        backups = list(Path(make_url(database_url).database or "").parent.glob("plant.db.pre-*"))
        assert len(backups) == 1 and str(backups[0]) in str(failure.value)
        copy = make_engine(f"sqlite:///{backups[0]}")
        assert _rows(copy) == before_rows
        copy.dispose()
    engine.dispose()


def test_a_revision_that_rebuilds_a_referenced_table_keeps_its_rows(
    database_url: str, extra_revision: Callable[[str], None]
) -> None:
    """What round 2's revisions will do on SQLite: rebuild a table that others point at,
    inside the one transaction, with the foreign keys checked afterwards."""
    engine = make_engine(database_url)
    _create_round1(engine)
    _fill(engine)
    before_rows = _rows(engine)
    extra_revision(
        'with op.batch_alter_table("inspection") as batch:\n'
        '    batch.add_column(sa.Column("operator_note", sa.String(), nullable=True))\n'
        "    batch.alter_column(\n"
        '        "part_serial", existing_type=sa.String(128), type_=sa.String(256)\n'
        "    )\n"
    )

    report = upgrade_database(engine)

    assert report.applied[-1] == "9999"
    after_rows = _rows(engine, extra={"inspection": ["operator_note"]})
    columns, rows = after_rows.pop("inspection")
    assert after_rows == {t: v for t, v in before_rows.items() if t != "inspection"}
    assert columns == [*before_rows["inspection"][0], "operator_note"]
    assert rows == [(*row, None) for row in before_rows["inspection"][1]]
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
    engine.dispose()


def test_0017_keeps_a_rolling_deployment_and_its_candidate_decides_at_the_lines_thresholds(
    database_url: str,
) -> None:
    """A deployment row written before 0017 keeps every value; its candidate gets no
    thresholds of its own (NULL), which means the line's: what it decided at before."""
    engine = make_engine(database_url)
    _upgrade_to(engine, "0016")
    now = _at(0).replace(tzinfo=UTC)
    version = dict(
        sha256="",
        path="m.pt",
        architecture={},
        class_names=["ok"],
        temperature=1.0,
        metrics={},
        lineage={},
        notes="",
        registered_by="sam",
        registered_at=now,
    )
    with engine.begin() as conn:  # Core inserts of 0016's columns: no candidate_thresholds
        conn.execute(Line.__table__.insert(), [dict(id="line-1", name="line-1", level="partial")])  # type: ignore[attr-defined]
        conn.execute(
            ModelVersion.__table__.insert(),  # type: ignore[attr-defined]
            [
                version | dict(version="champ", sha256="a"),
                version | dict(version="cand", sha256="b"),
            ],
        )
        conn.execute(
            Deployment.__table__.insert(),  # type: ignore[attr-defined]
            [dict(line_id="line-1", champion="champ", candidate="cand", mode="canary", share=0.25,
                  steps=[0.05, 0.25, 1.0], step=1, revision=7, updated_by="sue",
                  updated_at=now)],
        )  # fmt: skip
    columns = [c.name for c in Deployment.__table__.columns if c.name != "candidate_thresholds"]  # type: ignore[attr-defined]
    query = text(f"SELECT {', '.join(columns)} FROM deployment")
    with engine.connect() as conn:
        before = [tuple(map(_plain, r)) for r in conn.execute(query)]

    assert upgrade_database(engine).applied == ("0017",)

    with engine.connect() as conn:
        assert [tuple(map(_plain, r)) for r in conn.execute(query)] == before
    with Session(engine) as session:
        row = session.get(Deployment, "line-1")
        assert row is not None and row.candidate == "cand" and row.candidate_thresholds is None
    engine.dispose()


def test_a_database_with_only_some_of_the_tables_is_refused(database_url: str) -> None:
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE line (id VARCHAR(64) PRIMARY KEY)")
    with pytest.raises(SchemaError, match="not a schema this code can upgrade"):
        upgrade_database(engine)
    assert inspect(engine).get_table_names() == ["line"]
    engine.dispose()


def test_a_database_from_a_newer_version_is_refused(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade_database(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaError, match="upgraded by a newer version"):
        upgrade_database(engine)
    engine.dispose()
