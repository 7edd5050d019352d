"""The store's queries as SQLAlchemy Core statements (built here, run by `store`).

Almost all are reads; the one write is `insert_next_user` (accounts, outside the
engine's batches). Every statement runs unchanged on SQLite and PostgreSQL.

Pagination is by keyset on the id (`order_id`, `trade_id`), newest first:
- `before_id` alone (or nothing): the `limit` newest rows with an id below it;
- `after_id`: the `limit` oldest rows with an id above it (and below `before_id`
  if given), i.e. the page just newer than `after_id`; still returned newest
  first (the statement reads them oldest first and `Window.reverse` says so).
Ids grow with time (the clock never goes back), so id order is time order.
A time range is inclusive at both ends: `start_ms <= t <= end_ms`.

Every list is bounded: `limit` must be between 1 and `MAX_QUERY_LIMIT`
(`ValueError` otherwise; the gateway validates before it gets here).

Candles: OHLCV per interval of `interval_ms`, the interval of a trade being
`executed_at_ms // interval_ms * interval_ms` (integer division, which
truncates on both databases: equal to the floor since times are never
negative; the clock starts at 0 and never goes back). Only intervals with
trades, no gap filling. The time range selects intervals by their open time,
inclusive (`start_ms <= open_time_ms <= end_ms`), and each candle is whole: all
the trades of its interval, never cut by the range. The statement returns the
newest `limit` candles, oldest first. Open and close are the prices of the
trades with the lowest and highest trade id of the interval. Two statements
give the same answer:
- `rolled_up_candles`, for the widths of `ROLLED_UP_INTERVALS_MS` (those the
  API serves): the rows of the `candles` rollup, which the writers keep in the
  transaction of the trades (`candle_rows`); a backward scan of its key, so it
  reads only the candles it returns;
- `candles_from_trades`, for any other width: the aggregate of the trades in the
  range (one statement: the aggregate joined back to `trades` on the first and
  last ids). Volumes are sums that may pass 64 bits (the same funds trade many
  times), and SQLite's `sum()` raises on 64-bit overflow: each is summed as two
  halves, `x >> 32` and `x & (2**32 - 1)`, which `wide_sum` recombines exactly
  (PostgreSQL's `sum(bigint)` is NUMERIC).

Users (`insert_next_user`): the next id is `max(user_id) + 1`, from 1 (user 0
is the fee account, never a user), computed inside the insert; two concurrent
inserts on PostgreSQL can compute the same id, and then one of them fails on
the primary key (the store retries it).

Known limits:
- a user's trades are the union of two index scans (as buyer, as seller), each
  reading up to `limit` rows;
- candles of a width outside the rollup are computed from the trades on every
  call: one call reads every trade of the market in the range (all of them
  without a range); the split sums are exact up to 2**31 trades per candle.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Label,
    Select,
    Text,
    and_,
    func,
    insert,
    literal,
    literal_column,
    select,
    union_all,
)
from sqlalchemy.sql.dml import ReturningInsert
from sqlalchemy.sql.elements import KeyedColumnElement

from crossbook.adapters.sql.candle_rows import ROLLED_UP_INTERVALS_MS
from crossbook.adapters.sql.schema import (
    asset_totals,
    assets,
    balances,
    candles,
    engine_state,
    markets,
    orders,
    trades,
    users,
)
from crossbook.domain import OrderStatus
from crossbook.domain.orders import OPEN_STATUSES
from crossbook.domain.units import INT64_MAX

AnySelect: TypeAlias = Select[*tuple[Any, ...]]

MAX_QUERY_LIMIT = 1_000
DEFAULT_QUERY_LIMIT = 100
HALF_BITS = 32  # a wide sum is summed as its high and low 32-bit halves


@dataclass(frozen=True, slots=True)
class Window:
    """Which rows of a newest-first list: a time range, a keyset position and a limit."""

    limit: int = DEFAULT_QUERY_LIMIT
    before_id: int | None = None
    after_id: int | None = None
    start_ms: int | None = None
    end_ms: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_QUERY_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_QUERY_LIMIT}")

    @property
    def reverse(self) -> bool:
        """True if the statement reads oldest first and its rows must be reversed."""
        return self.after_id is not None

    def conditions(
        self, key: KeyedColumnElement[int], time: KeyedColumnElement[int]
    ) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = []
        if self.before_id is not None:
            out.append(key < self.before_id)
        if self.after_id is not None:
            out.append(key > self.after_id)
        if self.start_ms is not None:
            out.append(time >= self.start_ms)
        if self.end_ms is not None:
            out.append(time <= self.end_ms)
        return out

    def order(self, key: KeyedColumnElement[int]) -> ColumnElement[int]:
        return key.asc() if self.reverse else key.desc()


# -- orders ---------------------------------------------------------------------------


def order_of_user(user_id: int, order_id: int) -> AnySelect:
    return select(orders).where(orders.c.order_id == order_id, orders.c.user_id == user_id)


def order_by_client_id(user_id: int, client_order_id: str) -> AnySelect:
    """The newest order of the user with that client id (ids are reusable once closed)."""
    return (
        select(orders)
        .where(orders.c.user_id == user_id, orders.c.client_order_id == client_order_id)
        .order_by(orders.c.order_id.desc())
        .limit(1)
    )


def orders_of_user(
    user_id: int,
    window: Window,
    statuses: Collection[OrderStatus] | None = None,
    symbol: str | None = None,
) -> AnySelect:
    o = orders.c
    where = [o.user_id == user_id, *window.conditions(o.order_id, o.created_at_ms)]
    if statuses is not None:
        where.append(o.status.in_([str(status) for status in statuses]))
    if symbol is not None:
        where.append(o.symbol == symbol)
    return select(orders).where(*where).order_by(window.order(o.order_id)).limit(window.limit)


# -- trades ---------------------------------------------------------------------------


def trades_of_market(symbol: str, window: Window) -> AnySelect:
    t = trades.c
    where = [t.symbol == symbol, *window.conditions(t.trade_id, t.executed_at_ms)]
    return select(trades).where(*where).order_by(window.order(t.trade_id)).limit(window.limit)


def trades_of_user(user_id: int, window: Window, symbol: str | None = None) -> AnySelect:
    t = trades.c
    common = window.conditions(t.trade_id, t.executed_at_ms)
    if symbol is not None:
        common.append(t.symbol == symbol)

    def side(condition: ColumnElement[bool]) -> AnySelect:
        part = (
            select(trades)
            .where(condition, *common)
            .order_by(window.order(t.trade_id))
            .limit(window.limit)
            .subquery()
        )
        return select(part)

    as_buyer = side(t.buyer_user_id == user_id)
    as_seller = side(and_(t.seller_user_id == user_id, t.buyer_user_id != user_id))
    both = union_all(as_buyer, as_seller).subquery()
    return select(both).order_by(window.order(both.c.trade_id)).limit(window.limit)


# -- candles --------------------------------------------------------------------------


def is_rolled_up(interval_ms: int) -> bool:
    """Whether candles of this width are read from the rollup (`rolled_up_candles`)."""
    return interval_ms in ROLLED_UP_INTERVALS_MS


@dataclass(frozen=True, slots=True)
class CandleRange:
    """Which candles: a market, a width, an open-time range (inclusive) and a limit."""

    symbol: str
    interval_ms: int
    start_ms: int | None = None
    end_ms: int | None = None
    limit: int = DEFAULT_QUERY_LIMIT

    def __post_init__(self) -> None:
        Window(self.limit)  # validates the bound


def rolled_up_candles(wanted: CandleRange) -> AnySelect:
    """The newest `limit` rollup rows of the market with open times in the range, oldest
    first; the width must be rolled up. Columns: those of `candles`."""
    symbol, interval_ms, start_ms, end_ms, limit = _unpack(wanted)
    if not is_rolled_up(interval_ms):
        raise ValueError(f"candles of {interval_ms} ms are not rolled up")
    c = candles.c
    where = [c.symbol == symbol, c.interval_ms == interval_ms]
    if start_ms is not None:
        where.append(c.open_time_ms >= _int64(start_ms))
    if end_ms is not None:
        where.append(c.open_time_ms <= _int64(end_ms))
    newest = (
        select(candles)
        .where(*where)
        .order_by(c.open_time_ms.desc())
        .limit(limit)
        .subquery("newest")
    )
    return select(newest).order_by(newest.c.open_time_ms)


def _int64(value: int) -> int:
    """`value` clamped to what a BIGINT parameter holds (open times are within it)."""
    return max(-INT64_MAX - 1, min(value, INT64_MAX))


def _unpack(wanted: CandleRange) -> tuple[str, int, int | None, int | None, int]:
    return wanted.symbol, wanted.interval_ms, wanted.start_ms, wanted.end_ms, wanted.limit


def candles_from_trades(wanted: CandleRange) -> AnySelect:
    """The newest `limit` candles of the market with open times in the range, oldest
    first, aggregated from the trades.

    Columns: `open_time_ms`, `open_ticks`, `high_ticks`, `low_ticks`, `close_ticks`,
    `trade_count`, and the halves of the two volumes (`wide_sum` reads them).
    """
    symbol, interval_ms, start_ms, end_ms, limit = _unpack(wanted)
    if not 0 < interval_ms <= INT64_MAX:
        raise ValueError("interval_ms must be between 1 and 2**63 - 1")
    t = trades.c
    interval = literal(interval_ms, BigInteger)
    where = [t.symbol == symbol]
    if start_ms is not None:  # the first whole interval that opens at or after start_ms
        first_open_ms = -(-start_ms // interval_ms) * interval_ms
        where.append(t.executed_at_ms >= min(first_open_ms, INT64_MAX))
    if end_ms is not None:  # the end of the interval that holds end_ms
        last_ms = end_ms // interval_ms * interval_ms + interval_ms - 1
        where.append(t.executed_at_ms <= min(last_ms, INT64_MAX))
    per_trade = (
        select(
            (t.executed_at_ms // interval * interval).label("open_time_ms"),
            t.trade_id,
            t.price_ticks,
            t.quantity_lots,
            t.notional_units,
        )
        .where(*where)
        .subquery("per_trade")
    )
    p = per_trade.c
    buckets = (
        select(
            p.open_time_ms,
            func.min(p.trade_id).label("first_trade_id"),
            func.max(p.trade_id).label("last_trade_id"),
            func.max(p.price_ticks).label("high_ticks"),
            func.min(p.price_ticks).label("low_ticks"),
            *_split_sum(p.quantity_lots, "volume_lots"),
            *_split_sum(p.notional_units, "quote_volume_units"),
            func.count().label("trade_count"),
        )
        .group_by(p.open_time_ms)
        .order_by(p.open_time_ms.desc())
        .limit(limit)
        .subquery("buckets")
    )
    b = buckets.c
    first, last = trades.alias("first_trade"), trades.alias("last_trade")
    return (
        select(
            b.open_time_ms,
            first.c.price_ticks.label("open_ticks"),
            b.high_ticks,
            b.low_ticks,
            last.c.price_ticks.label("close_ticks"),
            b.volume_lots_high,
            b.volume_lots_low,
            b.quote_volume_units_high,
            b.quote_volume_units_low,
            b.trade_count,
        )
        .select_from(
            buckets.join(first, first.c.trade_id == b.first_trade_id).join(
                last, last.c.trade_id == b.last_trade_id
            )
        )
        .order_by(b.open_time_ms)
    )


def _split_sum(column: KeyedColumnElement[int], name: str) -> tuple[Label[Any], Label[Any]]:
    high = func.sum(column.op(">>")(literal_column(str(HALF_BITS))))
    low = func.sum(column.op("&")(literal_column(str(2**HALF_BITS - 1))))
    return high.label(f"{name}_high"), low.label(f"{name}_low")


def wide_sum(row: Mapping[Any, Any], name: str) -> int:
    """The exact sum `name` of a `candles_from_trades` row, from its halves (any driver type)."""
    return (int(row[f"{name}_high"]) << HALF_BITS) + int(row[f"{name}_low"])


# -- users ------------------------------------------------------------------------------


def insert_next_user(name: str | None, created_at_ms: int) -> ReturningInsert[Any]:
    """Insert a user with id `max(user_id) + 1` (1 for the first), returning its row."""
    next_id = func.coalesce(func.max(users.c.user_id), 0) + 1
    values = select(next_id, literal(name, Text), literal(created_at_ms, BigInteger))
    return (
        insert(users).from_select(["user_id", "name", "created_at_ms"], values).returning(*users.c)
    )


def last_user_id() -> AnySelect:
    return select(func.coalesce(func.max(users.c.user_id), 0).label("last_user_id"))


def user_by_id(user_id: int) -> AnySelect:
    return select(users).where(users.c.user_id == user_id)


def users_after(after_user_id: int, limit: int = DEFAULT_QUERY_LIMIT) -> AnySelect:
    """Users with an id above `after_user_id`, ascending (keyset pages by id)."""
    Window(limit)  # validates the bound
    return (
        select(users).where(users.c.user_id > after_user_id).order_by(users.c.user_id).limit(limit)
    )


# -- balances and state --------------------------------------------------------------


def balances_of_user(user_id: int, limit: int = MAX_QUERY_LIMIT) -> AnySelect:
    Window(limit)  # validates the bound
    return (
        select(balances)
        .where(balances.c.user_id == user_id)
        .order_by(balances.c.asset)
        .limit(limit)
    )


def ping() -> AnySelect:
    """`SELECT 1`: the database answers."""
    return select(literal_column("1"))


def committed_statements() -> list[AnySelect]:
    """What a store needs to know when it opens: counters, assets, markets, asset totals."""
    return [select(engine_state), select(assets), select(markets), select(asset_totals)]


def state_statements() -> list[AnySelect]:
    """What `load_state` reads, in one snapshot: counters, assets, markets, balances,
    asset totals and the open orders."""
    return [
        select(engine_state),
        select(assets),
        select(markets),
        select(balances),
        select(asset_totals),
        select(orders)
        .where(orders.c.status.in_([str(status) for status in OPEN_STATUSES]))
        .order_by(orders.c.order_id),
    ]
