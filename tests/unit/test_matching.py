"""Price-time priority matching for limit and market orders."""

from typing import Any

import pytest

from crossbook.domain import (
    CloseReason,
    ErrorCode,
    ExchangeLimits,
    OrderStatus,
    OrderType,
    TimeInForce,
)

from unit_support import Harness, accepted_id, funded, last_update, trades


def test_better_price_first_then_earlier_order_first() -> None:
    h = funded()
    first = accepted_id(h.submit(1, "sell", "1", "50001"))
    second = accepted_id(h.submit(2, "sell", "1", "50000"))
    third = accepted_id(h.submit(3, "sell", "1", "50000"))
    fills = trades(h.submit(4, "buy", "2.5", "50001"))
    assert [(t.maker_order_id, h.spec().format_quantity(t.quantity_lots)) for t in fills] == [
        (second, "1.00000"),
        (third, "1.00000"),
        (first, "0.50000"),
    ]
    assert h.book()["asks"] == [("50001.00", "0.50000", 1)]


def test_limit_order_rests_when_it_does_not_cross() -> None:
    h = funded()
    events = h.submit(1, "buy", "1", "49000")
    assert not trades(events)
    assert h.book() == {"bids": [("49000.00", "1.00000", 1)], "asks": []}
    assert h.ex.orders[accepted_id(events)].status is OrderStatus.OPEN


def test_limit_taker_stops_at_its_limit_and_rests_the_remainder() -> None:
    h = funded()
    h.submit(1, "sell", "1", "50000")
    h.submit(1, "sell", "1", "50002")
    events = h.submit(2, "buy", "1.5", "50001")
    order_id = accepted_id(events)
    assert len(trades(events)) == 1
    update = last_update(events, order_id)
    assert update.status is OrderStatus.PARTIALLY_FILLED
    assert h.book() == {"bids": [("50001.00", "0.50000", 1)], "asks": [("50002.00", "1.00000", 1)]}


def test_market_buy_walks_levels_and_reserves_exactly_the_walk() -> None:
    h = funded()
    h.submit(1, "sell", "1", "50000")
    h.submit(1, "sell", "0.5", "50001")
    events = h.submit(2, "buy", "1.5")
    fills = trades(events)
    assert [h.spec().format_price(t.price_ticks) for t in fills] == ["50000.00", "50001.00"]
    assert last_update(events, accepted_id(events)).status is OrderStatus.FILLED
    cost = 50000 + 25000.5
    assert h.balance(2, "USDT") == (f"{1000000 - cost * 1.001:.8f}", "0.00000000")


def test_market_buy_not_covered_by_balance_is_rejected_whole() -> None:
    h = funded()
    h.fund(9, "USDT", "1000")
    h.submit(1, "sell", "1", "50000")
    h.reject(h.place(9, "buy", "1"), ErrorCode.INSUFFICIENT_BALANCE)
    assert h.book()["asks"] == [("50000.00", "1.00000", 1)]


def test_market_order_remainder_expires_without_liquidity() -> None:
    h = funded()
    h.submit(1, "buy", "0.5", "49000")
    events = h.submit(2, "sell", "2")
    order_id = accepted_id(events)
    update = last_update(events, order_id)
    assert (update.status, update.reason) == (OrderStatus.EXPIRED, CloseReason.NO_LIQUIDITY)
    assert h.spec().format_quantity(update.filled_lots) == "0.50000"
    assert h.balance(2, "BTC") == ("9.50000000", "0.00000000")  # the unsold 1.5 released


def test_market_buy_on_an_empty_book_expires_and_locks_nothing() -> None:
    h = funded()
    events = h.submit(2, "buy", "1")
    update = last_update(events, accepted_id(events))
    assert (update.status, update.reason) == (OrderStatus.EXPIRED, CloseReason.NO_LIQUIDITY)
    assert h.balance(2, "USDT") == ("1000000.00000000", "0.00000000")


def test_market_buy_by_quote_budget_spends_at_most_the_budget() -> None:
    h = funded()
    h.fund(9, "USDT", "2000")
    h.submit(1, "sell", "0.01", "50000")
    h.submit(1, "sell", "1", "60000")
    events = h.submit(9, "buy", quote="1100", order_type=OrderType.MARKET)
    fills = trades(events)
    spec = h.spec()
    # 0.01 @ 50,000 = 500 (+0.5 fee); then 599.4 left buys floor(599.4/60,060 per BTC) lots
    assert [spec.format_quantity(t.quantity_lots) for t in fills] == ["0.01000", "0.00998"]
    spent = sum(t.notional_units + t.buyer_fee_units for t in fills)
    assert spent <= spec.parse_quote_quantity("1100")
    update = last_update(events, accepted_id(events))
    assert (update.status, update.reason) == (OrderStatus.FILLED, CloseReason.FILLED)
    assert update.quantity_lots == update.filled_lots
    assert h.ex.ledger.locked(9, "USDT") == 0
    assert h.ex.ledger.available(9, "USDT") == spec.parse_quote_quantity("2000") - spent


def test_market_buy_by_quote_budget_expires_when_the_book_runs_out() -> None:
    h = funded()
    h.submit(1, "sell", "0.01", "50000")
    events = h.submit(2, "buy", quote="1000", order_type=OrderType.MARKET)
    update = last_update(events, accepted_id(events))
    assert (update.status, update.reason) == (OrderStatus.EXPIRED, CloseReason.NO_LIQUIDITY)
    assert h.spec().format_quantity(update.filled_lots) == "0.01000"


def test_fill_limit_expires_a_crossing_remainder_instead_of_resting_it() -> None:
    h = Harness(ExchangeLimits(max_fills_per_order=2))
    for user in (1, 2):
        h.fund(user, "BTC", "10")
        h.fund(user, "USDT", "1000000")
    for _ in range(3):
        h.submit(1, "sell", "1", "50000")
    events = h.submit(2, "buy", "3", "50000")
    assert len(trades(events)) == 2
    update = last_update(events, accepted_id(events))
    assert (update.status, update.reason) == (OrderStatus.EXPIRED, CloseReason.FILL_LIMIT)
    assert h.book()["bids"] == []


@pytest.mark.parametrize(
    ("side", "quantity", "price", "extra", "filled"),
    [
        pytest.param("buy", "3", None, {}, "2.00000", id="market-buy-by-quantity"),
        pytest.param("sell", "3", None, {}, "2.00000", id="market-sell"),
        pytest.param(
            "buy",
            None,
            None,
            {"quote": "200000", "order_type": OrderType.MARKET},
            "2.00000",
            id="market-buy-by-quote-budget",
        ),
        pytest.param("buy", "3", "50000", {"tif": TimeInForce.IOC}, "2.00000", id="ioc-limit"),
        pytest.param("buy", "3", "50000", {"tif": TimeInForce.FOK}, "0.00000", id="fok-limit"),
        pytest.param(
            "buy",
            "3",
            None,
            {"tif": TimeInForce.FOK, "order_type": OrderType.MARKET},
            "0.00000",
            id="fok-market",
        ),
    ],
)
def test_every_order_the_match_step_limit_cuts_closes_fill_limit(
    side: str, quantity: str | None, price: str | None, extra: dict[str, Any], filled: str
) -> None:
    """Liquidity remains after the second step: the limit, not the book, stopped the order."""
    h = funded(limits=ExchangeLimits(max_fills_per_order=2))
    maker_side, maker_price = ("sell", "50000") if side == "buy" else ("buy", "50000")
    for _ in range(3):
        h.submit(1, maker_side, "1", maker_price)
    events = h.submit(2, side, quantity, price, **extra)
    update = last_update(events, accepted_id(events))
    assert (update.status, update.reason) == (OrderStatus.EXPIRED, CloseReason.FILL_LIMIT)
    assert h.spec().format_quantity(update.filled_lots) == filled
    assert len(h.ex.orders) == 3 - len(trades(events))  # the makers left, none of the taker
