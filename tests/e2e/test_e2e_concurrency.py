"""Concurrent clients, end to end: many HTTP connections in flight at once.

The seed's two concurrency scenarios: 10 concurrent market orders on one symbol,
20 concurrent limit orders over two symbols. Which order the engine takes first is
not the test's to choose, so each assertion holds for every arrival order: the
outcome of each order is one of the exactly stated possibilities, and the totals
(what was sold, fees, balances) are exact.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from e2e_support import REQUEST_TIMEOUT_S, Balance, Market, Scenario, Trader

pytestmark = pytest.mark.postgres


async def _place(trader: Trader, market: Market, body: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(headers=trader.http.headers, timeout=REQUEST_TIMEOUT_S) as client:
        response = await client.post(
            trader.http.url("/orders"), json={"symbol": market.symbol, **body}
        )
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def place_all(orders: list[tuple[Trader, Market, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Send every order at once, each on a connection of its own; the answers in order."""

    async def run() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(_place(t, m, body) for t, m, body in orders)))

    return asyncio.run(run())


def test_ten_concurrent_market_orders_on_one_symbol(scenario: Scenario) -> None:
    """12 for sale at 500.00 (three sellers); ten market buys of 1.5 arrive together:
    eight are filled (750.00 + 0.75 fee each) and two find the book empty."""
    market = scenario.market()
    sellers = [scenario.trader({market.base: q}) for q in ("5", "4", "3")]
    for seller, quantity in zip(sellers, ("5", "4", "3"), strict=True):
        seller.place(market, side="sell", type="limit", quantity=quantity, price="500")
    buyers = [scenario.trader({market.quote: "1000"}) for _ in range(10)]

    answers = place_all(
        [(b, market, {"side": "buy", "type": "market", "quantity": "1.5"}) for b in buyers]
    )

    outcomes = Counter(
        (
            a["order"]["status"],
            a["order"]["close_reason"],
            a["order"]["filled_quantity"],
            a["order"]["filled_quote_quantity"],
            a["order"]["fee"],
        )
        for a in answers
    )
    assert outcomes == {
        ("filled", "filled", "1.5000", "750.000000", "0.750000"): 8,
        ("expired", "no_liquidity", "0.0000", "0.000000", "0.000000"): 2,
    }
    for buyer, answer in zip(buyers, answers, strict=True):
        assert all(t["price"] == "500.00" for t in answer["trades"]), answer
        assert buyer.order(answer["order"]["id"]) == answer["order"]  # as acknowledged
        filled = answer["order"]["status"] == "filled"
        assert buyer.balances()[market.quote] == (
            Balance("249.250000", "0.000000", "249.250000")
            if filled
            else Balance("1000.000000", "0.000000", "1000.000000")
        )
    # sellers: 2,500 / 2,000 / 1,500 less the 0.05 % maker fee
    assert [s.balances()[market.quote].total for s in sellers] == [
        "2498.750000",
        "1999.000000",
        "1499.250000",
    ]
    assert [s.orders()[0]["status"] for s in sellers] == ["filled"] * 3
    assert scenario.exchange.balances(0)[market.quote].total == "9.000000"
    book = scenario.book(market)
    assert (book["bids"], book["asks"]) == ([], [])
    scenario.check_integrity()


@dataclass(frozen=True)
class Case:
    """One market of the limit-order test and every exact outcome an order can have."""

    market: Market
    quantity: str
    price: str
    shown: tuple[str, str]  # (price, quantity) as the API formats them
    notional: str
    fee: dict[str, str]  # by liquidity
    quote_after: dict[tuple[str, str], str]  # by (side, liquidity)
    fee_account: str  # five trades, each one maker fee and one taker fee


def test_twenty_concurrent_limit_orders_over_two_symbols(scenario: Scenario) -> None:
    """On each of two markets five buys and five sells at one price arrive together:
    every order trades exactly once, as maker or taker, and nothing crosses markets.
    Buyers start with 1,000 quote, sellers with exactly their quantity."""
    cases = (
        Case(
            scenario.market(),
            "1",
            "100",
            ("100.00", "1.0000"),
            "100.000000",
            {"maker": "0.050000", "taker": "0.100000"},
            {
                ("buy", "maker"): "899.950000",
                ("buy", "taker"): "899.900000",
                ("sell", "maker"): "99.950000",
                ("sell", "taker"): "99.900000",
            },
            "0.750000",
        ),
        Case(
            scenario.market(),
            "0.5",
            "250",
            ("250.00", "0.5000"),
            "125.000000",
            {"maker": "0.062500", "taker": "0.125000"},
            {
                ("buy", "maker"): "874.937500",
                ("buy", "taker"): "874.875000",
                ("sell", "maker"): "124.937500",
                ("sell", "taker"): "124.875000",
            },
            "0.937500",
        ),
    )
    orders: list[tuple[Trader, Market, dict[str, Any]]] = []
    case_of: dict[int, Case] = {}
    for case in cases:
        for side in ("buy", "sell") * 5:
            market = case.market
            funds = {market.quote: "1000"} if side == "buy" else {market.base: case.quantity}
            trader = scenario.trader(funds)
            case_of[trader.user_id] = case
            body = {"side": side, "type": "limit", "quantity": case.quantity, "price": case.price}
            orders.append((trader, market, body))

    answers = place_all(orders)

    for (trader, market, body), answer in zip(orders, answers, strict=True):
        case = case_of[trader.user_id]
        order = trader.order(answer["order"]["id"])
        assert (order["symbol"], order["status"], order["filled_quote_quantity"]) == (
            market.symbol,
            "filled",
            case.notional,
        )
        (trade,) = trader.trades()  # exactly one trade, in its own market
        assert (trade["symbol"], trade["order_id"], trade["side"]) == (
            market.symbol,
            order["id"],
            body["side"],
        )
        assert (trade["price"], trade["quantity"]) == case.shown
        assert trade["fee"] == order["fee"] == case.fee[trade["liquidity"]]
        balances = trader.balances()
        assert set(balances) == {market.base, market.quote}  # nothing of the other market
        assert balances[market.quote].total == case.quote_after[body["side"], trade["liquidity"]]
    for case in cases:
        public = scenario.public.ok("GET", "/trades", params={"symbol": case.market.channel})
        assert [(t["price"], t["quantity"]) for t in public] == [case.shown] * 5
        assert scenario.exchange.balances(0)[case.market.quote].total == case.fee_account
        book = scenario.book(case.market)
        assert (book["bids"], book["asks"]) == ([], [])
    scenario.check_integrity()
