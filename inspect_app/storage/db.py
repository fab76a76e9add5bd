"""Engine and sessions. SQLite is the embedded default; PostgreSQL by URL for several processes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, SQLModel, create_engine

from inspect_app.storage import tables  # noqa: F401  (registers the tables on the metadata)


def make_engine(url: str) -> Engine:
    """Build an engine for `url`; ``sqlite://`` (no path) is one shared in-memory database."""
    if url.startswith("sqlite"):
        in_memory = url in ("sqlite://", "sqlite:///:memory:")
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            poolclass=StaticPool if in_memory else None,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            # WAL lets the UI read while ingestion writes; synchronous=FULL makes a
            # committed (acknowledged) inspection survive a crash of the process or machine.
            cur = dbapi_conn.cursor()
            if not in_memory:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    # Timestamps are UTC in columns without a zone: a session zone of UTC makes PostgreSQL
    # store and compare them as written, whatever the server's default zone is.
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        connect_args={"options": "-c timezone=UTC"},
    )


# Any number of service processes may start at once on one PostgreSQL database: creating
# the tables under one advisory lock stops them racing on CREATE TABLE (the losers would
# fail with a duplicate-type error); the later ones find the tables there and skip them.
_SCHEMA_LOCK_KEY = 0x696E7370  # "insp"


def init_db(engine: Engine) -> None:
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
            SQLModel.metadata.create_all(conn)
        return
    SQLModel.metadata.create_all(engine)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error: no half-written rows."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
