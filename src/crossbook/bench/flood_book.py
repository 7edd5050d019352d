"""Set-up of `crossbook loadtest --flood`: a deep book, and what one read of it costs.

`build_book` places `levels` post-only limit orders of one lot each at distinct
prices, alternately a bid `k` ticks below the reference and an ask `k` ticks
above it (k = 1, 1, 2, 2, …), through the REST API, over `BUILD_CONNECTIONS`
keep-alive connections. The orders are spread over users holding at most
`ORDERS_PER_USER` each (below the server's open-order limit) and sent with the
users interleaved, so a per-user order rate limit that was not lifted (`--url`)
throttles each user separately; a `RATE_LIMITED` refusal is retried after
`RATE_LIMIT_PAUSE_S` (Retry-After is whole seconds, at least 1), other refusals
are counted (an existing order of another user at a crossing price, say). Post-
only: nothing trades, so the levels stay.

`measure_read` times one `GET /orderbook/{symbol}?depth=` and `measure_snapshot`
one WebSocket subscribe until its snapshot arrives: the cost of one unit of each
attack, for the report.

Known limits: every level is one lot of the builders' own, so on a market with
orders of others the book has the builders' levels plus theirs; the build stops
at `BUILD_LIMIT_S` whatever is left (counted as `NOT_SENT`).
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import time
from collections import Counter, deque
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import orjson
from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection, connect

from crossbook.bench.loadtest_client import HttpConnection, ProtocolError

ORDERS_PER_USER = 500  # the server's default open-order limit is 1,000 per user
BUILD_CONNECTIONS = 8
BUILD_LIMIT_S = 600.0
REQUEST_TIMEOUT_S = 30.0
RATE_LIMIT_PAUSE_S = 1.0
MAX_ATTEMPTS = 100  # per order: retries of RATE_LIMITED and of a failed connection
MEASURE_TIMEOUT_S = 60.0
MEASURE_REPEATS = 3
MEASURE_PAUSE_S = 0.5  # between subscribes: a server may limit operations per connection
RATE_LIMITED = "RATE_LIMITED"
NOT_SENT = "NOT_SENT"


@dataclass(frozen=True, slots=True)
class BookBuild:
    levels: int  # asked for
    placed: int  # orders accepted and resting
    refused: dict[str, int]  # by code
    seconds: float


def builders_needed(levels: int) -> int:
    return max(1, math.ceil(levels / ORDERS_PER_USER))


def level_prices(reference: Decimal, tick: Decimal, levels: int) -> list[tuple[str, str]]:
    """(side, price) of each level: bids below the reference, asks above, alternately."""
    out = []
    for j in range(levels):
        k = j // 2 + 1
        side, price = (
            ("buy", reference - k * tick) if j % 2 == 0 else ("sell", reference + k * tick)
        )
        out.append((side, f"{price.quantize(tick):f}"))
    return out


def build_book(
    host: str,
    port: int,
    symbol: str,
    tokens: list[str],
    prices: list[tuple[str, str]],
    quantity: str,
) -> BookBuild:
    started = time.monotonic()
    headers = [f"host: {host}:{port}\r\nauthorization: Bearer {t}\r\n".encode() for t in tokens]
    orders: deque[bytes] = deque()
    for j, (side, price) in enumerate(prices):
        body = {"symbol": symbol, "side": side, "type": "limit", "price": price,
                "quantity": quantity, "post_only": True}  # fmt: skip
        data = orjson.dumps(body)
        orders.append(
            b"POST /api/v1/orders HTTP/1.1\r\n%scontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (headers[j % len(headers)], len(data), data)
        )
    codes = asyncio.run(_place_all(host, port, orders, started + BUILD_LIMIT_S))
    codes[NOT_SENT] += len(orders)
    placed = codes.pop("OK", 0)
    refused = {code: n for code, n in sorted(codes.items()) if n}
    return BookBuild(len(prices), placed, refused, round(time.monotonic() - started, 3))


async def _place_all(host: str, port: int, orders: deque[bytes], deadline: float) -> Counter[str]:
    codes: Counter[str] = Counter()
    connections = [HttpConnection(host, port) for _ in range(BUILD_CONNECTIONS)]

    async def place(connection: HttpConnection) -> None:
        while orders and time.monotonic() < deadline:
            codes[await _place_one(connection, orders.popleft())] += 1

    try:
        await asyncio.gather(*(place(c) for c in connections))
    finally:
        for connection in connections:
            connection.close()
    return codes


async def _place_one(connection: HttpConnection, payload: bytes) -> str:
    code = NOT_SENT
    for _ in range(MAX_ATTEMPTS):
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                await connection.ensure_fresh()
                status, body = await connection.request(payload)
        except (OSError, EOFError, TimeoutError, asyncio.IncompleteReadError, ProtocolError):
            connection.close()
            code = "CONNECTION_ERROR"
            await asyncio.sleep(RATE_LIMIT_PAUSE_S)
            continue
        code = _code(status, body)
        if code != RATE_LIMITED:
            return code
        await asyncio.sleep(RATE_LIMIT_PAUSE_S)
    return code


def _code(status: int, body: bytes) -> str:
    try:
        envelope: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return f"HTTP_{status}"
    if status == 201 and envelope.get("success"):
        resting = envelope["data"]["order"]["status"] in ("open", "partially_filled")
        return "OK" if resting else f"NOT_RESTING_{envelope['data']['order']['status'].upper()}"
    return str((envelope.get("error") or {}).get("code") or f"HTTP_{status}")


def measure_read(url: str, path_symbol: str, depth: int) -> dict[str, Any]:
    """`MEASURE_REPEATS` `GET /orderbook` of `depth` levels per side on a quiet server:
    the answer's size and the median time."""
    times_ms: list[float] = []
    try:
        with httpx.Client(base_url=url, timeout=MEASURE_TIMEOUT_S) as client:
            for _ in range(MEASURE_REPEATS):
                started = time.monotonic()
                response = client.get(f"/api/v1/orderbook/{path_symbol}", params={"depth": depth})
                times_ms.append((time.monotonic() - started) * 1000)
    except httpx.HTTPError as error:
        return {"error": f"{type(error).__name__}: {error}"}
    data = response.json().get("data") or {}
    return {
        "status": response.status_code,
        "bytes": len(response.content),
        "ms": round(statistics.median(times_ms), 2),
        "levels": len(data.get("bids", [])) + len(data.get("asks", [])),
    }


def measure_snapshot(host: str, port: int, channel: str) -> dict[str, Any]:
    """`MEASURE_REPEATS` WebSocket subscribes on a quiet server (an unsubscribe and a
    pause between them): the snapshot's size and the median time until it arrived
    (render, queue and transfer); an error if the server refused one."""
    times_ms: list[float] = []
    try:
        with connect(f"ws://{host}:{port}/ws", open_timeout=10, max_size=None) as ws:
            for repeat in range(MEASURE_REPEATS):
                if repeat:
                    time.sleep(MEASURE_PAUSE_S)
                started = time.monotonic()
                ws.send(json.dumps({"op": "subscribe", "channels": [channel]}))
                message, payload = _snapshot(ws, started + MEASURE_TIMEOUT_S)
                times_ms.append((time.monotonic() - started) * 1000)
                ws.send(json.dumps({"op": "unsubscribe", "channels": [channel]}))
    except (OSError, TimeoutError, ValueError, WebSocketException) as error:
        return {"error": f"{type(error).__name__}: {error}"}
    data = payload.get("data") or {}
    return {
        "bytes": len(message.encode() if isinstance(message, str) else message),
        "ms": round(statistics.median(times_ms), 2),
        "levels": len(data.get("bids", [])) + len(data.get("asks", [])),
    }


def _snapshot(ws: ClientConnection, deadline: float) -> tuple[str | bytes, dict[str, Any]]:
    """The next snapshot message (acknowledgements and updates skipped), raw and parsed."""
    while True:
        message = ws.recv(timeout=max(0.0, deadline - time.monotonic()))
        payload = json.loads(message)
        kind = payload.get("type") if isinstance(payload, dict) else None
        if kind == "snapshot":
            return message, payload
        if kind == "error":  # a server that limits subscriptions may refuse one
            raise ValueError(f"subscribe refused: {payload.get('code')} {payload.get('message')}")
