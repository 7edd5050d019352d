"""`SqlReads`: the API's `ReadStore` port on the SQL store (committed reads only).

Orders, trades, balances, candles and `ping`; each read is one read-only
snapshot, bounded by the read timeout (`connections`). Every list is bounded by
its `limit` (see `queries.Window`).

Candles of the widths the API serves are read from the `candles` rollup, in
O(candles returned); any other width is aggregated from the trades of its range
(see `queries`): both give the same candles.

Known limits: a candle width outside the rollup reads every trade of the market
in its range on each call; on SQLite `ping` only shows that the file opens
(`SELECT 1` reads no page); a read abandoned at its timeout on SQLite finishes
on its thread (bounded by the busy timeout) after its caller was answered.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TypeVar

from sqlalchemy import RowMapping

from crossbook.adapters.sql import queries
from crossbook.adapters.sql.connections import Rows, SqlConnections
from crossbook.adapters.sql.queries import DEFAULT_QUERY_LIMIT, MAX_QUERY_LIMIT, Window
from crossbook.domain import OrderStatus
from crossbook.engine.read_model.records import Candle, StoredBalance, StoredOrder, StoredTrade

T = TypeVar("T")


class SqlReads:
    """Committed reads; another user's order is None, exactly as an unknown one."""

    __slots__ = ("_db",)

    def __init__(self, db: SqlConnections) -> None:
        self._db = db

    async def get_order(self, user_id: int, order_id: int) -> StoredOrder | None:
        """The order if it belongs to `user_id` (another user's order is None, as unknown)."""
        return _one_order(await self._db.fetch(queries.order_of_user(user_id, order_id)))

    async def get_order_by_client_id(
        self, user_id: int, client_order_id: str
    ) -> StoredOrder | None:
        """The user's newest order with that client order id."""
        statement = queries.order_by_client_id(user_id, client_order_id)
        return _one_order(await self._db.fetch(statement))

    async def list_orders(
        self,
        user_id: int,
        *,
        statuses: Collection[OrderStatus] | None = None,
        symbol: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        before_order_id: int | None = None,
        after_order_id: int | None = None,
        limit: int = DEFAULT_QUERY_LIMIT,
    ) -> list[StoredOrder]:
        """The user's orders, newest first (time range on `created_at_ms`; see `queries`)."""
        window = Window(limit, before_order_id, after_order_id, start_ms, end_ms)
        rows = await self._db.fetch(queries.orders_of_user(user_id, window, statuses, symbol))
        return _ordered([StoredOrder.from_row(row) for row in rows], window)

    async def list_market_trades(
        self,
        symbol: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        before_trade_id: int | None = None,
        after_trade_id: int | None = None,
        limit: int = DEFAULT_QUERY_LIMIT,
    ) -> list[StoredTrade]:
        """A market's trades, newest first (time range on `executed_at_ms`)."""
        window = Window(limit, before_trade_id, after_trade_id, start_ms, end_ms)
        rows = await self._db.fetch(queries.trades_of_market(symbol, window))
        return _ordered([StoredTrade.from_row(row) for row in rows], window)

    async def list_user_trades(
        self,
        user_id: int,
        *,
        symbol: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        before_trade_id: int | None = None,
        after_trade_id: int | None = None,
        limit: int = DEFAULT_QUERY_LIMIT,
    ) -> list[StoredTrade]:
        """The trades the user bought or sold in, newest first."""
        window = Window(limit, before_trade_id, after_trade_id, start_ms, end_ms)
        rows = await self._db.fetch(queries.trades_of_user(user_id, window, symbol))
        return _ordered([StoredTrade.from_row(row) for row in rows], window)

    async def list_balances(
        self, user_id: int, *, limit: int = MAX_QUERY_LIMIT
    ) -> list[StoredBalance]:
        """The user's balances by asset code (at most `limit`)."""
        rows = await self._db.fetch(queries.balances_of_user(user_id, limit))
        return [
            StoredBalance(row["user_id"], row["asset"], row["available"], row["locked"])
            for row in rows
        ]

    async def candles(
        self,
        symbol: str,
        interval_ms: int,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = DEFAULT_QUERY_LIMIT,
    ) -> list[Candle]:
        """The newest `limit` candles with trades whose open time is in the range,
        oldest first (whole intervals; see `queries`)."""
        wanted = queries.CandleRange(symbol, interval_ms, start_ms, end_ms, limit)
        if queries.is_rolled_up(interval_ms):
            statement = queries.rolled_up_candles(wanted)
            return [_rolled_up_candle(row) for row in await self._db.fetch(statement)]
        statement = queries.candles_from_trades(wanted)
        return [_candle_from_trades(row) for row in await self._db.fetch(statement)]

    async def ping(self) -> None:
        """Raise if the database does not answer `SELECT 1`."""
        await self._db.fetch(queries.ping())


def _one_order(rows: Rows) -> StoredOrder | None:
    return StoredOrder.from_row(rows[0]) if rows else None


def _rolled_up_candle(row: RowMapping) -> Candle:
    """From a row of `candles` (volumes: NUMERIC on PostgreSQL, decimal text on SQLite)."""
    return Candle(
        open_time_ms=row["open_time_ms"],
        open_ticks=row["open_ticks"],
        high_ticks=row["high_ticks"],
        low_ticks=row["low_ticks"],
        close_ticks=row["close_ticks"],
        volume_lots=int(row["volume_lots"]),
        quote_volume_units=int(row["quote_volume_units"]),
        trade_count=row["trade_count"],
    )


def _candle_from_trades(row: RowMapping) -> Candle:
    """From a row of `queries.candles_from_trades` (PostgreSQL's sums are NUMERIC)."""
    return Candle(
        open_time_ms=int(row["open_time_ms"]),
        open_ticks=int(row["open_ticks"]),
        high_ticks=int(row["high_ticks"]),
        low_ticks=int(row["low_ticks"]),
        close_ticks=int(row["close_ticks"]),
        volume_lots=queries.wide_sum(row, "volume_lots"),
        quote_volume_units=queries.wide_sum(row, "quote_volume_units"),
        trade_count=int(row["trade_count"]),
    )


def _ordered(items: list[T], window: Window) -> list[T]:
    return items[::-1] if window.reverse else items
