"""A real server for the API tests: uvicorn on a free loopback port, in a thread.

`LiveServer` runs the same app `crossbook serve` runs (`server.build_app`) over
real TCP, so tests talk HTTP (httpx) and WebSocket (websockets) exactly as a
client would. `Api` wraps an httpx client with the envelope's conventions;
`Trader` is a funded user with a token; `fresh_market` creates a market of its
own for a test, so tests sharing a server never share a book.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi.routing import APIRoute

from crossbook.api.app import ROUTERS
from crossbook.api.auth import Principal, Role, TokenCodec
from crossbook.api.schemas import ErrorEnvelope
from crossbook.config import Settings
from crossbook.server import uvicorn_config

STARTUP_TIMEOUT_S = 30.0
_asset_numbers = itertools.count(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LiveServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server = uvicorn.Server(uvicorn_config(settings, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="live-server", daemon=True)
        self.clients: list[httpx.Client] = []  # closed with the server
        self.admin: Api | None = None
        self.url = f"http://127.0.0.1:{settings.port}"
        self.ws_url = f"ws://127.0.0.1:{settings.port}/ws"

    def start(self) -> None:
        """Start and return once the socket listens (uvicorn's `started`, set after the
        lifespan's startup); polls that flag, bounded by `STARTUP_TIMEOUT_S`."""
        self.thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        self.server.should_exit = True
        self.thread.join(STARTUP_TIMEOUT_S)

    @property
    def app_state(self) -> Any:
        """The running app's state (its `context` and `hub`), for white-box checks."""
        return self.server.config.app.state


def settings_for(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "port": free_port(),
        "log_level": "warning",
        "order_rate_per_s": 1000.0,
        "order_burst": 1000,
        "read_rate_per_s": 10_000.0,
        "read_burst": 10_000,
        "ws_ops_per_s": 10_000.0,
        "ws_ops_burst": 10_000,
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def live_server(database_path: Path, **overrides: Any) -> Iterator[LiveServer]:
    server = LiveServer(settings_for(f"sqlite:///{database_path}", **overrides))
    server.start()
    try:
        yield server
    finally:
        server.stop()


class UnexpectedResponseError(AssertionError):
    pass


class Api:
    """An HTTP client of one server, with an optional bearer token."""

    def __init__(self, server: LiveServer, token: str | None = None) -> None:
        self.server = server
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=server.url + "/api/v1", headers=headers, timeout=10)
        server.clients.append(self.http)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, path, **kwargs)

    def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        """The `data` of a successful response (asserting its status, envelope and that it
        is exactly what the OpenAPI document declares for the route)."""
        response = self.request(method, path, **kwargs)
        body = response.json()
        if response.status_code != status or body.get("success") is not True:
            raise UnexpectedResponseError(f"{method} {path}: {response.status_code} {body}")
        assert set(body) == {"success", "data", "meta"}, body
        assert body["meta"]["request_id"] == response.headers["x-request-id"]
        documented_model(self.server, method, path, status).model_validate(body)
        return body["data"]

    def fails(self, method: str, path: str, status: int, code: str, **kwargs: Any) -> Any:
        """The `error` of a refused response (asserting status, code and envelope)."""
        response = self.request(method, path, **kwargs)
        body = response.json()
        assert response.status_code == status, (response.status_code, body)
        assert body["success"] is False, body
        assert body["error"]["code"] == code, body
        assert set(body["error"]) == {"code", "message", "details"}, body
        assert body["meta"]["request_id"] == response.headers["x-request-id"]
        documented_model(self.server, method, path, status).model_validate(body)
        return body["error"]


MIDDLEWARE_STATUSES = (404, 405, 413)  # answered before or around routing, for every route


def documented_model(server: LiveServer, method: str, path: str, status: int) -> Any:
    """The response model the OpenAPI document declares for this call's status.

    A status the route does not document fails the test: the document must list
    every status a route can answer (the gateway-wide 404/405/413 excepted)."""
    full_path = path.split("?", maxsplit=1)[0]
    full_path = full_path if full_path.startswith(("/health", "/ready")) else "/api/v1" + full_path
    for route in (r for router in ROUTERS for r in router.routes):
        if not isinstance(route, APIRoute) or method.upper() not in route.methods:
            continue
        if route.path_regex.fullmatch(full_path) is None:
            continue
        if 200 <= status < 300:
            assert route.status_code in (None, status), (route.path, status)
            return route.response_model
        if status not in MIDDLEWARE_STATUSES:
            assert status in route.responses, f"{method} {route.path}: {status} is undocumented"
        return ErrorEnvelope
    assert status in MIDDLEWARE_STATUSES, f"{method} {full_path} matched no route"
    return ErrorEnvelope


def tokens(server: LiveServer) -> TokenCodec:
    return TokenCodec(server.settings.jwt_secret_value, server.settings.jwt_ttl_s)


def admin_api(server: LiveServer) -> Api:
    """The server's admin client (one per server)."""
    if server.admin is None:
        server.admin = Api(server, tokens(server).issue(Principal(Role.ADMIN, None)))
    return server.admin


@dataclass
class Trader:
    user_id: int
    api: Api


def new_trader(server: LiveServer, funds: dict[str, str] | None = None) -> Trader:
    """A new user with a token, funded by admin deposits (`{"USDT": "100000"}`)."""
    admin = admin_api(server)
    user = admin.ok("POST", "/admin/users", 201, json={"name": "trader"})
    user_id = int(user["id"])
    for asset, amount in (funds or {}).items():
        admin.ok(
            "POST",
            "/admin/deposits",
            201,
            json={"user_id": user_id, "asset": asset, "amount": amount},
        )
    token = admin.ok("POST", f"/admin/users/{user_id}/tokens", 201, json={})["token"]
    return Trader(user_id, Api(server, token))


def fresh_market(server: LiveServer, **rules: str) -> str:
    """A new market `T<n>/USDT` (8-decimal base, tick 0.01, step 0.0001) for one test."""
    code = f"T{next(_asset_numbers)}"
    body: dict[str, Any] = {
        "base": code,
        "quote": "USDT",
        "base_decimals": 8,
        "tick_size": "0.01",
        "step_size": "0.0001",
        "min_quantity": "0.0001",
        "max_quantity": "1000",
    }
    body.update(rules)
    market = admin_api(server).ok("POST", "/admin/markets", 201, json=body)
    return str(market["symbol"])


def place(trader: Trader, symbol: str, **fields: Any) -> dict[str, Any]:
    body = {"symbol": symbol, **fields}
    data: dict[str, Any] = trader.api.ok("POST", "/orders", 201, json=body)
    return data


def refused(
    api: Api, method: str, path: str, status: int, code: str, **kwargs: Any
) -> httpx.Response:
    """Like `Api.fails`, but returns the whole response (for its headers)."""
    response = api.request(method, path, **kwargs)
    body = response.json()
    assert response.status_code == status, (response.status_code, body)
    assert body["success"] is False, body
    assert body["error"]["code"] == code, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert body["meta"]["request_id"] == response.headers["x-request-id"]
    return response


class RawHttp:
    """One kept-alive HTTP/1.1 connection on a plain socket, for what a client library
    hides: whether the server kept the connection after an answer (a server that drops
    it without `Connection: close` shows as EOF on the next request)."""

    def __init__(self, server: LiveServer, timeout_s: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.settings.port), timeout_s)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def request(
        self, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        target = urllib.parse.quote(target, safe="/?&=:%+")  # as clients send non-ASCII
        lines = [f"{method} {target} HTTP/1.1", "Host: test", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = self._read_until(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        found = dict(line.split(": ", 1) for line in header_lines if line)
        fields = {name.lower(): value for name, value in found.items()}
        content = self._read_exactly(int(fields.get("content-length", "0")))
        return int(status_line.split(" ")[1]), fields, content

    def _read_until(self, marker: bytes) -> bytes:
        for _ in range(10_000):
            head, found, rest = self.buffer.partition(marker)
            if found:
                self.buffer = rest
                return head
            self._fill()
        raise AssertionError("no end of headers")

    def _read_exactly(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self._fill()
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk
