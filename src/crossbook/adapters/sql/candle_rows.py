"""A batch's trades as rows of the `candles` rollup (no I/O), and how a row merges.

Both writers call `candle_rows(batch.trades)` and upsert its rows in the
transaction that inserts the trades: one row per (market, width of
`CANDLE_INTERVALS_MS`, open time) the batch touches, whatever the number of
its trades, merged into the stored row as `Aggregate.merge` merges (the
writers' upserts say the same in SQL). The migration that created the table
(v0003) backfilled it from the trades before it by the same rules, with a
frozen copy of this aggregation.

Invariants:
- rows are in `CANDLE_COLUMNS` order; a row aggregates exactly the batch's trades
  of its market whose `ts_ms // interval_ms * interval_ms` is its open time: open
  is the price of the lowest trade id, close of the highest, high/low the
  extremes, volumes (lots, quote units) and trade count the sums;
- merging two aggregates of one candle (stored, then a later batch) gives the
  aggregate of all their trades, in either order (`merge`);
- every width is a whole number of minutes, so the wider candles are folded
  from the batch's minute aggregates: the work is O(trades) plus
  O(minutes touched × widths);
- the volumes are Python ints, or for SQLite their decimal text when beyond
  64 bits (`rows.wide_value`).

Known limits: a batch's trades are taken to be in trade id order within each
minute (the exchange assigns ids in time order); `candle_rows` asserts it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from crossbook.domain import TradeExecuted
from crossbook.engine.read_model.candles import CANDLE_INTERVALS_MS, MINUTE_MS
from crossbook.sql_support.wide_integer import wide_value

CANDLE_COLUMNS = (
    "symbol",
    "interval_ms",
    "open_time_ms",
    "first_trade_id",
    "last_trade_id",
    "open_ticks",
    "high_ticks",
    "low_ticks",
    "close_ticks",
    "volume_lots",
    "quote_volume_units",
    "trade_count",
)
CANDLE_KEY = ("symbol", "interval_ms", "open_time_ms")
ROLLED_UP_INTERVALS_MS = tuple(CANDLE_INTERVALS_MS.values())
_WIDER_INTERVALS_MS = tuple(ms for ms in ROLLED_UP_INTERVALS_MS if ms != MINUTE_MS)
assert MINUTE_MS in ROLLED_UP_INTERVALS_MS

CandleRow = tuple[Any, ...]


class Aggregate:
    """The trades of one candle so far (a mutable accumulator)."""

    __slots__ = ("close", "count", "first_id", "high", "last_id", "low", "open", "quote", "volume")

    def __init__(
        self,
        first_id: int,
        last_id: int,
        open_ticks: int,
        high_ticks: int,
        low_ticks: int,
        close_ticks: int,
        volume_lots: int,
        quote_volume_units: int,
        trade_count: int,
    ) -> None:
        self.first_id = first_id
        self.last_id = last_id
        self.open = open_ticks
        self.high = high_ticks
        self.low = low_ticks
        self.close = close_ticks
        self.volume = volume_lots
        self.quote = quote_volume_units
        self.count = trade_count

    @classmethod
    def of_trade(cls, trade: TradeExecuted) -> Aggregate:
        price = trade.price_ticks
        return cls(
            trade.trade_id,
            trade.trade_id,
            price,
            price,
            price,
            price,
            trade.quantity_lots,
            trade.notional_units,
            1,
        )

    def copy(self) -> Aggregate:
        return Aggregate(
            self.first_id,
            self.last_id,
            self.open,
            self.high,
            self.low,
            self.close,
            self.volume,
            self.quote,
            self.count,
        )

    def merge(self, other: Aggregate) -> None:
        """Add the trades of `other` (the same candle, disjoint trades, any order)."""
        if other.first_id < self.first_id:
            self.first_id, self.open = other.first_id, other.open
        if other.last_id > self.last_id:
            self.last_id, self.close = other.last_id, other.close
        self.high = max(self.high, other.high)
        self.low = min(self.low, other.low)
        self.volume += other.volume
        self.quote += other.quote
        self.count += other.count

    def row(
        self, symbol: str, interval_ms: int, open_time_ms: int, wide_as_text: bool
    ) -> CandleRow:
        return (
            symbol,
            interval_ms,
            open_time_ms,
            self.first_id,
            self.last_id,
            self.open,
            self.high,
            self.low,
            self.close,
            wide_value(self.volume, as_text=wide_as_text),
            wide_value(self.quote, as_text=wide_as_text),
            self.count,
        )


def candle_rows(trades: Sequence[TradeExecuted], *, wide_as_text: bool) -> list[CandleRow]:
    """The rollup rows of `trades` (one batch's), one per candle they touch."""
    if not trades:
        return []
    # the commit path (`crossbook bench durable`): consecutive trades mostly share
    # their market and minute, so the aggregate is looked up only when either changes
    minutes: dict[tuple[str, int], Aggregate] = {}
    symbol, minute_ms, aggregate = "", -1, None
    for trade in trades:
        ts_ms = trade.ts_ms
        if aggregate is None or trade.symbol != symbol or not 0 <= ts_ms - minute_ms < MINUTE_MS:
            symbol, minute_ms = trade.symbol, ts_ms - ts_ms % MINUTE_MS
            aggregate = minutes.get((symbol, minute_ms))
            if aggregate is None:
                minutes[(symbol, minute_ms)] = aggregate = Aggregate.of_trade(trade)
                continue
        assert trade.trade_id > aggregate.last_id, ("trades out of id order", trade)
        price = trade.price_ticks
        aggregate.last_id = trade.trade_id
        aggregate.close = price
        if price > aggregate.high:
            aggregate.high = price
        elif price < aggregate.low:
            aggregate.low = price
        aggregate.volume += trade.quantity_lots
        aggregate.quote += trade.notional_units
        aggregate.count += 1
    return fold(minutes.items(), wide_as_text=wide_as_text)


def fold(
    minutes: Iterable[tuple[tuple[str, int], Aggregate]], *, wide_as_text: bool
) -> list[CandleRow]:
    """The rows of every rolled-up width from minute aggregates ((symbol, minute), agg)."""
    wider: dict[tuple[str, int, int], Aggregate] = {}
    out: list[CandleRow] = []
    for (symbol, minute_ms), aggregate in minutes:
        out.append(aggregate.row(symbol, MINUTE_MS, minute_ms, wide_as_text))
        for interval_ms in _WIDER_INTERVALS_MS:
            key = (symbol, interval_ms, minute_ms - minute_ms % interval_ms)
            kept = wider.get(key)
            if kept is None:
                wider[key] = aggregate.copy()
            else:
                kept.merge(aggregate)
    out.extend(
        aggregate.row(symbol, interval_ms, open_ms, wide_as_text)
        for (symbol, interval_ms, open_ms), aggregate in wider.items()
    )
    return out
