"""Limits at the transport: connection caps, read timeouts, throttling, dropping.

uvicorn accepts every connection and waits for a request as long as the client
keeps sending bytes (a client trickling one header line a second is never timed
out), and the ASGI app cannot reach the socket. `guarded_protocols` returns the
HTTP and WebSocket protocol classes `crossbook serve` gives uvicorn instead:
uvicorn's own (httptools, websockets-sansio) with these additions:

- caps: at most `max_connections` open connections, and `max_connections_per_client`
  from one client address; a connection beyond either is answered at once (429
  TOO_MANY_CONNECTIONS or 503 SERVER_BUSY, `Connection: close`) and closed;
- timeouts: a request's headers must arrive within `header_timeout_ms` of its first
  byte (or of the connection, for the first request), and its body within
  `body_timeout_ms` of its headers; else the connection is closed;
- throttling (scope extension `THROTTLE`): the app may ask that, once the current
  answer is sent, nothing more is read from the connection for some seconds (at
  least that long, at most twice: spread, so that one client's many throttled
  connections do not all resume at once), so a client over its rate limit is
  slowed at the cost of a timer, not of parsing and refusing each of its
  requests (`middleware`);
- a small kernel receive buffer on WebSockets (`WS_RECEIVE_BUFFER_BYTES`), so one
  read never brings in thousands of frames to parse at once;
- dropping a WebSocket (scope extension `DROP_WEBSOCKET`): stop reading at once,
  queue the close frame behind what the socket already holds, and abort the
  connection if that has not drained within a grace time (`ws`).

Invariants: every admitted connection is counted once, from `connection_made`
until `connection_lost` of the protocol that holds it last (an HTTP connection
upgraded to a WebSocket is handed over, not counted twice); a refused one is
never counted; at most one header or body timer per connection.

Known limits: written against the protocol classes of the pinned uvicorn (the
parser callbacks and `conn`/`close_sent` of the sansio WebSocket protocol); the
tests of this module fail if an upgrade changes them. Caps count TCP connections
by the peer address the server sees: behind a proxy, that is the proxy.
"""

from __future__ import annotations

import asyncio
import random
import socket
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from crossbook.api.envelope import JSON, iso_ms
from crossbook.api.errors import API_STATUS, ApiCode
from crossbook.engine.clock import WALL_CLOCK

THROTTLE = "crossbook.throttle"  # scope["extensions"][THROTTLE](seconds) -> None
DROP_WEBSOCKET = "crossbook.drop"  # scope["extensions"][DROP_WEBSOCKET](code, reason) -> None
# A WebSocket's kernel receive buffer: uvicorn parses every frame of what one read
# brings in before the app sees the first, so a client that floods tiny frames made
# each read parse thousands of them in one go (~20 ms at 256 KiB a read, measured
# with loadtest --flood ws-snapshots). Clients send small control messages; this
# still takes a whole 64 KiB message, only in several reads.
WS_RECEIVE_BUFFER_BYTES = 8 * 1024


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int = 4_096
    max_connections_per_client: int = 256
    header_timeout_ms: int = 10_000
    body_timeout_ms: int = 30_000
    ws_close_grace_ms: int = 1_000  # a dropped WebSocket's close frame may take this long

    def __post_init__(self) -> None:
        assert 0 < self.max_connections_per_client <= self.max_connections, self
        assert self.header_timeout_ms > 0 and self.body_timeout_ms > 0, self
        assert self.ws_close_grace_ms > 0, self


class ConnectionGuard:
    """Counts open connections, in all and by client address."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.open_connections = 0
        self._by_client: dict[str, int] = {}
        self.refused = 0  # connections refused by a cap since start
        self.timed_out = 0  # connections closed by a read timeout since start

    def admit(self, client: str) -> ApiCode | None:
        """Count a new connection from `client`, or the code of the cap it would pass."""
        if self.open_connections >= self.limits.max_connections:
            self.refused += 1
            return ApiCode.SERVER_BUSY
        held = self._by_client.get(client, 0)
        if held >= self.limits.max_connections_per_client:
            self.refused += 1
            return ApiCode.TOO_MANY_CONNECTIONS
        self._by_client[client] = held + 1
        self.open_connections += 1
        return None

    def release(self, client: str) -> None:
        held = self._by_client[client] - 1
        assert held >= 0 and self.open_connections > 0, (client, held)
        if held:
            self._by_client[client] = held
        else:
            del self._by_client[client]
        self.open_connections -= 1

    def held_by(self, client: str) -> int:
        return self._by_client.get(client, 0)


def refusal_response(code: ApiCode, limit: int) -> bytes:
    """A whole HTTP answer, in the error envelope, for a connection refused by a cap."""
    body = orjson.dumps(
        {
            "success": False,
            "error": {
                "code": str(code),
                "message": "too many connections; retry later",
                "details": {"limit": limit},
            },
            "meta": {"request_id": "", "timestamp": iso_ms(WALL_CLOCK.now_ms())},
        }
    )
    status = API_STATUS[code]
    reason = {429: "Too Many Requests", 503: "Service Unavailable"}[status]
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: {JSON}\r\ncontent-length: {len(body)}"
        "\r\nretry-after: 1\r\nx-content-type-options: nosniff\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def _client_of(transport: asyncio.BaseTransport) -> str:
    peer: Any = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


def guarded_protocols(guard: ConnectionGuard) -> tuple[type[Any], type[Any]]:
    """The HTTP and WebSocket protocol classes for uvicorn's `http=` and `ws=`."""

    class GuardedWebSocket(WebSocketsSansIOProtocol):
        """uvicorn's WebSocket protocol, counted, and droppable by the app."""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self._client = _client_of(transport)  # admitted as HTTP, handed over here
            sock = transport.get_extra_info("socket")
            if sock is not None:  # what one read can bring in, and so parse at once
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, WS_RECEIVE_BUFFER_BYTES)
            super().connection_made(transport)

        def connection_lost(self, exc: Exception | None) -> None:
            guard.release(self._client)
            super().connection_lost(exc)

        def handle_connect(self, event: Any) -> None:
            super().handle_connect(event)
            scope: Any = getattr(self, "scope", None)
            if scope is not None:  # the handshake was accepted: the app's scope exists
                scope["extensions"][DROP_WEBSOCKET] = self.drop

        def drop(self, code: int, reason: str) -> None:
            """Close now: nothing more is read (a hostile client's frames would cost a
            parse each), the close frame goes behind what the socket holds, and the
            connection is aborted if that has not drained within the grace time. A
            client that was still sending may see a reset rather than the close frame:
            closing a socket with unread data resets it."""
            transport = self.transport
            if transport.is_closing():
                return
            transport.pause_reading()
            if not self.close_sent:
                self.conn.send_close(code, reason)
                transport.write(b"".join(self.conn.data_to_send()))
                self.close_sent = True
            transport.close()  # once what it holds is sent
            self.loop.call_later(guard.limits.ws_close_grace_ms / 1000, transport.abort)

    class GuardedHttp(HttpToolsProtocol):
        """uvicorn's HTTP/1.1 protocol, counted, with read timeouts and throttling."""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self._client = _client_of(transport)
            self._counted = False
            self._timer: asyncio.TimerHandle | None = None
            self._pause_after_s = 0.0
            refused = guard.admit(self._client)
            super().connection_made(transport)  # type: ignore[arg-type]
            if refused is not None:
                limits = guard.limits
                limit = (
                    limits.max_connections
                    if refused is ApiCode.SERVER_BUSY
                    else limits.max_connections_per_client
                )
                self.transport.write(refusal_response(refused, limit))
                self.transport.close()
                return
            self._counted = True
            self._arm(guard.limits.header_timeout_ms)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._counted:
                self._counted = False
                guard.release(self._client)
            super().connection_lost(exc)

        def handle_websocket_upgrade(self) -> None:
            self._disarm()
            self._counted = False  # the WebSocket protocol releases it
            super().handle_websocket_upgrade()

        # -- timeouts: the headers, then the body, each within its time ------------------

        def on_message_begin(self) -> None:
            super().on_message_begin()
            scope: Any = self.scope
            scope["extensions"] = {THROTTLE: self._throttle}
            if self._timer is None:  # a later request on a kept-alive connection
                self._arm(guard.limits.header_timeout_ms)

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()
            if not self.transport.is_closing():
                self._arm(guard.limits.body_timeout_ms)

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def _arm(self, timeout_ms: int) -> None:
            self._disarm()
            self._timer = self.loop.call_later(timeout_ms / 1000, self._timed_out)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _timed_out(self) -> None:
            self._timer = None
            if not self.transport.is_closing():
                guard.timed_out += 1
                self.transport.close()

        # -- throttling --------------------------------------------------------------------

        def _throttle(self, seconds: float) -> None:
            self._pause_after_s = max(self._pause_after_s, seconds)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            pause_s, self._pause_after_s = self._pause_after_s, 0.0
            if pause_s > 0 and not self.transport.is_closing():
                self.flow.pause_reading()
                # spread over [pause, 2 × pause): connections throttled together (one
                # client's) would otherwise all resume, and be answered, at once
                self.loop.call_later(pause_s * (1 + random.random()), self._resume)

        def _resume(self) -> None:
            if not self.transport.is_closing():
                self.flow.resume_reading()

    return GuardedHttp, GuardedWebSocket
