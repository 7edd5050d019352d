"""The store when the database stalls: bounded waits, the port's one exception, the
truth about a failed commit, and recovery once the stall is over.

Stalls are real locks held by another session: on SQLite a second connection in
`BEGIN IMMEDIATE`; on PostgreSQL `LOCK TABLE engine_state IN ACCESS EXCLUSIVE
MODE`, `SELECT … FOR UPDATE` of its row, or an uncommitted `UPDATE` of it (as an
abandoned write of ours whose COMMIT may still land would hold).
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from sql_store_support import Driver, expected_state
from sqlalchemy.engine import make_url

from crossbook.adapters.sql import SqlStore
from crossbook.engine.ports import StoreUnavailableError

DEADLINE_MS = 300  # commit deadline and read timeout of these tests
BOUND_S = 5.0  # generous bound on "promptly"


# -- stalls: another session holds the write lock ------------------------------------------


@dataclass
class Stall:
    url: str
    statement: str  # what the other session runs in its open transaction
    _sqlite: sqlite3.Connection | None = None
    _postgres: asyncpg.Connection | None = None

    async def hold(self) -> None:
        database = make_url(self.url).database
        assert database
        if self.url.startswith("sqlite"):
            self._sqlite = sqlite3.connect(database, isolation_level=None)
            self._sqlite.execute(self.statement)
            return
        self._postgres = await asyncpg.connect(self.url)
        await self._postgres.execute("BEGIN")
        await self._postgres.execute(self.statement)

    async def release(self) -> None:
        if self._sqlite is not None:
            self._sqlite.execute("ROLLBACK")
            self._sqlite.close()
            self._sqlite = None
        if self._postgres is not None:
            await self._postgres.execute("COMMIT")  # a held write lands (a no-op update)
            await self._postgres.close()
            self._postgres = None


STALLS = [
    pytest.param(("sqlite", "BEGIN IMMEDIATE"), id="sqlite-begin-immediate"),
    *(
        pytest.param(("postgres", statement), id=name, marks=pytest.mark.postgres)
        for name, statement in (
            ("pg-lock-table", "LOCK TABLE engine_state IN ACCESS EXCLUSIVE MODE"),
            ("pg-row-lock", "SELECT seq FROM engine_state FOR UPDATE"),
            ("pg-uncommitted-update", "UPDATE engine_state SET now_ms = now_ms"),
        )
    ),
]


@pytest.fixture(params=STALLS)
def stall(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stall:
    backend, statement = request.param
    if backend == "sqlite":
        return Stall(f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'store.db'}", statement)
    databases: Any = request.getfixturevalue("postgres_databases")
    return Stall(databases.create(), statement)


def open_store(url: str) -> Any:
    return SqlStore.open(url, commit_deadline_ms=DEADLINE_MS, read_timeout_ms=DEADLINE_MS)


def test_a_commit_behind_a_held_write_lock_fails_uncommitted_by_its_deadline(stall: Stall) -> None:
    async def scenario() -> None:
        async with await open_store(stall.url) as store:
            driver = Driver(seed=5)
            driver.setup()
            await store.commit(driver.take_batch())
            before = await store.load_state()
            driver.run(20)
            batch = driver.take_batch()
            await stall.hold()
            try:
                async with asyncio.timeout(BOUND_S):
                    with pytest.raises(StoreUnavailableError) as raised:
                        await store.commit(batch)
                assert raised.value.committed is False  # the transaction could not commit
                with pytest.raises(StoreUnavailableError):  # nor can the store recover yet
                    await store.load_state()
            finally:
                await stall.release()
            assert await store.load_state() == before  # now it can
            await store.commit(batch)
            assert await store.load_state() == expected_state(driver.exchange)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("backend", "statement"),
    [
        pytest.param("sqlite", "BEGIN IMMEDIATE", id="sqlite"),
        pytest.param(
            "postgres",
            "LOCK TABLE orders, users IN ACCESS EXCLUSIVE MODE",
            id="postgres",
            marks=pytest.mark.postgres,
        ),
    ],
)
def test_reads_of_a_stalled_database_raise_store_unavailable_in_time(
    backend: str, statement: str, request: pytest.FixtureRequest, tmp_path: Any
) -> None:
    """SQLite readers never wait for the write lock (WAL), so there it is `create_user`."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = request.getfixturevalue("postgres_databases").create()
    stalled = Stall(url, statement)

    async def scenario() -> None:
        async with await open_store(url) as store:
            await store.create_user("before", 1)
            await stalled.hold()
            try:
                calls = [store.create_user("during", 2)]
                if backend == "postgres":
                    calls += [store.get_order(1, 1), store.list_orders(1), store.get_user(1)]
                for call in calls:
                    async with asyncio.timeout(BOUND_S):
                        with pytest.raises(StoreUnavailableError):
                            await call
            finally:
                await stalled.release()
            assert [u.name for u in await store.list_users()] == ["before"]

    asyncio.run(scenario())
