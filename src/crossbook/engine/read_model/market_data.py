"""Market data: a projection of the COMMITTED public market state (DESIGN rule 4).

`MarketData` is fed only with committed event batches (`apply`, one call per
batch, in commit order) or built from a committed exchange (`from_exchange`,
the engine's right after recovery). It serves the REST API (order book
snapshots, tickers, the market list) and the WebSocket streams (book diffs,
trades). It imports only the domain and the engine's read records: no I/O and
no clock; time is passed in.

How the book is followed: every open order is tracked (order id -> symbol,
side, type, price, remaining lots, whether it rests in the book). An accepted
LIMIT order is tentatively in the book at its full quantity (the exchange emits
nothing more for one that rests without trading); a trade reduces the remaining
of the buyer's and the seller's order when it is in the book; an `OrderUpdated`
is authoritative: an open LIMIT order, or a triggered STOP_LIMIT order, rests at
`price_ticks` with `quantity_lots - filled_lots`, anything else is out of the
book, and a terminal status forgets the order. MARKET and STOP_MARKET orders and
untriggered stops are never in the book. Within a batch the projected book may
pass through states the exchange never showed (a taker tentatively resting while
it trades); only the state after the whole batch is meaningful, and it is the
one published.

Invariants (asserted; a broken one is a bug and the projection must be rebuilt
with `from_exchange`):
- after every batch each market's aggregated levels equal the exchange's book:
  a level exists iff it holds an order, with the sum and count of the remaining
  quantities of the orders resting at its price; every level has lots > 0; the
  book is not crossed;
- each market's `market_seq` is gap-free: a batch's events for a market continue
  its sequence exactly (1 = `MarketCreated`), and `seq` strictly increases;
- a trade's maker is a tracked order resting in the book at the trade's price;
- a `BookDiff` holds exactly the levels whose (quantity, count) differ from
  before the batch, best first, and `first_market_seq` of a market's next diff
  is this diff's `last_market_seq + 1`, so applying the diffs to a snapshot
  reproduces the later snapshots;
- minute bars of a market are in strictly ascending minute order (exchange time
  never goes backwards).

Known limits:
- memory is one record per open order, one per price level, and at most
  `window_minutes + 1` minute bars per market; `book` does not cap `depth`
  (the API bounds what it asks for);
- the ticker window has minute granularity: it starts at the minute boundary at
  or before `now_ms - window_minutes` minutes and has no upper bound, so it holds
  every trade of the last 24 h and at most one minute more, and also trades
  stamped later than a caller's `now_ms` (a clock behind the engine's);
- bars are pruned relative to the newest trade, so a ticker asked for a `now_ms`
  far behind the engine's time may miss bars already dropped;
- not thread-safe: one thread (the event loop) applies batches and reads;
  everything returned is an immutable value, safe to hand to other tasks.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from crossbook.domain import (
    Asset,
    AssetCreated,
    Event,
    Exchange,
    MarketCreated,
    MarketSpec,
    MarketStatus,
    MarketStatusChanged,
    OrderAccepted,
    OrderType,
    OrderUpdated,
    Side,
    TradeExecuted,
)
from crossbook.engine.read_model.records import Candle

MINUTE_MS = 60_000
DEFAULT_WINDOW_MINUTES = 1_440  # 24 h
_SNAPSHOT_CACHE_DEPTHS = 8  # distinct depths cached per market between two changes

_BUY = Side.BUY
_LIMIT, _STOP_LIMIT = OrderType.LIMIT, OrderType.STOP_LIMIT
_NO_CANDLES: Mapping[str, Sequence[Candle]] = MappingProxyType({})


# -- public values -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Level:
    """One aggregated price level."""

    price_ticks: int
    quantity_lots: int  # 0 in a `BookDiff` means "level removed"
    order_count: int


@dataclass(frozen=True, slots=True)
class BookSnapshot:
    symbol: str
    market_seq: int  # the market's last committed market_seq the snapshot includes
    bids: tuple[Level, ...]  # best (highest) first
    asks: tuple[Level, ...]  # best (lowest) first


@dataclass(frozen=True, slots=True)
class BookDiff:
    symbol: str
    first_market_seq: int  # first market_seq of this market in the batch
    last_market_seq: int  # last one; next diff's first == this last + 1 (gap-free)
    bids: tuple[Level, ...]  # changed bid levels, new absolute values (quantity 0 = removed)
    asks: tuple[Level, ...]


@dataclass(frozen=True, slots=True)
class Ticker:
    symbol: str
    last_price_ticks: int  # 0 if the market never traded
    open_ticks: int  # over the window; 0 if no trade in it (also high and low)
    high_ticks: int
    low_ticks: int
    volume_lots: int
    quote_volume_units: int
    trade_count: int
    best_bid: Level | None
    best_ask: Level | None
    window_start_ms: int  # start of the rolling window (minute-aligned)


@dataclass(frozen=True, slots=True)
class MarketInfo:
    spec: MarketSpec
    status: MarketStatus
    market_seq: int


@dataclass(frozen=True, slots=True)
class MarketDataBatch:
    """What one committed batch changed."""

    events: Sequence[Event]
    book_diffs: dict[str, BookDiff]  # one per market whose market_seq advanced (may be empty)
    trades: tuple[TradeExecuted, ...]
    tickers_changed: frozenset[str]  # markets with a trade or a best bid/ask change


# -- internals ---------------------------------------------------------------------


class _OpenOrder:
    __slots__ = ("in_book", "order_type", "price_ticks", "remaining_lots", "side", "symbol")

    def __init__(
        self,
        symbol: str,
        side: Side,
        order_type: OrderType,
        price_ticks: int,
        remaining_lots: int,
        in_book: bool,
    ) -> None:
        self.symbol = symbol
        self.side = side
        self.order_type = order_type
        self.price_ticks = price_ticks
        self.remaining_lots = remaining_lots
        self.in_book = in_book


class _BookSide:
    """Aggregated levels of one side: price -> [lots, count], keys sorted best first.

    `_before` remembers, for each level touched since the last `take_changes`, its
    (lots, count) before the first touch; `_top` caches the best levels as `Level`s.
    """

    __slots__ = ("_before", "_top", "_top_complete", "keys", "levels", "sign")

    def __init__(self, side: Side) -> None:
        self.sign = -1 if side is _BUY else 1  # keys ascending = best first
        self.levels: dict[int, list[int]] = {}
        self.keys: list[int] = []
        self._before: dict[int, tuple[int, int]] = {}
        self._top: tuple[Level, ...] = ()
        self._top_complete = True

    def _touch(self, price_ticks: int) -> list[int] | None:
        level = self.levels.get(price_ticks)
        if price_ticks not in self._before:
            self._before[price_ticks] = (level[0], level[1]) if level is not None else (0, 0)
        self._top = ()
        self._top_complete = False
        return level

    def add(self, price_ticks: int, lots: int) -> None:
        assert price_ticks > 0 and lots > 0, (price_ticks, lots)
        level = self._touch(price_ticks)
        if level is None:
            self.levels[price_ticks] = [lots, 1]
            insort(self.keys, self.sign * price_ticks)
        else:
            level[0] += lots
            level[1] += 1

    def adjust(self, price_ticks: int, delta_lots: int) -> None:
        """An order resting at `price_ticks` changed its remaining quantity by `delta_lots`."""
        level = self._touch(price_ticks)
        assert level is not None and level[0] + delta_lots >= 0, (price_ticks, level, delta_lots)
        level[0] += delta_lots

    def remove(self, price_ticks: int, lots: int) -> None:
        """An order with `lots` remaining left the level at `price_ticks`."""
        level = self._touch(price_ticks)
        assert level is not None and level[0] >= lots, (price_ticks, level, lots)
        level[0] -= lots
        level[1] -= 1
        if level[1] == 0:
            assert level[0] == 0, (price_ticks, level)
            del self.levels[price_ticks]
            keys = self.keys
            del keys[bisect_left(keys, self.sign * price_ticks)]

    def top(self, depth: int) -> tuple[Level, ...]:
        if self._top_complete or depth <= len(self._top):
            return self._top[:depth]
        sign, levels = self.sign, self.levels
        top = tuple(
            Level(price, levels[price][0], levels[price][1])
            for price in (sign * key for key in self.keys[:depth])
        )
        self._top = top
        self._top_complete = len(top) == len(self.keys)
        return top

    def best(self) -> Level | None:
        if not self.keys:
            return None
        price = self.sign * self.keys[0]
        lots, count = self.levels[price]
        return Level(price, lots, count)

    def take_changes(self) -> tuple[Level, ...]:
        """Levels changed since the last call, best first, with their new values."""
        changed: list[Level] = []
        for price, before in self._before.items():
            level = self.levels.get(price)
            now = (level[0], level[1]) if level is not None else (0, 0)
            assert now[1] == 0 or now[0] > 0, ("level without quantity", price, now)
            if now != before:
                changed.append(Level(price, now[0], now[1]))
        self._before.clear()
        changed.sort(key=lambda level: self.sign * level.price_ticks)
        return tuple(changed)

    def aggregate(self) -> list[tuple[int, int, int]]:
        """(price, lots, count) of every level, best first (for checks)."""
        return [
            (level.price_ticks, level.quantity_lots, level.order_count)
            for level in self.top(len(self.keys))
        ]


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
class _WindowStats:
    open_ticks: int = 0
    high_ticks: int = 0
    low_ticks: int = 0
    volume_lots: int = 0
    quote_volume_units: int = 0
    trade_count: int = 0


class _Bars:
    """A market's minute bars over the last `window_minutes + 1` minutes of trading."""

    __slots__ = ("_cached", "bars", "window_minutes")

    def __init__(self, window_minutes: int) -> None:
        self.window_minutes = window_minutes
        self.bars: deque[_Bar] = deque(maxlen=window_minutes + 1)
        self._cached: tuple[int, _WindowStats] | None = None  # (window start, stats)

    def seed(self, candles: Sequence[Candle]) -> None:
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

    def window(self, start_ms: int) -> _WindowStats:
        cached = self._cached
        if cached is not None and cached[0] == start_ms:
            return cached[1]
        in_window: list[_Bar] = []  # newest first
        for bar in reversed(self.bars):
            if bar.minute_ms < start_ms:
                break
            in_window.append(bar)
        stats = _WindowStats()
        if in_window:
            stats = _WindowStats(
                open_ticks=in_window[-1].open,
                high_ticks=max(bar.high for bar in in_window),
                low_ticks=min(bar.low for bar in in_window),
                volume_lots=sum(bar.volume for bar in in_window),
                quote_volume_units=sum(bar.quote_volume for bar in in_window),
                trade_count=sum(bar.count for bar in in_window),
            )
        self._cached = (start_ms, stats)
        return stats


class _MarketState:
    __slots__ = (
        "asks",
        "bars",
        "bids",
        "last_price_ticks",
        "market_seq",
        "snapshots",
        "spec",
        "status",
    )

    def __init__(self, spec: MarketSpec, window_minutes: int) -> None:
        self.spec = spec
        self.status = MarketStatus.ACTIVE
        self.market_seq = 0
        self.last_price_ticks = 0
        self.bids = _BookSide(Side.BUY)
        self.asks = _BookSide(Side.SELL)
        self.bars = _Bars(window_minutes)
        self.snapshots: dict[int, BookSnapshot] = {}  # depth -> snapshot at market_seq

    def side(self, side: Side) -> _BookSide:
        return self.bids if side is _BUY else self.asks

    def info(self) -> MarketInfo:
        return MarketInfo(self.spec, self.status, self.market_seq)


# -- the projection ----------------------------------------------------------------


class MarketData:
    """The committed public market state, kept up to date batch by batch."""

    def __init__(self, *, window_minutes: int = DEFAULT_WINDOW_MINUTES) -> None:
        if not isinstance(window_minutes, int) or window_minutes < 1:
            raise ValueError(f"window_minutes must be a positive integer, got {window_minutes!r}")
        self._window_minutes = window_minutes
        self._seq = 0
        self._assets: Mapping[str, Asset] = MappingProxyType({})  # replaced, never mutated
        self._markets: dict[str, _MarketState] = {}
        self._market_infos: Mapping[str, MarketInfo] | None = None  # cache, None = stale
        self._orders: dict[int, _OpenOrder] = {}
        # per batch: symbol -> (first market_seq, best bid before, best ask before)
        self._touched: dict[str, tuple[int, Level | None, Level | None]] = {}
        self._trades: list[TradeExecuted] = []
        self._handlers: dict[type[Event], Callable[[Any], None]] = {
            OrderAccepted: self._on_accepted,
            OrderUpdated: self._on_updated,
            TradeExecuted: self._on_trade,
            MarketCreated: self._on_market_created,
            MarketStatusChanged: self._on_status_changed,
            AssetCreated: self._on_asset_created,
        }

    @classmethod
    def from_exchange(
        cls,
        exchange: Exchange,
        minute_candles: Mapping[str, Sequence[Candle]] = _NO_CANDLES,
        *,
        window_minutes: int = DEFAULT_WINDOW_MINUTES,
    ) -> MarketData:
        """The projection of a committed exchange; `minute_candles` seed the tickers."""
        data = cls(window_minutes=window_minutes)
        data._seq = exchange.seq
        data._assets = MappingProxyType(dict(exchange.assets))
        for symbol, market in exchange.markets.items():
            state = data._markets[symbol] = _MarketState(market.spec, window_minutes)
            state.status = market.status
            state.market_seq = market.market_seq
            state.last_price_ticks = market.last_price_ticks
        for order_id, order in exchange.orders.items():
            in_book = order.level is not None
            assert in_book or not order.triggered, ("open order neither resting nor a stop", order)
            data._orders[order_id] = _OpenOrder(
                order.symbol,
                order.side,
                order.order_type,
                order.price_ticks,
                order.remaining_lots,
                in_book,
            )
            if in_book:
                data._markets[order.symbol].side(order.side).add(
                    order.price_ticks, order.remaining_lots
                )
        for symbol, candles in minute_candles.items():
            assert symbol in data._markets, ("candles of an unknown market", symbol)
            data._markets[symbol].bars.seed(candles)
        for symbol, state in data._markets.items():
            state.bids.take_changes()
            state.asks.take_changes()
            book = exchange.markets[symbol].book
            for mine, theirs in ((state.bids, book.bids), (state.asks, book.asks)):
                expected = [
                    (lv.price_ticks, lv.total_lots, lv.order_count)
                    for lv in theirs.levels_best_first()
                ]
                assert mine.aggregate() == expected, ("book does not match its orders", symbol)
        return data

    # -- writes: one committed batch -------------------------------------------

    def apply(self, events: Sequence[Event]) -> MarketDataBatch:
        """Project one committed batch; returns what it changed."""
        touched = self._touched
        trades = self._trades
        touched.clear()
        trades.clear()
        handlers = self._handlers
        for event in events:
            assert event.seq > self._seq, ("seq went backwards", self._seq, event)
            self._seq = event.seq
            handler = handlers.get(type(event))
            if handler is not None:
                handler(event)
            else:
                assert event.market_seq == 0, ("unknown market event", event)
        diffs: dict[str, BookDiff] = {}
        tickers_changed = {trade.symbol for trade in trades}
        for symbol, (first_market_seq, bid_before, ask_before) in touched.items():
            market = self._markets[symbol]
            diffs[symbol] = BookDiff(
                symbol,
                first_market_seq,
                market.market_seq,
                market.bids.take_changes(),
                market.asks.take_changes(),
            )
            best_bid, best_ask = market.bids.best(), market.asks.best()
            assert (
                best_bid is None or best_ask is None or best_bid.price_ticks < best_ask.price_ticks
            ), (
                "book crossed",
                symbol,
                best_bid,
                best_ask,
            )
            if best_bid != bid_before or best_ask != ask_before:
                tickers_changed.add(symbol)
        if touched:
            self._market_infos = None
        batch = MarketDataBatch(events, diffs, tuple(trades), frozenset(tickers_changed))
        touched.clear()
        trades.clear()
        return batch

    def _advance(self, symbol: str, market_seq: int) -> _MarketState:
        """Account for one event of `symbol`'s market; asserts its sequence continues."""
        market = self._markets.get(symbol)
        assert market is not None, ("event for an unknown market", symbol, market_seq)
        assert market_seq == market.market_seq + 1, (
            "market_seq gap",
            symbol,
            market.market_seq,
            market_seq,
        )
        if symbol not in self._touched:
            self._touched[symbol] = (market_seq, market.bids.best(), market.asks.best())
        market.market_seq = market_seq
        if market.snapshots:
            market.snapshots.clear()
        return market

    def _on_asset_created(self, event: AssetCreated) -> None:
        assert event.code not in self._assets, ("asset exists", event)
        assets = dict(self._assets)
        assets[event.code] = Asset(event.code, event.decimals)
        self._assets = MappingProxyType(assets)

    def _on_market_created(self, event: MarketCreated) -> None:
        symbol = event.spec.symbol
        assert symbol not in self._markets, ("market exists", event)
        self._markets[symbol] = _MarketState(event.spec, self._window_minutes)
        self._advance(symbol, event.market_seq)

    def _on_status_changed(self, event: MarketStatusChanged) -> None:
        self._advance(event.symbol, event.market_seq).status = event.status

    def _on_accepted(self, event: OrderAccepted) -> None:
        market = self._advance(event.symbol, event.market_seq)
        assert event.order_id not in self._orders, ("order accepted twice", event)
        in_book = event.order_type is _LIMIT  # tentatively: it may trade or close next
        self._orders[event.order_id] = _OpenOrder(
            event.symbol,
            event.side,
            event.order_type,
            event.price_ticks,
            event.quantity_lots,
            in_book,
        )
        if in_book:
            market.side(event.side).add(event.price_ticks, event.quantity_lots)

    def _on_updated(self, event: OrderUpdated) -> None:
        market = self._advance(event.symbol, event.market_seq)
        order = self._orders.get(event.order_id)
        assert order is not None and order.symbol == event.symbol, (
            "update of unknown order",
            event,
        )
        side = market.side(order.side)
        if event.status.is_terminal:
            if order.in_book:
                side.remove(order.price_ticks, order.remaining_lots)
            del self._orders[event.order_id]
            return
        order_type = order.order_type
        in_book = order_type is _LIMIT or (order_type is _STOP_LIMIT and event.triggered)
        price, remaining = event.price_ticks, event.quantity_lots - event.filled_lots
        if order.in_book and in_book and order.price_ticks == price:
            if remaining != order.remaining_lots:  # same level: adjust in place
                side.adjust(price, remaining - order.remaining_lots)
        else:
            if order.in_book:
                side.remove(order.price_ticks, order.remaining_lots)
            if in_book:
                side.add(price, remaining)
        order.in_book = in_book
        order.price_ticks = price
        order.remaining_lots = remaining

    def _on_trade(self, event: TradeExecuted) -> None:
        market = self._advance(event.symbol, event.market_seq)
        lots = event.quantity_lots
        maker = self._orders.get(event.maker_order_id)
        assert maker is not None and maker.in_book and maker.price_ticks == event.price_ticks, (
            "trade with a maker not resting at its price",
            event,
        )
        for order_id in (event.buyer_order_id, event.seller_order_id):
            order = self._orders.get(order_id)
            if order is not None and order.in_book:
                assert order.remaining_lots >= lots, ("overfilled", order_id, event)
                order.remaining_lots -= lots
                market.side(order.side).adjust(order.price_ticks, -lots)
        market.last_price_ticks = event.price_ticks
        market.bars.add_trade(event.ts_ms, event.price_ticks, lots, event.notional_units)
        self._trades.append(event)

    # -- reads --------------------------------------------------------------------

    def assets(self) -> Mapping[str, Asset]:
        return self._assets

    def markets(self) -> Mapping[str, MarketInfo]:
        infos = self._market_infos
        if infos is None:
            infos = self._market_infos = MappingProxyType(
                {symbol: market.info() for symbol, market in self._markets.items()}
            )
        return infos

    def market(self, symbol: str) -> MarketInfo | None:
        market = self._markets.get(symbol)
        return None if market is None else market.info()

    def book(self, symbol: str, depth: int) -> BookSnapshot:
        """The best `depth` levels per side; KeyError for an unknown market."""
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        market = self._markets[symbol]
        snapshot = market.snapshots.get(depth)
        if snapshot is None:
            if len(market.snapshots) >= _SNAPSHOT_CACHE_DEPTHS:
                market.snapshots.clear()
            snapshot = market.snapshots[depth] = BookSnapshot(
                symbol, market.market_seq, market.bids.top(depth), market.asks.top(depth)
            )
        return snapshot

    def ticker(self, symbol: str, now_ms: int) -> Ticker:
        """The rolling window ending at `now_ms` (minute granularity); KeyError if unknown."""
        market = self._markets[symbol]
        start_ms = (now_ms // MINUTE_MS - self._window_minutes) * MINUTE_MS
        stats = market.bars.window(start_ms)
        return Ticker(
            symbol=symbol,
            last_price_ticks=market.last_price_ticks,
            open_ticks=stats.open_ticks,
            high_ticks=stats.high_ticks,
            low_ticks=stats.low_ticks,
            volume_lots=stats.volume_lots,
            quote_volume_units=stats.quote_volume_units,
            trade_count=stats.trade_count,
            best_bid=market.bids.best(),
            best_ask=market.asks.best(),
            window_start_ms=start_ms,
        )

    def open_order_side(self, order_id: int) -> Side | None:
        """The side of a committed open order; None if unknown or closed."""
        order = self._orders.get(order_id)
        return None if order is None else order.side
