"""The store keeps exactly what `Exchange.state()` describes, all of a batch or none of it.

A real exchange is driven through random commands of every kind and batched as
the engine does; after commits, `load_state()` must equal the live exchange's
state (books aside) and `restore(load_state())` must have the same digest, also
after reopening the store, and a recovered exchange must then behave exactly as
the live one. A commit that fails, by a constraint violation or by losing its
connection mid-way, must leave the database as it was before that batch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from typing import Any

import asyncpg
import pytest
from sql_store_support import Driver, expected_state, query, row_counts

from crossbook.adapters.sql import SqlStore, StoreConflictError, StoreError
from crossbook.adapters.sql.postgres import PostgresWriter
from crossbook.adapters.sql.rows import BatchRows
from crossbook.adapters.sql.sqlite import SqliteWriter
from crossbook.domain import (
    CreateAsset,
    CreateMarket,
    Deposit,
    OrderStatus,
    OrderType,
    PlaceOrder,
    Side,
)
from crossbook.domain.snapshot import restore
from crossbook.engine.ports import StoreUnavailableError

BATCH_COMMANDS = 20


async def assert_store_matches(store: SqlStore, driver: Driver) -> dict[str, Any]:
    state = await store.load_state()
    assert state is not None
    assert state == expected_state(driver.exchange)
    assert restore(state).state_digest() == driver.exchange.state_digest()
    return state


async def commit_batches(store: SqlStore, driver: Driver, batches: int) -> None:
    for _ in range(batches):
        driver.run(BATCH_COMMANDS)
        await store.commit(driver.take_batch())


def test_round_trip_at_several_points_and_after_reopening(database_url: str) -> None:
    async def scenario() -> None:
        driver = Driver(seed=7)
        async with await SqlStore.open(database_url) as store:
            assert await store.load_state() is None
            driver.setup()
            await store.commit(driver.take_batch())
            await assert_store_matches(store, driver)
            for _ in range(3):
                await commit_batches(store, driver, 8)
                await assert_store_matches(store, driver)
            await store.commit(driver.take_batch())  # an empty batch is a no-op
        assert len(driver.trades) > 20
        kinds = {(r["order_type"], r["status"]) for r in driver.records.values()}
        assert len(kinds) >= 12, kinds  # many kinds of orders, in many end states

        async with await SqlStore.open(database_url) as store:  # reopened
            await assert_store_matches(store, driver)
            assert store.last_seq == driver.exchange.seq
            await commit_batches(store, driver, 4)  # and it goes on from there
            await assert_store_matches(store, driver)
        async with await SqlStore.open(database_url) as store:
            await assert_store_matches(store, driver)

    asyncio.run(scenario())


def test_recovered_exchange_continues_identically(database_url: str) -> None:
    async def scenario() -> None:
        live = Driver(seed=3)
        async with await SqlStore.open(database_url) as store:
            live.setup()
            await store.commit(live.take_batch())
            await commit_batches(store, live, 10)
        async with await SqlStore.open(database_url) as store:
            state = await store.load_state()
            assert state is not None
            recovered = Driver(seed=11, exchange=restore(state))
            recovered.client_ids = live.client_ids
            live.rng.seed(11)
            for _ in range(5):
                recovered.run(BATCH_COMMANDS)
                live.run(BATCH_COMMANDS)
                batch = recovered.take_batch()
                assert [e.to_dict() for e in batch.events] == [
                    e.to_dict() for e in live.take_batch().events
                ]
                await store.commit(batch)
            await assert_store_matches(store, live)

    asyncio.run(scenario())


def test_batches_must_follow_the_committed_state(database_url: str) -> None:
    async def scenario() -> None:
        driver = Driver(seed=5)
        async with await SqlStore.open(database_url) as store:
            driver.setup()
            await store.commit(driver.take_batch())
            driver.run(BATCH_COMMANDS)
            skipped = driver.take_batch()
            driver.run(BATCH_COMMANDS)
            later = driver.take_batch()
            with pytest.raises(StoreConflictError):
                await store.commit(later)  # a gap: `skipped` is missing
            with pytest.raises(StoreError):
                await store.commit(skipped)  # refused until the engine has recovered
            await store.load_state()  # recovery
            await store.commit(skipped)
            await store.commit(later)
            await assert_store_matches(store, driver)

    asyncio.run(scenario())


def test_a_second_writer_cannot_fork_the_log(database_url: str) -> None:
    async def scenario() -> None:
        driver = Driver(seed=8)
        first = await SqlStore.open(database_url)
        second = await SqlStore.open(database_url)
        try:
            driver.setup()
            batch = driver.take_batch()
            await first.commit(batch)
            other = Driver(seed=8)
            other.setup()
            other.run(BATCH_COMMANDS)
            driver.run(BATCH_COMMANDS)
            await first.commit(driver.take_batch())
            # `second` still believes the database is empty: its batch must not land
            with pytest.raises(
                (StoreConflictError, asyncpg.UniqueViolationError, sqlite3.IntegrityError)
            ):
                await second.commit(other.take_batch())
            await assert_store_matches(first, driver)
        finally:
            await first.close()
            await second.close()

    asyncio.run(scenario())


def test_constraint_violation_rolls_back_the_whole_batch(database_url: str) -> None:
    async def scenario() -> None:
        driver = Driver(seed=21)
        async with await SqlStore.open(database_url) as store:
            driver.setup()
            await store.commit(driver.take_batch())
            await commit_batches(store, driver, 5)
            before = await store.load_state()
            counts = await row_counts(database_url)
            driver.run(BATCH_COMMANDS * 2)
            batch = driver.take_batch()
            assert batch.trades and batch.orders and batch.events
            # the balances are written after the log rows: a negative one violates a CHECK
            bad = dataclasses.replace(batch, balances=[*batch.balances, (999, "BTC", -1, 0)])
            with pytest.raises((sqlite3.IntegrityError, asyncpg.CheckViolationError)):
                await store.commit(bad)
            assert await row_counts(database_url) == counts
            with pytest.raises(StoreError):
                await store.commit(batch)
            assert await store.load_state() == before  # the engine recovers from this
            await store.commit(batch)  # and the same store goes on
            await assert_store_matches(store, driver)
        async with await SqlStore.open(database_url) as store:
            await assert_store_matches(store, driver)

    asyncio.run(scenario())


def test_losing_the_connection_mid_commit_leaves_nothing(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: the writer's backend is terminated between the log rows and the
    projections. SQLite: the write fails at that point (as an I/O error would)."""

    async def kill_postgres_writer(writer: PostgresWriter, rows: BatchRows) -> None:
        admin = await asyncpg.connect(database_url)
        try:
            await admin.execute(
                "SELECT pg_terminate_backend($1)", writer.connection.get_server_pid()
            )
        finally:
            await admin.close()
        await original_postgres(writer, rows)

    def fail_sqlite_writer(writer: SqliteWriter, rows: BatchRows) -> None:
        raise OSError("disk I/O error")

    original_postgres = PostgresWriter.write_projections

    async def scenario() -> None:
        driver = Driver(seed=22)
        async with await SqlStore.open(database_url) as store:
            driver.setup()
            await store.commit(driver.take_batch())
            await commit_batches(store, driver, 2)
            before = await store.load_state()
            counts = await row_counts(database_url)
            driver.run(BATCH_COMMANDS * 2)
            batch = driver.take_batch()
            monkeypatch.setattr(PostgresWriter, "write_projections", kill_postgres_writer)
            monkeypatch.setattr(SqliteWriter, "write_projections", fail_sqlite_writer)
            with pytest.raises(StoreUnavailableError) as raised:
                await store.commit(batch)
            assert raised.value.committed is False  # it failed before COMMIT: nothing written
            monkeypatch.undo()
            assert await row_counts(database_url) == counts
            with pytest.raises(StoreError):
                await store.commit(batch)
            assert await store.load_state() == before  # reconnects the writer
            await store.commit(batch)
            await commit_batches(store, driver, 2)
            await assert_store_matches(store, driver)

    asyncio.run(scenario())


def test_fee_accrued_beyond_64_bits_round_trips_exactly(database_url: str) -> None:
    """A taker buying 350,000 BTC at 30,000 USDT accrues 1.05e19 > 2**63 fee units
    (notional × ppm) and rests partially filled, so recovery must read it back."""

    async def scenario() -> None:
        driver = Driver(seed=1)
        for command in (
            CreateAsset("BTC", 8),
            CreateAsset("USDT", 6),
            CreateMarket("BTC", "USDT", "0.01", "0.0001", "0.0001", "1000000"),
            Deposit(1, "BTC", 35 * 10**12),  # 350,000 BTC
            Deposit(2, "USDT", 2 * 10**16),  # 20,000,000,000 USDT
            PlaceOrder(1, "BTC/USDT", Side.SELL, OrderType.LIMIT, 3_500_000_000, 3_000_000),
            PlaceOrder(2, "BTC/USDT", Side.BUY, OrderType.LIMIT, 4_000_000_000, 3_000_000),
        ):
            assert driver.execute(command), command
        (taker,) = driver.exchange.orders.values()
        assert taker.status is OrderStatus.PARTIALLY_FILLED
        assert taker.fee_accrued == 350_000 * 30_000 * 10**6 * 1_000 > 2**63
        async with await SqlStore.open(database_url) as store:
            await store.commit(driver.take_batch())
        async with await SqlStore.open(database_url) as store:
            state = await assert_store_matches(store, driver)
            assert state["orders"][0]["fee_accrued"] == taker.fee_accrued
            stored = await store.reads.get_order(2, taker.order_id)
            assert stored is not None
            assert stored.fee_accrued == taker.fee_accrued
            assert type(stored.fee_accrued) is int
        ((raw,),) = await query(database_url, "SELECT fee_accrued FROM orders WHERE user_id = 2")
        assert int(raw) == taker.fee_accrued
        if database_url.startswith("sqlite"):  # decimal text, small values too (affinity)
            assert await query(database_url, "SELECT DISTINCT typeof(fee_accrued) FROM orders") == [
                ("text",)
            ]

    asyncio.run(scenario())
