"""SIGKILL `crossbook serve` during a burst of orders, start it again, lose nothing acknowledged.

Six clients place orders concurrently (limit GTC and IOC around one price, market
orders), each with a client order id. Once `KILL_AFTER_ACKS` orders have been
acknowledged, the server process is killed with SIGKILL while the clients are
still sending; requests then in flight end with a transport error (their outcome
is unknown to the client). A new process starts on the same database, and over
HTTP only:
- every order the client saw acknowledged (201) is there, as acknowledged or
  further filled, with every trade its acknowledgement carried;
- an order whose answer was lost is either wholly there or wholly absent;
- the integrity checks hold (balances sum to the deposits, orders equal their
  trades, fees, reservations, an uncrossed book equal to the open orders);
- the restarted engine trades.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import pytest
from e2e_support import REQUEST_TIMEOUT_S, Market, OwnServer, Trader

pytestmark = pytest.mark.postgres

CLIENTS = 6
MAX_ORDERS_PER_CLIENT = 200  # the kill comes long before the clients run out
KILL_AFTER_ACKS = 150


@dataclass
class Burst:
    """What the clients saw: acknowledged orders, and orders whose answer was lost."""

    acknowledged: list[tuple[Trader, dict[str, Any]]] = field(default_factory=list)
    unknown: list[tuple[Trader, str]] = field(default_factory=list)


def test_sigkill_during_a_burst_loses_nothing_acknowledged(own_server: OwnServer) -> None:
    scenario, server = own_server.scenario, own_server.server
    market = scenario.market()
    traders = [
        scenario.trader({market.base: "1000", market.quote: "1000000"}) for _ in range(CLIENTS)
    ]

    burst = asyncio.run(run_burst(own_server, market, traders))

    assert len(burst.acknowledged) >= KILL_AFTER_ACKS
    assert len(burst.unknown) == CLIENTS  # each client's last request got no answer
    server.start()  # the same database, a new process

    for trader, placed in burst.acknowledged:
        acked = placed["order"]
        order = trader.order(acked["id"])
        same = ("client_order_id", "symbol", "side", "type", "price", "quantity", "created_at")
        assert {k: order[k] for k in same} == {k: acked[k] for k in same}, (order, acked)
        assert Decimal(order["filled_quantity"]) >= Decimal(acked["filled_quantity"])
        if acked["close_reason"] is not None:  # closed when acknowledged: final
            assert order == acked, (order, acked)
    trades = {t.user_id: {tr["id"]: tr for tr in t.trades()} for t in traders}
    for trader, placed in burst.acknowledged:
        for trade in placed["trades"]:
            assert trades[trader.user_id].get(trade["id"]) == trade, trade
    for trader, cid in burst.unknown:
        response = trader.http.call("GET", f"/orders/client/{cid}")
        assert response.status_code in (200, 404), response.text
    scenario.check_integrity()

    # the restarted server takes admin commands and orders, and trades
    fresh = scenario.market()
    seller = scenario.trader({fresh.base: "1"})
    buyer = scenario.trader({fresh.quote: "200"})
    seller.place(fresh, side="sell", type="limit", quantity="1", price="100")
    bought = buyer.place(fresh, side="buy", type="market", quantity="1")
    assert (bought["order"]["status"], bought["order"]["fee"]) == ("filled", "0.100000")
    assert buyer.balances()[fresh.quote].total == "99.900000"
    assert seller.balances()[fresh.quote].total == "99.950000"
    scenario.check_integrity()


async def run_burst(own: OwnServer, market: Market, traders: list[Trader]) -> Burst:
    burst = Burst()
    killed = asyncio.Event()

    async def client(index: int, trader: Trader) -> None:
        rng = random.Random(index)
        async with httpx.AsyncClient(
            headers=trader.http.headers, timeout=REQUEST_TIMEOUT_S
        ) as http:
            url = trader.http.url("/orders")
            for n in range(MAX_ORDERS_PER_CLIENT):
                cid = f"burst-{index}-{n}"
                body = random_order(rng, market, cid)
                try:
                    response = await http.post(url, json=body)
                except httpx.TransportError:
                    assert killed.is_set(), "transport error before the kill"
                    burst.unknown.append((trader, cid))
                    return
                assert response.status_code == 201, response.text
                burst.acknowledged.append((trader, response.json()["data"]))
                if len(burst.acknowledged) == KILL_AFTER_ACKS:
                    killed.set()
                    own.server.kill()
        raise AssertionError("the clients ran out of orders before the kill")

    await asyncio.gather(*(client(i, t) for i, t in enumerate(traders)))
    return burst


def random_order(rng: random.Random, market: Market, cid: str) -> dict[str, Any]:
    """Limit GTC (mostly resting near 100), limit IOC, or market; 0.1 to 2 in size."""
    side = rng.choice(("buy", "sell"))
    quantity = f"{rng.randint(1, 20) / 10:.1f}"
    body: dict[str, Any] = {
        "symbol": market.symbol,
        "side": side,
        "quantity": quantity,
        "client_order_id": cid,
    }
    roll = rng.random()
    if roll < 0.15:
        body["type"] = "market"
        return body
    offset = rng.randint(-30, 30)  # ticks of 0.10 around 100.00
    body.update(type="limit", price=f"{100 + offset / 10:.2f}")
    if roll < 0.35:
        body["time_in_force"] = "IOC"
    return body
