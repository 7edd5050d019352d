"""Authentication and authorization over HTTP: JWT checks, ownership, order rate limits.

Hostile tokens are signed by hand (`forge`), so a test controls every header field
and claim; a control test shows that `forge` with the server's secret and HS256
makes a token the server accepts, so each 401 below is the server's refusal of
exactly what that test changes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crossbook.api.auth import Principal, Role

from api_support import (
    Api,
    LiveServer,
    admin_api,
    fresh_market,
    live_server,
    new_trader,
    place,
    refused,
    tokens,
)

OTHER_SECRET = "another-secret-that-is-long-enough-for-hs256!"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(claims: dict[str, Any], secret: str, *, alg: str = "HS256") -> str:
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    if alg == "none":
        return f"{header}.{payload}."
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[alg]
    signature = hmac.new(secret.encode(), f"{header}.{payload}".encode(), digest).digest()
    return f"{header}.{payload}.{b64url(signature)}"


def trader_claims(user_id: int, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": str(user_id), "role": "trader", "iat": now, "exp": now + 600}
    claims.update(changes)
    return claims


def secret_of(server: LiveServer) -> str:
    return server.settings.jwt_secret_value


def unauthorized(server: LiveServer, authorization: str) -> None:
    """GET /balances with this Authorization header is 401 with a Bearer challenge."""
    api = Api(server)
    response = refused(
        api, "GET", "/balances", 401, "UNAUTHORIZED", headers={"Authorization": authorization}
    )
    assert response.headers["www-authenticate"] == "Bearer"


# -- JWT ---------------------------------------------------------------------------------


def test_a_forged_hs256_token_with_the_right_secret_is_accepted(server: LiveServer) -> None:
    trader = new_trader(server, {"USDT": "3"})
    token = forge(trader_claims(trader.user_id), secret_of(server))
    balances = Api(server, token).ok("GET", "/balances")
    assert [(b["asset"], b["available"]) for b in balances] == [("USDT", "3.000000")]


def test_an_expired_token_is_refused(server: LiveServer) -> None:
    trader = new_trader(server)
    past = int(time.time()) - 3600
    token = tokens(server).issue(Principal(Role.TRADER, trader.user_id), ttl_s=60, now_s=past)
    unauthorized(server, f"Bearer {token}")


def test_a_token_signed_with_another_secret_is_refused(server: LiveServer) -> None:
    trader = new_trader(server)
    unauthorized(server, f"Bearer {forge(trader_claims(trader.user_id), OTHER_SECRET)}")


def test_an_unsigned_alg_none_token_is_refused(server: LiveServer) -> None:
    trader = new_trader(server)
    token = forge(trader_claims(trader.user_id), "", alg="none")
    unauthorized(server, f"Bearer {token}")


def test_an_hs512_token_with_the_right_secret_is_refused(server: LiveServer) -> None:
    trader = new_trader(server)
    token = forge(trader_claims(trader.user_id), secret_of(server), alg="HS512")
    unauthorized(server, f"Bearer {token}")


@pytest.mark.parametrize("claim", ["exp", "sub", "role"])
def test_a_token_missing_a_required_claim_is_refused(server: LiveServer, claim: str) -> None:
    trader = new_trader(server)
    claims = trader_claims(trader.user_id)
    del claims[claim]
    unauthorized(server, f"Bearer {forge(claims, secret_of(server))}")


@pytest.mark.parametrize(
    "changes",
    [
        {"role": "admin"},  # an admin role needs the subject "admin"
        {"role": "root"},
        {"sub": "admin"},  # a trader's subject is a user id
        {"sub": "0"},
        {"sub": "-5"},
        {"sub": "\u00b2"},  # isdigit() but not a number: was a 500 on every route
        {"sub": "\u0661"},  # Arabic-Indic one: int() reads 1, so it authenticated as user 1
        {"sub": "\uff11"},  # fullwidth one: likewise
        {"sub": "9" * 30},
        {"sub": "9223372036854775807"},  # a well-formed id that is no user
        {"exp": "tomorrow"},
    ],
    ids=repr,
)
def test_a_token_with_a_bad_claim_is_refused(server: LiveServer, changes: dict[str, Any]) -> None:
    trader = new_trader(server)
    unauthorized(
        server, f"Bearer {forge(trader_claims(trader.user_id, **changes), secret_of(server))}"
    )


@pytest.mark.parametrize(
    "authorization",
    ["Basic x", "Bearer", "Bearer not.a.jwt", "Token abc", "bearer"],
)
def test_a_malformed_authorization_header_is_refused(
    server: LiveServer, authorization: str
) -> None:
    unauthorized(server, authorization)


def test_no_authorization_header_is_refused(server: LiveServer) -> None:
    response = refused(Api(server), "GET", "/balances", 401, "UNAUTHORIZED")
    assert response.headers["www-authenticate"] == "Bearer"


def test_an_admin_token_is_forbidden_on_a_trader_endpoint(server: LiveServer) -> None:
    admin_api(server).fails("GET", "/balances", 403, "FORBIDDEN")


# -- ownership ---------------------------------------------------------------------------


def test_a_trader_cannot_see_or_touch_another_traders_order(server: LiveServer) -> None:
    symbol = fresh_market(server)
    owner = new_trader(server, {"USDT": "1000"})
    other = new_trader(server, {"USDT": "1000"})
    placed = place(owner, symbol, side="buy", type="limit", quantity="1", price="10")
    order_id = placed["order"]["id"]
    path = f"/orders/{order_id}"

    other.api.fails("GET", path, 404, "ORDER_NOT_FOUND")  # as if it did not exist: not 403
    other.api.fails("DELETE", path, 404, "ORDER_NOT_FOUND")
    other.api.fails("PATCH", path, 404, "ORDER_NOT_FOUND", json={"price": "11"})
    assert order_id not in [o["id"] for o in other.api.ok("GET", "/orders")]

    mine = owner.api.ok("GET", path)
    assert (mine["status"], mine["price"], mine["filled_quantity"]) == ("open", "10.00", "0.0000")
    assert order_id in [o["id"] for o in owner.api.ok("GET", "/orders", params={"status": "open"})]


def test_an_unknown_order_id_is_reported_like_another_users(server: LiveServer) -> None:
    trader = new_trader(server)
    trader.api.fails("GET", "/orders/999999999", 404, "ORDER_NOT_FOUND")
    trader.api.fails("DELETE", "/orders/999999999", 404, "ORDER_NOT_FOUND")


# -- rate limits -------------------------------------------------------------------------

BURST = 3
RATE_PER_S = 0.01  # one token per 100 s: no refill can happen while a test runs


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    path: Path = tmp_path_factory.mktemp("limited") / "crossbook.db"
    with live_server(path, order_rate_per_s=RATE_PER_S, order_burst=BURST) as running:
        yield running


def test_orders_beyond_the_burst_are_rate_limited_per_user(limited_server: LiveServer) -> None:
    server = limited_server
    symbol = fresh_market(server)
    order = {"symbol": symbol, "side": "buy", "type": "limit", "quantity": "1", "price": "10"}
    busy = new_trader(server, {"USDT": "1000"})
    calm = new_trader(server, {"USDT": "1000"})

    placed = [busy.api.ok("POST", "/orders", 201, json=order)["order"]["id"] for _ in range(BURST)]
    response = refused(busy.api, "POST", "/orders", 429, "RATE_LIMITED", json=order)
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= math.ceil(1 / RATE_PER_S)
    assert response.json()["error"]["details"]["retry_after_s"] == retry_after  # they agree

    # cancels take from the same bucket, and the refused requests changed nothing
    refused(busy.api, "DELETE", f"/orders/{placed[0]}", 429, "RATE_LIMITED")
    open_orders = busy.api.ok("GET", "/orders", params={"status": "open"})
    assert sorted(o["id"] for o in open_orders) == sorted(placed)

    # another user has a bucket of their own
    assert calm.api.ok("POST", "/orders", 201, json=order)["order"]["status"] == "open"
