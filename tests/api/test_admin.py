"""The admin API (`/api/v1/admin`): users, tokens, money in and out, markets, and who may call it.

Every call goes over real HTTP to the module's live server; each test makes its own
users and markets, so tests sharing the server never share balances or books.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from fastapi.routing import APIRoute

from crossbook.api.routes import admin as admin_routes

from api_support import (
    Api,
    LiveServer,
    Trader,
    admin_api,
    fresh_market,
    new_trader,
    place,
    refused,
)


def balances_of(server: LiveServer, user_id: int | str) -> dict[str, dict[str, str]]:
    rows = admin_api(server).ok("GET", f"/admin/users/{user_id}/balances")
    return {row["asset"]: row for row in rows}


def market_symbols(server: LiveServer) -> list[str]:
    return [m["symbol"] for m in Api(server).ok("GET", "/markets")]


def new_user(server: LiveServer, name: str = "someone") -> int:
    return int(admin_api(server).ok("POST", "/admin/users", 201, json={"name": name})["id"])


# -- users -------------------------------------------------------------------------------


def test_create_user_returns_its_id_name_and_creation_time(server: LiveServer) -> None:
    user = admin_api(server).ok("POST", "/admin/users", 201, json={"name": "alice"})
    assert user["id"].isdigit() and int(user["id"]) > 0
    assert user["name"] == "alice"
    assert user["created_at"].endswith("Z")


def test_a_user_needs_no_name(server: LiveServer) -> None:
    user = admin_api(server).ok("POST", "/admin/users", 201, json={})
    assert user["name"] is None


def test_an_empty_name_is_refused(server: LiveServer) -> None:
    admin_api(server).fails("POST", "/admin/users", 400, "INVALID_REQUEST", json={"name": ""})


def test_users_are_listed_by_ascending_id_and_paged_with_after(server: LiveServer) -> None:
    admin = admin_api(server)
    ids = [new_user(server, f"pager{i}") for i in range(3)]
    assert ids == sorted(ids)

    everyone = admin.ok("GET", "/admin/users", params={"limit": 1000})
    listed = [int(u["id"]) for u in everyone]
    assert listed == sorted(listed)
    assert set(ids) <= set(listed)

    page = admin.ok("GET", "/admin/users", params={"after": str(ids[0]), "limit": 2})
    assert [int(u["id"]) for u in page] == ids[1:]
    assert [u["name"] for u in page] == ["pager1", "pager2"]
    assert admin.ok("GET", "/admin/users", params={"after": str(ids[2])}) == []


@pytest.mark.parametrize("params", [{"after": "abc"}, {"after": "-1"}, {"limit": 0}])
def test_a_bad_page_request_is_refused(server: LiveServer, params: dict[str, Any]) -> None:
    admin_api(server).fails("GET", "/admin/users", 400, "INVALID_REQUEST", params=params)


# -- tokens ------------------------------------------------------------------------------


def test_an_issued_token_works_on_a_trader_endpoint(server: LiveServer) -> None:
    admin = admin_api(server)
    user_id = new_user(server)
    admin.ok(
        "POST", "/admin/deposits", 201, json={"user_id": user_id, "asset": "USDT", "amount": "7"}
    )
    issued = admin.ok("POST", f"/admin/users/{user_id}/tokens", 201, json={"ttl_s": 600})
    assert issued["token_type"] == "Bearer"
    assert issued["expires_at"].endswith("Z")
    balances = Api(server, issued["token"]).ok("GET", "/balances")
    assert [(b["asset"], b["available"]) for b in balances] == [("USDT", "7.000000")]


def test_a_token_can_be_issued_without_a_body(server: LiveServer) -> None:
    user_id = new_user(server)
    issued = admin_api(server).ok("POST", f"/admin/users/{user_id}/tokens", 201)
    assert Api(server, issued["token"]).ok("GET", "/balances") == []


@pytest.mark.parametrize("user_id", ["999999999", "0", "abc"])
def test_a_token_for_an_unknown_user_is_refused(server: LiveServer, user_id: str) -> None:
    admin_api(server).fails(
        "POST", f"/admin/users/{user_id}/tokens", 404, "USER_NOT_FOUND", json={}
    )


# -- balances ----------------------------------------------------------------------------


def test_a_new_user_has_no_balances(server: LiveServer) -> None:
    assert balances_of(server, new_user(server)) == {}


@pytest.mark.parametrize("user_id", ["999999999", "abc", "-1"])
def test_balances_of_an_unknown_user_are_refused(server: LiveServer, user_id: str) -> None:
    admin_api(server).fails("GET", f"/admin/users/{user_id}/balances", 404, "USER_NOT_FOUND")


def test_user_zero_is_the_fee_account_that_collects_trade_fees(server: LiveServer) -> None:
    symbol = fresh_market(server)
    base = symbol.split("/")[0]
    seller = new_trader(server, {base: "1"})
    buyer = new_trader(server, {"USDT": "1000"})
    before = Decimal(balances_of(server, 0).get("USDT", {}).get("total", "0"))

    place(seller, symbol, side="sell", type="limit", quantity="1", price="100")
    trade = place(buyer, symbol, side="buy", type="market", quantity="1")["trades"][0]

    assert trade["fee_asset"] == "USDT"
    fees = Decimal(trade["buyer_fee"]) + Decimal(trade["seller_fee"])
    assert fees > 0
    after = balances_of(server, 0)["USDT"]
    assert Decimal(after["total"]) - before == fees
    assert after["locked"] == "0.000000"


# -- deposits and withdrawals ------------------------------------------------------------


def test_deposit_then_withdraw_moves_the_available_balance(server: LiveServer) -> None:
    admin = admin_api(server)
    user_id = new_user(server)
    deposited = admin.ok(
        "POST",
        "/admin/deposits",
        201,
        json={"user_id": str(user_id), "asset": "USDT", "amount": "100"},
    )
    assert deposited == {
        "user_id": str(user_id),
        "asset": "USDT",
        "amount": "100.000000",
        "balance": {
            "asset": "USDT",
            "available": "100.000000",
            "locked": "0.000000",
            "total": "100.000000",
        },
    }
    withdrawn = admin.ok(
        "POST",
        "/admin/withdrawals",
        201,
        json={"user_id": user_id, "asset": "USDT", "amount": "30.5"},
    )
    assert withdrawn["amount"] == "30.500000"
    assert withdrawn["balance"]["available"] == "69.500000"
    assert balances_of(server, user_id)["USDT"]["available"] == "69.500000"


@pytest.mark.parametrize("path", ["/admin/deposits", "/admin/withdrawals"])
def test_an_unknown_asset_is_refused(server: LiveServer, path: str) -> None:
    user_id = new_user(server)
    body = {"user_id": user_id, "asset": "NOPE", "amount": "1"}
    admin_api(server).fails("POST", path, 404, "ASSET_NOT_FOUND", json=body)


@pytest.mark.parametrize("path", ["/admin/deposits", "/admin/withdrawals"])
@pytest.mark.parametrize("user_id", [999_999_999, "999999999", "abc", -1])
def test_an_unknown_user_is_refused(server: LiveServer, path: str, user_id: int | str) -> None:
    body = {"user_id": user_id, "asset": "USDT", "amount": "1"}
    admin_api(server).fails("POST", path, 404, "USER_NOT_FOUND", json=body)


@pytest.mark.parametrize("path", ["/admin/deposits", "/admin/withdrawals"])
@pytest.mark.parametrize(
    "amount",
    ["0", "-1", "1e3", "abc", "", "1.0000001", 100, 1.5],
    ids=["zero", "negative", "exponent", "text", "empty", "too-many-decimals", "int", "float"],
)
def test_a_bad_amount_is_refused_and_nothing_moves(
    server: LiveServer, path: str, amount: object
) -> None:
    user_id = new_user(server)
    admin = admin_api(server)
    admin.ok(
        "POST", "/admin/deposits", 201, json={"user_id": user_id, "asset": "USDT", "amount": "5"}
    )
    body = {"user_id": user_id, "asset": "USDT", "amount": amount}
    admin.fails("POST", path, 400, "INVALID_AMOUNT", json=body)
    assert balances_of(server, user_id)["USDT"]["total"] == "5.000000"


def test_withdrawing_more_than_available_is_refused_and_changes_nothing(
    server: LiveServer,
) -> None:
    symbol = fresh_market(server)
    trader = new_trader(server, {"USDT": "100"})
    place(trader, symbol, side="buy", type="limit", quantity="0.5", price="100")  # locks USDT
    before = balances_of(server, trader.user_id)["USDT"]
    available = Decimal(before["available"])
    assert Decimal(before["locked"]) > 0 and available < 100

    more_than_available = str(available + Decimal("0.000001"))  # still less than the total
    body = {"user_id": trader.user_id, "asset": "USDT", "amount": more_than_available}
    admin_api(server).fails("POST", "/admin/withdrawals", 400, "INSUFFICIENT_BALANCE", json=body)

    assert balances_of(server, trader.user_id)["USDT"] == before


# -- markets -----------------------------------------------------------------------------

NEW_MARKET: dict[str, Any] = {
    "tick_size": "0.01",
    "step_size": "0.001",
    "min_quantity": "0.001",
    "max_quantity": "100",
}


def test_create_a_market_with_two_new_assets(server: LiveServer) -> None:
    admin = admin_api(server)
    # tick 0.01 x step 0.001 is 0.00001: exactly the 5-decimal quote's precision
    body = {**NEW_MARKET, "base": "ADMB", "quote": "ADMQ", "base_decimals": 8, "quote_decimals": 5}
    market = admin.ok("POST", "/admin/markets", 201, json=body)
    assert market["symbol"] == "ADMB/ADMQ"
    assert (market["base_asset"], market["base_decimals"]) == ("ADMB", 8)
    assert (market["quote_asset"], market["quote_decimals"]) == ("ADMQ", 5)
    assert market["status"] == "active"
    assert (market["tick_size"], market["step_size"]) == ("0.01", "0.001")
    assert (market["min_quantity"], market["max_quantity"]) == ("0.001", "100.000")
    assert "ADMB/ADMQ" in market_symbols(server)

    user_id = new_user(server)
    for asset, amount in (("ADMB", "1.00000000"), ("ADMQ", "250.00000")):  # the assets exist
        admin.ok(
            "POST",
            "/admin/deposits",
            201,
            json={"user_id": user_id, "asset": asset, "amount": amount},
        )
    assert {a: b["available"] for a, b in balances_of(server, user_id).items()} == {
        "ADMB": "1.00000000",
        "ADMQ": "250.00000",
    }


def test_create_a_market_of_a_new_base_against_an_existing_quote(server: LiveServer) -> None:
    body = {**NEW_MARKET, "base": "ADMC", "quote": "USDT", "base_decimals": 6}
    market = admin_api(server).ok("POST", "/admin/markets", 201, json=body)
    assert market["symbol"] == "ADMC/USDT"
    assert market["quote_decimals"] == 6
    trader = new_trader(server, {"USDT": "10"})
    order = place(trader, "ADMC/USDT", side="buy", type="limit", quantity="1", price="1")
    assert order["order"]["status"] == "open"


@pytest.mark.parametrize(
    "body",
    [
        {"base": "ADMD", "quote": "USDT"},  # new base without base_decimals
        {"base": "BTC", "quote": "ADME"},  # new quote without quote_decimals
        {"base": "ADMF", "quote": "USDT", "base_decimals": 8, "quote_decimals": 2},  # USDT has 6
    ],
    ids=["new-base", "new-quote", "wrong-decimals-of-existing"],
)
def test_asset_decimals_are_required_for_new_assets_and_must_match_existing_ones(
    server: LiveServer, body: dict[str, Any]
) -> None:
    before = market_symbols(server)
    admin_api(server).fails(
        "POST", "/admin/markets", 400, "INVALID_ASSET", json={**NEW_MARKET, **body}
    )
    assert market_symbols(server) == before


@pytest.mark.parametrize(
    "rules",
    [
        {"tick_size": "0.001"},  # finer than the 2-decimal quote allows (with step 1)
        {"tick_size": "0"},
        {"step_size": "0.000000001"},  # finer than the 8-decimal base
        {"min_quantity": "5", "max_quantity": "1"},
        {"maker_fee_rate": "2"},
    ],
    ids=["tick-finer-than-quote", "zero-tick", "step-finer-than-base", "min-above-max", "fee"],
)
def test_a_bad_spec_creates_neither_asset_nor_market(
    server: LiveServer, rules: dict[str, str]
) -> None:
    admin = admin_api(server)
    base, quote = "BADB", "BADQ"
    body = {
        "base": base,
        "quote": quote,
        "base_decimals": 8,
        "quote_decimals": 2,
        "tick_size": "0.01",
        "step_size": "1",
        "min_quantity": "1",
        "max_quantity": "10",
        **rules,
    }
    before = market_symbols(server)
    admin.fails("POST", "/admin/markets", 400, "INVALID_MARKET_SPEC", json=body)

    assert market_symbols(server) == before
    user_id = new_user(server)
    for asset in (base, quote):  # neither asset exists
        admin.fails(
            "POST",
            "/admin/deposits",
            404,
            "ASSET_NOT_FOUND",
            json={"user_id": user_id, "asset": asset, "amount": "1"},
        )


def test_a_market_that_exists_is_refused(server: LiveServer) -> None:
    symbol = fresh_market(server)
    base = symbol.split("/")[0]
    before = market_symbols(server)
    body = {**NEW_MARKET, "base": base, "quote": "USDT"}
    admin_api(server).fails("POST", "/admin/markets", 409, "MARKET_EXISTS", json=body)
    assert market_symbols(server) == before


# -- halt and resume ---------------------------------------------------------------------


def test_a_halted_market_refuses_orders_until_resumed(server: LiveServer) -> None:
    admin = admin_api(server)
    symbol = fresh_market(server)
    trader = new_trader(server, {"USDT": "1000"})
    order = {"side": "buy", "type": "limit", "quantity": "1", "price": "10"}

    halted = admin.ok("POST", f"/admin/markets/{symbol}/halt")
    assert (halted["symbol"], halted["status"]) == (symbol, "halted")
    assert Api(server).ok("GET", f"/markets/{symbol}")["status"] == "halted"
    trader.api.fails("POST", "/orders", 409, "MARKET_HALTED", json={"symbol": symbol, **order})
    assert balances_of(server, trader.user_id)["USDT"]["locked"] == "0.000000"

    resumed = admin.ok("POST", f"/admin/markets/{symbol}/resume")
    assert resumed["status"] == "active"
    assert place(trader, symbol, **order)["order"]["status"] == "open"


@pytest.mark.parametrize("action", ["halt", "resume"])
def test_halting_an_unknown_market_is_refused(server: LiveServer, action: str) -> None:
    admin_api(server).fails("POST", f"/admin/markets/NOPE/USDT/{action}", 404, "MARKET_NOT_FOUND")


# -- authorization -----------------------------------------------------------------------


def admin_calls(user_id: int, symbol: str) -> list[tuple[str, str, str, dict[str, Any] | None]]:
    """(method, route template, concrete path, body) for every admin route."""
    transfer = {"user_id": user_id, "asset": "USDT", "amount": "1"}
    market = {**NEW_MARKET, "base": "AUTHB", "quote": "USDT", "base_decimals": 8}
    uid = str(user_id)
    return [
        ("POST", "/admin/users", "/admin/users", {"name": "intruder"}),
        ("GET", "/admin/users", "/admin/users", None),
        ("POST", "/admin/users/{user_id}/tokens", f"/admin/users/{uid}/tokens", {}),
        ("GET", "/admin/users/{user_id}/balances", f"/admin/users/{uid}/balances", None),
        ("POST", "/admin/deposits", "/admin/deposits", transfer),
        ("POST", "/admin/withdrawals", "/admin/withdrawals", transfer),
        ("POST", "/admin/markets", "/admin/markets", market),
        ("POST", "/admin/markets/{symbol}/halt", f"/admin/markets/{symbol}/halt", None),
        ("POST", "/admin/markets/{symbol}/resume", f"/admin/markets/{symbol}/resume", None),
    ]


def test_the_calls_below_cover_every_admin_route() -> None:
    served = {
        (method, route.path.removeprefix("/api/v1").replace("{symbol:path}", "{symbol}"))
        for route in admin_routes.router.routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
    }
    assert served == {(method, template) for method, template, _, _ in admin_calls(1, "X/Y")}


def forbidden_calls_changed_nothing(server: LiveServer, trader: Trader, symbol: str) -> None:
    assert balances_of(server, trader.user_id)["USDT"]["total"] == "10.000000"
    assert Api(server).ok("GET", f"/markets/{symbol}")["status"] == "active"
    assert "AUTHB/USDT" not in market_symbols(server)
    names = [u["name"] for u in admin_api(server).ok("GET", "/admin/users", params={"limit": 1000})]
    assert "intruder" not in names


def test_every_admin_route_needs_a_token(server: LiveServer) -> None:
    symbol = fresh_market(server)
    trader = new_trader(server, {"USDT": "10"})
    anonymous = Api(server)
    for method, _, path, body in admin_calls(trader.user_id, symbol):
        response = refused(anonymous, method, path, 401, "UNAUTHORIZED", json=body)
        assert response.headers["www-authenticate"] == "Bearer", (method, path)
    forbidden_calls_changed_nothing(server, trader, symbol)


def test_a_trader_token_is_forbidden_on_every_admin_route(server: LiveServer) -> None:
    symbol = fresh_market(server)
    trader = new_trader(server, {"USDT": "10"})
    for method, _, path, body in admin_calls(trader.user_id, symbol):
        trader.api.fails(method, path, 403, "FORBIDDEN", json=body)
    forbidden_calls_changed_nothing(server, trader, symbol)


def test_market_spec_errors_name_the_api_field(server: LiveServer) -> None:
    body = {
        "base": "ZZQ",
        "quote": "USDT",
        "base_decimals": 2,
        "tick_size": "0.01",
        "step_size": "0.001",
        "min_quantity": "1",
        "max_quantity": "10",
    }
    error = admin_api(server).fails("POST", "/admin/markets", 400, "INVALID_MARKET_SPEC", json=body)
    assert error["details"]["field"] == "step_size"
    assert "lot_size" not in error["message"]


def test_asset_codes_are_case_insensitive_in_transfers(server: LiveServer) -> None:
    trader = new_trader(server)
    body = {"user_id": trader.user_id, "asset": "usdt", "amount": "5"}
    data = admin_api(server).ok("POST", "/admin/deposits", 201, json=body)
    assert (data["asset"], data["amount"]) == ("USDT", "5.000000")
