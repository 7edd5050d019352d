"""A batch's trades as rows of the `candles` rollup (no I/O), and how a row merges.

Both writers call `candle_rows(batch.trades)` and upsert its rows in the
transaction that inserts the trades: one row per (market, width of
`CANDLE_INTERVALS_MS`, open time) the batch touches, whatever the number of
its trades, merged into the stored row as `CandleBar.merge` merges (the
writers' upserts say the same in SQL). The migration that created the table
(v0003) backfilled it from the trades before it by the same rules, with a
frozen copy of this aggregation.

Invariants:
- rows are in `CANDLE_COLUMNS` order; a row aggregates exactly the batch's trades
  of its market whose `ts_ms // interval_ms * interval_ms` is its open time: open
  is the price of the lowest trade id, close of the highest, high/low the
  extremes, volumes (lots, quote units) and trade count the sums;
- merging two bars of one candle (stored, then a later batch) gives the
  aggregate of all their trades, in either order (`merge`);
- every width is a whole number of minutes, so the wider candles are folded
  from the batch's minute bars: the work is O(trades) plus
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
from crossbook.engine.read_model.candles import CANDLE_INTERVALS_MS, MINUTE_MS, CandleBar
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


def _row(bar: CandleBar, symbol: str, interval_ms: int, wide_as_text: bool) -> CandleRow:
    *ids_and_prices, volume, quote, count = bar.fields()
    return (
        symbol,
        interval_ms,
        bar.open_time_ms,
        *ids_and_prices,
        wide_value(volume, as_text=wide_as_text),
        wide_value(quote, as_text=wide_as_text),
        count,
    )


def candle_rows(trades: Sequence[TradeExecuted], *, wide_as_text: bool) -> list[CandleRow]:
    """The rollup rows of `trades` (one batch's), one per candle they touch."""
    if not trades:
        return []
    # the commit path (`crossbook bench durable`): consecutive trades mostly share
    # their market and minute, so the aggregate is looked up only when either changes
    minutes: dict[tuple[str, int], CandleBar] = {}
    symbol, minute_ms, bar = "", -1, None
    for trade in trades:
        ts_ms = trade.ts_ms
        if bar is None or trade.symbol != symbol or not 0 <= ts_ms - minute_ms < MINUTE_MS:
            symbol, minute_ms = trade.symbol, ts_ms - ts_ms % MINUTE_MS
            bar = minutes.get((symbol, minute_ms))
            if bar is None:
                minutes[(symbol, minute_ms)] = bar = CandleBar.of_trade(
                    minute_ms,
                    trade.trade_id,
                    trade.price_ticks,
                    trade.quantity_lots,
                    trade.notional_units,
                )
                continue
        assert trade.trade_id > bar.last_id, ("trades out of id order", trade)
        # `CandleBar.add_trade`, inlined: a call per trade costs a quarter of this loop
        price = trade.price_ticks
        bar.last_id = trade.trade_id
        bar.close = price
        if price > bar.high:
            bar.high = price
        elif price < bar.low:
            bar.low = price
        bar.volume += trade.quantity_lots
        bar.quote += trade.notional_units
        bar.count += 1
    return fold(minutes.items(), wide_as_text=wide_as_text)


def fold(
    minutes: Iterable[tuple[tuple[str, int], CandleBar]], *, wide_as_text: bool
) -> list[CandleRow]:
    """The rows of every rolled-up width from minute bars ((symbol, minute), bar)."""
    wider: dict[tuple[str, int, int], CandleBar] = {}
    out: list[CandleRow] = []
    for (symbol, minute_ms), bar in minutes:
        out.append(_row(bar, symbol, MINUTE_MS, wide_as_text))
        for interval_ms in _WIDER_INTERVALS_MS:
            open_ms = minute_ms - minute_ms % interval_ms
            kept = wider.get((symbol, interval_ms, open_ms))
            if kept is None:
                wider[(symbol, interval_ms, open_ms)] = bar.copy(open_ms)
            else:
                kept.merge(bar)
    out.extend(
        _row(bar, symbol, interval_ms, wide_as_text)
        for (symbol, interval_ms, _), bar in wider.items()
    )
    return out
