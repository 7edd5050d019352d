"""Happy path, end to end: orders over HTTP to a `crossbook serve` process on PostgreSQL.

The seed's four scenarios: a market order filled at one level (the seed's fee
example), a market order walking several levels, a limit order matching at once,
and a limit order resting and filled later. Each asserts the exact amounts and
statuses, then the scenario's integrity (`Scenario.check_integrity`).
Fees: maker 0.0005, taker 0.001 of the notional, in the quote asset, rounded up to
a whole minor unit once per order.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from e2e_support import Balance, Scenario, balance_of, rest_levels

pytestmark = pytest.mark.postgres


def test_market_order_filled_at_one_level_has_the_seed_fees(scenario: Scenario) -> None:
    """Maker sells 1 BTC at 50,000; a market buy of 1 takes it: buyer -50,050 USDT,
    seller +49,975 USDT, fee account +75 USDT, 1 BTC moves."""
    market = scenario.market()
    seller = scenario.trader({market.base: "1"})
    buyer = scenario.trader({market.quote: "100000"})
    fees_before = scenario.exchange.balances(0).get(market.quote)
    assert fees_before is None  # a new asset: the fee account never held it

    ask = seller.place(market, side="sell", type="limit", quantity="1", price="50000")
    assert ask["order"]["status"] == "open" and ask["trades"] == []
    placed = buyer.place(market, side="buy", type="market", quantity="1")

    order = placed["order"]
    assert (order["status"], order["close_reason"], order["time_in_force"]) == (
        "filled",
        "filled",
        "IOC",
    )
    assert (order["filled_quantity"], order["filled_quote_quantity"], order["fee"]) == (
        "1.0000",
        "50000.000000",
        "50.000000",
    )
    (trade,) = placed["trades"]
    assert {k: trade[k] for k in ("price", "quantity", "quote_quantity", "side", "liquidity")} == {
        "price": "50000.00",
        "quantity": "1.0000",
        "quote_quantity": "50000.000000",
        "side": "buy",
        "liquidity": "taker",
    }
    assert (trade["fee"], trade["buyer_fee"], trade["seller_fee"]) == (
        "50.000000",
        "50.000000",
        "25.000000",
    )
    maker = seller.order(ask["order"]["id"])
    assert (maker["status"], maker["filled_quantity"], maker["fee"]) == (
        "filled",
        "1.0000",
        "25.000000",
    )

    buyer_quote = buyer.balances()[market.quote]
    seller_quote = seller.balances()[market.quote]
    fee_quote = scenario.exchange.balances(0)[market.quote]
    assert Decimal(buyer_quote.total) - Decimal("100000") == Decimal("-50050")
    assert Decimal(seller_quote.total) == Decimal("49975")
    assert Decimal(fee_quote.total) == Decimal("75")
    assert buyer_quote == Balance("49950.000000", "0.000000", "49950.000000")
    assert seller_quote == Balance("49975.000000", "0.000000", "49975.000000")
    assert fee_quote == Balance("75.000000", "0.000000", "75.000000")
    assert buyer.balances()[market.base] == Balance("1.00000000", "0.00000000", "1.00000000")
    assert balance_of(seller.balances(), market.base, 8).total == "0.00000000"
    book = scenario.book(market)
    assert (book["bids"], book["asks"]) == ([], [])
    scenario.check_integrity()


def test_market_order_walks_several_levels(scenario: Scenario) -> None:
    market = scenario.market()
    seller = scenario.trader({market.base: "2"})
    buyer = scenario.trader({market.quote: "60000"})
    asks = [
        seller.place(market, side="sell", type="limit", quantity=q, price=p)["order"]
        for q, p in (("0.5", "50000"), ("0.3", "50100"), ("1", "50200"))
    ]
    assert rest_levels(scenario.book(market), "asks") == [
        ("50000.00", "0.5000", 1),
        ("50100.00", "0.3000", 1),
        ("50200.00", "1.0000", 1),
    ]

    placed = buyer.place(market, side="buy", type="market", quantity="1")

    fills = [(t["price"], t["quantity"], t["quote_quantity"]) for t in placed["trades"]]
    assert fills == [
        ("50000.00", "0.5000", "25000.000000"),
        ("50100.00", "0.3000", "15030.000000"),
        ("50200.00", "0.2000", "10040.000000"),
    ]
    order = placed["order"]
    assert (order["status"], order["filled_quantity"]) == ("filled", "1.0000")
    assert (order["filled_quote_quantity"], order["fee"]) == ("50070.000000", "50.070000")
    makers = [seller.order(a["id"]) for a in asks]
    assert [(m["status"], m["filled_quantity"], m["fee"]) for m in makers] == [
        ("filled", "0.5000", "12.500000"),
        ("filled", "0.3000", "7.515000"),
        ("partially_filled", "0.2000", "5.020000"),
    ]
    assert buyer.balances() == {
        market.base: Balance("1.00000000", "0.00000000", "1.00000000"),
        market.quote: Balance("9879.930000", "0.000000", "9879.930000"),
    }
    assert seller.balances() == {
        market.base: Balance("0.20000000", "0.80000000", "1.00000000"),
        market.quote: Balance("50044.965000", "0.000000", "50044.965000"),
    }
    assert scenario.exchange.balances(0)[market.quote].total == "75.105000"
    book = scenario.book(market)
    assert (rest_levels(book, "bids"), rest_levels(book, "asks")) == (
        [],
        [("50200.00", "0.8000", 1)],
    )
    scenario.check_integrity()


def test_limit_order_matches_immediately_at_the_resting_price(scenario: Scenario) -> None:
    market = scenario.market()
    seller = scenario.trader({market.base: "3"})
    buyer = scenario.trader({market.quote: "5000"})
    ask = seller.place(market, side="sell", type="limit", quantity="3", price="2000")["order"]

    placed = buyer.place(market, side="buy", type="limit", quantity="2", price="2010")

    order = placed["order"]
    assert (order["status"], order["close_reason"], order["price"]) == (
        "filled",
        "filled",
        "2010.00",
    )
    assert (order["filled_quantity"], order["filled_quote_quantity"], order["fee"]) == (
        "2.0000",
        "4000.000000",
        "4.000000",
    )
    (trade,) = placed["trades"]
    assert (trade["price"], trade["quantity"], trade["liquidity"]) == ("2000.00", "2.0000", "taker")
    # price improvement: nothing of the 2,010 limit's reservation stays locked
    assert buyer.balances() == {
        market.base: Balance("2.00000000", "0.00000000", "2.00000000"),
        market.quote: Balance("996.000000", "0.000000", "996.000000"),
    }
    maker = seller.order(ask["id"])
    assert (maker["status"], maker["filled_quantity"], maker["fee"]) == (
        "partially_filled",
        "2.0000",
        "2.000000",
    )
    assert seller.balances() == {
        market.base: Balance("0.00000000", "1.00000000", "1.00000000"),
        market.quote: Balance("3998.000000", "0.000000", "3998.000000"),
    }
    assert rest_levels(scenario.book(market), "asks") == [("2000.00", "1.0000", 1)]
    scenario.check_integrity()


def test_limit_order_rests_and_is_filled_later(scenario: Scenario) -> None:
    """A resting buy of 0.0003 at 33,333.33 (notional 9.999999): its reservation holds the
    worst-case fee rounded up; the later sell takes it at the resting price, and each
    side's fee is rounded up to a whole micro-unit."""
    market = scenario.market()
    buyer = scenario.trader({market.quote: "20"})
    seller = scenario.trader({market.base: "0.0003"})

    bid = buyer.place(market, side="buy", type="limit", quantity="0.0003", price="33333.33")
    assert (bid["order"]["status"], bid["trades"]) == ("open", [])
    # 9.999999 + ceil(9.999999 × 0.001) = 9.999999 + 0.010000
    assert buyer.balances()[market.quote] == Balance("9.990001", "10.009999", "20.000000")
    assert rest_levels(scenario.book(market), "bids") == [("33333.33", "0.0003", 1)]

    placed = seller.place(market, side="sell", type="limit", quantity="0.0003", price="33000")

    taker = placed["order"]
    (trade,) = placed["trades"]
    assert (trade["price"], trade["quantity"], trade["quote_quantity"]) == (
        "33333.33",
        "0.0003",
        "9.999999",
    )
    assert (trade["liquidity"], trade["fee"], trade["buyer_fee"]) == (
        "taker",
        "0.010000",  # ceil(0.009999999)
        "0.005000",  # ceil(0.0049999995)
    )
    assert (taker["status"], taker["filled_quantity"], taker["fee"]) == (
        "filled",
        "0.0003",
        "0.010000",
    )
    maker = buyer.order(bid["order"]["id"])
    assert (maker["status"], maker["filled_quote_quantity"], maker["fee"]) == (
        "filled",
        "9.999999",
        "0.005000",
    )
    assert buyer.balances() == {
        market.base: Balance("0.00030000", "0.00000000", "0.00030000"),
        market.quote: Balance("9.995001", "0.000000", "9.995001"),
    }
    assert seller.balances()[market.quote] == Balance("9.989999", "0.000000", "9.989999")
    assert scenario.exchange.balances(0)[market.quote].total == "0.015000"
    book = scenario.book(market)
    assert (book["bids"], book["asks"]) == ([], [])
    scenario.check_integrity()
