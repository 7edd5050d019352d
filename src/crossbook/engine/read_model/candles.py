"""Candles in the read model: the widths served, and each market's rolling minute bars.

`CANDLE_INTERVALS_MS` are the candle widths the API serves; the store keeps a
rollup of exactly these (one row per market, width and open time, written with
the trades), so reading them costs O(candles returned). Every width is a whole
number of minutes.

`MinuteBars` are one market's one-minute candles over the ticker's window: they
are seeded from the store's minute candles when the read model is built and
advanced by every committed trade; `window(start_ms)` sums the bars that open
at or after `start_ms` (the 24 h ticker).

`CandleBar` is the accumulator of one candle's trades, shared with the store's
rollup (`adapters.sql.candle_rows`); a minute bar is a `CandleBar` without trade
ids (see its docstring).

Invariants:
- bars are in strictly ascending minute order (exchange time never goes
  backwards), each minute-aligned, and a bar's open/close are its first and
  last trade's prices, its high/low the extremes, its volumes and count sums;
- at most `window_minutes + 1` bars are kept; a new bar drops every bar that
  opens more than `window_minutes` minutes before it.

Known limits: bars are pruned relative to the newest trade, so a window asked
for a start far behind the engine's time may miss bars already dropped; the
window stats are cached for one start at a time; not thread-safe.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from crossbook.engine.read_model.records import Candle

MINUTE_MS = 60_000
DEFAULT_WINDOW_MINUTES = 1_440  # 24 h

CANDLE_INTERVALS_MS: Mapping[str, int] = MappingProxyType(
    {
        "1m": MINUTE_MS,
        "5m": 5 * MINUTE_MS,
        "15m": 15 * MINUTE_MS,
        "1h": 60 * MINUTE_MS,
        "4h": 240 * MINUTE_MS,
        "1d": 1_440 * MINUTE_MS,
    }
)
assert all(ms % MINUTE_MS == 0 for ms in CANDLE_INTERVALS_MS.values())


NO_TRADE_ID = 0  # exchange trade ids start at 1


class CandleBar:
    """The trades of one candle so far (a mutable accumulator): its open time, first
    and last trade ids, open/high/low/close prices, volumes (lots, quote units) and
    trade count.

    Both the read model's minute bars (`MinuteBars`) and the store's candle rollup
    (`adapters.sql.candle_rows`) accumulate into it, so the two agree on what a
    candle is. Trades must be added in trade id order (`add_trade` makes the latest
    the close).

    Trade ids: the rollup keeps real ones, and only it `merge`s bars, which orders
    the two by trade id (so both must carry real ids). The read model's bars carry
    `NO_TRADE_ID`: they are seeded from stored `Candle` records, which have none,
    and advanced in commit order; they are never merged.
    """

    __slots__ = (
        "close",
        "count",
        "first_id",
        "high",
        "last_id",
        "low",
        "open",
        "open_time_ms",
        "quote",
        "volume",
    )

    def __init__(
        self,
        open_time_ms: int,
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
        self.open_time_ms = open_time_ms
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
    def of_trade(
        cls, open_time_ms: int, trade_id: int, price_ticks: int, lots: int, notional_units: int
    ) -> CandleBar:
        """The bar of one trade."""
        return cls(
            open_time_ms,
            trade_id,
            trade_id,
            price_ticks,
            price_ticks,
            price_ticks,
            price_ticks,
            lots,
            notional_units,
            1,
        )

    def fields(self) -> tuple[int, int, int, int, int, int, int, int, int]:
        """Ids, prices, volumes and count, in constructor (and rollup column) order."""
        return (
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

    def copy(self, open_time_ms: int) -> CandleBar:
        """The same trades as a bar opening at `open_time_ms` (a wider candle's start)."""
        return CandleBar(open_time_ms, *self.fields())

    def add_trade(self, price_ticks: int, lots: int, notional_units: int) -> None:
        """Add the next trade (by id) of this candle; the caller keeps `last_id`."""
        self.close = price_ticks
        if price_ticks > self.high:  # high >= low: a price moves at most one of them
            self.high = price_ticks
        elif price_ticks < self.low:
            self.low = price_ticks
        self.volume += lots
        self.quote += notional_units
        self.count += 1

    def merge(self, other: CandleBar) -> None:
        """Add the trades of `other` (the same candle, disjoint trades, any order;
        both with real trade ids)."""
        if other.first_id < self.first_id:
            self.first_id, self.open = other.first_id, other.open
        if other.last_id > self.last_id:
            self.last_id, self.close = other.last_id, other.close
        self.high = max(self.high, other.high)
        self.low = min(self.low, other.low)
        self.volume += other.volume
        self.quote += other.quote
        self.count += other.count


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Open, high, low, volumes and count of the bars in a window (zeros: no trade)."""

    open_ticks: int = 0
    high_ticks: int = 0
    low_ticks: int = 0
    volume_lots: int = 0
    quote_volume_units: int = 0
    trade_count: int = 0


class MinuteBars:
    """A market's minute bars over the last `window_minutes + 1` minutes of trading."""

    __slots__ = ("_cached", "bars", "window_minutes")

    def __init__(self, window_minutes: int) -> None:
        self.window_minutes = window_minutes
        self.bars: deque[CandleBar] = deque(maxlen=window_minutes + 1)
        self._cached: tuple[int, WindowStats] | None = None  # (window start, stats)

    def seed(self, candles: Sequence[Candle]) -> None:
        """Start from one-minute candles (any order, none overlapping a kept bar)."""
        for candle in sorted(candles, key=lambda c: c.open_time_ms):
            minute = candle.open_time_ms
            assert minute % MINUTE_MS == 0, ("candle not minute-aligned", candle)
            assert not self.bars or self.bars[-1].open_time_ms < minute, ("candles overlap", candle)
            self.bars.append(
                CandleBar(
                    minute,
                    NO_TRADE_ID,
                    NO_TRADE_ID,
                    candle.open_ticks,
                    candle.high_ticks,
                    candle.low_ticks,
                    candle.close_ticks,
                    candle.volume_lots,
                    candle.quote_volume_units,
                    candle.trade_count,
                )
            )
        self._cached = None

    def add_trade(self, ts_ms: int, price_ticks: int, lots: int, notional_units: int) -> None:
        minute = ts_ms - ts_ms % MINUTE_MS
        bars = self.bars
        self._cached = None
        if bars and bars[-1].open_time_ms == minute:
            bars[-1].add_trade(price_ticks, lots, notional_units)
            return
        assert not bars or bars[-1].open_time_ms < minute, ("time went backwards", ts_ms)
        horizon = minute - self.window_minutes * MINUTE_MS
        while bars and bars[0].open_time_ms < horizon:
            bars.popleft()
        bars.append(CandleBar.of_trade(minute, NO_TRADE_ID, price_ticks, lots, notional_units))

    def window(self, start_ms: int) -> WindowStats:
        """The stats of the bars that open at or after `start_ms`."""
        cached = self._cached
        if cached is not None and cached[0] == start_ms:
            return cached[1]
        in_window: list[CandleBar] = []  # newest first
        for bar in reversed(self.bars):
            if bar.open_time_ms < start_ms:
                break
            in_window.append(bar)
        stats = WindowStats()
        if in_window:
            stats = WindowStats(
                open_ticks=in_window[-1].open,
                high_ticks=max(bar.high for bar in in_window),
                low_ticks=min(bar.low for bar in in_window),
                volume_lots=sum(bar.volume for bar in in_window),
                quote_volume_units=sum(bar.quote for bar in in_window),
                trade_count=sum(bar.count for bar in in_window),
            )
        self._cached = (start_ms, stats)
        return stats
