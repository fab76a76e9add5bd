"""Alembic environment: runs the revisions on the connection the caller hands in.

There is no alembic.ini and no URL here: `inspect_app.storage.db` decides which database,
takes the lock and owns the transaction, then passes its connection through
``config.attributes["connection"]`` (see `inspect_app.storage.migrations.alembic_config`).
"""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from inspect_app.storage import tables  # noqa: F401  (registers the tables on the metadata)

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "inspect_app's migrations run on a connection passed in by the code "
        "(inspect_app.storage.db.upgrade_database or `inspect-app db upgrade`), "
        "not from the alembic command line or in offline (--sql) mode"
    )
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    # SQLite cannot ALTER most things in place: batch mode rebuilds the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
)
# The caller's connection is already in its transaction, so this one is a no-op and the
# caller's commit or rollback decides the whole upgrade.
with context.begin_transaction():
    context.run_migrations()
