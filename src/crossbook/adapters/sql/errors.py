"""Errors the SQL store raises besides the database driver's own, and which of the
drivers' errors mean "the database is unavailable" (`is_unavailable`).

The store turns the unavailable kind into the port's `StoreUnavailableError`:
connection failures (refused, reset, closed, terminated by the server), timeouts
(ours, the driver's, the pool's, PostgreSQL's `statement_timeout` and
`lock_timeout`), a server shutting down or out of connections, a database that is
gone, SQLite's busy/locked and I/O errors. Anything else (a constraint violation,
a programming error) is not an outage and stays what it is.
"""

from __future__ import annotations

import sqlite3

import asyncpg
from sqlalchemy import exc as sa_exc


class StoreError(RuntimeError):
    """The store cannot do what was asked; the engine must halt and recover."""


class StoreConflictError(StoreError):
    """A batch does not follow the committed state (a gap, a replay, or another writer)."""


# PostgreSQL SQLSTATE classes and codes of an unavailable database: connection exception,
# insufficient resources (too many connections), operator intervention (shutdown, query
# cancelled: statement_timeout), system error (I/O), invalid authorisation; and single codes:
# lock_not_available (lock_timeout), invalid_catalog_name (the database is gone)
_UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "58", "28"})
_UNAVAILABLE_SQLSTATES = frozenset({"55P03", "3D000"})
_CAUSE_DEPTH = 3  # how far down `__cause__` the original driver error is looked for


def is_unavailable(error: BaseException) -> bool:
    """Whether `error` says the database could not answer (see the module docstring)."""
    for _ in range(_CAUSE_DEPTH):
        if isinstance(
            error,
            (
                TimeoutError,
                OSError,
                sa_exc.TimeoutError,  # no pooled connection came free in time
                sa_exc.OperationalError,
                sa_exc.InterfaceError,
                sqlite3.OperationalError,
                asyncpg.PostgresConnectionError,
                asyncpg.InterfaceError,
                # what asyncpg raises on a connection the server terminated while it was
                # idle ("another operation is in progress": it is consuming the FATAL)
                asyncpg.InternalClientError,
            ),
        ):
            return True
        if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
            return True
        sqlstate = getattr(error, "sqlstate", None)
        if isinstance(sqlstate, str) and (
            sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES or sqlstate in _UNAVAILABLE_SQLSTATES
        ):
            return True
        cause = error.orig if isinstance(error, sa_exc.DBAPIError) else error.__cause__
        if not isinstance(cause, BaseException):
            return False
        error = cause
    return False
