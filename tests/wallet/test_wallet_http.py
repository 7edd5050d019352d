"""`crossbook wallet serve` as a real process, over real HTTP: authentication, every
operation, the listing of applied holds (through the exchange's client too), malformed
input, each injected fault, SIGKILL and restart, production mode.

Most tests share one process (`shared_wallet`: SQLite, faults enabled); each works
in assets and keys of its own, so its balances and totals are exact whatever the
others did. The tests that kill, restart or refuse to start a process have their own.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from crossbook.adapters.wallet_client import HttpWallet
from crossbook.wallet_protocol import HoldsCursor, HoldsPage, HoldsRequest, WalletHold
from crossbook.wallet_service.server import EXIT_HALTED

from wallet_support import WalletFactory, WalletProcess

_numbers = itertools.count(1)


def fresh_asset() -> str:
    return f"T{next(_numbers)}X{secrets.token_hex(3).upper()}"


def fresh_key(label: str) -> str:
    return f"{label}:{next(_numbers)}.{secrets.token_hex(4)}"


def body(
    op: str, user_id: int, asset: str, amount: int | None = None, **extra: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {"key": fresh_key(op), "op": op, "user_id": user_id, "asset": asset}
    if amount is not None:
        out["amount_units"] = str(amount)
    return {**out, **extra}


@pytest.fixture
def wallet(shared_wallet: WalletProcess) -> Iterator[WalletProcess]:
    """The shared process, with no fault rules before and after the test."""
    shared_wallet.clear_faults()
    yield shared_wallet
    shared_wallet.clear_faults()


# -- authentication ------------------------------------------------------------------------------


def test_health_needs_no_token_and_v1_needs_the_right_one(wallet: WalletProcess) -> None:
    assert httpx.get(wallet.url + "/health").status_code == 200
    routes = [
        ("GET", "/v1/balances/1"),
        ("GET", "/v1/totals"),
        ("GET", "/v1/operations/some-key"),
        ("GET", "/v1/holds"),
        ("POST", "/v1/operations"),
        ("GET", "/v1/faults"),
        ("PUT", "/v1/faults"),
        ("DELETE", "/v1/faults"),
        ("GET", "/v1/no-such-route"),
        ("GET", "/v1"),
    ]
    bad_headers: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {wallet.service_token}x"},
        {"Authorization": f"Basic {wallet.service_token}"},
        {"Authorization": wallet.service_token},
    ]
    asset = fresh_asset()
    deposit = body("deposit", 1, asset, 100)
    with httpx.Client() as anonymous:
        for (method, path), headers in itertools.product(routes, bad_headers):
            json = deposit if method == "POST" else {"rules": []} if method == "PUT" else None
            response = anonymous.request(method, wallet.url + path, headers=headers, json=json)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.json()["error"]["code"] == "UNAUTHORIZED"
    assert wallet.operation(deposit["key"]) is None
    assert wallet.balances(1).get(asset) is None


# -- operations ----------------------------------------------------------------------------------


def test_every_operation_over_http(wallet: WalletProcess) -> None:
    asset = fresh_asset()
    receipt = wallet.apply(body("deposit", 10, asset, 5_005_000_000))
    assert receipt["amount_units"] == "5005000000" and receipt["replayed"] is False
    assert set(receipt) == {
        "key",
        "op",
        "user_id",
        "asset",
        "amount_units",
        "applied_at_ms",
        "replayed",
    }
    hold = body("hold", 10, asset, 1_000_000_000)
    wallet.apply(hold)
    wallet.apply(body("release", 10, asset, 200_000_000))
    assert wallet.balances(10)[asset] == (4_205_000_000, 800_000_000)
    wallet.apply(body("debit", 10, asset, 300_000_000, account="locked"))
    wallet.apply(body("debit", 10, asset, 5_000_000))  # account defaults to available
    assert wallet.totals()[asset] == (4_700_000_000, 5_005_000_000, 305_000_000)
    wallet.apply(body("credit", 11, asset, 300_000_000))
    wallet.apply(body("credit", 12, asset, 5_000_000, account="locked"))
    wallet.apply(body("withdraw", 10, asset, 1_000_000_000))
    assert wallet.balances(10)[asset] == (3_200_000_000, 500_000_000)
    assert wallet.balances(11)[asset] == (300_000_000, 0)
    assert wallet.balances(12)[asset] == (0, 5_000_000)
    # the first hold's funds went to debits and the withdrawal: it cannot be voided whole
    short = wallet.refused(
        body("void", 10, asset, target_key=hold["key"]), 422, "INSUFFICIENT_BALANCE"
    )
    assert short["details"] == {"asset": asset, "required": "1000000000", "locked": "500000000"}
    second = body("hold", 10, asset, 700_000_000)
    wallet.apply(second)
    void = wallet.apply(body("void", 10, asset, target_key=second["key"]))
    assert void["amount_units"] == "700000000"  # the hold's whole amount
    assert wallet.balances(10)[asset] == (3_200_000_000, 500_000_000)
    assert wallet.totals()[asset] == (4_005_000_000, 4_005_000_000, 0)


def test_operations_are_recorded_and_replayed(wallet: WalletProcess) -> None:
    asset = fresh_asset()
    deposit = body("deposit", 20, asset, 900)
    first = wallet.apply(deposit)
    again = wallet.apply(deposit)
    assert again == {**first, "replayed": True}
    assert wallet.balances(20) == {asset: (900, 0)}
    record = wallet.operation(deposit["key"])
    assert record == {
        "key": deposit["key"],
        "op": "deposit",
        "user_id": 20,
        "asset": asset,
        "amount_units": "900",
        "account": "available",
        "target_key": None,
        "applied_at_ms": first["applied_at_ms"],
        "status": "applied",
        "voided_by": None,
    }
    error = wallet.refused({**deposit, "amount_units": "901"}, 409, "IDEMPOTENCY_KEY_REUSED")
    assert error["details"]["key"] == deposit["key"]
    wallet.refused({**body("withdraw", 20, asset, 901)}, 422, "INSUFFICIENT_BALANCE")
    assert wallet.balances(20) == {asset: (900, 0)}


def test_void_over_http(wallet: WalletProcess) -> None:
    asset = fresh_asset()
    wallet.apply(body("deposit", 30, asset, 1_000))
    early = body("void", 30, asset, target_key=fresh_key("late-hold"))
    assert wallet.apply(early)["amount_units"] == "0"
    late_hold = body("hold", 30, asset, 100, key=early["target_key"])
    wallet.refused(late_hold, 409, "HOLD_VOIDED")
    tombstone = wallet.operation(early["target_key"])
    assert tombstone is not None and tombstone["status"] == "tombstone"
    deposit = body("deposit", 30, asset, 1)
    wallet.apply(deposit)
    wallet.refused(body("void", 30, asset, target_key=deposit["key"]), 409, "VOID_TARGET_NOT_HOLD")
    hold = body("hold", 30, asset, 600)
    wallet.apply(hold)
    wallet.refused(body("void", 31, asset, target_key=hold["key"]), 409, "VOID_TARGET_MISMATCH")
    wallet.refused(body("void", 30, asset, 5, target_key=hold["key"]), 400, "INVALID_REQUEST")
    assert wallet.balances(30) == {asset: (401, 600)}
    assert wallet.apply(body("void", 30, asset, target_key=hold["key"]))["amount_units"] == "600"
    assert wallet.balances(30) == {asset: (1_001, 0)}


def test_applied_holds_over_http_and_through_the_exchange_client(wallet: WalletProcess) -> None:
    user_id, asset = 900_000 + next(_numbers), fresh_asset()
    wallet.apply(body("deposit", user_id, asset, 1_000))
    holds = [body("hold", user_id, asset, 10 * (n + 1)) for n in range(5)]
    receipts = [wallet.apply(hold) for hold in holds]
    wallet.apply(body("void", user_id, asset, target_key=holds[1]["key"]))
    wallet.apply(body("release", user_id, asset, 5))  # the holds stay applied
    expected = sorted(
        (
            WalletHold(holds[n]["key"], user_id, asset, 10 * (n + 1), receipts[n]["applied_at_ms"])
            for n in (0, 2, 3, 4)
        ),
        key=lambda hold: (hold.applied_at_ms, hold.key),  # SQLite: keys compare bytewise
    )
    response = wallet.request("GET", "/v1/holds", params={"user_id": user_id, "limit": 3})
    assert response.status_code == 200, response.text
    page = response.json()
    assert set(page) == {"success", "data", "meta"} and page["success"] is True
    assert [hold["key"] for hold in page["data"]] == [hold.key for hold in expected[:3]]
    assert page["meta"]["next"] == {
        "after_applied_at_ms": expected[2].applied_at_ms,
        "after_key": expected[2].key,
    }

    async def page_through() -> list[HoldsPage]:
        client = HttpWallet(wallet.url, wallet.service_token)
        try:
            pages: list[HoldsPage] = []
            cursor: HoldsCursor | None = None
            while not pages or cursor is not None:
                pages.append(
                    await client.holds(
                        HoldsRequest(2**63 - 1, user_id=user_id, after=cursor, limit=2)
                    )
                )
                cursor = pages[-1].next
            return pages
        finally:
            await client.aclose()

    pages = asyncio.run(page_through())
    assert [list(page.holds) for page in pages] == [expected[:2], expected[2:]]
    assert pages[-1].next is None


# -- malformed input -----------------------------------------------------------------------------

MALFORMED: list[tuple[str, dict[str, Any]]] = [
    ("decimal amount", {"amount_units": "1.5"}),
    ("negative amount", {"amount_units": "-5"}),
    ("amount as a number", {"amount_units": 5}),
    ("leading zero", {"amount_units": "05"}),
    ("zero amount", {"amount_units": "0"}),
    ("amount over 2**63 - 1", {"amount_units": str(2**63)}),
    ("extra field", {"memo": "hello"}),
    ("key with a space", {"key": "bad key"}),
    ("key with a slash", {"key": "bad/key"}),
    ("empty key", {"key": ""}),
    ("key of 201 characters", {"key": "k" * 201}),
    ("lowercase asset", {"asset": "usdt"}),
    ("asset of 17 characters", {"asset": "A" * 17}),
    ("negative user", {"user_id": -1}),
    ("user as a string", {"user_id": "1"}),
    ("user as a float", {"user_id": 1.0}),
    ("user as a bool", {"user_id": True}),
    ("unknown op", {"op": "steal"}),
    ("unknown account", {"account": "savings"}),
    ("account on a deposit", {"account": "locked"}),
    ("target_key on a deposit", {"target_key": "x"}),
    ("key missing", {"key": None}),
]


@pytest.mark.parametrize(("case", "change"), MALFORMED, ids=[case for case, _ in MALFORMED])
def test_malformed_operations_are_400_and_change_nothing(
    wallet: WalletProcess, case: str, change: dict[str, Any]
) -> None:
    asset = fresh_asset()
    valid = body("deposit", 40, asset, 100)
    request = {k: v for k, v in {**valid, **change}.items() if v is not None}
    error = wallet.refused(request, 400, "INVALID_REQUEST")
    assert error["details"]["errors"], error
    assert wallet.operation(valid["key"]) is None
    assert asset not in wallet.balances(40)
    assert asset not in wallet.totals()


def test_bodies_that_are_not_an_operation_are_400(wallet: WalletProcess) -> None:
    asset = fresh_asset()
    for content in (b"", b"not json", b"[]", b"{", b'{"key": "a"}', b"x" * 20_000):
        response = wallet.request("POST", "/v1/operations", content=content)
        assert response.status_code == 400, (content[:20], response.text)
        assert response.json()["error"]["code"] == "INVALID_REQUEST"
    void = body("void", 40, asset)  # a void without target_key
    wallet.refused(void, 400, "INVALID_REQUEST")
    wallet.refused(body("hold", 40, asset), 400, "INVALID_REQUEST")  # no amount
    self_void = body("void", 40, asset, key="self-void", target_key="self-void")
    wallet.refused(self_void, 400, "INVALID_REQUEST")


def test_unknown_routes_and_methods(wallet: WalletProcess) -> None:
    for method, path, status, code in (
        ("GET", "/v1/nothing-here", 404, "NOT_FOUND"),
        ("GET", "/v1/balances/not-a-number", 404, "NOT_FOUND"),
        ("GET", "/v1/operations/never-used-key", 404, "NOT_FOUND"),
        ("GET", "/v1/operations/bad%20key", 400, "INVALID_REQUEST"),
        ("GET", "/v1/operations", 405, "METHOD_NOT_ALLOWED"),
    ):
        response = wallet.request(method, path)
        assert response.status_code == status, (path, response.text)
        assert response.json()["success"] is False
        assert response.json()["error"]["code"] == code


# -- faults --------------------------------------------------------------------------------------


def test_error_500_applies_nothing(wallet: WalletProcess) -> None:
    asset = fresh_asset()
    wallet.set_faults([{"mode": "error_500", "count": 1, "ops": ["withdraw"]}])
    wallet.apply(body("deposit", 50, asset, 100))  # not a withdraw: untouched, count kept
    assert wallet.faults()[0]["remaining"] == 1
    withdraw = body("withdraw", 50, asset, 40)
    wallet.refused(withdraw, 500, "WALLET_FAULT")
    assert wallet.operation(withdraw["key"]) is None
    assert wallet.balances(50) == {asset: (100, 0)}
    assert wallet.faults()[0]["remaining"] == 0
    assert wallet.apply(withdraw)["replayed"] is False  # the count is used up
    assert wallet.balances(50) == {asset: (60, 0)}


def test_reject_applies_nothing(wallet: WalletProcess) -> None:
    asset = fresh_asset()
    wallet.set_faults([{"mode": "reject", "count": 2, "key_contains": "refuse-me"}])
    wallet.apply(body("deposit", 51, asset, 100))
    hold = body("hold", 51, asset, 30, key=fresh_key("refuse-me"))
    wallet.refused(hold, 422, "INJECTED_REJECTION")
    wallet.refused(hold, 422, "INJECTED_REJECTION")
    assert wallet.operation(hold["key"]) is None
    assert wallet.balances(51) == {asset: (100, 0)}
    assert wallet.apply(hold)["replayed"] is False
    assert wallet.balances(51) == {asset: (70, 30)}


def test_delay_applies_and_answers_normally(wallet: WalletProcess) -> None:
    asset = fresh_asset()
    wallet.set_faults([{"mode": "delay", "count": 1, "delay_ms": 50}])
    receipt = wallet.apply(body("deposit", 52, asset, 100))
    assert receipt["replayed"] is False
    assert wallet.faults() == [
        {"mode": "delay", "remaining": 0, "ops": None, "key_contains": None, "delay_ms": 50}
    ]
    assert wallet.balances(52) == {asset: (100, 0)}


def test_drop_after_apply_applies_once_and_the_retry_replays(wallet: WalletProcess) -> None:
    asset = fresh_asset()
    wallet.apply(body("deposit", 53, asset, 1_000))
    wallet.set_faults([{"mode": "drop_after_apply", "count": 1, "ops": ["hold"]}])
    hold = body("hold", 53, asset, 250)
    with pytest.raises(httpx.RemoteProtocolError):  # headers, then the connection closes
        wallet.post(hold)
    record = wallet.operation(hold["key"])
    assert record is not None and record["status"] == "applied"
    assert wallet.balances(53) == {asset: (750, 250)}
    retry = wallet.apply(hold)
    assert retry["replayed"] is True and retry["applied_at_ms"] == record["applied_at_ms"]
    assert wallet.balances(53) == {asset: (750, 250)}


def test_fault_rules_are_validated_and_cleared(wallet: WalletProcess) -> None:
    for rules in (
        [{"mode": "explode", "count": 1}],
        [{"mode": "reject", "count": 0}],
        [{"mode": "delay", "count": 1}],  # delay_ms missing
        [{"mode": "reject", "count": 1, "delay_ms": 5}],
        [{"mode": "reject", "count": 1, "ops": ["steal"]}],
        [{"mode": "reject", "count": 1, "extra": True}],
    ):
        response = wallet.request("PUT", "/v1/faults", json={"rules": rules})
        assert response.status_code == 400, (rules, response.text)
        assert response.json()["error"]["code"] == "INVALID_REQUEST"
    assert wallet.faults() == []
    wallet.set_faults([{"mode": "reject", "count": 3}, {"mode": "error_500", "count": 1}])
    assert [rule["remaining"] for rule in wallet.faults()] == [3, 1]
    wallet.clear_faults()
    assert wallet.faults() == []


# -- processes of their own ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_sigkill_and_restart_keep_committed_operations(
    backend: str,
    wallet_process: WalletFactory,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'killed.db'}"
    else:  # a new database, never migrated: the service migrates it
        url = request.getfixturevalue("postgres_databases").create()
    wallet = wallet_process(url)  # production, faults disabled
    wallet.start()
    deposit = body("deposit", 1, "USDT", 10_000)
    hold = body("hold", 1, "USDT", 2_500)
    void = body("void", 1, "USDT", target_key=fresh_key("never-held"))
    for op in (deposit, hold, body("debit", 1, "USDT", 500, account="locked"), void):
        wallet.apply(op)
    before = (wallet.balances(1), wallet.totals())
    wallet.kill()
    wallet.restart()
    assert (
        (wallet.balances(1), wallet.totals())
        == before
        == (
            {"USDT": (7_500, 2_000)},
            {"USDT": (9_500, 10_000, 500)},
        )
    )
    assert wallet.apply(deposit)["replayed"] is True
    assert wallet.apply(hold)["replayed"] is True
    wallet.refused(body("hold", 1, "USDT", 1, key=void["target_key"]), 409, "HOLD_VOIDED")
    assert wallet.balances(1) == {"USDT": (7_500, 2_000)}
    for method in ("GET", "PUT", "DELETE"):  # faults are off: the routes do not exist
        response = wallet.request(method, "/v1/faults", json={"rules": []})
        assert response.status_code == 404 and response.json()["error"]["code"] == "NOT_FOUND"
    assert wallet.stop() in (0, -15)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"faults_enabled": True, "environment": "production"}, "FAULTS_ENABLED"),
        ({"service_token": "too-short"}, "SERVICE_TOKEN"),
    ],
    ids=["faults-enabled", "short-token"],
)
def test_production_refuses_unsafe_settings(
    wallet_process: WalletFactory, tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    wallet = wallet_process(f"sqlite:///{tmp_path / 'refused.db'}", **options)
    assert wallet.environment == "production"
    code, output = wallet.run_until_exit()
    assert code == 2, output
    assert "invalid wallet settings" in output and message in output, output
    assert not (tmp_path / "refused.db").exists()  # refused before touching the database


def test_a_database_whose_totals_do_not_add_up_is_refused_at_start(
    wallet_process: WalletFactory, tmp_path: Path
) -> None:
    path = tmp_path / "corrupt.db"
    wallet = wallet_process(f"sqlite:///{path}")
    wallet.start()
    wallet.apply(body("deposit", 1, "BTC", 100))
    wallet.stop()
    with sqlite3.connect(path) as connection:  # a bug or a hand edit, simulated
        connection.execute("UPDATE wallet_balances SET available = 101 WHERE user_id = 1")
    code, output = wallet.run_until_exit()
    assert code == EXIT_HALTED, output
    assert "wallet invariant broken" in output, output
