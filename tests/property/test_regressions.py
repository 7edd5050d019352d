"""Failing examples the stateful property test found, kept as plain, named tests.

Each was shrunk by Hypothesis (`test_exchange_stateful.py`) when the suite was run
against the matching core as first committed (96ccbf6), and is restated here by
hand with the behaviour the trading rules require. The market is the suite's
BTC/USDT: one tick × one lot is one USDT minor unit, one lot is 10_000 BTC minor
units, maker fee 0.0005, taker fee 0.001, rounded up per order.
"""

from __future__ import annotations

from crossbook.domain import (
    CloseReason,
    CreateAsset,
    CreateMarket,
    Deposit,
    Event,
    Exchange,
    OrderStatus,
    OrderType,
    OrderUpdated,
    PlaceOrder,
    Side,
    StpMode,
    TradeExecuted,
)
from crossbook.domain.invariants import check_all

BTC = "BTC/USDT"
LOT = 10_000  # BTC minor units in one lot


def exchange_with_btc_market() -> Exchange:
    ex = Exchange()
    for code in ("BTC", "USDT"):
        ex.execute(CreateAsset(code, 8))
    ex.execute(
        CreateMarket(
            "BTC",
            "USDT",
            tick_size="0.0001",
            lot_size="0.0001",
            min_quantity="0.0001",
            max_quantity="100",
            max_price="0.02",
            maker_fee_rate="0.0005",
            taker_fee_rate="0.001",
        )
    )
    return ex


def run(ex: Exchange, command: object) -> list[Event]:
    events = ex.execute(command)  # type: ignore[arg-type]
    check_all(ex)
    return events


def sell_limit(user_id: int, price: int, lots: int) -> PlaceOrder:
    return PlaceOrder(
        user_id, BTC, Side.SELL, OrderType.LIMIT, quantity_lots=lots, price_ticks=price
    )


def balance(ex: Exchange, user_id: int, asset: str) -> tuple[int, int]:
    b = ex.ledger.balances.get((user_id, asset))
    return (0, 0) if b is None else (b.available, b.locked)


def last_update(events: list[Event], order_id: int) -> OrderUpdated:
    updates = [e for e in events if isinstance(e, OrderUpdated) and e.order_id == order_id]
    return updates[-1]


def test_budget_buy_that_runs_out_inside_a_maker_closes_filled() -> None:
    """Shrunk from: six one-lot bids at 95 filled by an eight-lot sell, which rested its
    last two lots at 95; then a market buy with a budget of 96 buys one lot (95 + fee 1)
    and cannot pay for a second.

    It stopped because it could not afford one more lot, having filled something, so
    it closes FILLED (reason filled) with its quantity set to what it filled, not
    EXPIRED no_liquidity.
    """
    ex = exchange_with_btc_market()
    run(ex, Deposit(2, "BTC", 2 * LOT))
    run(ex, Deposit(1, "USDT", 96))
    run(ex, sell_limit(2, 95, 2))
    events = run(ex, PlaceOrder(1, BTC, Side.BUY, OrderType.MARKET, quote_budget_units=96))

    trades = [e for e in events if isinstance(e, TradeExecuted)]
    assert [
        (t.price_ticks, t.quantity_lots, t.buyer_fee_units, t.seller_fee_units) for t in trades
    ] == [(95, 1, 1, 1)]
    closed = last_update(events, 2)
    assert (closed.status, closed.reason) == (OrderStatus.FILLED, CloseReason.FILLED)
    assert (closed.quantity_lots, closed.filled_lots, closed.reserved_units) == (1, 1, 0)
    assert balance(ex, 1, "USDT") == (0, 0)
    assert balance(ex, 1, "BTC") == (LOT, 0)
    assert balance(ex, 2, "USDT") == (94, 0)
    assert balance(ex, 2, "BTC") == (0, LOT)  # one lot still resting
    assert balance(ex, 0, "USDT") == (2, 0)
    assert ex.market(BTC).book.l3()[Side.SELL] == [(95, [(1, 1)])]


def test_budget_buy_stops_where_it_runs_out_and_leaves_own_orders_behind_alone() -> None:
    """Shrunk from: user 3's 11 lots and then user 2's own 1 lot rest at 96; user 2's
    market buy with a budget of 97 and STP cancel_maker affords one lot (96 + fee 1).

    The buy stops at the maker it cannot afford another lot of. It never reaches its
    own order behind that maker, so self-trade prevention must not cancel it.
    """
    ex = exchange_with_btc_market()
    run(ex, Deposit(3, "BTC", 11 * LOT))
    run(ex, Deposit(2, "BTC", LOT))
    run(ex, Deposit(2, "USDT", 97))
    run(ex, sell_limit(3, 96, 11))
    run(ex, sell_limit(2, 96, 1))
    events = run(
        ex,
        PlaceOrder(
            2,
            BTC,
            Side.BUY,
            OrderType.MARKET,
            quote_budget_units=97,
            stp_mode=StpMode.CANCEL_MAKER,
        ),
    )

    assert [
        (t.seller_order_id, t.quantity_lots) for t in events if isinstance(t, TradeExecuted)
    ] == [(1, 1)]
    assert last_update(events, 3).status is OrderStatus.FILLED
    assert not [e for e in events if isinstance(e, OrderUpdated) and e.order_id == 2]
    assert 2 in ex.orders  # the own sell order is still open
    assert ex.market(BTC).book.l3()[Side.SELL] == [(96, [(1, 10), (2, 1)])]
    assert balance(ex, 2, "BTC") == (LOT, LOT)  # bought one lot; one still locked


def test_waiting_stop_market_buy_passes_the_invariant_check() -> None:
    """Shrunk from: a stop-market buy (sized by a quote budget of 50, quantity 0) placed
    before any trade. It waits, holding its budget; the full invariant check must
    accept it rather than read quantity 0 as an over-filled order."""
    ex = exchange_with_btc_market()
    run(ex, Deposit(1, "USDT", 50))
    ex.execute(
        PlaceOrder(
            1,
            BTC,
            Side.BUY,
            OrderType.STOP_MARKET,
            quote_budget_units=50,
            stop_price_ticks=99,
        )
    )

    check_all(ex)
    waiting = ex.orders[1]
    assert (waiting.status, waiting.triggered, waiting.quantity_lots) == (
        OrderStatus.OPEN,
        False,
        0,
    )
    assert [o.order_id for o in ex.market(BTC).stops.orders()] == [1]
    assert balance(ex, 1, "USDT") == (0, 50)
