"""Alembic environment for River's schema, configured in code (river_server/schema.py).

There is no alembic.ini: the host hands its own connection in `config.attributes`, so a
migration runs inside the host's engine whatever the working directory, and the target
metadata (for autogenerate) is the models' own, overlay tables included.
"""

from __future__ import annotations

from alembic import context

from river_server.schema import target_metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - River always passes its connection
    raise RuntimeError("River's migrations run through river_server.schema, not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=target_metadata(),
    render_as_batch=connection.dialect.name == "sqlite",  # ALTER TABLE on SQLite
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
