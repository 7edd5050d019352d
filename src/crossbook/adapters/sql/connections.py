"""The SQL store's connections besides the engine's writer: reads and short writes.

`SqlConnections` is shared by the store's port objects (`SqlReads`, `SqlUsers`,
`SqlSettlements`). Each read is one read-only snapshot and ends within the read
timeout (abandoned past it); a short write runs in a transaction of its own,
bounded by the drivers' own timeouts, which roll it back rather than abandon it
half-way. A connection failure or timeout of any driver is raised as the port's
`StoreUnavailableError` (`errors.is_unavailable` says which errors are that).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine, Executable, RowMapping
from sqlalchemy.ext.asyncio import AsyncEngine

from crossbook.adapters.sql import queries
from crossbook.adapters.sql.errors import is_unavailable
from crossbook.engine.ports import StoreUnavailableError

Rows = Sequence[RowMapping]
Write = tuple[Executable, Sequence[Mapping[str, Any]] | None]
T = TypeVar("T")


class Reader(Protocol):
    """The store's connections besides the engine's writer: reads, and short writes."""

    async def fetch(self, statements: Sequence[queries.AnySelect]) -> list[Rows]:
        """Run `statements` in one read-only snapshot; their rows, in order."""
        ...

    async def write(self, statement: Executable) -> Rows:
        """Run `statement` in a short write transaction of its own; its RETURNING rows."""
        ...

    async def write_all(self, statements: Sequence[Write]) -> None:
        """Run `statements` (each with its parameter sets, or None) in one transaction."""
        ...

    async def close(self) -> None: ...


class SqliteReader:
    """Reads in `BEGIN` (deferred) snapshots; writes in `BEGIN IMMEDIATE`, which waits
    for the write lock (busy timeout) while the engine's writer holds it."""

    def __init__(self, engine: Engine, write_engine: Engine) -> None:
        self._engine = engine
        self._write_engine = write_engine

    async def fetch(self, statements: Sequence[queries.AnySelect]) -> list[Rows]:
        return await asyncio.to_thread(self._fetch, statements)

    def _fetch(self, statements: Sequence[queries.AnySelect]) -> list[Rows]:
        with self._engine.begin() as connection:
            return [connection.execute(s).mappings().all() for s in statements]

    async def write(self, statement: Executable) -> Rows:
        return await asyncio.to_thread(self._write, statement)

    def _write(self, statement: Executable) -> Rows:
        with self._write_engine.begin() as connection:
            return connection.execute(statement).mappings().all()

    async def write_all(self, statements: Sequence[Write]) -> None:
        await asyncio.to_thread(self._write_all, statements)

    def _write_all(self, statements: Sequence[Write]) -> None:
        with self._write_engine.begin() as connection:
            for statement, params in statements:
                connection.execute(statement, params)

    async def close(self) -> None:
        try:
            await asyncio.to_thread(self._write_engine.dispose)
        finally:
            await asyncio.to_thread(self._engine.dispose)


class PostgresReader:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def fetch(self, statements: Sequence[queries.AnySelect]) -> list[Rows]:
        async with self._engine.connect() as connection:
            snapshot = await connection.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
            async with snapshot.begin():
                return [(await snapshot.execute(s)).mappings().all() for s in statements]

    async def write(self, statement: Executable) -> Rows:
        async with self._engine.begin() as connection:  # READ COMMITTED, read-write
            return (await connection.execute(statement)).mappings().all()

    async def write_all(self, statements: Sequence[Write]) -> None:
        async with self._engine.begin() as connection:
            for statement, params in statements:
                await connection.execute(statement, params)

    async def close(self) -> None:
        await self._engine.dispose()


class SqlConnections:
    """Bounded reads and translated short writes over a `Reader`."""

    __slots__ = ("_read_timeout_s", "_reader")

    def __init__(self, reader: Reader, read_timeout_ms: int) -> None:
        self._reader = reader
        self._read_timeout_s = read_timeout_ms / 1000

    async def fetch(self, statement: queries.AnySelect) -> Rows:
        (rows,) = await self.fetch_all([statement])
        return rows

    async def fetch_all(self, statements: Sequence[queries.AnySelect]) -> list[Rows]:
        """One read-only snapshot, within the read timeout (abandoned past it)."""
        return await translated(
            asyncio.wait_for(self._reader.fetch(statements), self._read_timeout_s)
        )

    async def write(self, statement: Executable) -> Rows:
        return await translated(self._reader.write(statement))

    async def write_all(self, statements: Sequence[Write]) -> None:
        await translated(self._reader.write_all(statements))

    async def close(self) -> None:
        await self._reader.close()


async def translated(work: Awaitable[T]) -> T:
    """`work`, with an outage of the database (see `errors`) raised as the port's
    `StoreUnavailableError` and anything else as it is.

    Writes go through this alone: bounded by the drivers' timeouts, which leave their
    transaction rolled back, never abandoned half-way (a write abandoned in its
    busy wait on SQLite would still commit once the lock came free)."""
    try:
        return await work
    except StoreUnavailableError:
        raise
    except Exception as exc:
        if is_unavailable(exc):
            raise StoreUnavailableError(f"the database did not answer: {exc!r}") from exc
        raise
