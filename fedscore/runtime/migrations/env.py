"""Alembic's environment for a party's database: run on the connection it is handed.

`fedscore.runtime.migrations` passes the connection in `config.attributes["connection"]`;
there is no `alembic.ini` and no URL here, so a migration never connects anywhere else.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    version_table=context.config.attributes["version_table"],
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
