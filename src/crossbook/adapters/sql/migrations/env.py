"""Alembic environment of the exchange's schema (`adapters.sql.migrate.ENGINE_MIGRATIONS`).

There is no alembic.ini and no URL here: `crossbook.adapters.sql.migrate.upgrade`
opens the connection (and its transaction) and passes it in `config.attributes`,
with the metadata and the version table; `run_environment` migrates on it.
"""

from __future__ import annotations

from crossbook.sql_support.migrate import run_environment

run_environment()
