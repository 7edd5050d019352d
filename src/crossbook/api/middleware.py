"""The gateway's ASGI middleware (pure ASGI: no per-request task or body copy).

For every HTTP request, in order:
- a request id: the client's `X-Request-ID` if it is 1-128 of `[A-Za-z0-9._:-]`,
  else a new `req_<hex>`; stored in `scope["state"]["request_id"]`, bound to the
  structured log context and echoed in the `X-Request-ID` response header;
- a read rate limit: a GET or HEAD (but `/health` and `/ready`) takes a token
  from its client address's bucket, separate from order entry's per-user bucket;
  without one it is answered 429 RATE_LIMITED with Retry-After, and the
  connection is not read again for that long (`connections.THROTTLE`);
- a body limit: a declared `Content-Length` above `max_body_bytes` is refused
  at once with 413, and a streamed body (chunked, no length) that grows past it
  is cut off with 413: whatever the app answers to the cut-off body (FastAPI
  turns the error into 400) is dropped, unless it had already started answering;
- `X-Content-Type-Options: nosniff` on every answer;
- an exception that escapes the app (a bug) answered 500 INTERNAL_ERROR in the
  envelope with a trace id, logged, and never re-raised into the server, so the
  kept-alive connection stays usable;
- a latency observation by route template (not raw path: bounded label values)
  and one structured log line per request.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from typing import Any

import structlog
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crossbook.api.connections import THROTTLE
from crossbook.api.envelope import failure
from crossbook.api.errors import ApiCode, ApiError
from crossbook.api.metrics import ApiMetrics
from crossbook.api.rate_limit import RateLimiter, retry_after_header

REQUEST_ID_HEADER = "x-request-id"
NOSNIFF = (b"x-content-type-options", b"nosniff")
READ_METHODS = frozenset({"GET", "HEAD"})
UNLIMITED_PATHS = frozenset({"/health", "/ready"})  # probes are never rate limited
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

log = structlog.get_logger("crossbook.http")


class _BodyTooLargeError(Exception):
    pass


class GatewayMiddleware:
    def __init__(
        self, app: ASGIApp, metrics: ApiMetrics, max_body_bytes: int, read_limiter: RateLimiter
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.read_limiter = read_limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            if scope["type"] == "websocket":
                await self.app(scope, receive, send)
            else:
                await self._http(scope, receive, send, request_id)
        finally:
            structlog.contextvars.unbind_contextvars("request_id")

    async def _http(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        started = time.perf_counter()
        status = 500
        response_started = False
        body_cut = False  # the streamed body passed the limit: the answer is 413
        headers = [(b"x-request-id", request_id.encode()), NOSNIFF]

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        async def send_from_app(message: Message) -> None:
            if not (body_cut and not response_started):
                await send_with_id(message)

        def cut() -> None:
            nonlocal body_cut
            body_cut = True

        try:
            if _declared_length(scope) > self.max_body_bytes:
                await self._too_large(scope, send_with_id)
            elif (wait_s := self._read_wait_s(scope)) > 0:
                await self._read_limited(scope, send_with_id, wait_s)
            else:
                try:
                    await self.app(scope, self._limited(receive, cut), send_from_app)
                except Exception as error:
                    if not body_cut or response_started:
                        await self._unexpected(scope, send_with_id, error, response_started)
                if body_cut and not response_started:
                    await self._too_large(scope, send_with_id)
        finally:
            elapsed_s = time.perf_counter() - started
            route = _route_template(scope)
            self.metrics.http_seconds.labels(scope["method"], route, str(status)).observe(elapsed_s)
            log.info(
                "http",
                method=scope["method"],
                route=route,
                path=scope["path"],
                status=status,
                ms=round(elapsed_s * 1000, 3),
            )

    def _limited(self, receive: Receive, on_cut: Callable[[], None]) -> Receive:
        seen = 0

        async def receive_limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    on_cut()
                    raise _BodyTooLargeError
            return message

        return receive_limited

    def _read_wait_s(self, scope: Scope) -> float:
        """A read's turn in its client address's bucket: 0.0, or the seconds to wait."""
        if scope["method"] not in READ_METHODS or scope["path"] in UNLIMITED_PATHS:
            return 0.0
        client = scope.get("client")
        return self.read_limiter.take(client[0] if client else "")

    async def _read_limited(self, scope: Scope, send: Send, wait_s: float) -> None:
        """429 with Retry-After; then the connection is not read for that long (when the
        server supports it), so a client that ignores Retry-After costs a timer."""
        retry_after = retry_after_header(wait_s)
        throttle = scope.get("extensions", {}).get(THROTTLE)
        if throttle is not None:
            throttle(int(retry_after))
        self.metrics.reads_limited.inc()
        error = ApiError(
            ApiCode.RATE_LIMITED,
            "too many reads from this address",
            headers={"Retry-After": retry_after},
            details={"retry_after_s": int(retry_after)},
        )
        await failure(HTTPConnection(scope, _no_body), error)(scope, _no_body, send)

    @staticmethod
    async def _unexpected(
        scope: Scope, send: Send, error: Exception, response_started: bool
    ) -> None:
        """A bug: logged with a trace id and answered 500 INTERNAL_ERROR in the envelope,
        never re-raised into the server (which would drop a kept-alive connection). If
        the answer had already started, it is left to end where it stopped."""
        trace_id = secrets.token_hex(16)
        log.error("unexpected error", trace_id=trace_id, path=scope["path"], exc_info=error)
        if response_started:
            return
        failed = ApiError(
            ApiCode.INTERNAL_ERROR, "An unexpected error occurred", details={"trace_id": trace_id}
        )
        await failure(HTTPConnection(scope, _no_body), failed)(scope, _no_body, send)

    async def _too_large(self, scope: Scope, send: Send) -> None:
        error = ApiError(
            ApiCode.PAYLOAD_TOO_LARGE,
            f"request body is larger than {self.max_body_bytes} bytes",
            details={"max_bytes": self.max_body_bytes},
        )

        await failure(HTTPConnection(scope, _no_body), error)(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(text):
                return text
            break
    return f"req_{secrets.token_hex(8)}"


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def _route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    path: object = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
