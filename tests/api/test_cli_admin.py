"""The admin CLI (`crossbook user|deposit|withdraw|market|token`) against a live server.

The CLI signs its admin tokens with the configured JWT secret. The live server runs
in development with no secret set, so it uses the development secret, and so does
the CLI as long as the environment sets none: every CROSSBOOK_ variable is removed
for these tests.

`crossbook`'s callback points structlog at the runner's stderr; `run` restores the
logging configuration afterwards, so the server (in this process) keeps logging
where it did.
"""

from __future__ import annotations

import os

import pytest
import structlog
from typer.testing import CliRunner, Result

from crossbook.cli import app

from api_support import Api, LiveServer, admin_api, free_port, fresh_market


@pytest.fixture(autouse=True)
def no_crossbook_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CROSSBOOK_"):
            monkeypatch.delenv(name)


def run(*args: str) -> Result:
    saved = structlog.get_config()
    try:
        return CliRunner().invoke(app, list(args))
    finally:
        structlog.configure(**saved)


def ok(*args: str) -> str:
    result = run(*args)
    assert result.exit_code == 0, (result.exit_code, result.output)
    return result.stdout.strip()


def balances_of(server: LiveServer, user_id: str) -> dict[str, str]:
    rows = admin_api(server).ok("GET", f"/admin/users/{user_id}/balances")
    return {row["asset"]: row["available"] for row in rows}


def test_user_create_prints_the_new_users_id(server: LiveServer) -> None:
    user_id = ok("user", "create", "alice", "--url", server.url)
    assert user_id.isdigit()
    users = admin_api(server).ok("GET", "/admin/users", params={"limit": 1000})
    assert (user_id, "alice") in [(u["id"], u["name"]) for u in users]


def test_user_list_shows_created_users(server: LiveServer) -> None:
    user_id = ok("user", "create", "carol", "--url", server.url)
    assert f"{user_id}\tcarol" in ok("user", "list", "--url", server.url).splitlines()


def test_deposit_and_withdraw_move_a_balance(server: LiveServer) -> None:
    user_id = ok("user", "create", "bob", "--url", server.url)
    assert ok("deposit", user_id, "USDT", "100", "--url", server.url) == (
        "USDT available 100.000000"
    )
    assert ok("withdraw", user_id, "USDT", "40", "--url", server.url) == (
        "USDT available 60.000000"
    )
    assert balances_of(server, user_id) == {"USDT": "60.000000"}


def test_a_refused_command_exits_1_with_the_servers_code(server: LiveServer) -> None:
    user_id = ok("user", "create", "--url", server.url)
    result = run("deposit", user_id, "NOPE", "1", "--url", server.url)
    assert result.exit_code == 1
    assert "ASSET_NOT_FOUND" in result.stderr
    assert result.stdout == ""


def test_an_unreachable_server_exits_2() -> None:
    result = run("user", "list", "--url", f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 2
    assert "cannot reach the server" in result.stderr


def test_market_halt_and_resume(server: LiveServer) -> None:
    symbol = fresh_market(server)
    assert ok("market", "halt", symbol, "--url", server.url) == f"{symbol} halted"
    assert Api(server).ok("GET", f"/markets/{symbol}")["status"] == "halted"
    assert ok("market", "resume", symbol, "--url", server.url) == f"{symbol} active"
    assert Api(server).ok("GET", f"/markets/{symbol}")["status"] == "active"


def test_a_user_token_is_accepted_by_the_server_as_that_user(server: LiveServer) -> None:
    user_id = ok("user", "create", "dave", "--url", server.url)
    ok("deposit", user_id, "USDT", "25", "--url", server.url)
    token = ok("token", user_id)
    assert token.count(".") == 2  # header.payload.signature
    trader = Api(server, token)
    assert trader.ok("GET", "/balances")[0]["available"] == "25.000000"

    symbol = fresh_market(server)
    order = trader.ok(
        "POST",
        "/orders",
        201,
        json={"symbol": symbol, "side": "buy", "type": "limit", "quantity": "1", "price": "5"},
    )["order"]
    assert order["user_id"] == user_id


def test_an_admin_token_is_accepted_on_admin_routes(server: LiveServer) -> None:
    admin = Api(server, ok("token", "--admin", "--ttl", "60"))
    user_id = admin.ok("POST", "/admin/users", 201, json={"name": "by-cli-admin"})["id"]
    assert user_id.isdigit()
    admin.fails("GET", "/balances", 403, "FORBIDDEN")  # an admin, not a trader


@pytest.mark.parametrize("args", [(), ("5", "--admin")], ids=["neither", "both"])
def test_token_needs_exactly_one_of_a_user_id_or_admin(args: tuple[str, ...]) -> None:
    result = run("token", *args)
    assert result.exit_code == 2
    assert "USER_ID or --admin" in result.stderr
    assert result.stdout == ""


def test_a_token_from_another_secret_is_refused_by_the_server(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_id = ok("user", "create", "eve", "--url", server.url)
    monkeypatch.setenv("CROSSBOOK_JWT_SECRET", "a-different-secret-of-enough-length!!")
    token = ok("token", user_id)
    Api(server, token).fails("GET", "/balances", 401, "UNAUTHORIZED")
