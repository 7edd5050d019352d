"""The hold fates of remote-wallet mode in the SQL store, on SQLite and PostgreSQL.

A wallet-funded exchange's batches, committed by the real store: each hold a
placement or an amend took is recorded consumed (with its order), each voided
hold voided, in the batch's own transaction; `store.holds.decided` answers
exactly those keys; a key voided twice keeps its first fate and does not fail
the commit; the reconciler's watermark survives a reopen; the upgrade to 0004
of a store with history sets the floor at the upgrade, a new store's is 0.
"""

from __future__ import annotations

import asyncio
import time

from alembic.command import downgrade
from sql_store_support import query

from crossbook.adapters.sql import SqlStore
from crossbook.adapters.sql.migrate import alembic_config, current_revision, upgrade
from crossbook.domain import (
    AmendOrder,
    CreateAsset,
    CreateMarket,
    Exchange,
    Funding,
    Hold,
    OrderAccepted,
    OrderType,
    PlaceOrder,
    Side,
    VoidHold,
)
from crossbook.engine.batch import BatchBuilder, CommitBatch
from crossbook.sql_support.migrate import run_with_connection

SETUP = [
    CreateAsset("BTC", 8),
    CreateAsset("USDT", 8),
    CreateMarket("BTC", "USDT", "0.01", "0.00001", "0.00001", "1000"),
]
BUYER = 2


class WalletDriver:
    """A wallet-funded exchange whose commands are batched as the engine batches them."""

    def __init__(self) -> None:
        self.exchange = Exchange(None, Funding.WALLET)
        self.builder = BatchBuilder()
        for command in SETUP:
            self.builder.add(self.exchange, self.exchange.execute(command))

    def buy(self, key: str, price_ticks: int, units: int) -> int:
        command = PlaceOrder(
            BUYER,
            "BTC/USDT",
            Side.BUY,
            OrderType.LIMIT,
            quantity_lots=10,
            price_ticks=price_ticks,
            hold=Hold(key, "USDT", units),
        )
        events = self.exchange.execute(command)
        self.builder.add(self.exchange, events)
        (accepted,) = [e for e in events if isinstance(e, OrderAccepted)]
        return accepted.order_id

    def amend(self, order_id: int, key: str, price_ticks: int, units: int) -> None:
        command = AmendOrder(
            BUYER, order_id, price_ticks=price_ticks, hold=Hold(key, "USDT", units)
        )
        self.builder.add(self.exchange, self.exchange.execute(command))

    def void(self, key: str, units: int) -> None:
        command = VoidHold(BUYER, Hold(key, "USDT", units))
        self.builder.add(self.exchange, self.exchange.execute(command))

    def take_batch(self) -> CommitBatch:
        batch = self.builder.build(self.exchange)
        self.builder = BatchBuilder()
        return batch


def test_fates_are_committed_with_their_batch_and_looked_up_by_key(database_url: str) -> None:
    async def scenario() -> None:
        driver = WalletDriver()
        order_id = driver.buy("hold:placed", 10_000, 2_000_000)
        driver.amend(order_id, "hold:amended", 12_000, 300_000)
        driver.void("hold:refused", 5_000)
        first = driver.take_batch()
        assert [(f.hold_key, f.order_id) for f in first.holds] == [
            ("hold:placed", order_id),
            ("hold:amended", order_id),
            ("hold:refused", None),
        ]
        async with await SqlStore.open(database_url) as store:
            assert await store.holds.decided(["hold:placed"]) == set()
            await store.commit(first)
            asked = ["hold:placed", "hold:amended", "hold:refused", "hold:never-seen"]
            assert await store.holds.decided(asked) == {
                "hold:placed",
                "hold:amended",
                "hold:refused",
            }
            driver.void("hold:refused", 5_000)  # voided again: recorded once, no failure
            driver.void("hold:late", 7_000)
            await store.commit(driver.take_batch())
            assert await store.holds.decided(["hold:late", "hold:refused"]) == {
                "hold:late",
                "hold:refused",
            }
            assert await store.holds.decided([]) == set()
        rows = await query(
            database_url,
            "SELECT hold_key, fate, user_id, asset, amount_units, order_id FROM holds ORDER BY seq",
        )
        assert rows == [
            ("hold:placed", "consumed", BUYER, "USDT", 2_000_000, order_id),
            ("hold:amended", "consumed", BUYER, "USDT", 300_000, order_id),
            ("hold:refused", "voided", BUYER, "USDT", 5_000, None),
            ("hold:late", "voided", BUYER, "USDT", 7_000, None),
        ]

    asyncio.run(scenario())


def test_the_watermark_survives_a_reopen_and_a_new_store_has_floor_zero(
    fresh_database_url: str,
) -> None:
    url = fresh_database_url

    async def scenario() -> None:
        async with await SqlStore.open(url) as store:
            progress = await store.holds.progress()
            assert (progress.floor_ms, progress.watermark_ms) == (0, 0)
            await store.holds.save_watermark(1_234_567)
        async with await SqlStore.open(url) as reopened:
            progress = await reopened.holds.progress()
            assert (progress.floor_ms, progress.watermark_ms) == (0, 1_234_567)

    asyncio.run(scenario())


def test_upgrading_a_store_with_history_sets_the_floor_at_the_upgrade(
    fresh_database_url: str,
) -> None:
    """Its consumed holds were never recorded: none before the upgrade may be voided."""
    url = fresh_database_url

    async def scenario() -> None:
        driver = WalletDriver()
        async with await SqlStore.open(url) as store:
            await store.commit(driver.take_batch())
        await asyncio.to_thread(
            run_with_connection, url, lambda c: downgrade(alembic_config(c), "0003")
        )
        before_ms = int(time.time() * 1000)
        await asyncio.to_thread(upgrade, url)
        after_ms = int(time.time() * 1000)
        assert await asyncio.to_thread(current_revision, url) == "0005"
        async with await SqlStore.open(url) as upgraded:
            progress = await upgraded.holds.progress()
        assert before_ms <= progress.floor_ms <= after_ms
        assert progress.watermark_ms == progress.floor_ms

    asyncio.run(scenario())
