"""Alembic environment: runs the revisions on the connection that ``core.db.migrate`` passes.

Offline (SQL script) mode is not supported: migrations run inside ``migrate``, which holds the
lock that keeps two starting processes from migrating at once.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("run migrations with lookalike.core.db.migrate(url), not the alembic CLI")

context.configure(
    connection=connection,
    version_table=context.config.attributes["version_table"],
    # SQLite cannot ALTER most things: later revisions get copy-and-move batches for free.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
