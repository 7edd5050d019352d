"""Several users trading against each other, end to end (HTTP and WebSocket clients).

The seed's three multi-user scenarios: user A sells and user B buys; several buyers
against one large seller; order book depth changes seen in `GET /orderbook` and
in the WebSocket diff stream, which rebuilds the same book level by level.
"""

from __future__ import annotations

from typing import Any

import pytest
from e2e_support import Balance, Market, Scenario, Trader, book_stream, rest_levels

pytestmark = pytest.mark.postgres


def test_user_a_sells_and_user_b_buys(scenario: Scenario) -> None:
    market = scenario.market()
    alice = scenario.trader({market.base: "2"})
    bob = scenario.trader({market.quote: "70000"})

    ask = alice.place(market, side="sell", type="limit", quantity="2", price="30000")["order"]
    placed = bob.place(market, side="buy", type="limit", quantity="2", price="30000")

    assert placed["order"]["status"] == "filled"
    (bought,) = placed["trades"]
    (sold,) = alice.trades()
    assert bought["id"] == sold["id"]
    assert (bought["side"], bought["liquidity"], bought["fee"]) == ("buy", "taker", "60.000000")
    assert (sold["side"], sold["liquidity"], sold["fee"]) == ("sell", "maker", "30.000000")
    assert (sold["order_id"], bought["order_id"]) == (ask["id"], placed["order"]["id"])
    (public,) = scenario.public.ok("GET", "/trades", params={"symbol": market.channel})
    assert {k: public[k] for k in ("id", "price", "quantity", "quote_quantity", "taker_side")} == {
        "id": bought["id"],
        "price": "30000.00",
        "quantity": "2.0000",
        "quote_quantity": "60000.000000",
        "taker_side": "buy",
    }
    assert [(o["id"], o["status"], o["fee"]) for o in alice.orders()] == [
        (ask["id"], "filled", "30.000000")
    ]
    assert alice.balances() == {
        market.base: Balance("0.00000000", "0.00000000", "0.00000000"),
        market.quote: Balance("59970.000000", "0.000000", "59970.000000"),
    }
    assert bob.balances() == {
        market.base: Balance("2.00000000", "0.00000000", "2.00000000"),
        market.quote: Balance("9940.000000", "0.000000", "9940.000000"),
    }
    assert scenario.exchange.balances(0)[market.quote].total == "90.000000"
    scenario.check_integrity()


def test_several_buyers_against_one_large_seller(scenario: Scenario) -> None:
    market = scenario.market()
    seller = scenario.trader({market.base: "10"})
    ask = seller.place(market, side="sell", type="limit", quantity="10", price="1000")["order"]
    buys = (("2", "2.0000"), ("3", "3.0000"), ("1.5", "1.5000"), ("3.5", "3.5000"))
    buyers = [scenario.trader({market.quote: "5000"}) for _ in buys]

    progress = []
    for buyer, (quantity, shown) in zip(buyers, buys, strict=True):
        placed = buyer.place(market, side="buy", type="limit", quantity=quantity, price="1000")
        assert placed["order"]["status"] == "filled", placed
        (trade,) = placed["trades"]
        assert (trade["price"], trade["quantity"], trade["liquidity"]) == (
            "1000.00",
            shown,
            "taker",
        )
        maker = seller.order(ask["id"])
        asks = rest_levels(scenario.book(market), "asks")
        progress.append((maker["status"], maker["filled_quantity"], maker["fee"], asks))

    assert progress == [
        ("partially_filled", "2.0000", "1.000000", [("1000.00", "8.0000", 1)]),
        ("partially_filled", "5.0000", "2.500000", [("1000.00", "5.0000", 1)]),
        ("partially_filled", "6.5000", "3.250000", [("1000.00", "3.5000", 1)]),
        ("filled", "10.0000", "5.000000", []),
    ]
    # each buyer pays quantity × 1,000 + 0.1 % taker fee
    assert [b.balances()[market.quote].total for b in buyers] == [
        "2998.000000",
        "1997.000000",
        "3498.500000",
        "1496.500000",
    ]
    assert [b.balances()[market.base].total for b in buyers] == [
        "2.00000000",
        "3.00000000",
        "1.50000000",
        "3.50000000",
    ]
    seller_trades = seller.trades()
    assert len(seller_trades) == 4
    assert {(t["liquidity"], t["order_id"]) for t in seller_trades} == {("maker", ask["id"])}
    assert seller.balances()[market.quote] == Balance("9995.000000", "0.000000", "9995.000000")
    assert scenario.exchange.balances(0)[market.quote].total == "15.000000"
    scenario.check_integrity()


def test_book_depth_changes_in_rest_and_in_the_websocket_diff_stream(scenario: Scenario) -> None:
    """After each change, the WebSocket diffs applied to the subscription's snapshot give
    exactly the REST book at the same sequence, and both are the expected levels."""
    market = scenario.market()
    m1 = scenario.trader({market.base: "10", market.quote: "1000"})
    m2 = scenario.trader({market.base: "10", market.quote: "1000"})
    taker = scenario.trader({market.base: "2", market.quote: "1000"})

    with book_stream(scenario.exchange.server, market) as stream:
        snapshot = stream.subscribe()["data"]
        assert (snapshot["bids"], snapshot["asks"]) == ([], [])
        assert snapshot["sequence"] == scenario.book(market)["sequence"]

        def levels_after(
            expected_bids: list[tuple[str, str, int]], expected_asks: list[tuple[str, str, int]]
        ) -> list[dict[str, Any]]:
            book = scenario.book(market)
            updates = stream.follow_to(book["sequence"])
            assert (rest_levels(book, "bids"), rest_levels(book, "asks")) == (
                expected_bids,
                expected_asks,
            )
            assert (stream.levels("bids"), stream.levels("asks")) == (
                expected_bids,
                expected_asks,
            )
            return updates

        bid1 = place_limit(m1, market, "buy", "1", "99")
        levels_after([("99.00", "1.0000", 1)], [])
        place_limit(m2, market, "buy", "2", "99")
        levels_after([("99.00", "3.0000", 2)], [])
        bid3 = place_limit(m1, market, "buy", "0.5", "98.5")
        levels_after([("99.00", "3.0000", 2), ("98.50", "0.5000", 1)], [])
        place_limit(m2, market, "sell", "1.5", "101")
        place_limit(m2, market, "sell", "1", "102")
        asks = [("101.00", "1.5000", 1), ("102.00", "1.0000", 1)]
        levels_after([("99.00", "3.0000", 2), ("98.50", "0.5000", 1)], asks)

        # a market sell of 2 takes m1's 1 @ 99 (first in time) and 1 of m2's 2 @ 99
        sold = taker.place(market, side="sell", type="market", quantity="2")
        assert [(t["price"], t["quantity"]) for t in sold["trades"]] == [
            ("99.00", "1.0000"),
            ("99.00", "1.0000"),
        ]
        assert m1.order(bid1)["status"] == "filled"
        levels_after([("99.00", "1.0000", 1), ("98.50", "0.5000", 1)], asks)

        cancelled = m1.http.ok("DELETE", f"/orders/{bid3}")
        assert (cancelled["status"], cancelled["close_reason"]) == (
            "cancelled",
            "cancelled_by_user",
        )
        updates = levels_after([("99.00", "1.0000", 1)], asks)
        removed = [level for update in updates for level in update["bids"]]
        assert removed == [{"price": "98.50", "quantity": "0.0000", "num_orders": 0}]

        # a buy of 2 limited at 101.50 takes the 1.5 @ 101 and rests 0.5 at 101.50
        bought = taker.place(market, side="buy", type="limit", quantity="2", price="101.5")
        assert [(t["price"], t["quantity"]) for t in bought["trades"]] == [("101.00", "1.5000")]
        assert bought["order"]["status"] == "partially_filled"
        levels_after(
            [("101.50", "0.5000", 1), ("99.00", "1.0000", 1)],
            [("102.00", "1.0000", 1)],
        )
    scenario.check_integrity()


def place_limit(trader: Trader, market: Market, side: str, quantity: str, price: str) -> str:
    """Place a resting limit order (it must not trade); its id."""
    placed = trader.place(market, side=side, type="limit", quantity=quantity, price=price)
    assert (placed["order"]["status"], placed["trades"]) == ("open", []), placed
    order_id: str = placed["order"]["id"]
    return order_id
