"""The store's candles, users and ping, on SQLite and PostgreSQL.

Candles are checked exactly, on a few hand-made trades (open and close by
trade id, ranges on open times, the newest `limit` returned oldest first, sums
wider than 64 bits), and against a reference computed from the trades of
seeded random runs: for the widths the rollup keeps, after many commits, in a
reopened store, and in a database whose rollup the migration backfilled.
Users: ids from 1 in creation order, keyset pages, concurrent creation, and
creation while the engine's writer holds SQLite's write lock.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic.command import downgrade
from sql_store_support import BTC_USDT, ETH_BTC, Driver
from sqlalchemy import Engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from crossbook.adapters.sql import (
    MAX_QUERY_LIMIT,
    Candle,
    SqlStore,
    StoredUser,
    StoreError,
    connections,
)
from crossbook.adapters.sql import users as sql_users
from crossbook.adapters.sql.migrate import alembic_config, current_revision
from crossbook.adapters.sql.rows import BatchRows
from crossbook.adapters.sql.sqlite import SqliteWriter
from crossbook.domain import (
    CreateAsset,
    CreateMarket,
    Deposit,
    OrderType,
    PlaceOrder,
    Side,
    Tick,
    TradeExecuted,
)
from crossbook.engine.batch import CommitBatch
from crossbook.engine.ports import StoreUnavailableError
from crossbook.engine.read_model.candles import CANDLE_INTERVALS_MS
from crossbook.sql_support.migrate import run_with_connection

MINUTE_MS = 60_000
SELLER, BUYER = 1, 2
# (executed at ms, price ticks, lots) of the BTC/USDT trades, in trade id order
KNOWN_TRADES = (
    (60_000, 3_000_000, 2),  # minute 1 opens: the first trade by id ...
    (60_000, 3_000_500, 1),  # ... of two at the same ms; the minute's high
    (90_000, 2_999_000, 3),  # the minute's low
    (119_999, 3_000_100, 1),  # the last ms of minute 1: its close
    (120_000, 3_001_000, 5),  # minute 2 opens (and is its high)
    (150_000, 3_000_200, 2),  # two trades at the same ms: the first ...
    (150_000, 3_000_300, 4),  # ... and the last by id, the close
    (250_000, 3_002_000, 1),  # minute 4 (minute 3 has no trade)
)
MINUTE_1 = Candle(60_000, 3_000_000, 3_000_500, 2_999_000, 3_000_100, 7, 20_997_600, 4)
MINUTE_2 = Candle(120_000, 3_001_000, 3_001_000, 3_000_200, 3_000_300, 11, 33_006_600, 3)
MINUTE_4 = Candle(240_000, 3_002_000, 3_002_000, 3_002_000, 3_002_000, 1, 3_002_000, 1)


def trade(driver: Driver, at_ms: int, symbol: str, price_ticks: int, lots: int) -> None:
    """One trade: SELLER rests a limit sell, BUYER takes it with a limit buy."""
    driver.execute(Tick(at_ms))  # no event unless an order expires
    assert driver.exchange.now_ms == at_ms
    before = len(driver.trades)
    for user, side in ((SELLER, Side.SELL), (BUYER, Side.BUY)):
        order = PlaceOrder(user, symbol, side, OrderType.LIMIT, lots, price_ticks)
        assert driver.execute(order), order
    (made,) = driver.trades[before:]
    assert (made.ts_ms, made.price_ticks, made.quantity_lots) == (at_ms, price_ticks, lots)


async def known_trades_store(url: str) -> SqlStore:
    driver = Driver(seed=0)
    driver.setup()
    for at_ms, price_ticks, lots in KNOWN_TRADES:
        trade(driver, at_ms, BTC_USDT, price_ticks, lots)
        if at_ms == 90_000:
            trade(driver, at_ms, ETH_BTC, 5_000, 7)  # another market, in the same minute
    store = await SqlStore.open(url)
    await store.commit(driver.take_batch())
    return store


def test_candles_of_known_trades(database_url: str) -> None:
    async def scenario() -> None:
        store = await known_trades_store(database_url)
        try:
            assert await store.reads.candles(BTC_USDT, MINUTE_MS) == [MINUTE_1, MINUTE_2, MINUTE_4]
            assert await store.reads.candles(ETH_BTC, MINUTE_MS) == [
                Candle(60_000, 5_000, 5_000, 5_000, 5_000, 7, 35_000, 1)
            ]
            assert await store.reads.candles("XRP/USDT", MINUTE_MS) == []
            # an interval longer than 2**31 ms: one candle of every trade
            whole = await store.reads.candles(BTC_USDT, 3_000_000_000)
            assert whole == [
                Candle(0, 3_000_000, 3_002_000, 2_999_000, 3_002_000, 19, 57_006_200, 8)
            ]
        finally:
            await store.close()

    asyncio.run(scenario())


def test_candle_ranges_are_inclusive_on_open_times_and_limit_keeps_the_newest(
    database_url: str,
) -> None:
    async def scenario() -> None:
        store = await known_trades_store(database_url)
        try:

            async def between(start: int | None, end: int | None, limit: int = 100) -> Any:
                return await store.reads.candles(
                    BTC_USDT, MINUTE_MS, start_ms=start, end_ms=end, limit=limit
                )

            assert await between(60_000, 120_000) == [MINUTE_1, MINUTE_2]
            assert await between(60_001, None) == [MINUTE_2, MINUTE_4]
            assert await between(None, 119_999) == [MINUTE_1]
            # a candle is whole: end_ms = its open time still counts all its trades
            assert await between(None, 240_000) == [MINUTE_1, MINUTE_2, MINUTE_4]
            assert await between(120_000, 120_000) == [MINUTE_2]
            assert await between(180_000, 239_999) == []
            # the newest `limit`, oldest first
            assert await between(None, None, limit=2) == [MINUTE_2, MINUTE_4]
            assert await between(None, 200_000, limit=1) == [MINUTE_2]
            assert await between(None, None, limit=1) == [MINUTE_4]
        finally:
            await store.close()

    asyncio.run(scenario())


def test_candle_arguments_are_validated(database_url: str) -> None:
    async def scenario() -> None:
        store = await known_trades_store(database_url)
        try:
            for interval in (0, -MINUTE_MS, 2**63):
                with pytest.raises(ValueError, match="interval_ms"):
                    await store.reads.candles(BTC_USDT, interval)
            for limit in (0, -1, MAX_QUERY_LIMIT + 1):
                with pytest.raises(ValueError, match="limit"):
                    await store.reads.candles(BTC_USDT, MINUTE_MS, limit=limit)
            assert len(await store.reads.candles(BTC_USDT, 1, limit=MAX_QUERY_LIMIT)) == 6
        finally:
            await store.close()

    asyncio.run(scenario())


def wide_market(price: int) -> Driver:
    """A fee-free BIG/WIDE market of unit ticks and lots: SELLER holds one BIG, BUYER
    `price` WIDE (enough to buy it at `price`)."""
    driver = Driver(seed=0)
    for command in (
        CreateAsset("BIG", 0),
        CreateAsset("WIDE", 0),
        CreateMarket("BIG", "WIDE", "1", "1", "1", "1", maker_fee_rate="0", taker_fee_rate="0"),
        Deposit(SELLER, "BIG", 1),
        Deposit(BUYER, "WIDE", price),
    ):
        assert driver.execute(command), command
    return driver


def test_candle_volumes_wider_than_64_bits_are_exact(database_url: str) -> None:
    """The same funds trade twice at a price just above 2**62: the notional sum passes
    2**63 (SQLite's `sum()` would raise on it; PostgreSQL's is NUMERIC)."""
    price = 2**62 + 12_345

    async def scenario() -> None:
        driver = wide_market(price)
        sell_back = PlaceOrder(BUYER, "BIG/WIDE", Side.SELL, OrderType.LIMIT, 1, price)
        trade(driver, 1_000, "BIG/WIDE", price, 1)  # SELLER sells to BUYER ...
        assert driver.execute(sell_back)  # ... who sells it back
        assert driver.execute(PlaceOrder(SELLER, "BIG/WIDE", Side.BUY, OrderType.LIMIT, 1, price))
        assert len(driver.trades) == 2
        store = await SqlStore.open(database_url)
        try:
            await store.commit(driver.take_batch())
            (candle,) = await store.reads.candles("BIG/WIDE", MINUTE_MS)
            assert 2 * price > 2**63 - 1
            assert candle == Candle(0, price, price, price, price, 2, 2 * price, 2)
        finally:
            await store.close()

    asyncio.run(scenario())


def reference_candles(
    trades: list[TradeExecuted], symbol: str, interval_ms: int, start_ms: int, end_ms: int
) -> list[Candle]:
    """Candles of `symbol` with open times in [start_ms, end_ms], oldest first."""
    buckets: dict[int, list[TradeExecuted]] = {}
    for t in sorted(trades, key=lambda t: t.trade_id):
        open_time_ms = t.ts_ms // interval_ms * interval_ms
        if t.symbol == symbol and start_ms <= open_time_ms <= end_ms:
            buckets.setdefault(open_time_ms, []).append(t)
    return [
        Candle(
            open_time_ms,
            ts[0].price_ticks,
            max(t.price_ticks for t in ts),
            min(t.price_ticks for t in ts),
            ts[-1].price_ticks,
            sum(t.quantity_lots for t in ts),
            sum(t.notional_units for t in ts),
            len(ts),
        )
        for open_time_ms, ts in sorted(buckets.items())
    ]


def test_candles_match_a_reference_on_random_trades(database_url: str) -> None:
    async def scenario() -> None:
        driver = Driver(seed=41)
        store = await SqlStore.open(database_url)
        try:
            driver.setup()
            await store.commit(driver.take_batch())
            for _ in range(15):
                driver.run(20)
                await store.commit(driver.take_batch())
            trades = driver.trades
            end = max(t.ts_ms for t in trades)
            for symbol in (BTC_USDT, ETH_BTC):
                for interval in (1, 1_000, 7_000, MINUTE_MS):
                    expected = reference_candles(trades, symbol, interval, 0, end)
                    got = await store.reads.candles(symbol, interval, limit=MAX_QUERY_LIMIT)
                    assert got == expected[-MAX_QUERY_LIMIT:]
                    assert len(expected) > 3 or interval == MINUTE_MS  # not a trivial run
                # from inside the second candle (so it is left out) to the last one's open
                opens = [c.open_time_ms for c in reference_candles(trades, symbol, 1_000, 0, end)]
                start, stop = opens[1] + 1, opens[-1]
                expected = reference_candles(trades, symbol, 1_000, start, stop)
                ranged = await store.reads.candles(
                    symbol, 1_000, start_ms=start, end_ms=stop, limit=3
                )
                assert ranged == expected[-3:] and len(ranged) == 3
                assert [c.open_time_ms for c in expected] == opens[2:]
        finally:
            await store.close()

    asyncio.run(scenario())


# -- the rollup: kept by every commit, backfilled by the migration ----------------------

API_INTERVALS_MS = tuple(CANDLE_INTERVALS_MS.values())
HOUR_MS = 60 * MINUTE_MS


def trading_driver(seed: int) -> Driver:
    """A driver with its markets and funds set up (`Driver.setup`), its clock at a fixed
    start: `run_days` trades on from there."""
    driver = Driver(seed=seed)
    driver.setup()
    driver.execute(Tick(1_700_000_000_000))
    return driver


def run_days(driver: Driver, batches: int) -> list[CommitBatch]:
    """Random batches whose clock jumps by up to hours between them (so every width
    has several candles, and a candle takes trades from several batches)."""
    out: list[CommitBatch] = []
    for _ in range(batches):
        jump = driver.rng.choice((0, 0, 2_000, 40_000, 20 * MINUTE_MS, 3 * HOUR_MS, 9 * HOUR_MS))
        driver.execute(Tick(driver.exchange.now_ms + jump))
        driver.run(driver.rng.randint(5, 40))
        out.append(driver.take_batch())
    return out


async def assert_candles_match_trades(store: SqlStore, trades: list[TradeExecuted]) -> None:
    """Every API width, whole and in random ranges and limits, against the reference."""
    rng = random.Random(len(trades))
    end = max(t.ts_ms for t in trades)
    for symbol in (BTC_USDT, ETH_BTC):
        for interval in API_INTERVALS_MS:
            expected = reference_candles(trades, symbol, interval, 0, end)
            got = await store.reads.candles(symbol, interval, limit=MAX_QUERY_LIMIT)
            assert got == expected, (symbol, interval)
            assert len(expected) > 3, (symbol, interval)  # not a trivial run
            for _ in range(5):
                start, stop = sorted(rng.randint(-interval, end + interval) for _ in range(2))
                limit = rng.randint(1, len(expected))
                ranged = await store.reads.candles(
                    symbol, interval, start_ms=start, end_ms=stop, limit=limit
                )
                want = reference_candles(trades, symbol, interval, start, stop)[-limit:]
                assert ranged == want, (symbol, interval, start, stop, limit)


def test_the_rollup_of_many_commits_gives_the_candles_of_the_trades(database_url: str) -> None:
    """Commits merge into the rows earlier ones wrote; a reopened store reads the same."""

    async def scenario() -> None:
        driver = trading_driver(seed=7)
        async with await SqlStore.open(database_url) as store:
            for batch in [driver.take_batch(), *run_days(driver, 60)]:
                await store.commit(batch)
            await assert_candles_match_trades(store, driver.trades)
        async with await SqlStore.open(database_url) as reopened:
            await assert_candles_match_trades(reopened, driver.trades)
            for batch in run_days(driver, 10):  # and it goes on from there
                await reopened.commit(batch)
            await assert_candles_match_trades(reopened, driver.trades)
        assert len(driver.trades) > 200

    asyncio.run(scenario())


def test_the_migration_backfills_the_rollup_from_the_trades(fresh_database_url: str) -> None:
    """A database at 0002 with trades (written, then the rollup dropped by the
    downgrade) is migrated to 0003: its candles are those of the trades, and later
    commits merge into the backfilled rows."""
    url = fresh_database_url

    async def scenario() -> None:
        driver = trading_driver(seed=8)
        async with await SqlStore.open(url) as store:
            for batch in [driver.take_batch(), *run_days(driver, 50)]:
                await store.commit(batch)
        await asyncio.to_thread(downgrade_to_0002, url)
        async with await SqlStore.open(url) as migrated:
            assert await asyncio.to_thread(current_revision, url) == "0005"
            await assert_candles_match_trades(migrated, driver.trades)
            for batch in run_days(driver, 10):
                await migrated.commit(batch)
            await assert_candles_match_trades(migrated, driver.trades)

    asyncio.run(scenario())


def downgrade_to_0002(url: str) -> None:
    run_with_connection(url, lambda c: downgrade(alembic_config(c), "0002"))
    assert current_revision(url) == "0002"
    assert "candles" not in run_with_connection(url, lambda c: inspect(c).get_table_names())
    ((trades,),) = run_with_connection(
        url, lambda c: list(c.execute(text("SELECT count(*) FROM trades")))
    )
    assert trades > 0


def test_rolled_up_volumes_wider_than_64_bits_add_exactly(fresh_database_url: str) -> None:
    """Two trades at a price just above 2**62 in two commits: the stored volume passes
    2**63 when the second merges into the first (SQLite's `+` would make it a float),
    and again when the migration backfills the same candle in one sum."""
    url = fresh_database_url
    price = 2**62 + 12_345

    async def scenario() -> None:
        driver = wide_market(price)
        trade(driver, 1_000, "BIG/WIDE", price, 1)  # SELLER sells to BUYER ...
        expected = Candle(0, price, price, price, price, 2, 2 * price, 2)
        async with await SqlStore.open(url) as store:
            await store.commit(driver.take_batch())
            assert driver.execute(
                PlaceOrder(BUYER, "BIG/WIDE", Side.SELL, OrderType.LIMIT, 1, price)
            )
            assert driver.execute(
                PlaceOrder(SELLER, "BIG/WIDE", Side.BUY, OrderType.LIMIT, 1, price)
            )
            await store.commit(driver.take_batch())  # ... who sells it back
            for interval in API_INTERVALS_MS:
                assert await store.reads.candles("BIG/WIDE", interval) == [expected]
        await asyncio.to_thread(downgrade_to_0002, url)
        async with await SqlStore.open(url) as migrated:
            for interval in API_INTERVALS_MS:
                assert await migrated.reads.candles("BIG/WIDE", interval) == [expected]

    asyncio.run(scenario())


# -- users -----------------------------------------------------------------------------


def test_users_get_ids_from_1_in_order_and_page_by_id(database_url: str) -> None:
    async def scenario() -> None:
        store = await SqlStore.open(database_url)
        try:
            assert await store.users.list_users() == []
            created = [
                await store.users.create_user("alice", 1_000),
                await store.users.create_user(None, 2_000),
                await store.users.create_user("carol", 3_000),
            ]
            assert created == [
                StoredUser(1, "alice", 1_000),
                StoredUser(2, None, 2_000),
                StoredUser(3, "carol", 3_000),
            ]
            assert await store.users.get_user(2) == StoredUser(2, None, 2_000)
            for unknown in (0, 4, 10**9):
                assert await store.users.get_user(unknown) is None
            assert await store.users.list_users() == created
            assert await store.users.list_users(after_user_id=1, limit=1) == created[1:2]
            assert await store.users.list_users(after_user_id=3) == []
            pages: list[list[StoredUser]] = []
            after = 0
            while page := await store.users.list_users(after_user_id=after, limit=2):
                pages.append(page)
                after = page[-1].user_id
            assert pages == [created[:2], created[2:]]
            for limit in (0, -1, MAX_QUERY_LIMIT + 1):
                with pytest.raises(ValueError, match="limit"):
                    await store.users.list_users(limit=limit)
        finally:
            await store.close()
        async with await SqlStore.open(database_url) as reopened:  # users are durable
            assert await reopened.users.list_users() == created
            assert await reopened.users.create_user("dave", 4_000) == StoredUser(4, "dave", 4_000)

    asyncio.run(scenario())


def test_concurrent_create_user_calls_get_distinct_consecutive_ids(database_url: str) -> None:
    async def scenario() -> None:
        async with await SqlStore.open(database_url) as store:
            users = await asyncio.gather(*(store.users.create_user(f"u{i}", i) for i in range(8)))
            assert sorted(u.user_id for u in users) == list(range(1, 9))
            assert {u.name: u.created_at_ms for u in users} == {f"u{i}": i for i in range(8)}
            assert await store.users.list_users() == sorted(users, key=lambda u: u.user_id)

    asyncio.run(scenario())


def test_create_user_gives_up_after_its_attempts(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every attempt loses the race for the id (as against a concurrent insert)."""
    attempts: list[object] = []

    async def always_taken(reader: object, statement: object) -> Any:
        attempts.append(statement)
        raise IntegrityError("INSERT INTO users …", None, Exception("duplicate key"))

    monkeypatch.setattr(connections.SqliteReader, "write", always_taken)
    monkeypatch.setattr(connections.PostgresReader, "write", always_taken)

    async def scenario() -> None:
        async with await SqlStore.open(database_url) as store:
            with pytest.raises(StoreError, match="user id") as raised:
                await store.users.create_user("alice", 1_000)
            assert isinstance(raised.value.__cause__, IntegrityError)
            assert len(attempts) == sql_users.CREATE_USER_ATTEMPTS

    asyncio.run(scenario())


def test_create_user_waits_while_the_engine_writer_commits_on_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's commit is held open (after its writes, before COMMIT) until
    create_user's `BEGIN IMMEDIATE` is already executing inside SQLite (a trace
    callback releases it): the writer has to wake up before it can COMMIT, so the
    BEGIN reaches the lock while the writer still holds it and must wait for it
    (busy timeout) rather than fail. With the busy timeout set to 0 this test fails
    with "database is locked"."""
    holding, release = threading.Event(), threading.Event()
    begins: list[bool] = []  # per BEGIN IMMEDIATE of create_user: was the lock still held?
    original = SqliteWriter.write_counters

    def held_write_counters(
        writer: SqliteWriter, rows: BatchRows, prev_seq: int, *, first: bool
    ) -> None:
        original(writer, rows, prev_seq, first=first)
        holding.set()
        assert release.wait(timeout=60)

    def trace(sql: str) -> None:  # runs inside sqlite3_step, before the lock is taken
        if sql == "BEGIN IMMEDIATE":
            begins.append(not release.is_set())
            release.set()

    def on_connect(connection: sqlite3.Connection, _record: Any) -> None:
        connection.set_trace_callback(trace)

    async def scenario() -> None:
        async with await SqlStore.open(f"sqlite:///{tmp_path / 'store.db'}") as store:
            driver = Driver(seed=0)
            driver.setup()
            monkeypatch.setattr(SqliteWriter, "write_counters", held_write_counters)
            event.listen(Engine, "connect", on_connect)
            try:
                committing = asyncio.create_task(store.commit(driver.take_batch()))
                assert await asyncio.to_thread(holding.wait, 60)
                user = await store.users.create_user("alice", 1_000)
                await committing
            finally:
                event.remove(Engine, "connect", on_connect)
            assert begins == [True]
            assert user == StoredUser(1, "alice", 1_000)
            assert store.last_seq == driver.exchange.counters()["seq"]
            assert await store.load_state() is not None

    asyncio.run(scenario())


# -- ping ------------------------------------------------------------------------------


def test_ping_answers(database_url: str) -> None:
    async def scenario() -> None:
        async with await SqlStore.open(database_url) as store:
            assert await store.reads.ping() is None

    asyncio.run(scenario())


@pytest.mark.postgres
def test_ping_raises_once_the_database_is_gone(postgres_databases: Any) -> None:
    url: str = postgres_databases.create()
    name = make_url(url).database
    admin_url = make_url(url).set(database="postgres").render_as_string(hide_password=False)

    async def scenario() -> None:
        async with await SqlStore.open(url) as store:
            await store.reads.ping()
            admin = await asyncpg.connect(admin_url)
            try:
                await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            finally:
                await admin.close()
            with pytest.raises(StoreUnavailableError):
                await store.reads.ping()

    asyncio.run(scenario())
