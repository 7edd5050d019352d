"""Limits a hostile client meets at the transport and in the streams, on a live server.

Each server here has small limits of its own, so each bound is reached in a few
requests. Waits are bounded reads on sockets (EOF is the server's close), never
sleeps standing in for synchronisation; the trickling clients sleep between the
bytes they send because sending slowly is the behaviour under test.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from api_support import LiveServer, RawHttp, fresh_market, live_server, new_trader, place

READ_TIMEOUT_S = 10.0  # failure bound of one awaited read
TRICKLE_INTERVAL_S = 0.2
MAX_TRICKLE_LINES = 100  # 20 s of trickling: far beyond the timeouts under test
MAX_RESUBSCRIBES = 100_000  # failure bound: 100 000 snapshots queued is far past any bound


def closed_by_server(sock: socket.socket) -> bool:
    """Read until the server closes (EOF or reset); False if it stays open that long."""
    sock.settimeout(READ_TIMEOUT_S)
    try:
        for _ in range(10_000):
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    path = tmp_path_factory.mktemp("limits") / "crossbook.db"
    limits: dict[str, Any] = {
        "max_connections": 40,
        "max_connections_per_client": 20,
        "http_header_timeout_ms": 1_000,
        "http_body_timeout_ms": 1_000,
        "read_rate_per_s": 2.0,
        "read_burst": 5,
        "ws_max_connections_per_client": 3,
        "ws_ops_per_s": 5.0,
        "ws_ops_burst": 10,
    }
    with live_server(path, **limits) as running:
        yield running


# -- slowloris: read timeouts ------------------------------------------------------------


def trickle(server: LiveServer, head: bytes, line: bytes) -> socket.socket:
    """A connection that sends `head`, then `line` every `TRICKLE_INTERVAL_S` until the
    server closes it (or `MAX_TRICKLE_LINES` were sent); returned once closed."""
    sock = socket.create_connection(("127.0.0.1", server.settings.port), READ_TIMEOUT_S)
    sock.sendall(head)
    for _ in range(MAX_TRICKLE_LINES):
        time.sleep(TRICKLE_INTERVAL_S)  # the slowness under test
        try:
            sock.sendall(line)
        except (BrokenPipeError, ConnectionResetError):
            return sock  # closed by the server
    raise AssertionError("the server kept a trickling connection open")


def test_headers_trickled_line_by_line_are_cut_off_at_the_header_timeout(
    tight: LiveServer,
) -> None:
    with trickle(tight, b"GET /health HTTP/1.1\r\nHost: x\r\n", b"X-Slow: 1\r\n") as sock:
        assert closed_by_server(sock)


def test_a_body_trickled_byte_by_byte_is_cut_off_at_the_body_timeout(tight: LiveServer) -> None:
    head = b"POST /api/v1/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
    with trickle(tight, head, b"{") as sock:
        assert closed_by_server(sock)


def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout(
    tight: LiveServer,
) -> None:
    with socket.create_connection(("127.0.0.1", tight.settings.port), READ_TIMEOUT_S) as sock:
        assert closed_by_server(sock)


def test_a_kept_alive_connection_still_serves_requests_after_the_timeouts(
    tight: LiveServer,
) -> None:
    raw = RawHttp(tight)
    try:
        for _ in range(3):  # the timers are per request: answered ones never fire
            assert raw.request("GET", "/health")[0] == 200
    finally:
        raw.close()


# -- connection caps ---------------------------------------------------------------------


def refusal_of(sock: socket.socket) -> dict[str, Any]:
    """The answer a refused connection gets unasked: an error envelope, then EOF."""
    sock.settimeout(READ_TIMEOUT_S)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    envelope: dict[str, Any] = json.loads(body)
    assert b"connection: close" in head.lower(), head
    return {"status": status, **envelope["error"]}


def test_connections_beyond_the_per_client_cap_are_refused_429(tight: LiveServer) -> None:
    cap = tight.settings.max_connections_per_client
    with ExitStack() as held:
        for _ in range(cap):  # each answered, so each is admitted and counted
            raw = RawHttp(tight)
            held.callback(raw.close)
            assert raw.request("GET", "/health")[0] == 200
        with socket.create_connection(("127.0.0.1", tight.settings.port), 10) as extra:
            refused = refusal_of(extra)
    assert (refused["status"], refused["code"]) == (429, "TOO_MANY_CONNECTIONS")
    raw = RawHttp(tight)  # the cap counts open connections: room again
    assert raw.request("GET", "/health")[0] == 200
    raw.close()


def test_connections_beyond_the_server_cap_are_refused_503(tmp_path: Path) -> None:
    with live_server(
        tmp_path / "db.sqlite", max_connections=4, max_connections_per_client=4,
        ws_max_connections_per_client=4,
    ) as server, ExitStack() as held:  # fmt: skip
        for _ in range(4):
            raw = RawHttp(server)
            held.callback(raw.close)
            assert raw.request("GET", "/health")[0] == 200
        with socket.create_connection(("127.0.0.1", server.settings.port), 10) as extra:
            refused = refusal_of(extra)
        assert (refused["status"], refused["code"]) == (503, "SERVER_BUSY")


# -- the read rate limit -----------------------------------------------------------------


def test_reads_beyond_the_burst_are_429_and_the_connection_is_not_read_meanwhile(
    tight: LiveServer,
) -> None:
    raw = RawHttp(tight)
    try:
        statuses = [raw.request("GET", "/api/v1/markets")[0] for _ in range(5)]
        assert statuses == [200] * 5  # the burst
        status, fields, body = raw.request("GET", "/api/v1/markets")
        assert status == 429 and json.loads(body)["error"]["code"] == "RATE_LIMITED"
        retry_after_s = int(fields["retry-after"])
        assert json.loads(body)["error"]["details"]["retry_after_s"] == retry_after_s
        started = time.monotonic()
        assert raw.request("GET", "/health")[0] == 200  # answered once reading resumes …
        assert time.monotonic() - started >= 0.9 * retry_after_s  # … not before
    finally:
        raw.close()


def test_order_entry_and_probes_are_not_read_limited(tight: LiveServer) -> None:
    trader = new_trader(tight, {"USDT": "1000"})
    symbol = fresh_market(tight)
    with httpx.Client(base_url=tight.url, timeout=10) as client:
        for _ in range(10):  # beyond the read burst, but these are not reads
            assert client.get("/health").status_code == 200
            assert client.get("/ready").status_code == 200
    for _ in range(10):
        place(trader, symbol, side="buy", type="limit", quantity="0.0001", price="1")


# -- WebSocket: per-address cap, message budget, amplification ----------------------------


def test_websockets_beyond_the_per_client_cap_are_refused_429(tight: LiveServer) -> None:
    cap = tight.settings.ws_max_connections_per_client
    with ExitStack() as held:
        for _ in range(cap):
            ws = held.enter_context(connect(tight.ws_url, open_timeout=10))
            ws.send(json.dumps({"op": "ping"}))
            assert json.loads(ws.recv(timeout=10))["type"] == "pong"
        with pytest.raises(InvalidStatus) as refused:
            connect(tight.ws_url, open_timeout=10)
        response = refused.value.response
        assert response.status_code == 429
        assert json.loads(response.body)["error"]["code"] == "TOO_MANY_CONNECTIONS"
    with connect(tight.ws_url, open_timeout=10) as again:  # closed ones free their place
        again.send(json.dumps({"op": "ping"}))
        assert json.loads(again.recv(timeout=10))["type"] == "pong"


def test_a_websocket_sending_beyond_its_message_budget_is_closed_1008(tight: LiveServer) -> None:
    with connect(tight.ws_url, open_timeout=10) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(1_000):  # far beyond the burst of 10 at 5/s
                ws.send(json.dumps({"op": "ping"}))
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "too many messages")


def deep_book(server: LiveServer, levels: int) -> str:
    """A market with `levels` resting bids at distinct prices."""
    symbol = fresh_market(server)
    trader = new_trader(server, {"USDT": "1000000"})
    for i in range(levels):
        price = f"{1 + i * 0.01:.2f}"
        place(trader, symbol, side="buy", type="limit", quantity="0.0001", price=price)
    return symbol


def test_resubscribing_a_deep_book_without_reading_is_dropped_within_the_byte_bound(
    tmp_path: Path,
) -> None:
    """The amplification attack: each subscribe queues a whole snapshot. The queue is
    bounded in bytes, so the connection is dropped (and its queue freed) after a few
    snapshots; the snapshot is rendered once for the sequence and shared."""
    bound_bytes = 200_000
    overrides: dict[str, Any] = {"ws_max_queued_bytes": bound_bytes, "order_rate_per_s": 10_000.0}
    with live_server(tmp_path / "db.sqlite", **overrides) as server:
        symbol = deep_book(server, 300)
        hub = server.app_state.hub
        channel = f"orderbook:{symbol}"
        with raw_websocket(server) as sock:
            snapshot = hub._book_snapshot(symbol, channel)
            assert hub._book_snapshot(symbol, channel) is snapshot  # rendered once
            pair = b"".join(
                masked_text(json.dumps({"op": op, "channels": [channel]}))
                for op in ("unsubscribe", "subscribe")
            )
            for _ in range(MAX_RESUBSCRIBES):  # until the server stops reading (or closes)
                try:
                    sock.sendall(pair)
                except OSError:  # closed by the server, or no longer read: sending stalls
                    break
                assert hub.queued_bytes <= bound_bytes
            assert closed_by_server(sock)
        assert hub.queued_bytes == 0


def raw_websocket(server: LiveServer) -> socket.socket:
    """A WebSocket opened by hand on a socket with a small receive buffer, which the
    test then never reads (a client library would)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4_096)
    sock.settimeout(READ_TIMEOUT_S)
    sock.connect(("127.0.0.1", server.settings.port))
    key = base64.b64encode(b"0123456789abcdef").decode()
    sock.sendall(
        (
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, "closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def masked_text(text: str) -> bytes:
    """One client text frame (RFC 6455: clients mask), sent on the raw socket so the
    client library never reads the server's frames."""
    payload = text.encode()
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    length = len(payload)
    assert length < 126
    return bytes([0x81, 0x80 | length]) + mask + masked
