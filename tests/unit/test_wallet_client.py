"""The HTTP wallet client against a scripted wallet service (a real local aiohttp server)."""

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import aiohttp
import pytest
from aiohttp import web

from crossbook.adapters.wallet_client import MAX_REPLY_BODY_BYTES, HttpWallet
from crossbook.engine.ports import Wallet, WalletRejectedError, WalletUnavailableError
from crossbook.engine.read_model.records import StoredBalance
from crossbook.wallet_protocol import (
    MAX_HOLDS_LIMIT,
    HoldsCursor,
    HoldsPage,
    HoldsRequest,
    WalletAccount,
    WalletHold,
    WalletOp,
    WalletOpKind,
    WalletReceipt,
)

T = TypeVar("T")
HOST = "127.0.0.1"
BASE_PATH = "/api"
TOKEN = "s3cret-token"
SHORT_TIMEOUT_MS = 100
HOLD = WalletOp("hold-1", WalletOpKind.HOLD, 7, "USDT", 12_345_678_901_234_567_890)
VOID = WalletOp("void-1", WalletOpKind.VOID, 7, "USDT", target_key="hold-1")


@dataclass(frozen=True, slots=True)
class Received:
    """One request as the service saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    peer: object  # the client's address: the same for calls over one connection

    def json(self) -> Any:
        return json.loads(self.body)


class WalletService:
    """Plays the wallet service: records every request, answers with `answer`.

    `stalled` is set once a request has started waiting on `released`, which the
    harness sets when the test ends.
    """

    def __init__(self, answer: "Answer") -> None:
        self.answer = answer
        self.requests: list[Received] = []
        self.stalled = asyncio.Event()
        self.released = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        assert request.transport is not None
        peer = request.transport.get_extra_info("peername")
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.requests.append(Received(request.method, request.path_qs, headers, body, peer))
        return await self.answer(self, request)

    async def stall(self) -> None:
        self.stalled.set()
        await self.released.wait()


Answer = Callable[[WalletService, web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serving(service: WalletService) -> AsyncIterator[str]:
    """The service on a free local port, for the duration; yields its base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", service.handle)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    _, port = runner.addresses[0][:2]
    try:
        yield f"http://{HOST}:{port}"
    finally:
        service.released.set()
        await runner.cleanup()


def call(
    service: WalletService,
    action: Callable[[HttpWallet], Coroutine[Any, Any, T]],
    *,
    timeout_ms: int = 2_500,
    max_connections: int = 20,
    base_path: str = BASE_PATH,
) -> T:
    async def main() -> T:
        async with serving(service) as url:
            wallet = HttpWallet(
                url + base_path, TOKEN, timeout_ms=timeout_ms, max_connections=max_connections
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


def as_json(value: object) -> bytes:
    return json.dumps(value).encode()


def reply(status: int, body: bytes = b"", content_type: str = "application/json") -> Answer:
    async def answer(service: WalletService, request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=body, content_type=content_type)

    return answer


def ok(data: object) -> Answer:
    return reply(200, as_json({"success": True, "data": data}))


def page(data: object, meta: object) -> Answer:
    return reply(200, as_json({"success": True, "data": data, "meta": meta}))


def error(status: int, code: str = "SOME_CODE", details: object = None) -> Answer:
    body = {
        "success": False,
        "error": {"code": code, "message": "it went wrong", "details": details},
    }
    return reply(status, as_json(body))


async def stall_before_answering(service: WalletService, request: web.Request) -> web.Response:
    await service.stall()  # past the client's deadline
    return web.Response(status=200)


async def trickle_then_stall(service: WalletService, request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(status=200)
    response.content_type = "application/json"
    response.content_length = 100
    await response.prepare(request)
    await response.write(b'{"success": ')
    await service.stall()  # headers and part of the body sent, the rest never comes
    return response


async def drop_without_answering(service: WalletService, request: web.Request) -> web.Response:
    assert request.transport is not None
    request.transport.close()
    return web.Response(status=200)


async def drop_mid_answer(service: WalletService, request: web.Request) -> web.StreamResponse:
    """Headers with a Content-Length, part of the body, then the connection closes."""
    response = web.StreamResponse(status=200)
    response.content_type = "application/json"
    response.content_length = 500
    await response.prepare(request)
    await response.write(b'{"success": true, "da')
    assert request.transport is not None
    request.transport.close()
    return response


async def answer_not_http(service: WalletService, request: web.Request) -> web.Response:
    assert request.transport is not None
    request.transport.write(b"this is not HTTP\r\n\r\n")
    request.transport.close()
    return web.Response(status=200)


def test_it_is_a_wallet() -> None:
    async def make() -> Wallet:
        wallet = HttpWallet("http://wallet.test", TOKEN)
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
    assert request.path == "/api/v1/operations"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {
        "key": "debit-1",
        "op": "debit",
        "user_id": 7,
        "asset": "BTC",
        "amount_units": "5",
        "account": "locked",
    }


def test_a_base_url_with_a_trailing_slash_gives_the_same_paths() -> None:
    service = WalletService(ok(receipt_data(HOLD)))
    call(service, lambda wallet: wallet.apply(HOLD), base_path="/api/")
    assert service.requests[0].path == "/api/v1/operations"


def test_large_amounts_travel_exactly_as_integer_strings() -> None:
    service = WalletService(ok(receipt_data(HOLD)))
    receipt = call(service, lambda wallet: wallet.apply(HOLD))
    assert receipt.amount_units == 12_345_678_901_234_567_890
    sent = service.requests[0].json()
    assert sent["amount_units"] == "12345678901234567890"
    assert sent["account"] == "available"


def test_void_sends_target_key_and_no_amount() -> None:
    service = WalletService(ok(receipt_data(VOID, amount_units="0", replayed=True)))
    receipt = call(service, lambda wallet: wallet.apply(VOID))
    assert receipt == WalletReceipt("void-1", 0, 1_700_000_000_000, replayed=True)
    assert service.requests[0].json() == {
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


def test_sequential_calls_share_one_keep_alive_connection() -> None:
    service = WalletService(ok(receipt_data(HOLD)))

    async def twice(wallet: HttpWallet) -> None:
        await wallet.apply(HOLD)
        await wallet.apply(HOLD)

    call(service, twice)
    first, second = service.requests
    assert first.peer == second.peer


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
    ("status", "body"),
    [
        (400, b"Bad Request"),
        (404, as_json({"detail": "Not Found"})),
        (422, as_json({"success": False, "error": {"message": "no code"}})),
        (403, as_json({"success": False, "error": {"code": "X", "message": "m", "details": [1]}})),
        (401, b"\xff\xfe"),
        (400, b"x" * (MAX_REPLY_BODY_BYTES + 1)),
    ],
    ids=["text", "other-json", "no-code", "details-list", "not-utf8", "oversized"],
)
def test_a_client_error_without_the_envelope_is_a_protocol_rejection(
    status: int, body: bytes
) -> None:
    service = WalletService(reply(status, body, "text/plain"))
    with pytest.raises(WalletRejectedError) as raised:
        call(service, lambda wallet: wallet.apply(HOLD))
    assert raised.value.code == "WALLET_PROTOCOL_ERROR"
    assert raised.value.details["status"] == status


def test_a_protocol_rejection_quotes_the_start_of_the_body() -> None:
    service = WalletService(reply(400, b"Bad Request " * 100, "text/plain"))
    with pytest.raises(WalletRejectedError) as raised:
        call(service, lambda wallet: wallet.apply(HOLD))
    text = raised.value.details["body"]
    assert isinstance(text, str)
    assert text.startswith("Bad Request Bad Request")
    assert len(text) == 200


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_timeouts_throttling_and_server_errors_are_unavailable(status: int) -> None:
    service = WalletService(error(status, "TRY_LATER"))
    with pytest.raises(WalletUnavailableError) as raised:
        call(service, lambda wallet: wallet.apply(HOLD))
    assert f"HTTP {status}" in str(raised.value)
    assert "TRY_LATER" in str(raised.value)


@pytest.mark.parametrize("status", [201, 202, 204, 302])
def test_other_statuses_are_unavailable(status: int) -> None:
    service = WalletService(reply(status))
    with pytest.raises(WalletUnavailableError, match=f"HTTP {status}"):
        call(service, lambda wallet: wallet.apply(HOLD))


def test_a_redirect_is_not_followed() -> None:
    async def redirect(service: WalletService, request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/elsewhere"):
            return await ok(receipt_data(HOLD))(service, request)
        return web.Response(status=307, headers={"Location": "/elsewhere"})

    service = WalletService(redirect)
    with pytest.raises(WalletUnavailableError, match="HTTP 307"):
        call(service, lambda wallet: wallet.apply(HOLD))
    assert len(service.requests) == 1


def test_a_server_error_with_a_plain_body_is_still_unavailable() -> None:
    service = WalletService(reply(502, b"<html>bad gateway</html>", "text/html"))
    with pytest.raises(WalletUnavailableError, match="HTTP 502"):
        call(service, lambda wallet: wallet.apply(HOLD))


def free_port() -> int:
    """A local port that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
    return port


def test_a_refused_connection_is_unavailable_and_ambiguous() -> None:
    async def refused() -> None:
        wallet = HttpWallet(f"http://{HOST}:{free_port()}", TOKEN)
        try:
            await wallet.apply(HOLD)
        finally:
            await wallet.aclose()

    with pytest.raises(WalletUnavailableError, match="ambiguous") as raised:
        asyncio.run(refused())
    assert isinstance(raised.value.__cause__, aiohttp.ClientConnectionError)
    assert "retry with the same key" in str(raised.value)


@pytest.mark.parametrize(
    ("answer", "cause"),
    [
        (drop_without_answering, aiohttp.ServerDisconnectedError),
        (drop_mid_answer, aiohttp.ClientPayloadError),
        (answer_not_http, aiohttp.ClientResponseError),
    ],
    ids=["dropped-before-answer", "dropped-mid-answer", "not-http"],
)
def test_transport_failures_are_unavailable_and_ambiguous(
    answer: Answer, cause: type[Exception]
) -> None:
    service = WalletService(answer)
    with pytest.raises(WalletUnavailableError, match="ambiguous") as raised:
        call(service, lambda wallet: wallet.apply(HOLD))
    assert isinstance(raised.value.__cause__, cause)
    assert "retry with the same key" in str(raised.value)
    assert len(service.requests) == 1  # the request was received: it may have been applied


@pytest.mark.parametrize(
    "answer", [stall_before_answering, trickle_then_stall], ids=["no-answer", "body-stalls"]
)
def test_the_deadline_bounds_the_whole_call(answer: Answer) -> None:
    service = WalletService(answer)
    with pytest.raises(WalletUnavailableError, match=r"timed out.*ambiguous") as raised:
        call(service, lambda wallet: wallet.apply(HOLD), timeout_ms=SHORT_TIMEOUT_MS)
    assert isinstance(raised.value.__cause__, TimeoutError)
    assert service.stalled.is_set()  # the server held the call past the deadline


def test_waiting_for_a_pooled_connection_counts_toward_the_deadline() -> None:
    service = WalletService(stall_before_answering)

    async def two(wallet: HttpWallet) -> list[object]:
        return list(
            await asyncio.gather(wallet.apply(HOLD), wallet.apply(HOLD), return_exceptions=True)
        )

    outcomes = call(service, two, timeout_ms=SHORT_TIMEOUT_MS, max_connections=1)
    assert all(isinstance(outcome, WalletUnavailableError) for outcome in outcomes)
    assert len(service.requests) == 1  # the second never got the only connection


def test_applied_then_dropped_is_unavailable_and_the_retry_replays() -> None:
    applied: dict[str, dict[str, object]] = {}

    async def apply_once(service: WalletService, request: web.Request) -> web.StreamResponse:
        key = json.loads(await request.read())["key"]
        if key in applied:
            return await ok(applied[key])(service, request)
        applied[key] = receipt_data(HOLD, replayed=True)
        return await drop_mid_answer(service, request)

    service = WalletService(apply_once)

    async def apply_then_retry(wallet: HttpWallet) -> WalletReceipt:
        with pytest.raises(WalletUnavailableError):
            await wallet.apply(HOLD)
        return await wallet.apply(HOLD)

    receipt = call(service, apply_then_retry)
    assert receipt.replayed
    assert receipt.amount_units == HOLD.amount_units
    first, retry = (request.json() for request in service.requests)
    assert first == retry  # the same key and parameters


@pytest.mark.parametrize(
    "body",
    [
        b"OK",
        as_json([]),
        as_json({"success": False, "data": {}}),
        as_json({"success": True}),
        as_json({"success": True, "data": "done"}),
        as_json({"success": True, "data": receipt_data(HOLD, key="other")}),
        as_json({"success": True, "data": receipt_data(HOLD, op="release")}),
        as_json({"success": True, "data": receipt_data(HOLD, user_id=8)}),
        as_json({"success": True, "data": receipt_data(HOLD, asset="BTC")}),
        as_json({"success": True, "data": receipt_data(HOLD, amount_units=15)}),
        as_json({"success": True, "data": receipt_data(HOLD, amount_units="1.5")}),
        as_json({"success": True, "data": receipt_data(HOLD, amount_units="-1")}),
        as_json({"success": True, "data": receipt_data(HOLD, amount_units="1")}),
        as_json({"success": True, "data": receipt_data(HOLD, applied_at_ms="1")}),
        as_json({"success": True, "data": receipt_data(HOLD, applied_at_ms=True)}),
        as_json({"success": True, "data": receipt_data(HOLD, replayed="no")}),
        as_json({"success": True, "data": receipt_data(HOLD, padding="x" * MAX_REPLY_BODY_BYTES)}),
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
        "oversized",
    ],
)
def test_a_malformed_success_is_unavailable(body: bytes) -> None:
    service = WalletService(reply(200, body))
    with pytest.raises(WalletUnavailableError, match="malformed"):
        call(service, lambda wallet: wallet.apply(HOLD))


def test_an_oversized_chunked_success_is_unavailable_and_not_read_whole() -> None:
    async def endless(service: WalletService, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        response.content_type = "application/json"
        response.enable_chunked_encoding()
        await response.prepare(request)
        chunk = b" " * 65_536
        for _ in range(MAX_REPLY_BODY_BYTES // len(chunk) + 1):
            await response.write(chunk)
        await service.stall()  # more would follow: the client must stop reading
        return response

    service = WalletService(endless)
    with pytest.raises(WalletUnavailableError, match=f"larger than {MAX_REPLY_BODY_BYTES}"):
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
    assert request.path == "/api/v1/balances/7"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.body == b""


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
    with pytest.raises(WalletUnavailableError, match="timed out"):
        call(
            WalletService(stall_before_answering),
            lambda wallet: wallet.balances(7),
            timeout_ms=SHORT_TIMEOUT_MS,
        )


def hold_data(key: str, applied_at_ms: int, /, **changes: object) -> dict[str, object]:
    data: dict[str, object] = {
        "key": key,
        "user_id": 7,
        "asset": "USDT",
        "amount_units": "100000000000000000000",
        "applied_at_ms": applied_at_ms,
    }
    data.update(changes)
    return data


def next_cursor(applied_at_ms: int, key: str) -> dict[str, object]:
    return {"after_applied_at_ms": applied_at_ms, "after_key": key}


def test_holds_sends_the_bounds_and_parses_a_page_with_its_cursor() -> None:
    data = [hold_data("hold:a", 50), hold_data("hold:b", 60)]
    service = WalletService(page(data, {"next": next_cursor(60, "hold:b")}))
    cursor = HoldsCursor(40, "hold:z")
    result = call(
        service,
        lambda wallet: wallet.holds(
            HoldsRequest(
                applied_before_ms=90, applied_after_ms=10, user_id=7, after=cursor, limit=2
            )
        ),
    )
    assert result == HoldsPage(
        (
            WalletHold("hold:a", 7, "USDT", 100_000_000_000_000_000_000, 50),
            WalletHold("hold:b", 7, "USDT", 100_000_000_000_000_000_000, 60),
        ),
        HoldsCursor(60, "hold:b"),
    )
    (request,) = service.requests
    assert request.method == "GET"
    path, _, query = request.path.partition("?")
    assert path == "/api/v1/holds"
    assert parse_qsl(query, strict_parsing=True) == [
        ("applied_before_ms", "90"),
        ("limit", "2"),
        ("applied_after_ms", "10"),
        ("user_id", "7"),
        ("after_applied_at_ms", "40"),
        ("after_key", "hold:z"),
    ]
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.body == b""


def test_holds_with_only_the_upper_bound_and_a_last_page() -> None:
    service = WalletService(page([hold_data("hold:a", 90)], {"next": None}))
    result = call(service, lambda wallet: wallet.holds(HoldsRequest(applied_before_ms=90)))
    assert result == HoldsPage((WalletHold("hold:a", 7, "USDT", 10**20, 90),), None)
    (request,) = service.requests
    assert request.path == "/api/v1/holds?applied_before_ms=90&limit=100"


def test_no_holds_is_an_empty_last_page() -> None:
    service = WalletService(page([], {"next": None}))
    assert call(
        service, lambda wallet: wallet.holds(HoldsRequest(applied_before_ms=1))
    ) == HoldsPage((), None)


def test_holds_on_one_instant_are_a_valid_page() -> None:
    data = [hold_data("hold:a", 50), hold_data("hold:b", 50), hold_data("hold:c", 50)]
    service = WalletService(page(data, {"next": None}))
    result = call(
        service,
        lambda wallet: wallet.holds(
            HoldsRequest(applied_before_ms=50, after=HoldsCursor(50, "hold:0"))
        ),
    )
    assert [hold.key for hold in result.holds] == ["hold:a", "hold:b", "hold:c"]


TWO = [hold_data("hold:a", 50), hold_data("hold:b", 60)]
ASKED = {"applied_before_ms": 90, "applied_after_ms": 10, "user_id": 7, "limit": 2}


@pytest.mark.parametrize(
    ("data", "meta", "asked"),
    [
        ({"key": "hold:a"}, {"next": None}, {}),
        (TWO, None, {}),
        (TWO, {}, {}),
        (TWO, {"next": "hold:b"}, {}),
        (TWO, {"next": {"after_applied_at_ms": 60}}, {}),
        (TWO, {"next": {**next_cursor(60, "hold:b"), "extra": 1}}, {}),
        (TWO, {"next": next_cursor(60, "hold:a")}, {}),
        (TWO, {"next": next_cursor(50, "hold:b")}, {}),
        (TWO, {"next": {"after_applied_at_ms": "60", "after_key": "hold:b"}}, {}),
        (TWO[:1], {"next": next_cursor(50, "hold:a")}, {}),
        ([], {"next": next_cursor(50, "hold:a")}, {}),
        ([*TWO, hold_data("hold:c", 70)], {"next": None}, {}),
        (["hold:a"], {"next": None}, {}),
        ([hold_data("hold:a", 50), hold_data("hold:a", 60)], {"next": None}, {}),
        ([hold_data("hold:a", 60), hold_data("hold:b", 50)], {"next": None}, {}),
        ([hold_data("", 50)], {"next": None}, {}),
        ([hold_data("hold a", 50)], {"next": None}, {}),
        ([hold_data("h" * 201, 50)], {"next": None}, {}),
        ([hold_data("hold:a", 50, user_id=8)], {"next": None}, {}),
        ([hold_data("hold:a", 50, user_id="7")], {"next": None}, {}),
        ([hold_data("hold:a", 50, user_id=True)], {"next": None}, {}),
        ([hold_data("hold:a", 50, asset="")], {"next": None}, {}),
        ([hold_data("hold:a", 50, asset=None)], {"next": None}, {}),
        ([hold_data("hold:a", 50, amount_units=5)], {"next": None}, {}),
        ([hold_data("hold:a", 50, amount_units="0")], {"next": None}, {}),
        ([hold_data("hold:a", 50, amount_units="-5")], {"next": None}, {}),
        ([hold_data("hold:a", 50, applied_at_ms="50")], {"next": None}, {}),
        ([hold_data("hold:a", 50, applied_at_ms=-1)], {"next": None}, {}),
        ([hold_data("hold:a", 91)], {"next": None}, {}),
        ([hold_data("hold:a", 10)], {"next": None}, {}),
        ([hold_data("hold:a", 39)], {"next": None}, {"after": HoldsCursor(40, "hold:z")}),
        ([hold_data("hold:z", 40)], {"next": None}, {"after": HoldsCursor(40, "hold:z")}),
    ],
    ids=[
        "data-object",
        "no-meta",
        "no-next",
        "next-string",
        "next-without-key",
        "next-extra-field",
        "next-other-key",
        "next-other-time",
        "next-time-string",
        "next-after-a-short-page",
        "next-after-an-empty-page",
        "more-than-limit",
        "hold-string",
        "key-repeated",
        "out-of-order",
        "key-empty",
        "key-space",
        "key-too-long",
        "other-user",
        "user-string",
        "user-bool",
        "asset-empty",
        "asset-missing",
        "amount-number",
        "amount-zero",
        "amount-negative",
        "applied-at-string",
        "applied-at-negative",
        "after-upper-bound",
        "at-lower-bound",
        "before-cursor",
        "the-cursor-itself",
    ],
)
def test_malformed_pages_of_holds_are_unavailable(
    data: object, meta: object, asked: dict[str, Any]
) -> None:
    service = WalletService(page(data, meta))
    with pytest.raises(WalletUnavailableError, match="malformed"):
        call(service, lambda wallet: wallet.holds(HoldsRequest(**{**ASKED, **asked})))


def test_a_page_without_the_success_envelope_is_unavailable() -> None:
    service = WalletService(reply(200, as_json({"success": False, "data": [], "meta": {}})))
    with pytest.raises(WalletUnavailableError, match="malformed"):
        call(service, lambda wallet: wallet.holds(HoldsRequest(applied_before_ms=1)))


def test_holds_errors_map_like_operations() -> None:
    with pytest.raises(WalletRejectedError) as raised:
        call(
            WalletService(error(400, "INVALID_REQUEST", {"errors": []})),
            lambda wallet: wallet.holds(HoldsRequest(applied_before_ms=1)),
        )
    assert raised.value.code == "INVALID_REQUEST"
    assert raised.value.details == {"errors": []}
    with pytest.raises(WalletUnavailableError):
        call(
            WalletService(error(503)),
            lambda wallet: wallet.holds(HoldsRequest(applied_before_ms=1)),
        )
    with pytest.raises(WalletUnavailableError, match="timed out"):
        call(
            WalletService(stall_before_answering),
            lambda wallet: wallet.holds(HoldsRequest(applied_before_ms=1)),
            timeout_ms=SHORT_TIMEOUT_MS,
        )


@pytest.mark.parametrize(
    "asked",
    [
        {"limit": 0},
        {"limit": MAX_HOLDS_LIMIT + 1},
        {"applied_before_ms": -1},
        {"applied_after_ms": -1},
        {"user_id": -1},
        {"after": HoldsCursor(-1, "hold:a")},
        {"after": HoldsCursor(1, "")},
        {"after": HoldsCursor(1, "hold a")},
    ],
    ids=str,
)
def test_bad_holds_arguments_are_refused_before_sending(asked: dict[str, Any]) -> None:
    service = WalletService(page([], {"next": None}))
    with pytest.raises(ValueError):
        call(
            service, lambda wallet: wallet.holds(HoldsRequest(**{"applied_before_ms": 1, **asked}))
        )
    assert service.requests == []


def test_one_client_serves_concurrent_calls() -> None:
    service = WalletService(ok(receipt_data(HOLD)))

    async def many(wallet: HttpWallet) -> list[WalletReceipt]:
        return list(await asyncio.gather(*(wallet.apply(HOLD) for _ in range(5))))

    receipts = call(service, many)
    assert len(receipts) == 5 == len(service.requests)


def test_a_closed_client_refuses_calls() -> None:
    service = WalletService(ok(receipt_data(HOLD)))

    async def use_after_close(wallet: HttpWallet) -> None:
        await wallet.apply(HOLD)
        await wallet.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            await wallet.apply(HOLD)

    call(service, use_after_close)
    assert len(service.requests) == 1


@pytest.mark.parametrize(
    "options",
    [
        {"token": ""},
        {"timeout_ms": 0},
        {"max_connections": 0},
        {"base_url": "wallet.test:8091"},
        {"base_url": "ftp://wallet.test"},
    ],
    ids=str,
)
def test_bad_settings_are_refused(options: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {"base_url": "http://wallet.test", "token": TOKEN, **options}
    with pytest.raises(ValueError):
        HttpWallet(**arguments)
