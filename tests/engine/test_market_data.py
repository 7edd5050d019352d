"""`MarketData`: the committed market projection against a real `Exchange`.

The main test drives an exchange with a seeded random stream of commands (every
order kind, cancels, amends, stops, GTD expiry, halts), applies the events of
several commands at a time as one batch, and checks after every batch that the
projection's book equals the exchange's, that the diffs reproduce the snapshots
and are gap-free, that `from_exchange` (seeded with candles built naively from
the trades) equals the incrementally built projection, and that tickers agree
with a naive computation over every trade. Unit tests pin the ticker window,
seeding, best bid/ask, caching and the asserted invariants.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from typing import Any

import pytest
from engine_fakes import FakeClock, MemoryStore

from crossbook.domain import (
    AmendOrder,
    CancelOrder,
    CreateAsset,
    CreateMarket,
    Deposit,
    DomainError,
    Event,
    Exchange,
    MarketStatus,
    OrderType,
    PlaceOrder,
    SetMarketStatus,
    Side,
    StpMode,
    Tick,
    TimeInForce,
    TradeExecuted,
)
from crossbook.domain.book import MAX_DEPTH_LEVELS
from crossbook.domain.exchange import BalanceState
from crossbook.engine.engine import Engine
from crossbook.engine.read_model.books import BookDiff, BookSnapshot, Level
from crossbook.engine.read_model.candles import MINUTE_MS
from crossbook.engine.read_model.market_data import MarketData, MarketDataBatch, Ticker
from crossbook.engine.read_model.records import Candle

BTC = "BTC/USDT"
ETH = "ETH/USDT"
SYMBOLS = (BTC, ETH)
USERS = (1, 2, 3, 4)
MID = 100  # ticks
BIG = 100_000  # more levels than any test book holds
START_MS = 1_700_000_040_000  # minute-aligned

# 1 tick x 1 lot = 0.0001 x 0.0001 = 1e-8 USDT = 1 quote unit; a lot is 10_000 base units
SETUP: tuple[Any, ...] = (
    *(CreateAsset(code, 8) for code in ("BTC", "ETH", "USDT")),
    *(
        CreateMarket(base, "USDT", "0.0001", "0.0001", "0.0001", "100", max_price="0.02")
        for base in ("BTC", "ETH")
    ),
    *(Deposit(user, asset, 10**12) for user in USERS for asset in ("BTC", "ETH", "USDT")),
)


# -- helpers -------------------------------------------------------------------------


def limit(
    user: int, side: Side, price: int, lots: int, symbol: str = BTC, **extra: Any
) -> PlaceOrder:
    return PlaceOrder(
        user, symbol, side, OrderType.LIMIT, quantity_lots=lots, price_ticks=price, **extra
    )


class Driver:
    """An exchange and its projection; each `batch` is one committed batch."""

    def __init__(self, window_minutes: int = 1_440, start_ms: int = START_MS) -> None:
        self.ex = Exchange()
        self.md = MarketData(window_minutes=window_minutes)
        self.window_minutes = window_minutes
        self.trades: list[TradeExecuted] = []
        self.batch(Tick(start_ms), *SETUP)

    def batch(self, *commands: Any) -> MarketDataBatch:
        events: list[Event] = []
        for command in commands:
            try:
                events.extend(self.ex.execute(command))
            except DomainError:
                continue
        batch = self.md.apply(events)
        self.trades.extend(e for e in events if isinstance(e, TradeExecuted))
        return batch

    def trade_at(self, now_ms: int, price: int, lots: int, symbol: str = BTC) -> MarketDataBatch:
        """One trade of `lots` at `price` at time `now_ms` (user 1 sells to user 2)."""
        return self.batch(
            Tick(now_ms),
            limit(1, Side.SELL, price, lots, symbol),
            limit(2, Side.BUY, price, lots, symbol),
        )

    def rebuilt(self) -> MarketData:
        return MarketData.from_exchange(
            self.ex, naive_candles(self.trades), window_minutes=self.window_minutes
        )


def levels(snapshot_side: Sequence[Level]) -> list[tuple[int, int, int]]:
    return [(lv.price_ticks, lv.quantity_lots, lv.order_count) for lv in snapshot_side]


def exchange_book(ex: Exchange, symbol: str) -> tuple[list[Any], list[Any]]:
    book = ex.markets[symbol].book
    return book.bids.depth(MAX_DEPTH_LEVELS), book.asks.depth(MAX_DEPTH_LEVELS)


def apply_diff(
    side: tuple[Level, ...], changes: tuple[Level, ...], bids: bool
) -> tuple[Level, ...]:
    by_price = {lv.price_ticks: lv for lv in side}
    for change in changes:
        assert by_price.get(change.price_ticks) != change, ("unchanged level in a diff", change)
        if change.quantity_lots == 0:
            assert change.order_count == 0, change
            assert change.price_ticks in by_price, ("removal of a missing level", change)
            del by_price[change.price_ticks]
        else:
            assert change.order_count > 0, change
            by_price[change.price_ticks] = change
    return tuple(sorted(by_price.values(), key=lambda lv: lv.price_ticks, reverse=bids))


def naive_candles(trades: Sequence[TradeExecuted]) -> dict[str, list[Candle]]:
    groups: dict[tuple[str, int], list[TradeExecuted]] = {}
    for trade in trades:
        key = (trade.symbol, trade.ts_ms - trade.ts_ms % MINUTE_MS)
        groups.setdefault(key, []).append(trade)
    candles: dict[str, list[Candle]] = {}
    for (symbol, minute), group in sorted(groups.items()):
        prices = [t.price_ticks for t in group]
        candles.setdefault(symbol, []).append(
            Candle(
                minute,
                prices[0],
                max(prices),
                min(prices),
                prices[-1],
                sum(t.quantity_lots for t in group),
                sum(t.notional_units for t in group),
                len(group),
            )
        )
    return candles


def naive_ticker(
    md: MarketData, trades: Sequence[TradeExecuted], symbol: str, now_ms: int, window: int
) -> Ticker:
    start = (now_ms // MINUTE_MS - window) * MINUTE_MS
    mine = [t for t in trades if t.symbol == symbol]
    inside = [t for t in mine if t.ts_ms >= start]
    prices = [t.price_ticks for t in inside]
    snapshot = md.book(symbol, 1)
    return Ticker(
        symbol=symbol,
        last_price_ticks=mine[-1].price_ticks if mine else 0,
        open_ticks=prices[0] if prices else 0,
        high_ticks=max(prices, default=0),
        low_ticks=min(prices, default=0),
        volume_lots=sum(t.quantity_lots for t in inside),
        quote_volume_units=sum(t.notional_units for t in inside),
        trade_count=len(inside),
        best_bid=snapshot.bids[0] if snapshot.bids else None,
        best_ask=snapshot.asks[0] if snapshot.asks else None,
        window_start_ms=start,
    )


# -- random commands -----------------------------------------------------------------


def random_command(rng: random.Random, ex: Exchange) -> Any:
    symbol = rng.choice(SYMBOLS)
    market = ex.markets[symbol]
    user = rng.choice(USERS)
    side = rng.choice((Side.BUY, Side.SELL))
    roll = rng.random()
    if market.status is MarketStatus.HALTED and rng.random() < 0.3:
        return SetMarketStatus(symbol, MarketStatus.ACTIVE)  # halts are short
    if roll < 0.45:
        tif = rng.choice((TimeInForce.GTC,) * 4 + (TimeInForce.IOC, TimeInForce.FOK))
        expire = None
        if rng.random() < 0.2:
            tif, expire = TimeInForce.GTD, ex.now_ms + rng.randint(1, 8_000)
        return limit(
            user,
            side,
            MID + (rng.randint(-8, 3) if side is Side.BUY else rng.randint(-3, 8)),
            rng.randint(1, 20),
            symbol,
            time_in_force=tif,
            expire_at_ms=expire,
            post_only=rng.random() < 0.15,
            stp_mode=rng.choice(tuple(StpMode)),
        )
    if roll < 0.52:
        if side is Side.BUY and rng.random() < 0.5:
            return PlaceOrder(
                user, symbol, side, OrderType.MARKET, quote_budget_units=rng.randint(50, 3_000)
            )
        return PlaceOrder(user, symbol, side, OrderType.MARKET, quantity_lots=rng.randint(1, 30))
    if roll < 0.62:
        return random_stop(rng, user, symbol, side, market.last_price_ticks or MID)
    if roll < 0.70 and ex.orders:
        order = ex.orders[rng.choice(sorted(ex.orders))]
        return CancelOrder(order.user_id, order_id=order.order_id)
    if roll < 0.86 and ex.orders:
        order = ex.orders[rng.choice(sorted(ex.orders))]
        change = rng.random()
        price = MID + rng.randint(-8, 8) if change < 0.7 else None
        lots = rng.randint(1, 25) if change > 0.4 else None
        return AmendOrder(order.user_id, order.order_id, quantity_lots=lots, price_ticks=price)
    if roll < 0.95:
        return Tick(ex.now_ms + rng.randint(0, 4_000))
    if roll < 0.965:
        return SetMarketStatus(symbol, rng.choice(tuple(MarketStatus)))
    return Deposit(user, rng.choice(("BTC", "ETH", "USDT")), rng.randint(1, 10**6))


def random_stop(rng: random.Random, user: int, symbol: str, side: Side, last: int) -> PlaceOrder:
    offset = rng.choice((1, 1, 2, 3, 4, 0))  # 0 would trigger at once: refused
    stop = last + offset if side is Side.BUY else last - offset
    if rng.random() < 0.5:
        return PlaceOrder(
            user,
            symbol,
            side,
            OrderType.STOP_LIMIT,
            quantity_lots=rng.randint(1, 20),
            price_ticks=stop + rng.randint(-1, 3) * (1 if side is Side.BUY else -1),
            stop_price_ticks=stop,
            post_only=rng.random() < 0.1,
        )
    if side is Side.BUY:
        return PlaceOrder(
            user,
            symbol,
            side,
            OrderType.STOP_MARKET,
            quote_budget_units=rng.randint(50, 3_000),
            stop_price_ticks=stop,
        )
    return PlaceOrder(
        user,
        symbol,
        side,
        OrderType.STOP_MARKET,
        quantity_lots=rng.randint(1, 20),
        stop_price_ticks=stop,
    )


def check_batch(
    driver: Driver,
    batch: MarketDataBatch,
    before: dict[str, BookSnapshot],
) -> dict[str, BookSnapshot]:
    """Every property of one applied batch; returns the new full snapshots."""
    ex, md = driver.ex, driver.md
    after: dict[str, BookSnapshot] = {}
    batch_trades = tuple(e for e in batch.events if isinstance(e, TradeExecuted))
    assert batch.trades == batch_trades
    for symbol in SYMBOLS:
        market = ex.markets[symbol]
        snapshot = after[symbol] = md.book(symbol, BIG)
        bids, asks = exchange_book(ex, symbol)
        assert (levels(snapshot.bids), levels(snapshot.asks)) == (bids, asks)
        assert snapshot.market_seq == market.market_seq
        assert md.book(symbol, 3) == BookSnapshot(
            symbol, market.market_seq, snapshot.bids[:3], snapshot.asks[:3]
        )
        old = before[symbol]
        diff = batch.book_diffs.get(symbol)
        if market.market_seq == old.market_seq:
            assert diff is None
        else:
            assert diff is not None
            assert diff.first_market_seq == old.market_seq + 1
            assert diff.last_market_seq == market.market_seq
            assert apply_diff(old.bids, diff.bids, bids=True) == snapshot.bids
            assert apply_diff(old.asks, diff.asks, bids=False) == snapshot.asks
        best_changed = (old.bids[:1], old.asks[:1]) != (snapshot.bids[:1], snapshot.asks[:1])
        traded = any(t.symbol == symbol for t in batch_trades)
        assert (symbol in batch.tickers_changed) == (best_changed or traded)
        ticker = md.ticker(symbol, ex.now_ms)
        assert ticker.last_price_ticks == market.last_price_ticks
        expected = naive_ticker(md, driver.trades, symbol, ex.now_ms, driver.window_minutes)
        assert ticker == expected
        info = md.market(symbol)
        assert info is not None
        assert (info.spec, info.status, info.market_seq) == (
            market.spec,
            market.status,
            market.market_seq,
        )
    assert set(batch.book_diffs) <= set(SYMBOLS)
    return after


def check_rebuilt_equal(driver: Driver) -> None:
    ex, md, rebuilt = driver.ex, driver.md, driver.rebuilt()
    assert rebuilt.assets() == md.assets()
    assert rebuilt.markets() == md.markets()
    for symbol in SYMBOLS:
        assert rebuilt.book(symbol, BIG) == md.book(symbol, BIG)
        for now_ms in (ex.now_ms, ex.now_ms + 2 * MINUTE_MS, ex.now_ms + 10 * MINUTE_MS):
            assert rebuilt.ticker(symbol, now_ms) == md.ticker(symbol, now_ms)
    for order_id in range(1, ex.next_order_id + 1):
        order = ex.orders.get(order_id)
        expected = None if order is None else order.side
        assert md.open_order_side(order_id) == rebuilt.open_order_side(order_id) == expected


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_random_batches_keep_the_projection_equal_to_the_exchange(seed: int) -> None:
    rng = random.Random(seed)
    driver = Driver(window_minutes=3)
    snapshots = {s: driver.md.book(s, BIG) for s in SYMBOLS}
    check_rebuilt_equal(driver)
    counts = {"trades": 0, "diffs": 0, "stops": 0}
    for _ in range(250):
        commands = [Tick(driver.ex.now_ms + rng.randint(0, 3_000))]
        commands += [random_command(rng, driver.ex) for _ in range(rng.randint(1, 8))]
        batch = driver.batch(*commands)
        snapshots = check_batch(driver, batch, snapshots)
        check_rebuilt_equal(driver)
        counts["trades"] += len(batch.trades)
        counts["diffs"] += sum(bool(d.bids or d.asks) for d in batch.book_diffs.values())
        counts["stops"] += sum(not o.triggered for o in driver.ex.orders.values())
    # the stream reached the situations it is meant to cover
    assert counts["trades"] > 100 and counts["diffs"] > 100 and counts["stops"] > 0


# -- the book --------------------------------------------------------------------------


def test_an_empty_projection_follows_setup_events() -> None:
    driver = Driver()
    md = driver.md
    assert set(md.assets()) == {"BTC", "ETH", "USDT"}
    assert md.assets()["BTC"].decimals == 8
    assert set(md.markets()) == {BTC, ETH}
    info = md.markets()[BTC]
    assert (info.status, info.market_seq) == (MarketStatus.ACTIVE, 1)
    assert md.market("XRP/USDT") is None
    assert md.book(BTC, 10) == BookSnapshot(BTC, 1, (), ())


def test_setup_batch_has_one_diff_per_created_market() -> None:
    ex, md = Exchange(), MarketData()
    events = [e for command in SETUP for e in ex.execute(command)]
    batch = md.apply(events)
    assert batch.book_diffs == {
        BTC: BookDiff(BTC, 1, 1, (), ()),
        ETH: BookDiff(ETH, 1, 1, (), ()),
    }
    assert batch.trades == () and batch.tickers_changed == frozenset()


def test_best_bid_and_ask_and_depth() -> None:
    driver = Driver()
    batch = driver.batch(
        limit(1, Side.BUY, 98, 2),
        limit(2, Side.BUY, 99, 3),
        limit(3, Side.BUY, 99, 4),
        limit(1, Side.SELL, 101, 5),
        limit(2, Side.SELL, 103, 1),
    )
    assert batch.tickers_changed == frozenset({BTC})
    assert batch.book_diffs[BTC] == BookDiff(
        BTC,
        2,
        6,
        (Level(99, 7, 2), Level(98, 2, 1)),
        (Level(101, 5, 1), Level(103, 1, 1)),
    )
    ticker = driver.md.ticker(BTC, START_MS)
    assert ticker.best_bid == Level(99, 7, 2)
    assert ticker.best_ask == Level(101, 5, 1)
    assert driver.md.book(BTC, 1) == BookSnapshot(BTC, 6, (Level(99, 7, 2),), (Level(101, 5, 1),))
    eth = driver.md.ticker(ETH, START_MS)
    assert eth.best_bid is None and eth.best_ask is None

    deeper = driver.batch(limit(4, Side.BUY, 97, 1))  # below the best: no ticker change
    assert deeper.tickers_changed == frozenset()
    assert deeper.book_diffs[BTC].bids == (Level(97, 1, 1),)

    taken = driver.batch(PlaceOrder(4, BTC, Side.SELL, OrderType.MARKET, quantity_lots=8))
    assert taken.tickers_changed == frozenset({BTC})
    assert taken.book_diffs[BTC].bids == (Level(99, 0, 0), Level(98, 1, 1))
    assert taken.book_diffs[BTC].asks == ()
    assert driver.md.ticker(BTC, START_MS).best_bid == Level(98, 1, 1)


def test_snapshots_are_cached_until_the_market_changes() -> None:
    driver = Driver()
    driver.batch(limit(1, Side.BUY, 99, 3))
    first = driver.md.book(BTC, 5)
    assert driver.md.book(BTC, 5) is first
    assert driver.md.book(BTC, 10) == BookSnapshot(BTC, first.market_seq, first.bids, first.asks)
    driver.batch(Deposit(1, "USDT", 5))  # no market event: the cache stays
    assert driver.md.book(BTC, 5) is first
    driver.batch(limit(1, Side.SELL, 101, 3, ETH))  # another market
    assert driver.md.book(BTC, 5) is first
    driver.batch(limit(2, Side.BUY, 99, 1))
    second = driver.md.book(BTC, 5)
    assert second.bids == (Level(99, 4, 2),) and second.market_seq == first.market_seq + 1
    for depth in range(1, 30):  # many depths: the cache stays bounded and right
        assert driver.md.book(BTC, depth) == second


def test_a_status_change_advances_the_diff_stream_with_no_level_changes() -> None:
    driver = Driver()
    batch = driver.batch(SetMarketStatus(BTC, MarketStatus.HALTED))
    assert batch.book_diffs == {BTC: BookDiff(BTC, 2, 2, (), ())}
    info = driver.md.market(BTC)
    assert info is not None and info.status is MarketStatus.HALTED
    assert driver.md.markets()[BTC].status is MarketStatus.HALTED


def test_amends_move_and_resize_levels() -> None:
    driver = Driver()
    driver.batch(limit(1, Side.BUY, 99, 5), limit(2, Side.BUY, 99, 1))
    order_id = min(driver.ex.orders)
    batch = driver.batch(AmendOrder(1, order_id, quantity_lots=8))  # grows: to the back
    assert batch.book_diffs[BTC].bids == (Level(99, 9, 2),)
    batch = driver.batch(AmendOrder(1, order_id, quantity_lots=2))  # shrinks in place
    assert batch.book_diffs[BTC].bids == (Level(99, 3, 2),)
    batch = driver.batch(AmendOrder(1, order_id, price_ticks=97))
    assert batch.book_diffs[BTC].bids == (Level(99, 1, 1), Level(97, 2, 1))
    assert levels(driver.md.book(BTC, BIG).bids) == exchange_book(driver.ex, BTC)[0]


def test_stops_are_tracked_but_not_in_the_book_until_triggered() -> None:
    driver = Driver()
    driver.trade_at(START_MS, 100, 1)
    stop_limit = PlaceOrder(
        3,
        BTC,
        Side.BUY,
        OrderType.STOP_LIMIT,
        quantity_lots=4,
        price_ticks=102,
        stop_price_ticks=101,
    )
    stop_market = PlaceOrder(
        3, BTC, Side.SELL, OrderType.STOP_MARKET, quantity_lots=4, stop_price_ticks=95
    )
    batch = driver.batch(stop_limit, stop_market)
    limit_id, market_id = sorted(driver.ex.orders)
    assert batch.book_diffs[BTC].bids == () and batch.book_diffs[BTC].asks == ()
    assert driver.md.open_order_side(limit_id) is Side.BUY
    assert driver.md.open_order_side(market_id) is Side.SELL
    batch = driver.trade_at(START_MS, 101, 1)  # triggers the buy stop: it rests at 102
    assert driver.md.book(BTC, 5).bids == (Level(102, 4, 1),)
    assert batch.tickers_changed == frozenset({BTC})
    driver.batch(CancelOrder(3, order_id=market_id))
    assert driver.md.open_order_side(market_id) is None
    assert driver.md.open_order_side(10**9) is None


def test_gtd_expiry_removes_the_level() -> None:
    driver = Driver()
    driver.batch(
        limit(1, Side.SELL, 101, 2, time_in_force=TimeInForce.GTD, expire_at_ms=START_MS + 5)
    )
    assert driver.md.book(BTC, 5).asks == (Level(101, 2, 1),)
    batch = driver.batch(Tick(START_MS + 5))
    assert batch.book_diffs[BTC].asks == (Level(101, 0, 0),)
    assert driver.md.book(BTC, 5).asks == ()


# -- the ticker ------------------------------------------------------------------------


def test_ticker_of_a_market_that_never_traded() -> None:
    driver = Driver()
    now = START_MS + 12_345
    assert driver.md.ticker(BTC, now) == Ticker(
        BTC, 0, 0, 0, 0, 0, 0, 0, None, None, START_MS - 1_440 * MINUTE_MS
    )


def test_ticker_open_high_low_and_volumes() -> None:
    driver = Driver()
    driver.trade_at(START_MS + 5_000, 100, 2)
    driver.trade_at(START_MS + 61_000, 105, 1)
    driver.trade_at(START_MS + 61_500, 103, 4)
    batch = driver.trade_at(START_MS + 2 * MINUTE_MS, 98, 3)
    assert batch.tickers_changed == frozenset({BTC})
    assert [t.price_ticks for t in batch.trades] == [98]
    ticker = driver.md.ticker(BTC, START_MS + 2 * MINUTE_MS + 1)
    assert (ticker.last_price_ticks, ticker.open_ticks, ticker.high_ticks, ticker.low_ticks) == (
        98,
        100,
        105,
        98,
    )
    assert (ticker.volume_lots, ticker.quote_volume_units, ticker.trade_count) == (
        10,
        100 * 2 + 105 + 103 * 4 + 98 * 3,
        4,
    )
    assert driver.md.ticker(ETH, START_MS).trade_count == 0


def test_ticker_window_edges() -> None:
    driver = Driver()
    trade_ms = START_MS + 30_000  # in the minute starting at START_MS
    driver.trade_at(trade_ms, 100, 2)
    day = 1_440 * MINUTE_MS
    for now_ms in (trade_ms, START_MS + day, START_MS + day + MINUTE_MS - 1):
        ticker = driver.md.ticker(BTC, now_ms)
        assert ticker.trade_count == 1 and ticker.open_ticks == 100, now_ms
        assert ticker.window_start_ms <= START_MS
    gone = driver.md.ticker(BTC, START_MS + day + MINUTE_MS)
    assert gone.window_start_ms == START_MS + MINUTE_MS
    assert (gone.trade_count, gone.volume_lots, gone.open_ticks, gone.high_ticks) == (0, 0, 0, 0)
    assert gone.last_price_ticks == 100  # the last price outlives the window
    # every trade of the last 24 h is in the window
    assert driver.md.ticker(BTC, trade_ms + day - 1).trade_count == 1


def test_bars_older_than_the_window_drop_out() -> None:
    driver = Driver(window_minutes=3)
    for minute in range(10):
        driver.trade_at(START_MS + minute * MINUTE_MS + 1_000, 100 + minute, 1)
        bars = driver.md._markets[BTC].bars.bars  # memory bound: window + 1 bars
        assert len(bars) == min(minute + 1, 4)
    now = START_MS + 9 * MINUTE_MS + 2_000
    ticker = driver.md.ticker(BTC, now)
    assert ticker.window_start_ms == START_MS + 6 * MINUTE_MS
    assert (ticker.open_ticks, ticker.high_ticks, ticker.low_ticks) == (106, 109, 106)
    assert (ticker.trade_count, ticker.volume_lots) == (4, 4)
    later = driver.md.ticker(BTC, now + 2 * MINUTE_MS)
    assert (later.open_ticks, later.trade_count) == (108, 2)
    # a gap in trading: the next trade prunes every bar out of its window
    driver.trade_at(START_MS + 100 * MINUTE_MS, 90, 1)
    assert len(driver.md._markets[BTC].bars.bars) == 1
    assert driver.md.ticker(BTC, START_MS + 100 * MINUTE_MS).trade_count == 1


def test_ticker_seeded_from_candles() -> None:
    driver = Driver()
    driver.trade_at(START_MS + 1_000, 100, 2)
    driver.trade_at(START_MS + MINUTE_MS + 1_000, 104, 1)
    driver.trade_at(START_MS + MINUTE_MS + 2_000, 102, 1)
    seeded = MarketData.from_exchange(driver.ex, naive_candles(driver.trades))
    now = START_MS + MINUTE_MS + 3_000
    assert seeded.ticker(BTC, now) == driver.md.ticker(BTC, now)
    assert seeded.ticker(BTC, now).trade_count == 3
    # a trade in the same minute as the last candle merges into it
    events = driver.ex.execute(Tick(now))
    events += driver.ex.execute(limit(1, Side.SELL, 99, 5))
    events += driver.ex.execute(limit(2, Side.BUY, 99, 5))
    seeded.apply(events)
    driver.md.apply(events)
    ticker = seeded.ticker(BTC, now)
    assert ticker == driver.md.ticker(BTC, now)
    assert (ticker.open_ticks, ticker.high_ticks, ticker.low_ticks) == (100, 104, 99)
    assert (ticker.volume_lots, ticker.trade_count, ticker.last_price_ticks) == (9, 4, 99)
    # without candles only the last price survives a rebuild
    bare = MarketData.from_exchange(driver.ex).ticker(BTC, now)
    assert (bare.last_price_ticks, bare.trade_count) == (99, 0)


def test_seeding_keeps_at_most_window_plus_one_candles() -> None:
    driver = Driver()
    candles = [Candle(START_MS + i * MINUTE_MS, 100, 100, 100, 100, 1, 100, 1) for i in range(10)]
    md = MarketData.from_exchange(driver.ex, {BTC: candles}, window_minutes=3)
    assert len(md._markets[BTC].bars.bars) == 4
    assert md.ticker(BTC, START_MS + 9 * MINUTE_MS).trade_count == 4


# -- asserted invariants and refusals ---------------------------------------------------


def test_a_market_seq_gap_is_a_bug() -> None:
    driver = Driver()
    events = driver.ex.execute(limit(1, Side.BUY, 99, 1))
    events += driver.ex.execute(limit(1, Side.BUY, 98, 1))
    market_events = [e for e in events if e.market_seq]
    with pytest.raises(AssertionError, match="market_seq gap"):
        driver.md.apply(market_events[1:])


def test_an_event_for_an_unknown_market_is_a_bug() -> None:
    ex = Exchange()
    for command in SETUP:
        ex.execute(command)
    halted = ex.execute(SetMarketStatus(BTC, MarketStatus.HALTED))
    with pytest.raises(AssertionError, match="unknown market"):
        MarketData().apply(halted)


def test_reads_refuse_unknown_markets_and_bad_depths() -> None:
    driver = Driver()
    with pytest.raises(KeyError):
        driver.md.book("XRP/USDT", 5)
    with pytest.raises(KeyError):
        driver.md.ticker("XRP/USDT", START_MS)
    with pytest.raises(ValueError, match="depth"):
        driver.md.book(BTC, 0)
    with pytest.raises(ValueError, match="window_minutes"):
        MarketData(window_minutes=0)


def test_returned_mappings_are_read_only_snapshots() -> None:
    driver = Driver()
    markets, assets = driver.md.markets(), driver.md.assets()
    with pytest.raises(TypeError):
        markets[BTC] = markets[ETH]  # type: ignore[index]
    driver.batch(SetMarketStatus(BTC, MarketStatus.HALTED), CreateAsset("XRP", 6))
    assert markets[BTC].status is MarketStatus.ACTIVE  # the old value is unchanged
    assert driver.md.markets()[BTC].status is MarketStatus.HALTED
    assert "XRP" not in assets and driver.md.assets()["XRP"].decimals == 6


# -- built from a snapshot ---------------------------------------------------------------


def stored_form(state: dict[str, Any]) -> dict[str, Any]:
    """`Exchange.state()` as `Store.load_state()` gives it (no books), through JSON."""
    state = json.loads(json.dumps(state))
    for market in state["markets"]:
        del market["book"], market["stops"]
    return state


def assert_same_read_model(got: MarketData, want: MarketData, now_ms: int) -> None:
    assert got.seq == want.seq
    assert got.assets() == want.assets()
    assert got.markets() == want.markets()
    for symbol in SYMBOLS:
        assert got.book(symbol, BIG) == want.book(symbol, BIG)
        for at_ms in (now_ms, now_ms + 2 * MINUTE_MS, now_ms + 10 * MINUTE_MS):
            assert got.ticker(symbol, at_ms) == want.ticker(symbol, at_ms)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_a_read_model_from_a_snapshot_follows_the_events_after_it(seed: int) -> None:
    """Built from the snapshot at seq N (and the minute candles of the trades up to
    it), then fed the batches N+1..M, the read model equals the one fed from the
    start and the one built from the exchange at M, and it reports the same changes
    for every batch: a gateway that starts late streams what one from the start does."""
    rng = random.Random(seed)
    driver = Driver(window_minutes=3)
    followers: list[tuple[MarketData, list[MarketDataBatch]]] = []
    for step in range(120):
        if step % 30 == 0:
            for state in (driver.ex.state(), stored_form(driver.ex.state())):
                follower = MarketData.from_snapshot(
                    state, naive_candles(driver.trades), window_minutes=3
                )
                assert_same_read_model(follower, driver.md, driver.ex.now_ms)
                followers.append((follower, []))
        commands = [Tick(driver.ex.now_ms + rng.randint(0, 20_000))]
        commands += [random_command(rng, driver.ex) for _ in range(rng.randint(1, 8))]
        batch = driver.batch(*commands)
        for follower, batches in followers:
            batches.append(follower.apply(batch.events))
            assert batches[-1] == batch
    assert len(driver.trades) > 50  # the run traded, across many minutes
    assert driver.trades[-1].ts_ms - driver.trades[0].ts_ms > 10 * MINUTE_MS
    rebuilt = driver.rebuilt()
    for follower, _ in followers:
        assert_same_read_model(follower, driver.md, driver.ex.now_ms)
        assert_same_read_model(follower, rebuilt, driver.ex.now_ms)
        for order_id in range(1, driver.ex.next_order_id + 1):
            assert follower.open_order_side(order_id) == driver.md.open_order_side(order_id)


def test_a_read_model_from_no_snapshot_is_empty_and_follows_from_seq_1() -> None:
    md = MarketData.from_snapshot(None)
    assert (md.seq, dict(md.markets()), dict(md.assets())) == (0, {}, {})
    ex = Exchange()
    batch = md.apply([e for command in SETUP for e in ex.execute(command)])
    assert set(batch.book_diffs) == {BTC, ETH} and md.seq == ex.seq


class Recorder:
    """A `BatchListener` that checks it is told only once the batch is applied."""

    def __init__(self, md: MarketData, name: str, log: list[tuple[str, MarketDataBatch]]) -> None:
        self.md, self.name, self.log = md, name, log

    def batch_applied(self, batch: MarketDataBatch) -> None:
        assert self.md.seq == batch.events[-1].seq
        assert self.md.book(BTC, BIG).market_seq == self.md.markets()[BTC].market_seq
        self.log.append((self.name, batch))


def test_listeners_hear_of_every_batch_once_applied_in_subscription_order() -> None:
    driver = Driver()
    log: list[tuple[str, MarketDataBatch]] = []
    for name in ("first", "second"):
        driver.md.subscribe(Recorder(driver.md, name, log))
    applied = [driver.batch(limit(1, Side.BUY, 99, 2)), driver.trade_at(START_MS, 100, 1)]
    assert log == [(name, batch) for batch in applied for name in ("first", "second")]


# -- fed by the engine -------------------------------------------------------------------


class MarketDataPublisher:
    """A publisher that projects every committed batch (as the API's will)."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.md = MarketData()
        self.batches: list[MarketDataBatch] = []

    def publish(self, events: Sequence[Event], balances: Sequence[BalanceState]) -> None:
        assert events[-1].seq <= self.store.committed_seq, "published before commit"
        self.batches.append(self.md.apply(events, balances))


def test_projection_fed_by_the_engine_matches_its_exchange() -> None:
    async def main() -> None:
        store = MemoryStore()
        publisher = MarketDataPublisher(store)
        engine = Engine(store, publisher, FakeClock(START_MS))
        await engine.start()
        try:
            for command in SETUP:
                await engine.submit(command)
            rng = random.Random(7)
            for _ in range(20):
                commands = [random_command(rng, engine.exchange) for _ in range(10)]
                await asyncio.gather(*(engine.submit(c) for c in commands), return_exceptions=True)
                for symbol in SYMBOLS:
                    snapshot = publisher.md.book(symbol, BIG)
                    bids, asks = exchange_book(engine.exchange, symbol)
                    assert (levels(snapshot.bids), levels(snapshot.asks)) == (bids, asks)
            rebuilt = MarketData.from_exchange(engine.exchange)
            for symbol in SYMBOLS:
                assert rebuilt.book(symbol, BIG) == publisher.md.book(symbol, BIG)
        finally:
            await engine.stop()

    asyncio.run(main())
