"""The wallet service's HTTP API (Starlette, orjson). All amounts are strings of integers.

    GET    /health                      200, no authentication
    POST   /v1/operations               apply one operation (idempotent by its key)
    GET    /v1/operations/{key}         the operation recorded under a key, or 404
    GET    /v1/balances/{user_id}       a user's non-zero balances, by asset
    GET    /v1/totals                   per asset: total, net deposits, in transit
    GET    /v1/holds                    holds still applied, a page (`meta.next`: the cursor)
    GET|PUT|DELETE /v1/faults           fault injection (only with faults_enabled)

Every path under `/v1` needs `Authorization: Bearer <service token>` (compared
in constant time, before routing: an unknown `/v1` path without it is 401 too),
else 401 UNAUTHORIZED. Success is `{"success": true, "data": …}` (and, on the
paged `/v1/holds` only, `"meta": {"next": …}`), a refusal
`{"success": false, "error": {"code", "message", "details"}}` with the status
of its code (`model.STATUS`, one place). No 5xx for bad input: only a bug
(500 INTERNAL_ERROR), an injected fault (500 WALLET_FAULT), a database failure
(503 WALLET_UNAVAILABLE, retry with the same key) or a halted service (503).

Known limits: bodies above `max_body_bytes` are refused (400); no TLS (run it
on a private network or behind a proxy that terminates TLS).
"""

from __future__ import annotations

import asyncio
import hmac
import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson
import structlog
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from crossbook.domain.units import INT64_MAX
from crossbook.wallet_protocol import HoldsPage, WalletCode
from crossbook.wallet_service.bodies import (
    KEY_PATTERN,
    HoldsParams,
    OperationBody,
    parse,
    parse_query,
)
from crossbook.wallet_service.faults import FaultMode, Faults, FaultsBody
from crossbook.wallet_service.model import (
    OperationRecord,
    Receipt,
    WalletError,
)
from crossbook.wallet_service.service import WalletService
from crossbook.wallet_service.settings import WalletSettings

log = structlog.get_logger(__name__)
JSON = "application/json"
Lifespan = Callable[[Starlette], AbstractAsyncContextManager[None]]
KEY = re.compile(KEY_PATTERN)


def success_body(data: Any, meta: dict[str, Any] | None = None) -> bytes:
    body = {"success": True, "data": data}
    if meta is not None:
        body["meta"] = meta
    return orjson.dumps(body)


def success(data: Any, meta: dict[str, Any] | None = None) -> Response:
    return Response(success_body(data, meta), media_type=JSON)


def failure(error: WalletError) -> Response:
    body = {
        "success": False,
        "error": {"code": error.code.value, "message": error.message, "details": error.details},
    }
    return Response(orjson.dumps(body, default=str), status_code=error.status, media_type=JSON)


class DroppedResponse(Response):
    """Starts a response (status line, headers, a Content-Length) and never sends its body:
    the server then closes the connection, so the client sees an incomplete answer."""

    def __init__(self, would_have_sent: bytes) -> None:
        super().__init__(status_code=200, media_type=JSON)
        self._length = len(would_have_sent)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", JSON.encode()), (b"content-length", b"%d" % self._length)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})


def receipt_view(receipt: Receipt) -> dict[str, Any]:
    record = receipt.record
    return {
        "key": record.key,
        "op": record.kind.value,
        "user_id": record.user_id,
        "asset": record.asset,
        "amount_units": str(record.result_units),
        "applied_at_ms": record.applied_at_ms,
        "replayed": receipt.replayed,
    }


def operation_view(record: OperationRecord) -> dict[str, Any]:
    return {
        "key": record.key,
        "op": record.kind.value,
        "user_id": record.user_id,
        "asset": record.asset,
        "amount_units": str(record.result_units),
        "account": record.account.value,
        "target_key": record.target_key,
        "applied_at_ms": record.applied_at_ms,
        "status": record.status.value,
        "voided_by": record.voided_by,
    }


def holds_view(page: HoldsPage) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The page as `data` and `meta`: `meta.next` holds the query parameters of the
    next page's cursor, or is null on the last page."""
    data = [
        {
            "key": hold.key,
            "user_id": hold.user_id,
            "asset": hold.asset,
            "amount_units": str(hold.amount_units),
            "applied_at_ms": hold.applied_at_ms,
        }
        for hold in page.holds
    ]
    cursor = page.next
    next_page = (
        None
        if cursor is None
        else {"after_applied_at_ms": cursor.applied_at_ms, "after_key": cursor.key}
    )
    return data, {"next": next_page}


class ServiceTokenMiddleware:
    """Every path under `/v1` (routes that do not exist included) needs the service token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (scope["path"] + "/").startswith("/v1/"):
            scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
            valid = hmac.compare_digest(token.strip().encode(), self._token)
            if scheme.lower() != "bearer" or not valid:
                error = WalletError(WalletCode.UNAUTHORIZED, "a valid service token is required")
                await failure(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class WalletApi:
    """The handlers, over the service the lifespan puts in `app.state.service`."""

    def __init__(self, settings: WalletSettings) -> None:
        self._max_body_bytes = settings.max_body_bytes
        self.faults: Faults | None = Faults() if settings.faults_enabled else None

    def routes(self) -> list[Route]:
        routes = [
            Route("/health", self.health, methods=["GET"]),
            Route("/v1/operations", self.post_operation, methods=["POST"]),
            Route("/v1/operations/{key}", self.get_operation, methods=["GET"]),
            Route("/v1/balances/{user_id:int}", self.get_balances, methods=["GET"]),
            Route("/v1/totals", self.get_totals, methods=["GET"]),
            Route("/v1/holds", self.get_holds, methods=["GET"]),
        ]
        if self.faults is not None:
            routes.append(Route("/v1/faults", self.faults_route, methods=["GET", "PUT", "DELETE"]))
        return routes

    @staticmethod
    def _service(request: Request) -> WalletService:
        service: WalletService = request.app.state.service
        return service

    async def _body(self, request: Request) -> bytes:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self._max_body_bytes:
                raise WalletError(
                    WalletCode.INVALID_REQUEST,
                    f"the body exceeds {self._max_body_bytes} bytes",
                )
        return bytes(body)

    async def health(self, request: Request) -> Response:
        return success({"status": "ok"})

    async def post_operation(self, request: Request) -> Response:
        op = parse(OperationBody, await self._body(request)).to_op()
        fault = None if self.faults is None else self.faults.take(op.kind, op.key)
        if fault is not None:
            log.warning("injected fault", mode=fault.mode.value, key=op.key, op=op.kind.value)
            if fault.mode is FaultMode.ERROR_500:
                raise WalletError(WalletCode.WALLET_FAULT, "injected fault: nothing applied")
            if fault.mode is FaultMode.REJECT:
                raise WalletError(WalletCode.INJECTED_REJECTION, "injected rejection")
            if fault.mode is FaultMode.DELAY:
                await asyncio.sleep(fault.delay_ms / 1000)
        receipt = await self._service(request).apply(op)
        if fault is not None and fault.mode is FaultMode.DROP_AFTER_APPLY:
            return DroppedResponse(success_body(receipt_view(receipt)))
        return success(receipt_view(receipt))

    async def get_operation(self, request: Request) -> Response:
        key = request.path_params["key"]
        if KEY.fullmatch(key) is None:
            raise WalletError(WalletCode.INVALID_REQUEST, "invalid key", key=key)
        record = await self._service(request).operation(key)
        if record is None:
            raise WalletError(WalletCode.NOT_FOUND, f"no operation with key {key!r}", key=key)
        return success(operation_view(record))

    async def get_balances(self, request: Request) -> Response:
        user_id: int = request.path_params["user_id"]
        if user_id > INT64_MAX:
            raise WalletError(WalletCode.INVALID_REQUEST, "user_id out of range")
        balances = await self._service(request).balances(user_id)
        return success(
            [
                {"asset": b.asset, "available": str(b.available), "locked": str(b.locked)}
                for b in balances
            ]
        )

    async def get_totals(self, request: Request) -> Response:
        totals = await self._service(request).totals()
        return success(
            [
                {
                    "asset": t.asset,
                    "total_units": str(t.total_units),
                    "net_deposits_units": str(t.net_deposits_units),
                    "in_transit_units": str(t.in_transit_units),
                }
                for t in totals
            ]
        )

    async def get_holds(self, request: Request) -> Response:
        query = parse_query(HoldsParams, request.query_params.multi_items()).to_query()
        page = await self._service(request).holds(query)
        return success(*holds_view(page))

    async def faults_route(self, request: Request) -> Response:
        assert self.faults is not None
        if request.method == "PUT":
            self.faults.replace(parse(FaultsBody, await self._body(request)))
            log.warning("fault rules replaced", rules=self.faults.view())
        elif request.method == "DELETE":
            self.faults.clear()
        return success({"rules": self.faults.view()})


def create_app(settings: WalletSettings, lifespan: Lifespan | None = None) -> Starlette:
    """The app; its `lifespan` must put a `WalletService` in `app.state.service`."""
    api = WalletApi(settings)
    token = Middleware(ServiceTokenMiddleware, token=settings.service_token_value)
    app = Starlette(routes=api.routes(), middleware=[token], lifespan=lifespan)
    app.state.api = api
    app.add_exception_handler(WalletError, _wallet_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    return app


async def _wallet_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, WalletError)
    return failure(error)


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    if error.status_code == 405:
        return failure(WalletError(WalletCode.METHOD_NOT_ALLOWED, "method not allowed"))
    return failure(WalletError(WalletCode.NOT_FOUND, "not found", path=request.url.path))


async def _unexpected(request: Request, error: Exception) -> Response:
    log.error("unexpected error", path=request.url.path, error=repr(error), exc_info=error)
    return failure(WalletError(WalletCode.INTERNAL_ERROR, "internal error"))
