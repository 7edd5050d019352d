"""Hostile input at the edge: every refusal is a 4xx with a stable code, changes nothing,
and keeps the kept-alive connection; a bug answers 500 in the envelope, never a reset.

Each case here answered 500 (and dropped the connection) before: integers beyond 64
bits echoed into an error body that orjson could not encode, `isdigit()` digits that
`int()` cannot read (or reads as another id), a WebSocket `id` too deep to echo.
The connection checks use `RawHttp`: one socket, so a dropped connection shows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from websockets.sync.client import connect

from crossbook.api.auth import Principal, Role

from api_support import (
    Api,
    LiveServer,
    RawHttp,
    Trader,
    admin_api,
    fresh_market,
    new_trader,
    place,
    tokens,
)

BIG = "18446744073709551616"  # 2**64
UNICODE_DIGITS = ("\u00b2", "\u0661", "\uff11")  # str.isdigit() is True for each


@pytest.fixture(scope="module")
def trader(server: LiveServer) -> Trader:
    return new_trader(server, {"USDT": "100000", "BTC": "10"})


@pytest.fixture
def raw(server: LiveServer) -> Iterator[RawHttp]:
    connection = RawHttp(server)
    yield connection
    connection.close()


def bearer(trader: Trader) -> dict[str, str]:
    token = tokens(trader.api.server).issue(Principal(Role.TRADER, trader.user_id))
    return {"Authorization": f"Bearer {token}"}


def admin_bearer(server: LiveServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens(server).issue(Principal(Role.ADMIN, None))}"}


def refused_and_kept(
    raw: RawHttp,
    method: str,
    target: str,
    status: int,
    code: str,
    headers: dict[str, str],
    body: Any = None,
) -> dict[str, Any]:
    """`target` is refused with `status`/`code` in the envelope, and the same socket
    then answers `/health` (the server kept the connection)."""
    content = b"" if body is None else json.dumps(body).encode()
    if body is not None:
        headers = {**headers, "Content-Type": "application/json"}
    answered, fields, text = raw.request(method, target, content, headers)
    envelope = json.loads(text)
    assert (answered, envelope["error"]["code"]) == (status, code), (target, envelope)
    assert fields.get("connection", "").lower() != "close", fields
    assert raw.request("GET", "/health")[0] == 200
    error: dict[str, Any] = envelope["error"]
    return error


# -- integers beyond 64 bits -----------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        f"/api/v1/trades?symbol=BTC-USDT&limit={BIG}",
        f"/api/v1/trades?mine=true&limit={BIG}",
        f"/api/v1/orders?limit={BIG}",
        f"/api/v1/markets/BTC-USDT/candles?limit={BIG}",
        f"/api/v1/orderbook/BTC-USDT?depth={BIG}",
        "/api/v1/orderbook/BTC-USDT?depth=-21298670157160325120",
        "/api/v1/orders?limit=5.0",  # lax integers ("5.0", "+5", "1_0") are not integers
        "/api/v1/orders?limit=%2B5",
        "/api/v1/orders?limit=1_0",
    ],
)
def test_an_integer_beyond_its_bound_is_a_400(
    server: LiveServer, trader: Trader, raw: RawHttp, target: str
) -> None:
    error = refused_and_kept(raw, "GET", target, 400, "INVALID_REQUEST", bearer(trader))
    assert error["details"]["field"] in ("limit", "depth"), error


def test_an_admin_page_limit_beyond_64_bits_is_a_400(server: LiveServer, raw: RawHttp) -> None:
    target = f"/api/v1/admin/users?limit={BIG}"
    refused_and_kept(raw, "GET", target, 400, "INVALID_REQUEST", admin_bearer(server))


@pytest.mark.parametrize(
    "expire_at", [10**30, -21298670157160325120, BIG, "\u00b2", "\uff11\uff17"]
)
def test_an_expiry_out_of_range_is_invalid_expiry_and_changes_nothing(
    server: LiveServer, trader: Trader, raw: RawHttp, expire_at: object
) -> None:
    symbol = fresh_market(server)
    body = {
        "symbol": symbol,
        "side": "buy",
        "type": "limit",
        "quantity": "1",
        "price": "10",
        "time_in_force": "GTD",
        "expire_at": expire_at,
    }
    before = trader.api.ok("GET", "/balances")
    refused_and_kept(raw, "POST", "/api/v1/orders", 400, "INVALID_EXPIRY", bearer(trader), body)
    assert trader.api.ok("GET", "/balances") == before
    assert trader.api.ok("GET", "/orders", params={"symbol": symbol}) == []


# -- digits that are not ASCII ----------------------------------------------------------


@pytest.mark.parametrize("digit", UNICODE_DIGITS)
@pytest.mark.parametrize("method", ["GET", "DELETE", "PATCH"])
def test_an_order_id_in_unicode_digits_names_no_order(
    server: LiveServer, trader: Trader, raw: RawHttp, method: str, digit: str
) -> None:
    """`/orders/١` was order 1 (int() reads it); `/orders/²` was a 500."""
    symbol = fresh_market(server)
    order = place(trader, symbol, side="buy", type="limit", quantity="1", price="10")["order"]
    body = {"price": "11"} if method == "PATCH" else None
    # the order's own id spelled with a Unicode digit in front, and the digit alone
    for target in (f"/api/v1/orders/{digit}", f"/api/v1/orders/{digit}{order['id']}"):
        refused_and_kept(raw, method, target, 404, "ORDER_NOT_FOUND", bearer(trader), body)
    assert trader.api.ok("GET", f"/orders/{order['id']}") == order  # untouched


@pytest.mark.parametrize("digit", UNICODE_DIGITS)
@pytest.mark.parametrize(
    "query",
    [
        "/api/v1/orders?before={}",
        "/api/v1/orders?after={}",
        "/api/v1/orders?start_time={}",
        "/api/v1/orders?end_time={}",
        "/api/v1/trades?symbol=BTC-USDT&before={}",
        "/api/v1/trades?symbol=BTC-USDT&start_time={}",
        "/api/v1/trades?symbol=BTC-USDT&end_time={}",
        "/api/v1/markets/BTC-USDT/candles?start_time={}",
        "/api/v1/markets/BTC-USDT/candles?end_time={}",
    ],
)
def test_a_cursor_or_time_in_unicode_digits_is_a_400(
    server: LiveServer, trader: Trader, raw: RawHttp, query: str, digit: str
) -> None:
    refused_and_kept(raw, "GET", query.format(digit), 400, "INVALID_REQUEST", bearer(trader))


@pytest.mark.parametrize("digit", UNICODE_DIGITS)
def test_an_admin_user_id_in_unicode_digits_names_no_user(
    server: LiveServer, trader: Trader, raw: RawHttp, digit: str
) -> None:
    admin = admin_bearer(server)
    for target in (f"/api/v1/admin/users/{digit}/balances", f"/api/v1/admin/users/{digit}/tokens"):
        method = "POST" if target.endswith("tokens") else "GET"
        refused_and_kept(raw, method, target, 404, "USER_NOT_FOUND", admin)
    before = trader.api.ok("GET", "/balances")
    body = {"user_id": digit, "asset": "USDT", "amount": "1"}
    refused_and_kept(raw, "POST", "/api/v1/admin/deposits", 404, "USER_NOT_FOUND", admin, body)
    assert trader.api.ok("GET", "/balances") == before


def test_a_user_id_beyond_64_bits_in_a_body_names_no_user(server: LiveServer, raw: RawHttp) -> None:
    body = {"user_id": 10**30, "asset": "USDT", "amount": "1"}
    admin = admin_bearer(server)
    refused_and_kept(raw, "POST", "/api/v1/admin/deposits", 404, "USER_NOT_FOUND", admin, body)


# -- the contract: documented codes ----------------------------------------------------


@pytest.mark.parametrize("stop_price", ["1e2", "-5", "NaN", "10.001", "0"])
def test_a_bad_stop_price_is_invalid_stop_price(
    server: LiveServer, trader: Trader, stop_price: str
) -> None:
    body = {
        "symbol": fresh_market(server),
        "side": "buy",
        "type": "stop_limit",
        "quantity": "1",
        "price": "10",
        "stop_price": stop_price,
    }
    trader.api.fails("POST", "/orders", 400, "INVALID_STOP_PRICE", json=body)


@pytest.mark.parametrize("quote_quantity", ["1e2", "-5", "NaN", "1.0000001", "0"])
def test_a_bad_quote_quantity_is_invalid_quantity(
    server: LiveServer, trader: Trader, quote_quantity: str
) -> None:
    body = {
        "symbol": fresh_market(server),
        "side": "buy",
        "type": "market",
        "quote_quantity": quote_quantity,
    }
    trader.api.fails("POST", "/orders", 400, "INVALID_QUANTITY", json=body)


def test_a_value_on_the_grid_with_trailing_zeros_is_accepted(
    server: LiveServer, trader: Trader
) -> None:
    symbol = fresh_market(server)  # tick 0.01, step 0.0001
    order = place(trader, symbol, side="buy", type="limit", quantity="1.00000000", price="50.0000")[
        "order"
    ]
    assert (order["price"], order["quantity"]) == ("50.00", "1.0000")
    body = {"symbol": symbol, "side": "buy", "type": "limit", "quantity": "1", "price": "50.001"}
    trader.api.fails("POST", "/orders", 400, "INVALID_PRICE", json=body)


def test_a_self_trade_shows_both_fills_in_the_trade_history(
    server: LiveServer, trader: Trader
) -> None:
    symbol = fresh_market(server)
    deposit = {"user_id": trader.user_id, "asset": symbol.split("/")[0], "amount": "1"}
    admin_api(server).ok("POST", "/admin/deposits", 201, json=deposit)
    sell = place(trader, symbol, side="sell", type="limit", quantity="1", price="10")["order"]
    buy = place(
        trader, symbol, side="buy", type="limit", quantity="1", price="10", stp_mode="none"
    )["order"]
    fills = trader.api.ok("GET", "/trades", params={"mine": "true", "symbol": symbol})
    assert len({f["id"] for f in fills}) == 1  # one trade …
    by_side = {f["side"]: f for f in fills}  # … two fills
    assert set(by_side) == {"buy", "sell"} and len(fills) == 2
    assert (by_side["buy"]["order_id"], by_side["buy"]["liquidity"]) == (buy["id"], "taker")
    assert (by_side["sell"]["order_id"], by_side["sell"]["liquidity"]) == (sell["id"], "maker")
    assert by_side["buy"]["fee"] == by_side["buy"]["buyer_fee"]
    assert by_side["sell"]["fee"] == by_side["sell"]["seller_fee"] != "0.000000"


# -- methods -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "methods"),
    [
        ("/api/v1/orders/1", {"GET", "DELETE", "PATCH"}),
        ("/api/v1/admin/settlements/replay", {"POST"}),
    ],
)
def test_a_405_allows_every_method_of_the_path(
    server: LiveServer, raw: RawHttp, target: str, methods: set[str]
) -> None:
    status, fields, _ = raw.request("PUT", target)
    assert status == 405
    assert methods <= {m.strip() for m in fields["allow"].split(",")}, fields["allow"]


# -- bugs: 500 in the envelope, connection kept ------------------------------------------


def test_an_unexpected_error_is_a_500_envelope_and_the_connection_stays(
    server: LiveServer, raw: RawHttp
) -> None:
    app: FastAPI = server.server.config.app

    async def broken() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/broken-for-test", broken)
    status, fields, text = raw.request("GET", "/broken-for-test")
    body = json.loads(text)
    assert status == 500 and body["error"]["code"] == "INTERNAL_ERROR", body
    assert len(body["error"]["details"]["trace_id"]) == 32
    assert fields["x-request-id"] == body["meta"]["request_id"]
    assert raw.request("GET", "/health")[0] == 200  # the same connection


def test_every_answer_says_nosniff(server: LiveServer, raw: RawHttp) -> None:
    for target in ("/health", "/api/v1/markets", "/nowhere"):
        assert raw.request("GET", target)[1]["x-content-type-options"] == "nosniff"


# -- WebSocket ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_id",
    [json.loads("[" * 255 + "]" * 255), {"a": 1}, 10**30, "x" * 65, 1.5, True],
    ids=["nested", "object", "big", "long", "float", "bool"],
)
def test_a_websocket_id_that_is_no_id_is_refused_and_the_connection_stays(
    server: LiveServer, request_id: object
) -> None:
    with connect(server.ws_url, open_timeout=10) as ws:
        ws.send(json.dumps({"op": "ping", "id": request_id}))
        error = json.loads(ws.recv(timeout=10))
        assert (error["type"], error["code"]) == ("error", "INVALID_REQUEST"), error
        assert "id" not in error  # never echoed
        ws.send(json.dumps({"op": "ping", "id": 7}))
        assert json.loads(ws.recv(timeout=10)) == {"type": "pong", "id": 7}


def test_a_token_for_a_user_that_does_not_exist_is_refused_until_it_does(
    server: LiveServer,
) -> None:
    admin = admin_api(server)
    last = int(admin.ok("GET", "/admin/users", params={"limit": 1000})[-1]["id"])
    token = tokens(server).issue(Principal(Role.TRADER, last + 1))
    Api(server, token).fails("GET", "/balances", 401, "UNAUTHORIZED")
    with connect(server.ws_url, open_timeout=10) as ws:
        ws.send(json.dumps({"op": "auth", "token": token}))
        assert json.loads(ws.recv(timeout=10))["code"] == "UNAUTHORIZED"
    created = admin.ok("POST", "/admin/users", 201, json={"name": "late"})
    assert int(created["id"]) == last + 1
    assert Api(server, token).ok("GET", "/balances") == []
