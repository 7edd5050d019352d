"""The read model's facade: the COMMITTED public market state (DESIGN rule 4).

`MarketData` is built from a committed snapshot (`from_snapshot`: the
serialised exchange that `Store.load_state()` returns or `Exchange.state()`
gives, plus the recent minute candles) and then fed only with committed event
batches (`apply`, one call per batch, in commit order, from the sequence after
the snapshot's). It needs neither the engine nor a live `Exchange`, so a
gateway process can hold one of its own (DESIGN section 6); `from_exchange` is
the same construction from a live exchange's state. After each batch it tells
its listeners (`BatchListener`, the WebSocket hub) what changed
(`MarketDataBatch`). It serves the REST API (order book snapshots, tickers, the
market list, assets), the wallet's market-buy costing and the streams. It
imports only the domain and its own modules: no I/O and no clock; time is
passed in.

The book is in `books`, the ticker's minute bars in `candles`.

How the book is followed: every open order is tracked (order id -> symbol,
side, type, price, remaining lots, whether it rests in the book). An accepted
LIMIT order is tentatively in the book at its full quantity (the exchange emits
nothing more for one that rests without trading); a trade reduces the remaining
of the buyer's and the seller's order when it is in the book; an `OrderUpdated`
is authoritative: an open LIMIT order, or a triggered STOP_LIMIT order, rests at
`price_ticks` with `quantity_lots - filled_lots`, anything else is out of the
book, and a terminal status forgets the order. MARKET and STOP_MARKET orders and
untriggered stops are never in the book; in a snapshot an open order rests iff
it is triggered. Within a batch the projected book may pass through states the
exchange never showed (a taker tentatively resting while it trades); only the
state after the whole batch is meaningful, and it is the one published.

Invariants (asserted; a broken one is a bug and the read model must be rebuilt
from a snapshot):
- after every batch each market's aggregated levels equal the exchange's book
  (see `books`); the book is not crossed;
- each market's `market_seq` is gap-free: a batch's events for a market continue
  its sequence exactly (1 = `MarketCreated`), and `seq` strictly increases;
- a trade's maker is a tracked order resting in the book at the trade's price;
- a `BookDiff` holds exactly the levels whose (quantity, count) differ from
  before the batch, best first, and `first_market_seq` of a market's next diff
  is this diff's `last_market_seq + 1`, so applying the diffs to a snapshot
  reproduces the later snapshots;
- listeners hear of a batch only once it is wholly applied, in the order they
  subscribed, so whatever they read is the state after that batch.

Known limits:
- memory is one record per open order, one per price level, and at most
  `window_minutes + 1` minute bars per market; `book` does not cap `depth`
  (the API bounds what it asks for);
- the ticker window has minute granularity: it starts at the minute boundary at
  or before `now_ms - window_minutes` minutes and has no upper bound, so it holds
  every trade of the last 24 h and at most one minute more, and also trades
  stamped later than a caller's `now_ms` (a clock behind the engine's);
- a listener that raises stops the batch's fan-out to later listeners (the
  batch is applied all the same) and the exception reaches the caller of `apply`;
- not thread-safe: one thread (the event loop) applies batches and reads;
  everything returned is an immutable value, safe to hand to other tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

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
from crossbook.domain.exchange import BalanceState
from crossbook.engine.read_model.books import BookDiff, BookSide, BookSnapshot, Level
from crossbook.engine.read_model.candles import DEFAULT_WINDOW_MINUTES, MINUTE_MS, MinuteBars
from crossbook.engine.read_model.records import Candle

_SNAPSHOT_CACHE_DEPTHS = 8  # distinct depths cached per market between two changes

_BUY = Side.BUY
_LIMIT, _STOP_LIMIT = OrderType.LIMIT, OrderType.STOP_LIMIT
_NO_CANDLES: Mapping[str, Sequence[Candle]] = MappingProxyType({})


# -- public values -----------------------------------------------------------------


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
    balances: Sequence[BalanceState]  # every balance the batch changed, its final value
    book_diffs: dict[str, BookDiff]  # one per market whose market_seq advanced (may be empty)
    trades: tuple[TradeExecuted, ...]
    tickers_changed: frozenset[str]  # markets with a trade or a best bid/ask change


class BatchListener(Protocol):
    """Told of every committed batch once the read model has applied it."""

    def batch_applied(self, batch: MarketDataBatch) -> None: ...


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
        self.bids = BookSide(Side.BUY)
        self.asks = BookSide(Side.SELL)
        self.bars = MinuteBars(window_minutes)
        self.snapshots: dict[int, BookSnapshot] = {}  # depth -> snapshot at market_seq

    def side(self, side: Side) -> BookSide:
        return self.bids if side is _BUY else self.asks

    def info(self) -> MarketInfo:
        return MarketInfo(self.spec, self.status, self.market_seq)


def _spec_from_rules(rules: Mapping[str, str], assets: Mapping[str, Asset]) -> MarketSpec:
    """The spec `MarketSpec.rules()` describes (decimal strings; exact round trip)."""
    settings = {name: text for name, text in rules.items() if name not in ("base", "quote")}
    return MarketSpec.create(assets[rules["base"]], assets[rules["quote"]], **settings)


# -- the read model ----------------------------------------------------------------


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
        self._listeners: list[BatchListener] = []
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
    def from_snapshot(
        cls,
        state: Mapping[str, Any] | None,
        minute_candles: Mapping[str, Sequence[Candle]] = _NO_CANDLES,
        *,
        window_minutes: int = DEFAULT_WINDOW_MINUTES,
    ) -> MarketData:
        """The read model of a committed snapshot; apply batches from `seq + 1` on.

        `state` is the serialised exchange (`Store.load_state()`, `Exchange.state()`,
        or their JSON round trip; None is an empty exchange): its counters, assets,
        markets (rules, status, last price, market sequence) and open orders are
        read, anything else ignored. `minute_candles` (per market, one-minute
        candles) seed the tickers' window.
        """
        data = cls(window_minutes=window_minutes)
        if state is None:
            assert not minute_candles, "candles without a snapshot"
            return data
        data._seq = state["counters"]["seq"]
        assets = {code: Asset(code, decimals) for code, decimals in state["assets"]}
        data._assets = MappingProxyType(assets)
        for market in state["markets"]:
            spec = _spec_from_rules(market["rules"], assets)
            assert spec.symbol == market["symbol"], ("rules of another market", market)
            market_state = data._markets[spec.symbol] = _MarketState(spec, window_minutes)
            market_state.status = MarketStatus(market["status"])
            market_state.market_seq = market["market_seq"]
            market_state.last_price_ticks = market["last_price_ticks"]
        for record in state["orders"]:
            data._add_open_order(record)
        for symbol, candles in minute_candles.items():
            assert symbol in data._markets, ("candles of an unknown market", symbol)
            data._markets[symbol].bars.seed(candles)
        for market_state in data._markets.values():
            market_state.bids.take_changes()
            market_state.asks.take_changes()
        return data

    @classmethod
    def from_exchange(
        cls,
        exchange: Exchange,
        minute_candles: Mapping[str, Sequence[Candle]] = _NO_CANDLES,
        *,
        window_minutes: int = DEFAULT_WINDOW_MINUTES,
    ) -> MarketData:
        """`from_snapshot` of a committed exchange's state, checked against its books."""
        data = cls.from_snapshot(exchange.state(), minute_candles, window_minutes=window_minutes)
        for symbol, market in exchange.markets.items():
            mine = data._markets[symbol]
            for side, theirs in ((mine.bids, market.book.bids), (mine.asks, market.book.asks)):
                expected = [
                    (lv.price_ticks, lv.total_lots, lv.order_count)
                    for lv in theirs.levels_best_first()
                ]
                assert side.aggregate() == expected, ("book does not match its orders", symbol)
        return data

    def _add_open_order(self, record: Mapping[str, Any]) -> None:
        """One open order of a snapshot (an `order_record`): it rests iff triggered."""
        in_book = bool(record["triggered"])
        order_type = OrderType(record["order_type"])
        assert not in_book or order_type in (_LIMIT, _STOP_LIMIT), ("resting market order", record)
        order = _OpenOrder(
            record["symbol"],
            Side(record["side"]),
            order_type,
            record["price_ticks"],
            record["quantity_lots"] - record["filled_lots"],
            in_book,
        )
        self._orders[record["order_id"]] = order
        if in_book:
            self._markets[order.symbol].side(order.side).add(
                order.price_ticks, order.remaining_lots
            )

    def subscribe(self, listener: BatchListener) -> None:
        """Tell `listener` of every later batch, after it is applied."""
        self._listeners.append(listener)

    @property
    def seq(self) -> int:
        """The seq of the last event applied (the snapshot's, before any batch)."""
        return self._seq

    # -- writes: one committed batch -------------------------------------------

    def apply(
        self, events: Sequence[Event], balances: Sequence[BalanceState] = ()
    ) -> MarketDataBatch:
        """Apply one committed batch, tell the listeners what it changed (and the balances
        it changed, which the read model passes on and does not keep), and return that."""
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
        batch = MarketDataBatch(events, balances, diffs, tuple(trades), frozenset(tickers_changed))
        touched.clear()
        trades.clear()
        for listener in self._listeners:
            listener.batch_applied(batch)
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
