"""Errors, end to end: refusals change nothing, cancels release, failed commits leave no trace.

The seed's three error scenarios:
- an order beyond the balance is refused with INSUFFICIENT_BALANCE: no order, no
  trade, no balance changes anywhere;
- a cancel before any fill succeeds and releases the whole reservation;
- a settlement (commit) failure: the server's PostgreSQL connections are
  terminated while orders are in flight. Every answer is 201 or 503
  ENGINE_UNAVAILABLE (never a 500); the engine recovers by itself; every order
  answered 201 is there with its trades, every order answered 503 is not (looked up
  by its client order id) and may be placed again; integrity holds.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import asyncpg
import httpx
import pytest
from e2e_support import (
    POSTGRES_SERVER_URL,
    READY_POLL_S,
    RECOVERY_TIMEOUT_S,
    REQUEST_TIMEOUT_S,
    Balance,
    Market,
    OwnServer,
    Scenario,
    Trader,
    rest_levels,
)

pytestmark = pytest.mark.postgres


def test_insufficient_balance_is_refused_with_no_trade_and_no_balance_change(
    scenario: Scenario,
) -> None:
    market = scenario.market()
    seller = scenario.trader({market.base: "1"})
    seller.place(market, side="sell", type="limit", quantity="1", price="100")
    buyer = scenario.trader({market.quote: "100"})  # 1 @ 100.00 costs 100.10 with the fee
    accounts = [seller.user_id, buyer.user_id, 0]
    before = {uid: scenario.exchange.balances(uid) for uid in accounts}
    book_before = scenario.book(market)

    limit = buyer.http.fails(
        "POST",
        "/orders",
        400,
        "INSUFFICIENT_BALANCE",
        json={
            "symbol": market.symbol,
            "side": "buy",
            "type": "limit",
            "quantity": "1",
            "price": "100",
            "client_order_id": "too-dear",
        },
    )
    assert limit["details"] == {
        "asset": market.quote,
        "required": "100.100000",
        "available": "100.000000",
    }
    market_buy = buyer.http.fails(
        "POST",
        "/orders",
        400,
        "INSUFFICIENT_BALANCE",
        json={"symbol": market.symbol, "side": "buy", "type": "market", "quantity": "1"},
    )
    assert (market_buy["details"]["asset"], market_buy["details"]["required"]) == (
        market.quote,
        "100.100000",
    )
    oversell = seller.http.fails(  # the seller's 1 is locked by its resting order
        "POST",
        "/orders",
        400,
        "INSUFFICIENT_BALANCE",
        json={
            "symbol": market.symbol,
            "side": "sell",
            "type": "limit",
            "quantity": "0.5",
            "price": "99",
        },
    )
    assert oversell["details"] == {
        "asset": market.base,
        "required": "0.50000000",
        "available": "0.00000000",
    }

    assert buyer.orders() == [] and buyer.trades() == []
    buyer.http.fails("GET", "/orders/client/too-dear", 404, "ORDER_NOT_FOUND")
    assert scenario.public.ok("GET", "/trades", params={"symbol": market.channel}) == []
    assert {uid: scenario.exchange.balances(uid) for uid in accounts} == before
    book = scenario.book(market)
    assert (book["sequence"], rest_levels(book, "asks")) == (
        book_before["sequence"],
        [("100.00", "1.0000", 1)],
    )
    scenario.check_integrity()


def test_cancel_before_fill_succeeds_and_releases_the_reservation(scenario: Scenario) -> None:
    market = scenario.market()
    buyer = scenario.trader({market.quote: "1000"})
    seller = scenario.trader({market.base: "1"})

    bid = buyer.place(
        market, side="buy", type="limit", quantity="1", price="500", client_order_id="bid-1"
    )["order"]
    # 500 + the fee at the higher (taker) rate, 0.50
    assert buyer.balances()[market.quote] == Balance("499.500000", "500.500000", "1000.000000")
    assert rest_levels(scenario.book(market), "bids") == [("500.00", "1.0000", 1)]

    cancelled = buyer.http.ok("DELETE", f"/orders/{bid['id']}")

    assert (cancelled["id"], cancelled["status"], cancelled["close_reason"]) == (
        bid["id"],
        "cancelled",
        "cancelled_by_user",
    )
    assert (cancelled["filled_quantity"], cancelled["fee"]) == ("0.0000", "0.000000")
    assert buyer.balances()[market.quote] == Balance("1000.000000", "0.000000", "1000.000000")
    assert scenario.book(market)["bids"] == []
    assert buyer.http.ok("DELETE", f"/orders/{bid['id']}") == cancelled  # idempotent
    assert buyer.http.ok("GET", "/orders/client/bid-1") == cancelled

    # the cancelled bid no longer trades: a sell at its price rests instead
    ask = seller.place(
        market, side="sell", type="limit", quantity="1", price="500", client_order_id="ask-1"
    )
    assert (ask["order"]["status"], ask["trades"]) == ("open", [])
    assert seller.balances()[market.base] == Balance("0.00000000", "1.00000000", "1.00000000")
    by_client_id = seller.http.ok("DELETE", "/orders/client/ask-1")
    assert (by_client_id["id"], by_client_id["status"]) == (ask["order"]["id"], "cancelled")
    assert seller.balances()[market.base] == Balance("1.00000000", "0.00000000", "1.00000000")
    assert buyer.trades() == [] and seller.trades() == []
    book = scenario.book(market)
    assert (book["bids"], book["asks"]) == ([], [])
    scenario.check_integrity()


# -- a commit failure ------------------------------------------------------------------------

CLIENTS = 4
ORDERS_PER_CLIENT = 40
TERMINATE_AFTER_ACKS = 20  # acknowledged orders before the connections are terminated

Answer = tuple[Trader, str, int, str | None, Any]  # trader, client order id, status, code, data


def test_commit_failure_leaves_no_trace_and_the_engine_recovers(own_server: OwnServer) -> None:
    """Four clients place crossing limit orders (0.1 @ 100.00, buys and sells) with client
    order ids; after 20 acknowledgements every database connection of the server is
    terminated. A client answered 503 waits for `/ready` (bounded) and carries on."""
    scenario = own_server.scenario
    market = scenario.market()
    traders = [
        scenario.trader({market.base: "100", market.quote: "100000"}) for _ in range(CLIENTS)
    ]
    terminated: list[int] = []

    answers = asyncio.run(storm(own_server, market, traders, terminated))

    assert terminated[0] > 0, "no server connection was terminated"
    statuses = {(status, code) for _, _, status, code, _ in answers}
    assert statuses <= {(201, None), (503, "ENGINE_UNAVAILABLE")}, statuses
    refused = [(t, cid) for t, cid, status, _, _ in answers if status == 503]
    accepted = [(t, cid, data) for t, cid, status, _, data in answers if status == 201]
    assert refused, "no order was in a failed commit"
    assert len(accepted) > TERMINATE_AFTER_ACKS, "no order was accepted after the recovery"
    assert len(answers) == CLIENTS * ORDERS_PER_CLIENT

    for trader, cid in refused:  # nothing of a refused order happened
        trader.http.fails("GET", f"/orders/client/{cid}", 404, "ORDER_NOT_FOUND")
    for trader, cid, data in accepted:  # everything of an accepted one did
        order = trader.http.ok("GET", f"/orders/client/{cid}")
        assert order["id"] == data["order"]["id"], (order, data)
        assert order["created_at"] == data["order"]["created_at"]
        mine = {t["id"]: t for t in trader.trades() if t["order_id"] == order["id"]}
        for trade in data["trades"]:
            assert mine[trade["id"]] == trade, (mine, trade)
    scenario.check_integrity()

    # a refused order can be placed again under its client order id, once
    trader, cid = refused[0]
    again = trader.place(
        market, side="buy", type="limit", quantity="0.1", price="90", client_order_id=cid
    )
    assert again["order"]["status"] == "open"
    assert [o["id"] for o in trader.orders() if o["client_order_id"] == cid] == [
        again["order"]["id"]
    ]
    scenario.check_integrity()


async def storm(
    own: OwnServer, market: Market, traders: list[Trader], terminated: list[int]
) -> list[Answer]:
    """Every client places its orders one after another; once `TERMINATE_AFTER_ACKS` are
    acknowledged, every server connection to the database is terminated. A client
    answered 503 polls `/ready` until the server is back (a failure bound), then
    carries on with its next order."""
    answers: list[Answer] = []
    acks = itertools.count(1)
    terminate = asyncio.Event()

    async def client(index: int, trader: Trader) -> None:
        async with httpx.AsyncClient(
            headers=trader.http.headers, timeout=REQUEST_TIMEOUT_S
        ) as http:
            for n in range(ORDERS_PER_CLIENT):
                cid = f"storm-{index}-{n}"
                body = {
                    "symbol": market.symbol,
                    "side": "buy" if (n + index) % 2 else "sell",
                    "type": "limit",
                    "quantity": "0.1",
                    "price": "100",
                    "client_order_id": cid,
                }
                response = await http.post(trader.http.url("/orders"), json=body)
                payload = response.json()
                code = None if payload["success"] else payload["error"]["code"]
                answers.append((trader, cid, response.status_code, code, payload.get("data")))
                if response.status_code == 201 and next(acks) == TERMINATE_AFTER_ACKS:
                    terminate.set()
                if response.status_code == 503:
                    assert response.headers["retry-after"] == "1", response.headers
                    await until_ready(http, own.server.url + "/ready")

    async def terminator() -> None:
        await terminate.wait()
        terminated.append(await terminate_connections(own.database))

    async def clients() -> None:
        try:
            await asyncio.gather(*(client(i, t) for i, t in enumerate(traders)))
        finally:
            terminate.set()  # never leave the terminator waiting

    await asyncio.gather(terminator(), clients())
    return answers


async def until_ready(http: httpx.AsyncClient, url: str) -> None:
    """Poll `/ready` until it answers 200, within `RECOVERY_TIMEOUT_S`."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while (await http.get(url)).status_code != 200:
        assert time.monotonic() < deadline, f"not ready within {RECOVERY_TIMEOUT_S} s"
        await asyncio.sleep(READY_POLL_S)


def test_reads_after_the_database_dropped_its_connections_are_never_a_500(
    own_server: OwnServer,
) -> None:
    """A read answers from the committed state (200) or says it cannot (503); an
    unexpected exception (500) is a bug even while the database is reconnecting."""
    scenario = own_server.scenario
    market = scenario.market()
    trader = scenario.trader({market.quote: "1000"})
    placed = trader.place(market, side="buy", type="limit", quantity="1", price="100")
    assert trader.orders() == [placed["order"]]  # the read pool holds a connection now

    asyncio.run(terminate_connections(own_server.database))

    for _ in range(2):  # a fresh HTTP connection each time: a 500 closes the connection
        with httpx.Client(headers=trader.http.headers, timeout=REQUEST_TIMEOUT_S) as http:
            response = http.get(trader.http.url("/orders"))
        assert response.status_code in (200, 503), response.text
    assert own_server.server.wait_ready(RECOVERY_TIMEOUT_S)
    assert trader.orders() == [placed["order"]]
    scenario.check_integrity()


async def terminate_connections(database: str) -> int:
    """Terminate every server connection to `database`; how many there were."""
    connection = await asyncpg.connect(POSTGRES_SERVER_URL)
    try:
        rows = await connection.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
    finally:
        await connection.close()
    return sum(1 for row in rows if row[0])
