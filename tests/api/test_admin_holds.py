"""`/admin/holds` and `crossbook holds` against a live server in remote-wallet mode.

A real `crossbook wallet serve` (SQLite, its own process) and a live exchange
server (`api_support.live_server`, SQLite) pointed at it, one of each for the
module. The exchange runs with a short orphan grace (`GRACE_MS`, just above a
wallet call plus a commit, all set small) and its periodic passes only report
(`hold_reconcile_void=False`, a long interval), so a test decides when holds are
voided. An orphan is made the way a dying exchange leaves one: a hold applied
directly at the wallet under a fresh `hold:<hex>` key, which no command of the
exchange consumed. Waiting for the grace to pass, or for a settlement worker to
carry a void to the wallet, is polling with a deadline, never a sleep.

The embedded-mode test uses the module's other server (`server`, tests/api/conftest.py).
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import structlog
from typer.testing import CliRunner, Result

from crossbook.api.envelope import iso_ms
from crossbook.api.errors import ApiCode
from crossbook.cli import app as cli_app

from api_support import (
    Api,
    LiveServer,
    admin_api,
    documented_model,
    fresh_market,
    live_server,
    new_trader,
    place,
)
from wallet_support import WalletProcess

T = TypeVar("T")

WALLET_TIMEOUT_MS = 1_000
COMMIT_DEADLINE_MS = 500
COMMIT_OUTCOME_WAIT_MS = 500
GRACE_MS = WALLET_TIMEOUT_MS + COMMIT_DEADLINE_MS + COMMIT_OUTCOME_WAIT_MS + 100
INTERVAL_MS = 3_600_000  # no periodic pass but the start-up one while the module runs
REMOTE_SETTINGS: dict[str, Any] = {
    "wallet_timeout_ms": WALLET_TIMEOUT_MS,
    "commit_deadline_ms": COMMIT_DEADLINE_MS,
    "commit_outcome_wait_ms": COMMIT_OUTCOME_WAIT_MS,
    "hold_orphan_grace_ms": GRACE_MS,
    "hold_reconcile_interval_ms": INTERVAL_MS,
    "hold_reconcile_void": False,
    "settlement_backoff_ms": 50,
    "settlement_max_backoff_ms": 400,
    "breaker_reset_ms": 200,
}
ORPHAN_UNITS = 25_000_000  # 25 USDT (6 decimals)
DEPOSIT = "100"
POLL_S = 0.05  # interval between polls, within the bound below
WAIT_TIMEOUT_S = 30.0  # failure bound for anything polled
ORPHANED = "/admin/holds/orphaned"
RECONCILIATION = "/admin/holds/reconciliation"
VOID_ORPHANED = "/admin/holds/void-orphaned"
ORPHAN_FIELDS = {"key", "user_id", "asset", "amount", "applied_at", "age_ms"}
STATUS_FIELDS = {
    "passes",
    "startup_pass_done",
    "holds_found",
    "holds_voided",
    "void_failures",
    "orphaned",
    "last_pass_at",
    "last_pass_duration_ms",
    "last_pass_complete",
    "grace_ms",
    "interval_ms",
}


@pytest.fixture(scope="module")
def wallet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WalletProcess]:
    root: Path = tmp_path_factory.mktemp("holds-wallet")
    process = WalletProcess("holds", f"sqlite:///{root / 'wallet.db'}", root)
    process.start()
    yield process
    process.close()


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory, wallet: WalletProcess) -> Iterator[LiveServer]:
    path: Path = tmp_path_factory.mktemp("holds-api") / "crossbook.db"
    with live_server(
        path, wallet_url=wallet.url, wallet_token=wallet.service_token, **REMOTE_SETTINGS
    ) as running:
        yield running


# -- helpers ---------------------------------------------------------------------------------


def eventually(check: Callable[[], T | None], what: str) -> T:
    """The first truthy result of `check`, polled until `WAIT_TIMEOUT_S` passes."""
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"not within {WAIT_TIMEOUT_S} s: {what}"
        time.sleep(POLL_S)


def orphaned(server: LiveServer) -> tuple[list[dict[str, Any]], bool]:
    """`GET /admin/holds/orphaned`: (the holds, `meta.complete`), checked against the
    document."""
    response = admin_api(server).request("GET", ORPHANED)
    body = response.json()
    assert response.status_code == 200, body
    documented_model(server, "GET", ORPHANED, 200).model_validate(body)
    holds: list[dict[str, Any]] = body["data"]
    return holds, body["meta"]["complete"]


def listed(server: LiveServer, key: str) -> dict[str, Any] | None:
    return next((h for h in orphaned(server)[0] if h["key"] == key), None)


def new_user(server: LiveServer) -> int:
    """A user of the exchange with `DEPOSIT` USDT, deposited at the wallet."""
    admin = admin_api(server)
    user_id = int(admin.ok("POST", "/admin/users", 201, json={"name": "holder"})["id"])
    body = {"user_id": user_id, "asset": "USDT", "amount": DEPOSIT}
    admin.ok("POST", "/admin/deposits", 201, json=body)
    return user_id


def orphan_hold(wallet: WalletProcess, user_id: int, units: int = ORPHAN_UNITS) -> dict[str, Any]:
    """A hold applied at the wallet that no command of the exchange made: its receipt."""
    op = {
        "key": f"hold:{uuid.uuid4().hex}",
        "op": "hold",
        "user_id": user_id,
        "asset": "USDT",
        "amount_units": str(units),
    }
    return wallet.apply(op)


def usdt(wallet: WalletProcess, user_id: int) -> tuple[int, int]:
    """The user's USDT at the wallet: (available, locked) in minor units."""
    return wallet.balances(user_id).get("USDT", (0, 0))


def wallet_holds(wallet: WalletProcess, user_id: int) -> list[dict[str, Any]]:
    """The holds the wallet still has applied for the user (one page is enough here)."""
    now_ms = time.time_ns() // 1_000_000
    params = {"applied_before_ms": str(now_ms + 60_000), "user_id": str(user_id)}
    response = wallet.request("GET", "/v1/holds", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["meta"]["next"] is None, body
    holds: list[dict[str, Any]] = body["data"]
    return holds


def status(server: LiveServer) -> dict[str, Any]:
    data: dict[str, Any] = admin_api(server).ok("GET", RECONCILIATION)
    return data


# -- listing ---------------------------------------------------------------------------------


def test_an_orphaned_hold_is_listed_once_older_than_the_grace(
    remote: LiveServer, wallet: WalletProcess
) -> None:
    user_id = new_user(remote)
    made_at = time.monotonic()
    receipt = orphan_hold(wallet, user_id)
    key = receipt["key"]
    if time.monotonic() - made_at < GRACE_MS / 1000 / 2:  # surely younger than the grace
        assert listed(remote, key) is None
    hold = eventually(lambda: listed(remote, key), f"{key} listed")
    assert set(hold) == ORPHAN_FIELDS
    assert hold["user_id"] == str(user_id)
    assert (hold["asset"], hold["amount"]) == ("USDT", "25.000000")
    assert hold["applied_at"] == iso_ms(receipt["applied_at_ms"])
    assert hold["age_ms"] >= GRACE_MS
    holds, complete = orphaned(remote)
    assert complete is True
    assert [h["applied_at"] for h in holds] == sorted(h["applied_at"] for h in holds)
    assert usdt(wallet, user_id) == (100_000_000 - ORPHAN_UNITS, ORPHAN_UNITS)  # nothing voided


# -- voiding one -----------------------------------------------------------------------------


def test_void_of_an_orphaned_hold_releases_it_at_the_wallet(
    remote: LiveServer, wallet: WalletProcess
) -> None:
    admin = admin_api(remote)
    user_id = new_user(remote)
    made_at = time.monotonic()
    key = orphan_hold(wallet, user_id)["key"]
    if time.monotonic() - made_at < GRACE_MS / 1000 / 2:  # surely younger than the grace
        error = admin.fails("POST", f"/admin/holds/{key}/void", 404, ApiCode.HOLD_NOT_FOUND)
        assert "grace" in error["message"] and error["details"] == {"hold_key": key}
    hold = eventually(lambda: listed(remote, key), f"{key} listed")

    voided = admin.ok("POST", f"/admin/holds/{key}/void")
    assert {k: voided[k] for k in ("key", "user_id", "asset", "amount", "applied_at")} == {
        k: hold[k] for k in ("key", "user_id", "asset", "amount", "applied_at")
    }
    assert listed(remote, key) is None  # its fate is committed at once
    eventually(lambda: usdt(wallet, user_id) == (100_000_000, 0), "the wallet released the hold")
    balances = admin.ok("GET", f"/admin/users/{user_id}/balances")
    assert [(b["asset"], b["available"], b["locked"]) for b in balances] == [
        ("USDT", "100.000000", "0.000000")
    ]
    admin.fails("POST", f"/admin/holds/{key}/void", 404, ApiCode.HOLD_NOT_FOUND)  # once only


def test_void_of_an_unknown_key_is_hold_not_found(remote: LiveServer) -> None:
    admin = admin_api(remote)
    key = f"hold:{uuid.uuid4().hex}"
    error = admin.fails("POST", f"/admin/holds/{key}/void", 404, ApiCode.HOLD_NOT_FOUND)
    assert error["details"] == {"hold_key": key}


@pytest.mark.parametrize(
    "key",
    ["has space", "x" * 201, "caf\u00e9", "semi;colon"],
    ids=["space", "long", "utf8", "semi"],
)
def test_a_key_not_of_the_wallets_form_names_no_hold(remote: LiveServer, key: str) -> None:
    admin_api(remote).fails("POST", f"/admin/holds/{key}/void", 404, ApiCode.HOLD_NOT_FOUND)


def test_the_hold_of_an_open_order_is_not_orphaned(
    remote: LiveServer, wallet: WalletProcess
) -> None:
    admin = admin_api(remote)
    symbol = fresh_market(remote)
    trader = new_trader(remote, {"USDT": "1000"})
    order = place(trader, symbol, side="buy", type="limit", quantity="1", price="10")["order"]
    assert order["status"] == "open"
    (order_hold,) = wallet_holds(wallet, trader.user_id)
    funds_before = usdt(wallet, trader.user_id)
    assert funds_before[1] > 0  # the order's reservation is locked at the wallet
    # an orphan made after the order's hold is listed only once the grace has passed for both
    later = orphan_hold(wallet, new_user(remote))["key"]
    eventually(lambda: listed(remote, later), f"{later} listed")

    assert listed(remote, order_hold["key"]) is None
    error = admin.fails(
        "POST", f"/admin/holds/{order_hold['key']}/void", 404, ApiCode.HOLD_NOT_FOUND
    )
    assert "an order" in error["message"]
    assert trader.api.ok("GET", f"/orders/{order['id']}")["status"] == "open"
    assert usdt(wallet, trader.user_id) == funds_before
    assert [h["key"] for h in wallet_holds(wallet, trader.user_id)] == [order_hold["key"]]


# -- voiding all, and the figures ------------------------------------------------------------


def test_void_orphaned_voids_every_orphaned_hold(remote: LiveServer, wallet: WalletProcess) -> None:
    admin = admin_api(remote)
    users = [new_user(remote), new_user(remote)]
    keys = [orphan_hold(wallet, user_id)["key"] for user_id in users]
    eventually(lambda: all(listed(remote, key) for key in keys), "both listed")
    before = status(remote)

    report = admin.ok("POST", VOID_ORPHANED)
    assert report["found"] >= len(keys) and report["voided"] == report["found"]
    assert report["complete"] is True
    assert orphaned(remote) == ([], True)
    for user_id in users:
        eventually(lambda u=user_id: usdt(wallet, u) == (100_000_000, 0), f"{user_id} released")
    after = status(remote)
    assert after["passes"] == before["passes"] + 1
    assert after["holds_found"] == before["holds_found"] + report["found"]
    assert after["holds_voided"] == before["holds_voided"] + report["voided"]
    assert (after["orphaned"], after["last_pass_complete"]) == (0, True)
    assert admin.ok("POST", VOID_ORPHANED) == {"found": 0, "voided": 0, "complete": True}


def test_reconciliation_shows_the_reconcilers_figures(remote: LiveServer) -> None:
    figures = eventually(
        lambda: (s := status(remote))["startup_pass_done"] and s, "the start-up pass done"
    )
    assert set(figures) == STATUS_FIELDS
    assert (figures["grace_ms"], figures["interval_ms"]) == (GRACE_MS, INTERVAL_MS)
    assert figures["passes"] >= 1
    assert figures["last_pass_at"] is not None and figures["last_pass_at"].endswith("Z")
    assert isinstance(figures["last_pass_duration_ms"], int)
    assert figures["last_pass_duration_ms"] >= 0
    for name in ("holds_found", "holds_voided", "void_failures", "orphaned"):
        assert figures[name] >= 0, name


# -- who may call, and failures --------------------------------------------------------------

ROUTES = [
    ("GET", ORPHANED),
    ("POST", f"/admin/holds/hold:{uuid.uuid4().hex}/void"),
    ("POST", VOID_ORPHANED),
    ("GET", RECONCILIATION),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_a_trader_token_is_forbidden_and_no_token_unauthorized(
    remote: LiveServer, method: str, path: str
) -> None:
    trader = new_trader(remote)
    trader.api.fails(method, path, 403, ApiCode.FORBIDDEN)
    Api(remote).fails(method, path, 401, ApiCode.UNAUTHORIZED)


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_is_404_in_embedded_mode(server: LiveServer, method: str, path: str) -> None:
    error = admin_api(server).fails(method, path, 404, ApiCode.NOT_FOUND)
    assert "remote-wallet mode" in error["message"]


def test_a_wallet_outage_is_503_wallet_unavailable(
    remote: LiveServer, wallet: WalletProcess
) -> None:
    admin = admin_api(remote)
    wallet.stop()
    try:
        for method, path in ROUTES[:3]:
            response = admin.request(method, path)
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == ApiCode.WALLET_UNAVAILABLE
            assert response.headers["retry-after"] == "1"
            documented_model(remote, method, path, 503).model_validate(response.json())
        assert set(status(remote)) == STATUS_FIELDS  # the figures need no wallet
    finally:
        wallet.start(same_port=True)
    eventually(lambda: admin.request("GET", ORPHANED).status_code == 200, "the wallet back")


# -- the CLI ---------------------------------------------------------------------------------


def cli(*args: str) -> Result:
    saved = structlog.get_config()  # `crossbook` points structlog at the runner's stderr
    try:
        return CliRunner().invoke(cli_app, list(args))
    finally:
        structlog.configure(**saved)


def cli_ok(*args: str) -> str:
    result = cli(*args)
    assert result.exit_code == 0, (result.exit_code, result.output)
    return result.stdout.strip()


def test_the_holds_commands(
    remote: LiveServer, wallet: WalletProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):  # the CLI signs with the server's (development) secret
        if name.startswith("CROSSBOOK_"):
            monkeypatch.delenv(name)
    url = ("--url", remote.url)
    user_id = new_user(remote)
    first, second = (orphan_hold(wallet, user_id, 10_000_000)["key"] for _ in range(2))
    eventually(lambda: listed(remote, first) and listed(remote, second), "both listed")

    table = cli_ok("holds", "orphaned", *url).splitlines()
    assert any(line.startswith(f"{first}\tuser {user_id}\t10.000000 USDT\t") for line in table)
    as_json = json.loads(cli_ok("holds", "orphaned", "--json", *url))
    assert as_json["complete"] is True and first in {h["key"] for h in as_json["holds"]}

    assert cli_ok("holds", "void", first, *url).startswith(f"voided {first}\tuser {user_id}")
    refused = cli("holds", "void", first, *url)
    assert refused.exit_code == 1 and "HOLD_NOT_FOUND" in refused.stderr

    report = re.fullmatch(
        r"found ([0-9]+), voided ([0-9]+)", cli_ok("holds", "void-orphaned", *url)
    )
    assert report is not None and int(report[1]) == int(report[2]) >= 1
    assert listed(remote, second) is None

    lines = dict(line.split("\t", 1) for line in cli_ok("holds", "status", *url).splitlines())
    assert set(lines) == STATUS_FIELDS and lines["grace_ms"] == str(GRACE_MS)
    eventually(lambda: usdt(wallet, user_id) == (100_000_000, 0), "both released")
