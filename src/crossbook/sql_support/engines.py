"""SQLAlchemy engines with the settings every crossbook database is opened with.

The exchange's store uses them for migrations and reads (its write path keeps
connections of its own); the wallet service for all its work.

SQLite: the stdlib driver with its implicit transaction handling turned off, so
that SQLAlchemy's `begin` issues a real `BEGIN` (DDL included, so a migration is
all or nothing): `BEGIN IMMEDIATE` for writers (it takes the write lock at once,
so concurrent migrators queue instead of failing mid-way), plain `BEGIN` for
readers (in WAL mode a read transaction sees one consistent snapshot); foreign
keys enforced.

PostgreSQL: an async engine on asyncpg, with pre-ping and no overflow beyond
its pool.

Both take optional time bounds (SQLite's busy timeout, PostgreSQL's connect,
statement and pool timeouts), which the caller sets (the exchange's store from
its read timeout).
"""

from __future__ import annotations

import sqlite3
from typing import Any, Literal

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from crossbook.sql_support.database import DatabaseUrl

SQLITE_BUSY_TIMEOUT_S = 30.0
POSTGRES_READ_POOL_SIZE = 4


def sqlite_engine(
    db: DatabaseUrl,
    *,
    begin: Literal["IMMEDIATE", "DEFERRED"],
    busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S,
) -> Engine:
    engine = create_engine(db.sqlalchemy_url, connect_args={"timeout": busy_timeout_s})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's `begin` event starts them
        dbapi_connection.execute("PRAGMA foreign_keys = ON")

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql(f"BEGIN {begin}")

    return engine


def postgres_engine(
    db: DatabaseUrl,
    *,
    pool_size: int = POSTGRES_READ_POOL_SIZE,
    timeout_s: float | None = None,
) -> AsyncEngine:
    """With `timeout_s`, connecting, each statement and waiting for a pooled connection
    are each bounded by it (asyncpg's `timeout` and `command_timeout`, the pool's)."""
    # pre-ping: a pooled connection the server dropped (restart, pg_terminate_backend)
    # is replaced before use instead of failing the read that drew it
    bounds: dict[str, Any] = {}
    if timeout_s is not None:
        bounds = {
            "connect_args": {"timeout": timeout_s, "command_timeout": timeout_s},
            "pool_timeout": timeout_s,
        }
    return create_async_engine(
        db.sqlalchemy_url, pool_size=pool_size, max_overflow=0, pool_pre_ping=True, **bounds
    )
