"""The database schema's history as Alembic revisions, shipped inside the package.

`inspect_app.storage.db.upgrade_database` applies them; nothing here needs an alembic.ini.
A schema change is one new revision in ``versions/``, numbered after the last one
(``0003_...``, ``0004_...``). Change `inspect_app.storage.tables` first, then autogenerate
against a scratch database brought to the previous head by the revisions themselves
(`upgrade_database` would make a new database from `tables`, already changed)::

    from alembic import command
    from inspect_app.storage.db import make_engine
    from inspect_app.storage.migrations import alembic_config

    engine = make_engine("sqlite:///scratch.db")  # a new scratch file, not a plant's
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
        command.revision(alembic_config(conn), "what changed", autogenerate=True, rev_id="0003")

Then review it by hand: sqlmodel's types become SQLAlchemy's (``sa.String(64)``,
``sa.DateTime(timezone=True)``) so that a revision never changes with a library; SQLite
changes stay in batch mode (``with op.batch_alter_table(...)``: SQLite rebuilds a table to
alter it); data a change needs is moved in the same revision. Revisions must not insert rows
a new database needs (see `inspect_app.storage.db._apply`). ``ruff format`` the file.
``tests/inspect_app/storage/test_migrations.py`` checks on SQLite and PostgreSQL that head
equals `tables`, so a change to `tables` without its revision fails there.
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from sqlalchemy.engine import Connection

MIGRATIONS_DIR = Path(__file__).resolve().parent


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for the packaged revisions, running on `connection` (env.py's)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if connection is not None:
        config.attributes["connection"] = connection
    return config
