"""Alembic environment of the wallet service (`wallet_service.store.WALLET_MIGRATIONS`).

There is no alembic.ini and no URL here: `crossbook.sql_support.migrate.upgrade`
with `WALLET_MIGRATIONS` opens the connection and its transaction and passes it
in `config.attributes`, together with the metadata and the version table
(`wallet_alembic_version`, apart from the engine's); `run_environment` migrates
on it.
"""

from __future__ import annotations

from crossbook.sql_support.migrate import run_environment

run_environment()
