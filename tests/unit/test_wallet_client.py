"""The HTTP wallet client against a scripted wallet service (httpx.MockTransport)."""

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import httpx
import pytest

from crossbook.adapters.wallet_client import HttpWallet
from crossbook.engine.views import StoredBalance
from crossbook.engine.wallet import (
    Wallet,
    WalletAccount,
    WalletOp,
    WalletOpKind,
    WalletReceipt,
    WalletRejectedError,
    WalletUnavailableError,
)

T = TypeVar("T")
BASE_URL = "http://wallet.test/api"
TOKEN = "s3cret-token"
HOLD = WalletOp("hold-1", WalletOpKind.HOLD, 7, "USDT", 12_345_678_901_234_567_890)
VOID = WalletOp("void-1", WalletOpKind.VOID, 7, "USDT", target_key="hold-1")
Handler = Callable[[httpx.Request], httpx.Response]


class WalletService:
    """Plays the wallet service: records requests, answers with `handler`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)


def call(service: WalletService, action: Callable[[HttpWallet], Coroutine[Any, Any, T]]) -> T:
    async def main() -> T:
        wallet = HttpWallet(
            BASE_URL, TOKEN, timeout_ms=2_500, transport=httpx.MockTransport(service)
        )
        try:
            return await action(wallet)
        finally:
            await wallet.aclose()

    return asyncio.run(main())


def receipt_data(op: WalletOp, /, **changes: object) -> dict[str, object]:
    data: dict[str, object] = {
        "key": op.key,
        "op": op.kind.value,
        "user_id": op.user_id,
        "asset": op.asset,
        "amount_units": str(op.amount_units),
        "applied_at_ms": 1_700_000_000_000,
        "replayed": False,
    }
    data.update(changes)
    return data


def ok(data: object) -> Handler:
    return lambda request: httpx.Response(200, json={"success": True, "data": data})


def error(status: int, code: str = "SOME_CODE", details: object = None) -> Handler:
    body = {
        "success": False,
        "error": {"code": code, "message": "it went wrong", "details": details},
    }
    return lambda request: httpx.Response(status, json=body)


def raising(exc: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


def test_it_is_a_wallet() -> None:
    async def make() -> Wallet:
        wallet = HttpWallet(BASE_URL, TOKEN)
        await wallet.aclose()
        return wallet

    assert isinstance(asyncio.run(make()), HttpWallet)


def test_apply_posts_the_operation_with_auth_and_amounts_as_strings() -> None:
    op = WalletOp("debit-1", WalletOpKind.DEBIT, 7, "BTC", 5, WalletAccount.LOCKED)
    service = WalletService(ok(receipt_data(op)))
    receipt = call(service, lambda wallet: wallet.apply(op))
    assert receipt == WalletReceipt("debit-1", 5, 1_700_000_000_000, replayed=False)
    (request,) = service.requests
    assert request.method == "POST"
    assert str(request.url) == "http://wallet.test/api/v1/operations"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "key": "debit-1",
        "op": "debit",
        "user_id": 7,
        "asset": "BTC",
        "amount_units": "5",
        "account": "locked",
    }


def test_large_amounts_travel_exactly_as_integer_strings() -> None:
    service = WalletService(ok(receipt_data(HOLD)))
    receipt = call(service, lambda wallet: wallet.apply(HOLD))
    assert receipt.amount_units == 12_345_678_901_234_567_890
    sent = json.loads(service.requests[0].content)
    assert sent["amount_units"] == "12345678901234567890"
    assert sent["account"] == "available"


def test_void_sends_target_key_and_no_amount() -> None:
    service = WalletService(ok(receipt_data(VOID, amount_units="0", replayed=True)))
    receipt = call(service, lambda wallet: wallet.apply(VOID))
    assert receipt == WalletReceipt("void-1", 0, 1_700_000_000_000, replayed=True)
    sent = json.loads(service.requests[0].content)
    assert sent == {
        "key": "void-1",
        "op": "void",
        "user_id": 7,
        "asset": "USDT",
        "account": "available",
        "target_key": "hold-1",
    }


def test_void_receipt_carries_the_released_amount() -> None:
    service = WalletService(ok(receipt_data(VOID, amount_units="1500")))
    assert call(service, lambda wallet: wallet.apply(VOID)).amount_units == 1_500


def test_every_call_has_the_configured_timeout_on_every_phase() -> None:
    service = WalletService(ok(receipt_data(HOLD)))
    call(service, lambda wallet: wallet.apply(HOLD))
    timeout = service.requests[0].extensions["timeout"]
    assert timeout == {"connect": 2.5, "read": 2.5, "write": 2.5, "pool": 2.5}


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 499])
def test_client_errors_are_rejections_with_code_message_and_details(status: int) -> None:
    details = {"asset": "USDT", "required": "10", "available": "3"}
    service = WalletService(error(status, "INSUFFICIENT_BALANCE", details))
    with pytest.raises(WalletRejectedError) as raised:
        call(service, lambda wallet: wallet.apply(HOLD))
    assert raised.value.code == "INSUFFICIENT_BALANCE"
    assert raised.value.message == "it went wrong"
    assert raised.value.details == details


def test_a_rejection_without_details_has_empty_details() -> None:
    service = WalletService(error(409, "IDEMPOTENCY_KEY_REUSED"))
    with pytest.raises(WalletRejectedError) as raised:
        call(service, lambda wallet: wallet.apply(HOLD))
    assert (raised.value.code, raised.value.details) == ("IDEMPOTENCY_KEY_REUSED", {})


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(400, text="Bad Request"),
        httpx.Response(404, json={"detail": "Not Found"}),
        httpx.Response(422, json={"success": False, "error": {"message": "no code"}}),
        httpx.Response(
            403, json={"success": False, "error": {"code": "X", "message": "m", "details": [1]}}
        ),
        httpx.Response(401, content=b"\xff\xfe"),
    ],
    ids=["text", "other-json", "no-code", "details-list", "not-utf8"],
)
def test_a_client_error_without_the_envelope_is_a_protocol_rejection(
    response: httpx.Response,
) -> None:
    service = WalletService(lambda request: response)
    with pytest.raises(WalletRejectedError) as raised:
        call(service, lambda wallet: wallet.apply(HOLD))
    assert raised.value.code == "WALLET_PROTOCOL_ERROR"
    assert raised.value.details["status"] == response.status_code


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_timeouts_throttling_and_server_errors_are_unavailable(status: int) -> None:
    service = WalletService(error(status, "TRY_LATER"))
    with pytest.raises(WalletUnavailableError) as raised:
        call(service, lambda wallet: wallet.apply(HOLD))
    assert f"HTTP {status}" in str(raised.value)
    assert "TRY_LATER" in str(raised.value)


@pytest.mark.parametrize("status", [201, 202, 204, 302])
def test_other_statuses_are_unavailable(status: int) -> None:
    service = WalletService(lambda request: httpx.Response(status))
    with pytest.raises(WalletUnavailableError):
        call(service, lambda wallet: wallet.apply(HOLD))


def test_a_server_error_with_a_plain_body_is_still_unavailable() -> None:
    service = WalletService(lambda request: httpx.Response(502, text="<html>bad gateway</html>"))
    with pytest.raises(WalletUnavailableError, match="HTTP 502"):
        call(service, lambda wallet: wallet.apply(HOLD))


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("connection refused"),
        httpx.ConnectTimeout("connect timed out"),
        httpx.ReadTimeout("read timed out"),
        httpx.WriteTimeout("write timed out"),
        httpx.PoolTimeout("no connection free"),
        httpx.ReadError("connection reset"),
        httpx.WriteError("broken pipe"),
        httpx.RemoteProtocolError("server disconnected without sending a response"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_transport_failures_are_unavailable_and_ambiguous(exc: Exception) -> None:
    service = WalletService(raising(exc))
    with pytest.raises(WalletUnavailableError, match="ambiguous") as raised:
        call(service, lambda wallet: wallet.apply(HOLD))
    assert raised.value.__cause__ is exc
    assert "retry with the same key" in str(raised.value)


def test_applied_then_dropped_is_unavailable_and_the_retry_replays() -> None:
    applied: dict[str, dict[str, object]] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        key = json.loads(request.content)["key"]
        if key in applied:
            return httpx.Response(200, json={"success": True, "data": applied[key]})
        applied[key] = receipt_data(HOLD, replayed=True)
        raise httpx.RemoteProtocolError("server disconnected without sending a response")

    service = WalletService(handler)

    async def apply_then_retry(wallet: HttpWallet) -> WalletReceipt:
        with pytest.raises(WalletUnavailableError):
            await wallet.apply(HOLD)
        return await wallet.apply(HOLD)

    receipt = call(service, apply_then_retry)
    assert receipt.replayed
    assert receipt.amount_units == HOLD.amount_units
    first, retry = (json.loads(request.content) for request in service.requests)
    assert first == retry  # the same key and parameters


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="OK"),
        httpx.Response(200, json=[]),
        httpx.Response(200, json={"success": False, "data": {}}),
        httpx.Response(200, json={"success": True}),
        httpx.Response(200, json={"success": True, "data": "done"}),
        httpx.Response(200, json={"success": True, "data": receipt_data(HOLD, key="other")}),
        httpx.Response(200, json={"success": True, "data": receipt_data(HOLD, op="release")}),
        httpx.Response(200, json={"success": True, "data": receipt_data(HOLD, user_id=8)}),
        httpx.Response(200, json={"success": True, "data": receipt_data(HOLD, asset="BTC")}),
        httpx.Response(200, json={"success": True, "data": receipt_data(HOLD, amount_units=15)}),
        httpx.Response(200, json={"success": True, "data": receipt_data(HOLD, amount_units="1.5")}),
        httpx.Response(200, json={"success": True, "data": receipt_data(HOLD, amount_units="-1")}),
        httpx.Response(200, json={"success": True, "data": receipt_data(HOLD, amount_units="1")}),
        httpx.Response(200, json={"success": True, "data": receipt_data(HOLD, applied_at_ms="1")}),
        httpx.Response(200, json={"success": True, "data": receipt_data(HOLD, applied_at_ms=True)}),
        httpx.Response(200, json={"success": True, "data": receipt_data(HOLD, replayed="no")}),
    ],
    ids=[
        "text",
        "list",
        "not-success",
        "no-data",
        "data-string",
        "other-key",
        "other-op",
        "other-user",
        "other-asset",
        "amount-number",
        "amount-decimal",
        "amount-negative",
        "amount-differs",
        "applied-at-string",
        "applied-at-bool",
        "replayed-string",
    ],
)
def test_a_malformed_success_is_unavailable(response: httpx.Response) -> None:
    service = WalletService(lambda request: response)
    with pytest.raises(WalletUnavailableError, match="malformed"):
        call(service, lambda wallet: wallet.apply(HOLD))


def test_balances_are_parsed_and_sorted_by_asset() -> None:
    data = [
        {"asset": "USDT", "available": "100000000000000000000", "locked": "5"},
        {"asset": "BTC", "available": "0", "locked": "2"},
    ]
    service = WalletService(ok(data))
    balances = call(service, lambda wallet: wallet.balances(7))
    assert balances == [
        StoredBalance(7, "BTC", 0, 2),
        StoredBalance(7, "USDT", 100_000_000_000_000_000_000, 5),
    ]
    (request,) = service.requests
    assert request.method == "GET"
    assert str(request.url) == "http://wallet.test/api/v1/balances/7"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"


def test_no_balances_is_an_empty_list() -> None:
    assert call(WalletService(ok([])), lambda wallet: wallet.balances(7)) == []


@pytest.mark.parametrize(
    "data",
    [
        {"asset": "BTC"},
        ["BTC"],
        [{"available": "1", "locked": "0"}],
        [{"asset": "BTC", "available": 1, "locked": "0"}],
        [{"asset": "BTC", "available": "1", "locked": "-1"}],
        [{"asset": "BTC", "available": "1"}],
        [
            {"asset": "BTC", "available": "1", "locked": "0"},
            {"asset": "BTC", "available": "2", "locked": "0"},
        ],
    ],
    ids=["object", "strings", "no-asset", "number", "negative", "no-locked", "repeated"],
)
def test_malformed_balances_are_unavailable(data: object) -> None:
    with pytest.raises(WalletUnavailableError, match="malformed"):
        call(WalletService(ok(data)), lambda wallet: wallet.balances(7))


def test_balances_errors_map_like_operations() -> None:
    with pytest.raises(WalletRejectedError) as raised:
        call(WalletService(error(404, "USER_NOT_FOUND")), lambda wallet: wallet.balances(7))
    assert raised.value.code == "USER_NOT_FOUND"
    with pytest.raises(WalletUnavailableError):
        call(WalletService(error(503)), lambda wallet: wallet.balances(7))
    with pytest.raises(WalletUnavailableError):
        call(WalletService(raising(httpx.ReadTimeout("slow"))), lambda wallet: wallet.balances(7))


def test_one_client_serves_concurrent_calls() -> None:
    service = WalletService(ok(receipt_data(HOLD)))

    async def many(wallet: HttpWallet) -> list[WalletReceipt]:
        return list(await asyncio.gather(*(wallet.apply(HOLD) for _ in range(5))))

    receipts = call(service, many)
    assert len(receipts) == 5 == len(service.requests)


@pytest.mark.parametrize(
    "options",
    [{"token": ""}, {"timeout_ms": 0}, {"max_connections": 0}],
    ids=str,
)
def test_bad_settings_are_refused(options: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {"token": TOKEN, **options}
    with pytest.raises(ValueError):
        HttpWallet(BASE_URL, **arguments)
