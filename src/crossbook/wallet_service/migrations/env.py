"""Alembic environment of the wallet service: runs on the connection the caller hands it.

There is no alembic.ini and no URL here: `crossbook.sql_support.migrate.upgrade`
with `WALLET_MIGRATIONS` (see `crossbook.wallet_service.store`) opens the
connection and its transaction and passes it in `config.attributes`, together
with the metadata and the version table (`wallet_alembic_version`).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, MetaData


def run_migrations() -> None:
    attributes = context.config.attributes
    connection = attributes.get("connection")
    metadata = attributes.get("target_metadata")
    version_table = attributes.get("version_table")
    if not isinstance(connection, Connection) or not isinstance(metadata, MetaData):
        raise RuntimeError("run migrations through crossbook.sql_support.migrate")
    if not isinstance(version_table, str):
        raise RuntimeError("the wallet's migrations need their own version table")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=version_table,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported")
run_migrations()
