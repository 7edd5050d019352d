"""The store and the engine when the database stalls or dies: bounded waits, the port's
one exception, the truth about a failed commit, and recovery on their own.

Stalls are real locks held by another session: on SQLite a second connection in
`BEGIN IMMEDIATE`; on PostgreSQL `LOCK TABLE engine_state IN ACCESS EXCLUSIVE
MODE`, `SELECT … FOR UPDATE` of its row, or an uncommitted `UPDATE` of it (as an
abandoned write of ours whose COMMIT may still land would hold). Deaths are a TCP
proxy in front of PostgreSQL that stops forwarding (`pg_proxy`), once exactly
between the server's execution of a COMMIT and its reply reaching the writer.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from pg_proxy import PgProxy
from sql_store_support import BTC_USDT, SETUP, Collector, Driver, FixedClock, expected_state, query
from sqlalchemy.engine import make_url

from crossbook.adapters.sql import SqlStore
from crossbook.domain import OrderType, PlaceOrder, Side, TradeExecuted
from crossbook.engine.engine import Engine, EngineLimits, EngineUnavailableError
from crossbook.engine.ports import StoreUnavailableError

DEADLINE_MS = 300  # commit deadline, outcome wait and read timeout of these tests
BOUND_S = 5.0  # generous bound on "promptly"
LIMITS = EngineLimits(
    commit_deadline_ms=DEADLINE_MS, outcome_wait_ms=DEADLINE_MS, recovery_retry_ms=50
)


async def until(condition: Callable[[], bool], timeout_s: float = BOUND_S) -> None:
    """Poll `condition` until it holds, failing after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.02)


def buy(client_order_id: str) -> PlaceOrder:
    return PlaceOrder(
        1,
        BTC_USDT,
        Side.BUY,
        OrderType.LIMIT,
        quantity_lots=10,
        price_ticks=3_000_000,
        client_order_id=client_order_id,
    )


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


def test_the_engine_refuses_promptly_while_the_database_is_stalled_and_resumes_after(
    stall: Stall,
) -> None:
    async def scenario() -> None:
        async with await open_store(stall.url) as store:
            engine = Engine(store, Collector(), FixedClock(), LIMITS)
            await engine.start()
            try:
                for command in SETUP:
                    await engine.submit(command)
                await stall.hold()
                try:
                    async with asyncio.timeout(BOUND_S):
                        with pytest.raises(EngineUnavailableError) as raised:
                            await engine.submit(buy("stalled"))
                    assert raised.value.committed is False  # known: safe to retry
                    assert not engine.available  # /ready says not ready
                    with pytest.raises(EngineUnavailableError):
                        await engine.submit(buy("meanwhile"))
                finally:
                    await stall.release()
                await until(lambda: engine.available)  # on its own
                assert await store.reads.get_order_by_client_id(1, "stalled") is None
                await engine.submit(buy("stalled"))
                assert await store.reads.get_order_by_client_id(1, "stalled") is not None
                assert await store.load_state() == expected_state(engine.exchange)
            finally:
                await engine.stop()

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
            await store.users.create_user("before", 1)
            await stalled.hold()
            try:
                calls = [store.users.create_user("during", 2)]
                if backend == "postgres":
                    calls += [
                        store.reads.get_order(1, 1),
                        store.reads.list_orders(1),
                        store.users.get_user(1),
                    ]
                for call in calls:
                    async with asyncio.timeout(BOUND_S):
                        with pytest.raises(StoreUnavailableError):
                            await call
            finally:
                await stalled.release()
            assert [u.name for u in await store.users.list_users()] == ["before"]

    asyncio.run(scenario())


# -- deaths: PostgreSQL stops answering ----------------------------------------------------


@asynccontextmanager
async def proxied(url: str) -> AsyncIterator[tuple[PgProxy, str]]:
    parsed = make_url(url)
    proxy = PgProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
    await proxy.start()
    try:
        yield proxy, parsed.set(port=proxy.port).render_as_string(hide_password=False)
    finally:
        await proxy.close()


@pytest.mark.postgres
def test_postgres_dying_during_commit_answers_unknown_in_time_then_publishes_the_batch(
    postgres_databases: Any,
) -> None:
    """The server executes the batch's COMMIT and dies before its reply reaches the writer.
    Until it is back nobody can say whether the batch committed: the caller hears
    "unknown" within the bound (not after the outage), reads fail with the port's error,
    and once the server is back the committed batch is published, exactly once."""
    url = postgres_databases.create()

    async def scenario() -> None:
        async with proxied(url) as (proxy, via_proxy):
            store = await SqlStore.open(
                via_proxy, commit_deadline_ms=1_000, read_timeout_ms=DEADLINE_MS
            )
            publisher = Collector()
            engine = Engine(store, publisher, FixedClock(), LIMITS)
            await engine.start()
            try:
                for command in SETUP:
                    await engine.submit(command)
                await engine.submit(  # a resting sell for the buy to trade with
                    PlaceOrder(2, BTC_USDT, Side.SELL, OrderType.LIMIT, 10, 3_000_000)
                )
                proxy.lose_next_commit_reply()
                async with asyncio.timeout(BOUND_S):
                    with pytest.raises(EngineUnavailableError) as raised:
                        await engine.submit(buy("lost-reply"))
                assert proxy.commit_reply_lost.is_set()
                assert raised.value.committed is None and raised.value.outcome_unknown
                assert not engine.available
                ((stored,),) = await query(  # it did commit (read past the proxy)
                    url, "SELECT count(*) FROM orders WHERE client_order_id = 'lost-reply'"
                )
                assert stored == 1
                assert not any(isinstance(e, TradeExecuted) for e in publisher.events)
                for read in (
                    store.reads.get_order_by_client_id(1, "lost-reply"),
                    store.reads.ping(),
                ):
                    async with asyncio.timeout(BOUND_S):
                        with pytest.raises(StoreUnavailableError):
                            await read

                await proxy.restore()
                await until(lambda: engine.available)
                trades = [e for e in publisher.events if isinstance(e, TradeExecuted)]
                assert len(trades) == 1  # the committed batch went out, once
                assert [e.seq for e in publisher.events] == list(range(1, engine.exchange.seq + 1))
                order = await store.reads.get_order_by_client_id(1, "lost-reply")
                assert order is not None and order.filled_lots == 10
                await engine.submit(buy("after"))
                assert await store.load_state() == expected_state(engine.exchange)
            finally:
                await engine.stop()
                await store.close()

    asyncio.run(scenario())
