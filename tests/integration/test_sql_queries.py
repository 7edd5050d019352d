"""The store's read queries: ownership, filters, newest-first keyset pages, bounds."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sql_store_support import BTC_USDT, USERS, Driver

from crossbook.adapters.sql import MAX_QUERY_LIMIT, SqlStore, StoredOrder, StoredTrade
from crossbook.domain import OrderStatus

OPEN = (OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED)


async def loaded_store(url: str) -> tuple[SqlStore, Driver]:
    driver = Driver(seed=41)
    store = await SqlStore.open(url)
    driver.setup()
    await store.commit(driver.take_batch())
    for _ in range(15):
        driver.run(20)
        await store.commit(driver.take_batch())
    return store, driver


def newest_first(records: list[dict[str, Any]]) -> list[int]:
    return sorted((r["order_id"] for r in records), reverse=True)


def ids(orders: list[StoredOrder]) -> list[int]:
    return [o.order_id for o in orders]


def trade_ids(trades: list[StoredTrade]) -> list[int]:
    return [t.trade_id for t in trades]


def test_orders_by_owner_filters_and_pages(database_url: str) -> None:
    async def scenario() -> None:
        store, driver = await loaded_store(database_url)
        try:
            user = 2
            mine = [r for r in driver.records.values() if r["user_id"] == user]
            assert len(mine) > 20
            # by id, for its owner only
            some = mine[len(mine) // 2]
            found = await store.reads.get_order(user, some["order_id"])
            assert found is not None and found.record() == some
            assert await store.reads.get_order(user + 1, some["order_id"]) is None
            assert await store.reads.get_order(user, 10**9) is None
            with_client_id = [r for r in mine if r["client_order_id"] is not None]
            newest = max(with_client_id, key=lambda r: r["order_id"])
            by_client = await store.reads.get_order_by_client_id(user, newest["client_order_id"])
            assert by_client is not None and by_client.order_id == newest["order_id"]

            # everything, newest first, exactly the records the exchange produced
            everything = await store.reads.list_orders(user, limit=MAX_QUERY_LIMIT)
            assert ids(everything) == newest_first(mine)
            assert [o.record() for o in everything] == sorted(
                mine, key=lambda r: r["order_id"], reverse=True
            )
            # filters
            open_orders = await store.reads.list_orders(user, statuses=OPEN)
            assert ids(open_orders) == newest_first([r for r in mine if r["status"] in OPEN])
            filled = await store.reads.list_orders(
                user, statuses=[OrderStatus.FILLED], symbol=BTC_USDT
            )
            assert ids(filled) == newest_first(
                [r for r in mine if r["status"] == "filled" and r["symbol"] == BTC_USDT]
            )
            times = sorted({r["created_at_ms"] for r in mine})
            start, end = times[len(times) // 4], times[3 * len(times) // 4]
            ranged = await store.reads.list_orders(user, start_ms=start, end_ms=end)
            assert ids(ranged) == newest_first(
                [r for r in mine if start <= r["created_at_ms"] <= end]
            )
            assert ranged and start < end

            # keyset pages backwards (before) then forwards (after)
            pages: list[list[int]] = []
            before = None
            while page := ids(await store.reads.list_orders(user, before_order_id=before, limit=7)):
                assert len(page) <= 7
                pages.append(page)
                before = page[-1]
            assert [i for page in pages for i in page] == newest_first(mine)
            after = pages[-1][0]
            newer = ids(await store.reads.list_orders(user, after_order_id=after, limit=7))
            assert newer == pages[-2]
            between = ids(
                await store.reads.list_orders(
                    user, after_order_id=pages[-1][0], before_order_id=pages[0][-1], limit=1000
                )
            )
            assert between == [i for page in pages[1:-1] for i in page]
        finally:
            await store.close()

    asyncio.run(scenario())


def test_trades_by_market_and_by_user(database_url: str) -> None:
    async def scenario() -> None:
        store, driver = await loaded_store(database_url)
        try:
            trades = driver.trades
            market = [t for t in trades if t.symbol == BTC_USDT]
            assert len(market) > 10
            listed = await store.reads.list_market_trades(BTC_USDT, limit=MAX_QUERY_LIMIT)
            assert trade_ids(listed) == sorted((t.trade_id for t in market), reverse=True)
            first = listed[-1]
            event = market[0]
            assert (first.price_ticks, first.quantity_lots, first.buyer_user_id) == (
                event.price_ticks,
                event.quantity_lots,
                event.buyer_user_id,
            )
            assert first.executed_at_ms == first.settled_at_ms == event.ts_ms
            assert first.settlement_status == "SETTLED"

            for user in USERS:
                expected = sorted(
                    (t.trade_id for t in trades if user in (t.buyer_user_id, t.seller_user_id)),
                    reverse=True,
                )
                got = trade_ids(await store.reads.list_user_trades(user, limit=MAX_QUERY_LIMIT))
                assert got == expected
                paged: list[int] = []
                before = None
                while page := trade_ids(
                    await store.reads.list_user_trades(user, before_trade_id=before, limit=4)
                ):
                    paged += page
                    before = page[-1]
                assert paged == expected
                if len(expected) > 4:
                    newer = await store.reads.list_user_trades(
                        user, after_trade_id=expected[-1], limit=3
                    )
                    assert trade_ids(newer) == expected[-4:-1]
            times = sorted({t.ts_ms for t in market})
            start, end = times[1], times[-2]
            ranged = await store.reads.list_market_trades(BTC_USDT, start_ms=start, end_ms=end)
            assert trade_ids(ranged) == sorted(
                (t.trade_id for t in market if start <= t.ts_ms <= end), reverse=True
            )
            user_symbol = await store.reads.list_user_trades(
                1, symbol=BTC_USDT, limit=MAX_QUERY_LIMIT
            )
            assert {t.symbol for t in user_symbol} <= {BTC_USDT}
        finally:
            await store.close()

    asyncio.run(scenario())


def test_balances_and_limits(database_url: str) -> None:
    async def scenario() -> None:
        store, driver = await loaded_store(database_url)
        try:
            balances = driver.exchange.ledger.balances
            for user in (0, *USERS):
                listed = await store.reads.list_balances(user)
                assert [(b.asset, b.available, b.locked) for b in listed] == sorted(
                    (asset, b.available, b.locked)
                    for (owner, asset), b in balances.items()
                    if owner == user
                )
            assert len(await store.reads.list_balances(1, limit=1)) == 1
            assert await store.reads.list_balances(10**6) == []
            for bad in (0, -1, MAX_QUERY_LIMIT + 1):
                with pytest.raises(ValueError, match="limit"):
                    await store.reads.list_orders(1, limit=bad)
                with pytest.raises(ValueError, match="limit"):
                    await store.reads.list_market_trades(BTC_USDT, limit=bad)
                with pytest.raises(ValueError, match="limit"):
                    await store.reads.list_user_trades(1, limit=bad)
                with pytest.raises(ValueError, match="limit"):
                    await store.reads.list_balances(1, limit=bad)
            assert len(await store.reads.list_orders(1, limit=MAX_QUERY_LIMIT)) <= MAX_QUERY_LIMIT
            assert len(await store.reads.list_orders(1, limit=3)) == 3
        finally:
            await store.close()

    asyncio.run(scenario())
