"""`/api/v1/orders` over real HTTP: placement, cancel, amend, reads, validation, ownership."""

from __future__ import annotations

from typing import Any

import pytest

from api_support import Api, LiveServer, Trader, admin_api, fresh_market, new_trader, place

SELL_ONE = {"side": "sell", "type": "limit", "quantity": "1", "price": "50000"}


def balances(trader: Trader) -> dict[str, dict[str, str]]:
    return {b["asset"]: b for b in trader.api.ok("GET", "/balances")}


def fee_account_usdt(server: LiveServer) -> str:
    rows = admin_api(server).ok("GET", "/admin/users/0/balances")
    return next((b["available"] for b in rows if b["asset"] == "USDT"), "0.000000")


def market_pair(server: LiveServer) -> tuple[str, str, Trader, Trader]:
    symbol = fresh_market(server)
    base = symbol.split("/")[0]
    seller = new_trader(server, {base: "10"})
    buyer = new_trader(server, {"USDT": "1000000"})
    return symbol, base, seller, buyer


# -- placement ---------------------------------------------------------------------------


def test_a_resting_limit_order_is_201_with_the_seed_shape(server: LiveServer) -> None:
    symbol, _, seller, _ = market_pair(server)
    data = place(seller, symbol, **SELL_ONE, client_order_id="my-1")
    order = data["order"]
    assert data["trades"] == []
    assert order["status"] == "open"
    assert order["price"] == "50000.00"
    assert order["quantity"] == "1.0000"
    assert order["filled_quantity"] == "0.0000"
    assert order["time_in_force"] == "GTC"
    assert order["client_order_id"] == "my-1"
    assert order["user_id"] == str(seller.user_id)
    assert order["id"].isdigit()
    assert order["created_at"].endswith("Z")


def test_the_seed_fee_example_holds_to_the_minor_unit(server: LiveServer) -> None:
    symbol, base, seller, buyer = market_pair(server)
    fees_before = fee_account_usdt(server)
    place(seller, symbol, **SELL_ONE)
    data = place(buyer, symbol, side="buy", type="market", quantity="1")
    assert data["order"]["status"] == "filled"
    (trade,) = data["trades"]
    assert trade["price"] == "50000.00"
    assert trade["buyer_fee"] == "50.000000"
    assert trade["seller_fee"] == "25.000000"
    assert trade["liquidity"] == "taker"
    assert balances(buyer)["USDT"]["available"] == "949950.000000"  # -50,050
    assert balances(buyer)[base]["available"] == "1.00000000"
    assert balances(seller)["USDT"]["available"] == "49975.000000"  # +49,975
    assert balances(seller)[base]["available"] == "9.00000000"
    fees_after = fee_account_usdt(server)
    assert float_free_delta(fees_before, fees_after) == 75_000_000  # +75 USDT in minor units


def float_free_delta(before: str, after: str) -> int:
    """after - before in minor units, from decimal strings (no float)."""
    return int(after.replace(".", "")) - int(before.replace(".", ""))


def test_a_market_order_walks_several_levels(server: LiveServer) -> None:
    symbol, _, seller, buyer = market_pair(server)
    place(seller, symbol, side="sell", type="limit", quantity="1", price="50000")
    place(seller, symbol, side="sell", type="limit", quantity="1", price="50001")
    data = place(buyer, symbol, side="buy", type="market", quantity="1.5")
    assert [(t["price"], t["quantity"]) for t in data["trades"]] == [
        ("50000.00", "1.0000"),
        ("50001.00", "0.5000"),
    ]
    assert data["order"]["filled_quantity"] == "1.5000"
    assert data["order"]["filled_quote_quantity"] == "75000.500000"
    assert data["order"]["status"] == "filled"


def test_a_market_buy_by_quote_budget(server: LiveServer) -> None:
    symbol, _, seller, buyer = market_pair(server)
    place(seller, symbol, side="sell", type="limit", quantity="2", price="100")
    data = place(buyer, symbol, side="buy", type="market", quote_quantity="50")
    assert data["order"]["quantity"] is None
    assert data["order"]["quote_quantity"] == "50.000000"
    assert sum(int(t["quantity"].replace(".", "")) for t in data["trades"]) > 0


def test_a_limit_order_that_crosses_trades_then_rests(server: LiveServer) -> None:
    symbol, _, seller, buyer = market_pair(server)
    place(seller, symbol, side="sell", type="limit", quantity="1", price="100")
    data = place(buyer, symbol, side="buy", type="limit", quantity="3", price="101")
    assert data["order"]["status"] == "partially_filled"
    assert data["order"]["filled_quantity"] == "1.0000"
    assert data["trades"][0]["price"] == "100.00"
    book = Api(server).ok("GET", f"/orderbook/{symbol}")
    assert book["bids"] == [{"price": "101.00", "quantity": "2.0000", "num_orders": 1}]


@pytest.mark.parametrize(
    ("fields", "status", "reason"),
    [
        ({"time_in_force": "FOK", "quantity": "5"}, "expired", "unfilled_fok"),
        ({"time_in_force": "IOC", "quantity": "5"}, "expired", "unfilled_ioc"),
    ],
)
def test_fok_and_ioc_close_what_they_cannot_fill(
    server: LiveServer, fields: dict[str, str], status: str, reason: str
) -> None:
    symbol, _, seller, buyer = market_pair(server)
    place(seller, symbol, side="sell", type="limit", quantity="1", price="100")
    data = place(buyer, symbol, side="buy", type="limit", price="100", **fields)
    assert data["order"]["status"] == status
    assert data["order"]["close_reason"] == reason


def test_gtd_post_only_stop_orders_and_stp_are_accepted(server: LiveServer) -> None:
    symbol, _, seller, buyer = market_pair(server)
    gtd = place(
        buyer,
        symbol,
        side="buy",
        type="limit",
        quantity="1",
        price="90",
        time_in_force="GTD",
        expire_at="2999-01-01T00:00:00Z",
    )["order"]
    assert gtd["expire_at"] == "2999-01-01T00:00:00.000Z"
    post_only = place(
        seller,
        symbol,
        side="sell",
        type="limit",
        quantity="1",
        price="200",
        post_only=True,
        stp_mode="cancel_both",
    )["order"]
    assert (post_only["post_only"], post_only["stp_mode"]) == (True, "cancel_both")
    place(seller, symbol, side="sell", type="limit", quantity="1", price="150")
    place(buyer, symbol, side="buy", type="limit", quantity="1", price="150")  # last = 150
    stop = place(
        buyer, symbol, side="buy", type="stop_limit", quantity="1", price="210", stop_price="199"
    )["order"]
    assert (stop["status"], stop["triggered"], stop["stop_price"]) == ("open", False, "199.00")
    place(seller, symbol, side="sell", type="limit", quantity="1", price="199")
    # a trade at 199 triggers the stop, which buys the 199 and the 200 asks (limit 210)
    place(buyer, symbol, side="buy", type="limit", quantity="0.5", price="199")
    after = buyer.api.ok("GET", f"/orders/{stop['id']}")
    assert after["triggered"] is True
    assert after["filled_quantity"] != "0.0000"


def test_post_only_that_would_take_is_refused(server: LiveServer) -> None:
    symbol, _, seller, buyer = market_pair(server)
    place(seller, symbol, **SELL_ONE)
    body = {
        "symbol": symbol,
        "side": "buy",
        "type": "limit",
        "quantity": "1",
        "price": "50000",
        "post_only": True,
    }
    buyer.api.fails("POST", "/orders", 400, "POST_ONLY_WOULD_TAKE", json=body)


def test_a_duplicate_client_order_id_is_409(server: LiveServer) -> None:
    symbol, _, seller, _ = market_pair(server)
    place(seller, symbol, **SELL_ONE, client_order_id="dup")
    body = {"symbol": symbol, **SELL_ONE, "client_order_id": "dup"}
    seller.api.fails("POST", "/orders", 409, "DUPLICATE_CLIENT_ORDER_ID", json=body)


def test_insufficient_balance_is_400_and_changes_nothing(server: LiveServer) -> None:
    symbol, _, _, _ = market_pair(server)
    poor = new_trader(server, {"USDT": "10"})
    before = balances(poor)
    body = {"symbol": symbol, "side": "buy", "type": "limit", "quantity": "1", "price": "100"}
    poor.api.fails("POST", "/orders", 400, "INSUFFICIENT_BALANCE", json=body)
    assert balances(poor) == before
    assert poor.api.ok("GET", "/orders") == []


# -- validation: every bad input is a 4xx with a specific code ---------------------------

BAD_FIELDS: list[tuple[dict[str, Any], str]] = [
    ({"price": "50000.001"}, "INVALID_PRICE"),  # off the tick grid
    ({"price": "-1"}, "INVALID_PRICE"),
    ({"price": "0"}, "INVALID_PRICE"),
    ({"price": "NaN"}, "INVALID_PRICE"),
    ({"price": "1e5"}, "INVALID_PRICE"),
    ({"price": "9" * 60}, "INVALID_PRICE"),
    ({"price": 50000}, "INVALID_PRICE"),  # a JSON number, not a decimal string
    ({"price": " 5"}, "INVALID_PRICE"),
    ({"quantity": "0.00001"}, "INVALID_QUANTITY"),  # off the step grid
    ({"quantity": "-1"}, "INVALID_QUANTITY"),
    ({"quantity": "0"}, "INVALID_QUANTITY"),
    ({"quantity": "Infinity"}, "INVALID_QUANTITY"),
    ({"quantity": 1.5}, "INVALID_QUANTITY"),
    ({"quantity": "100000"}, "INVALID_QUANTITY"),  # above max_quantity
    ({"side": "hold"}, "INVALID_ORDER"),
    ({"type": "iceberg"}, "INVALID_ORDER"),
    ({"time_in_force": "GTX"}, "INVALID_ORDER"),
    ({"stp_mode": "maybe"}, "INVALID_ORDER"),
    ({"client_order_id": "has space"}, "INVALID_ORDER"),
    ({"time_in_force": "GTD"}, "INVALID_EXPIRY"),  # GTD without expire_at
    ({"time_in_force": "GTD", "expire_at": "tomorrow"}, "INVALID_EXPIRY"),
    ({"time_in_force": "GTD", "expire_at": "2020-01-01T00:00:00Z"}, "INVALID_EXPIRY"),
    ({"stop_price": "1"}, "INVALID_ORDER"),  # a stop price on a plain limit order
    ({"extra": "field"}, "INVALID_REQUEST"),
]


@pytest.mark.parametrize(("change", "code"), BAD_FIELDS)
def test_bad_order_input_is_refused_with_its_code(
    server: LiveServer, change: dict[str, Any], code: str
) -> None:
    symbol, _, seller, _ = market_pair(server)
    body = {"symbol": symbol, **SELL_ONE, **change}
    error = seller.api.fails("POST", "/orders", 400, code, json=body)
    assert error["message"]
    assert seller.api.ok("GET", "/orders") == []


def test_unknown_market_is_404_and_garbage_bodies_are_400(server: LiveServer) -> None:
    trader = new_trader(server, {"USDT": "100"})
    body = {"symbol": "NOPE/USDT", **SELL_ONE}
    trader.api.fails("POST", "/orders", 404, "MARKET_NOT_FOUND", json=body)
    trader.api.fails("POST", "/orders", 400, "INVALID_REQUEST", content=b"{not json")
    trader.api.fails("POST", "/orders", 400, "INVALID_REQUEST", json=[1, 2])
    trader.api.fails("POST", "/orders", 400, "INVALID_REQUEST", json={"side": "buy"})


def test_min_notional_is_enforced(server: LiveServer) -> None:
    symbol = fresh_market(server, min_notional="10")
    trader = new_trader(server, {"USDT": "1000"})
    body = {"symbol": symbol, "side": "buy", "type": "limit", "quantity": "0.0001", "price": "100"}
    trader.api.fails("POST", "/orders", 400, "MIN_NOTIONAL", json=body)


# -- cancel -----------------------------------------------------------------------------


def test_cancel_releases_the_reservation_and_is_idempotent(server: LiveServer) -> None:
    symbol, _, _, buyer = market_pair(server)
    before = balances(buyer)["USDT"]
    order = place(buyer, symbol, side="buy", type="limit", quantity="1", price="100")["order"]
    assert balances(buyer)["USDT"]["locked"] != "0.000000"
    cancelled = buyer.api.ok("DELETE", f"/orders/{order['id']}")
    assert (cancelled["status"], cancelled["close_reason"]) == ("cancelled", "cancelled_by_user")
    assert balances(buyer)["USDT"] == before
    again = buyer.api.ok("DELETE", f"/orders/{order['id']}")
    assert again == cancelled


def test_cancelling_a_filled_order_returns_it_unchanged(server: LiveServer) -> None:
    symbol, _, seller, buyer = market_pair(server)
    order = place(seller, symbol, **SELL_ONE)["order"]
    place(buyer, symbol, side="buy", type="market", quantity="1")
    assert seller.api.ok("DELETE", f"/orders/{order['id']}")["status"] == "filled"


def test_nobody_cancels_or_sees_another_users_order(server: LiveServer) -> None:
    symbol, _, seller, buyer = market_pair(server)
    order = place(seller, symbol, **SELL_ONE)["order"]
    buyer.api.fails("DELETE", f"/orders/{order['id']}", 404, "ORDER_NOT_FOUND")
    buyer.api.fails("GET", f"/orders/{order['id']}", 404, "ORDER_NOT_FOUND")
    buyer.api.fails(
        "PATCH", f"/orders/{order['id']}", 404, "ORDER_NOT_FOUND", json={"price": "50001"}
    )
    assert seller.api.ok("GET", f"/orders/{order['id']}")["status"] == "open"
    assert order["id"] not in [o["id"] for o in buyer.api.ok("GET", "/orders")]


@pytest.mark.parametrize("order_id", ["999999999", "abc", "0", "-1", "1" * 30])
def test_unknown_or_malformed_order_ids_are_404(server: LiveServer, order_id: str) -> None:
    trader = new_trader(server)
    trader.api.fails("DELETE", f"/orders/{order_id}", 404, "ORDER_NOT_FOUND")
    trader.api.fails("GET", f"/orders/{order_id}", 404, "ORDER_NOT_FOUND")


# -- amend ------------------------------------------------------------------------------


def test_amend_reprices_and_may_trade_at_once(server: LiveServer) -> None:
    symbol, _, seller, buyer = market_pair(server)
    place(seller, symbol, side="sell", type="limit", quantity="1", price="105")
    bid = place(buyer, symbol, side="buy", type="limit", quantity="2", price="100")["order"]
    smaller = buyer.api.ok("PATCH", f"/orders/{bid['id']}", json={"quantity": "1.5"})
    assert smaller["order"]["quantity"] == "1.5000"
    assert smaller["trades"] == []
    crossed = buyer.api.ok("PATCH", f"/orders/{bid['id']}", json={"price": "105"})
    assert [t["price"] for t in crossed["trades"]] == ["105.00"]
    assert crossed["order"]["filled_quantity"] == "1.0000"
    assert crossed["order"]["status"] == "partially_filled"


def test_amend_refusals(server: LiveServer) -> None:
    symbol, _, seller, _ = market_pair(server)
    order = place(seller, symbol, **SELL_ONE)["order"]
    path = f"/orders/{order['id']}"
    seller.api.fails("PATCH", path, 400, "INVALID_ORDER", json={})
    seller.api.fails("PATCH", path, 400, "INVALID_PRICE", json={"price": "1.001"})
    seller.api.fails("PATCH", path, 400, "INVALID_QUANTITY", json={"quantity": "0"})
    seller.api.ok("DELETE", path)
    seller.api.fails("PATCH", path, 404, "ORDER_NOT_FOUND", json={"price": "1"})


# -- reads ------------------------------------------------------------------------------


def test_list_orders_filters_and_pages(server: LiveServer) -> None:
    symbol, _, seller, _ = market_pair(server)
    other = fresh_market(server)
    ids = [
        place(seller, symbol, side="sell", type="limit", quantity="1", price=str(200 + i))["order"][
            "id"
        ]
        for i in range(5)
    ]
    seller.api.ok("DELETE", f"/orders/{ids[0]}")
    newest_first = [o["id"] for o in seller.api.ok("GET", "/orders")]
    assert newest_first == ids[::-1]
    active = [o["id"] for o in seller.api.ok("GET", "/orders", params={"status": "active"})]
    assert active == ids[:0:-1]
    cancelled = seller.api.ok("GET", "/orders", params={"status": "cancelled"})
    assert [o["id"] for o in cancelled] == [ids[0]]
    assert seller.api.ok("GET", "/orders", params={"symbol": other}) == []
    by_dash = seller.api.ok("GET", "/orders", params={"symbol": symbol.replace("/", "-")})
    assert len(by_dash) == 5
    response = seller.api.request("GET", "/orders", params={"limit": 2})
    page = response.json()
    assert [o["id"] for o in page["data"]] == ids[:2:-1][:2]
    cursor = page["meta"]["pagination"]["next_before"]
    second = seller.api.ok("GET", "/orders", params={"limit": 2, "before": cursor})
    assert [o["id"] for o in second] == [ids[2], ids[1]]
    created = seller.api.ok("GET", f"/orders/{ids[0]}")["created_at"]
    in_range = seller.api.ok("GET", "/orders", params={"start_time": created})
    assert ids[0] in [o["id"] for o in in_range]
    assert seller.api.ok("GET", "/orders", params={"end_time": "1"}) == []


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 1001},
        {"status": "sleeping"},
        {"start_time": "yesterday"},
        {"before": "x"},
        {"limit": "many"},
    ],
)
def test_bad_list_parameters_are_400(server: LiveServer, params: dict[str, Any]) -> None:
    trader = new_trader(server)
    trader.api.fails("GET", "/orders", 400, "INVALID_REQUEST", params=params)


def test_get_and_cancel_by_client_order_id(server: LiveServer) -> None:
    symbol, _, seller, buyer = market_pair(server)
    order = place(seller, symbol, **SELL_ONE, client_order_id="abc.1")["order"]
    assert seller.api.ok("GET", "/orders/client/abc.1")["id"] == order["id"]
    buyer.api.fails("GET", "/orders/client/abc.1", 404, "ORDER_NOT_FOUND")
    buyer.api.fails("DELETE", "/orders/client/abc.1", 404, "ORDER_NOT_FOUND")
    cancelled = seller.api.ok("DELETE", "/orders/client/abc.1")
    assert (cancelled["id"], cancelled["status"]) == (order["id"], "cancelled")
    assert seller.api.ok("DELETE", "/orders/client/abc.1") == cancelled  # idempotent
    seller.api.fails("GET", "/orders/client/nope", 404, "ORDER_NOT_FOUND")


def test_pages_walk_both_ways(server: LiveServer) -> None:
    symbol, _, seller, _ = market_pair(server)
    ids = [
        place(seller, symbol, side="sell", type="limit", quantity="1", price="300")["order"]["id"]
        for _ in range(4)
    ]
    older = seller.api.request("GET", "/orders", params={"limit": 2, "before": ids[2]}).json()
    assert [o["id"] for o in older["data"]] == [ids[1], ids[0]]
    cursor = older["meta"]["pagination"]["next_after"]
    newer = seller.api.ok("GET", "/orders", params={"limit": 2, "after": cursor})
    assert [o["id"] for o in newer] == [ids[3], ids[2]]


def test_expire_at_takes_epoch_milliseconds_as_a_number_or_digits(server: LiveServer) -> None:
    symbol, _, _, buyer = market_pair(server)
    for expire_at in (32503680000000, "32503680000000"):
        order = place(
            buyer,
            symbol,
            side="buy",
            type="limit",
            quantity="1",
            price="1",
            time_in_force="GTD",
            expire_at=expire_at,
        )["order"]
        assert order["expire_at"] == "3000-01-01T00:00:00.000Z"


def test_insufficient_balance_details_are_decimal_strings(server: LiveServer) -> None:
    symbol, _, _, _ = market_pair(server)
    poor = new_trader(server, {"USDT": "10"})
    body = {"symbol": symbol, "side": "buy", "type": "limit", "quantity": "1", "price": "100"}
    error = poor.api.fails("POST", "/orders", 400, "INSUFFICIENT_BALANCE", json=body)
    assert error["details"] == {"asset": "USDT", "required": "100.100000", "available": "10.000000"}
