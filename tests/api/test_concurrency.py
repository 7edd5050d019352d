"""Many clients at once: every order answered, conservation and an uncrossed book after."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import httpx

from api_support import Api, LiveServer, admin_api, fresh_market, new_trader

CLIENTS = 100


def test_100_simultaneous_orders_from_10_users(server: LiveServer) -> None:
    symbol = fresh_market(server)
    base = symbol.split("/")[0]
    traders = [new_trader(server, {base: "50", "USDT": "100000"}) for _ in range(10)]
    tokens = [t.api.http.headers["authorization"] for t in traders]

    async def one(client: httpx.AsyncClient, i: int) -> httpx.Response:
        side = "buy" if i % 2 else "sell"
        price = str(100 + (i % 7) - 3)  # crossing prices: many orders trade
        body = {"symbol": symbol, "side": side, "type": "limit", "quantity": "1", "price": price}
        headers = {"Authorization": tokens[i % len(tokens)]}
        return await client.post("/orders", json=body, headers=headers)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url + "/api/v1", timeout=30) as client:
            return await asyncio.gather(*(one(client, i) for i in range(CLIENTS)))

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [201] * CLIENTS
    order_ids = {r.json()["data"]["order"]["id"] for r in responses}
    assert len(order_ids) == CLIENTS

    book = Api(server).ok("GET", f"/orderbook/{symbol}", params={"depth": 100})
    if book["bids"] and book["asks"]:
        assert Decimal(book["bids"][0]["price"]) < Decimal(book["asks"][0]["price"])
    admin = admin_api(server)
    totals = {base: Decimal(0), "USDT": Decimal(0)}
    for user_id in [t.user_id for t in traders] + [0]:
        for row in admin.ok("GET", f"/admin/users/{user_id}/balances"):
            if row["asset"] == base:
                totals[base] += Decimal(row["total"])
    assert totals[base] == 50 * len(traders)  # base is only ever held by these traders
    trades = Api(server).ok("GET", "/trades", params={"symbol": symbol, "limit": 1000})
    filled = sum(
        Decimal(traders[i % len(traders)].api.ok("GET", f"/orders/{order_id}")["filled_quantity"])
        for i, order_id in enumerate(r.json()["data"]["order"]["id"] for r in responses)
    )
    assert filled == 2 * sum(Decimal(t["quantity"]) for t in trades)  # buyer and seller side
