"""Candles in the read model: the widths served, and each market's rolling minute bars.

`CANDLE_INTERVALS_MS` are the candle widths the API serves; the store keeps a
rollup of exactly these (one row per market, width and open time, written with
the trades), so reading them costs O(candles returned). Every width is a whole
number of minutes.

`MinuteBars` are one market's one-minute candles over the ticker's window: they
are seeded from the store's minute candles when the read model is built and
advanced by every committed trade; `window(start_ms)` sums the bars that open
at or after `start_ms` (the 24 h ticker).

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


class _Bar:
    """One minute of trades."""

    __slots__ = ("close", "count", "high", "low", "minute_ms", "open", "quote_volume", "volume")

    def __init__(
        self,
        minute_ms: int,
        open_ticks: int,
        high_ticks: int,
        low_ticks: int,
        close_ticks: int,
        volume_lots: int,
        quote_volume_units: int,
        trade_count: int,
    ) -> None:
        self.minute_ms = minute_ms
        self.open = open_ticks
        self.high = high_ticks
        self.low = low_ticks
        self.close = close_ticks
        self.volume = volume_lots
        self.quote_volume = quote_volume_units
        self.count = trade_count


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
        self.bars: deque[_Bar] = deque(maxlen=window_minutes + 1)
        self._cached: tuple[int, WindowStats] | None = None  # (window start, stats)

    def seed(self, candles: Sequence[Candle]) -> None:
        """Start from one-minute candles (any order, none overlapping a kept bar)."""
        for candle in sorted(candles, key=lambda c: c.open_time_ms):
            minute = candle.open_time_ms
            assert minute % MINUTE_MS == 0, ("candle not minute-aligned", candle)
            assert not self.bars or self.bars[-1].minute_ms < minute, ("candles overlap", candle)
            self.bars.append(
                _Bar(
                    minute,
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
        if bars and bars[-1].minute_ms == minute:
            bar = bars[-1]
            bar.high = max(bar.high, price_ticks)
            bar.low = min(bar.low, price_ticks)
            bar.close = price_ticks
            bar.volume += lots
            bar.quote_volume += notional_units
            bar.count += 1
            return
        assert not bars or bars[-1].minute_ms < minute, ("time went backwards", ts_ms)
        horizon = minute - self.window_minutes * MINUTE_MS
        while bars and bars[0].minute_ms < horizon:
            bars.popleft()
        bars.append(
            _Bar(
                minute, price_ticks, price_ticks, price_ticks, price_ticks, lots, notional_units, 1
            )
        )

    def window(self, start_ms: int) -> WindowStats:
        """The stats of the bars that open at or after `start_ms`."""
        cached = self._cached
        if cached is not None and cached[0] == start_ms:
            return cached[1]
        in_window: list[_Bar] = []  # newest first
        for bar in reversed(self.bars):
            if bar.minute_ms < start_ms:
                break
            in_window.append(bar)
        stats = WindowStats()
        if in_window:
            stats = WindowStats(
                open_ticks=in_window[-1].open,
                high_ticks=max(bar.high for bar in in_window),
                low_ticks=min(bar.low for bar in in_window),
                volume_lots=sum(bar.volume for bar in in_window),
                quote_volume_units=sum(bar.quote_volume for bar in in_window),
                trade_count=sum(bar.count for bar in in_window),
            )
        self._cached = (start_ms, stats)
        return stats
