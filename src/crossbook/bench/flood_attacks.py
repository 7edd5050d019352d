"""The attacks of `crossbook loadtest --flood`, each in a client process of its own.

Two hostile clients, run beside the measured order entry but never in its
process (their event loop would delay its requests and so distort its latencies):

- `reads`: `connections` keep-alive HTTP/1.1 connections, each sending
  `GET <path>` (an order book of `--flood-depth` levels) again as soon as the
  previous answer is read, whatever it is: a 429's Retry-After is ignored. A
  connection the server closes (or resets) is opened again after
  `RECONNECT_PAUSE_S`, so the client never opens connections faster than it
  loses them. Counted: requests sent, answers by status, bytes received,
  connections opened, closed by the server (and when), connect failures;
- `ws-snapshots`: `connections` WebSocket connections (a minimal RFC 6455
  handshake over a plain socket; all of them attempted before any sends, so
  the first ones' flood does not keep the others' handshakes from being
  answered) that never read a byte after the handshake
  (the transport's reading is paused, so what the server sends piles up in the
  kernel buffers and then in the server) and send masked text frames
  `unsubscribe` + `subscribe` of one book channel in a loop, as fast as the
  socket takes them. Counted: frames sent, connections opened, handshakes
  refused (by status) or timed out, connections closed by the server and when.

Both bind their sockets to `source` when given (e.g. 127.0.0.2: Linux routes all
of 127/8 to loopback, so the server sees a client address other than the order
entry's 127.0.0.1).

Known limits:
- the attack's rate is what one event loop per process can drive: with cheap
  answers (429s, a cached book) the client's CPU, not the server, may be the
  limit; `cpu_s` / `wall_s` tell (see `--flood-workers`);
- a closed WebSocket is noticed only when a write fails (the client never
  reads), so a close time is when the client saw it, within a write of the
  server's close; a server that stops reading from the connection without
  closing it leaves the client blocked in its write (counted as open);
- frames `sent` are those the client's kernel took (its send buffer is kept
  small, `WS_SEND_BUFFER_BYTES`), which can be far more than the server
  processed: the server's receive buffer alone holds megabytes of them;
- at most `MAX_CLOSE_TIMES` close times are kept per phase (the count is exact).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from crossbook.bench.loadtest_client import HttpConnection, ProtocolError

READS = "reads"
WS_SNAPSHOTS = "ws-snapshots"
MODES = (READS, WS_SNAPSHOTS)

RECONNECT_PAUSE_S = 0.5  # after the server closed a connection, or a connect failed
CONNECT_TIMEOUT_S = 10.0  # TCP connect and, for WebSocket, the handshake's answer
STOP_POLL_S = 0.1  # how often the attack looks at the coordinator's stop signal
MAX_CLOSE_TIMES = 1_000
MAX_HANDSHAKE_BYTES = 16_384
WS_SEND_BUFFER_BYTES = 16_384  # SO_SNDBUF of a WebSocket attacker's socket
WS_WRITE_HIGH_WATER_BYTES = 4_096  # the transport's own buffer before `drain` waits


@dataclass(frozen=True, slots=True)
class AttackSpec:
    """One attack process's share (picklable: sent to a spawned process)."""

    index: int
    mode: str  # READS or WS_SNAPSHOTS
    host: str
    port: int
    source: str | None  # address the client sockets are bound to; None: the OS picks
    connections: int
    read_path: str  # READS: the request target, e.g. /api/v1/orderbook/BTC-USDT?depth=1000
    channel: str  # WS_SNAPSHOTS: the channel re-subscribed, e.g. orderbook:BTC-USDT


@dataclass(slots=True)
class AttackResult:
    index: int
    connections_opened: int = 0
    connect_failures: dict[str, int] = field(default_factory=dict)  # reason (or HTTP_<status>)
    closed_by_server: int = 0
    closed_at_s: list[float] = field(default_factory=list)  # since the attack started
    requests_sent: int = 0  # READS
    answers_by_status: dict[str, int] = field(default_factory=dict)  # READS
    bytes_received: int = 0  # READS
    frames_sent: int = 0  # WS_SNAPSHOTS: unsubscribe and subscribe frames
    stopped_early_at_s: float | None = None  # the coordinator's stop (server RSS cap)
    cpu_s: float = 0.0
    wall_s: float = 0.0


class _Attack:
    def __init__(self, spec: AttackSpec, started_at: float) -> None:
        self.spec = spec
        self.started_at = started_at
        self.result = AttackResult(spec.index)
        self.failures: Counter[str] = Counter()
        self.answers: Counter[str] = Counter()
        self.first_attempts = 0  # WS_SNAPSHOTS: connections whose first handshake settled
        self.all_attempted = asyncio.Event()

    def closed(self) -> None:
        self.result.closed_by_server += 1
        if len(self.result.closed_at_s) < MAX_CLOSE_TIMES:
            self.result.closed_at_s.append(round(time.monotonic() - self.started_at, 3))

    async def connection_loop(self) -> None:
        while True:
            if await (self._reads() if self.spec.mode == READS else self._ws_snapshots()):
                self.closed()
            await asyncio.sleep(RECONNECT_PAUSE_S)

    # -- reads -------------------------------------------------------------------------

    async def _reads(self) -> bool:
        """One connection's life: True when the server closed it, False if it never opened."""
        spec = self.spec
        request = f"GET {spec.read_path} HTTP/1.1\r\nhost: {spec.host}:{spec.port}\r\n\r\n".encode()
        connection = HttpConnection(spec.host, spec.port, spec.source)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await connection.open()
        except (OSError, TimeoutError) as error:
            self.failures[type(error).__name__] += 1
            return False
        self.result.connections_opened += 1
        try:
            while True:
                self.result.requests_sent += 1
                status, body = await connection.request(request)
                self.answers[str(status)] += 1
                self.result.bytes_received += len(body)
        except (OSError, EOFError, asyncio.IncompleteReadError, ProtocolError, ValueError):
            return True
        finally:
            connection.close()

    # -- WebSocket snapshots -----------------------------------------------------------

    async def _ws_snapshots(self) -> bool:
        opened = await self._ws_open()
        if not self.all_attempted.is_set():  # the first round: every connection tries first
            self.first_attempts += 1
            if self.first_attempts >= self.spec.connections:
                self.all_attempted.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    await self.all_attempted.wait()
        if opened is None:
            return False
        writer = opened
        self.result.connections_opened += 1
        frames = _pair_of_frames(self.spec.channel)
        try:
            while True:
                writer.write(frames)
                self.result.frames_sent += 2
                await writer.drain()
        except (OSError, ConnectionError):
            return True
        finally:
            writer.transport.abort()

    async def _ws_open(self) -> asyncio.StreamWriter | None:
        """A WebSocket connection whose reading is paused, or None (counted) if refused."""
        spec = self.spec
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        writer: asyncio.StreamWriter | None = None
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, WS_SEND_BUFFER_BYTES)
            if spec.source is not None:
                sock.bind((spec.source, 0))
            sock.setblocking(False)
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await asyncio.get_running_loop().sock_connect(sock, (spec.host, spec.port))
                reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_HANDSHAKE_BYTES)
                writer.write(_handshake(spec.host, spec.port))
                head = await reader.readuntil(b"\r\n\r\n")
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
            self.failures[type(e).__name__] += 1
            if writer is not None:
                writer.transport.abort()
            else:
                sock.close()
            return None
        status = head[9:12].decode(errors="replace")
        if not head.startswith(b"HTTP/1.1 101"):
            self.failures[f"HTTP_{status}"] += 1
            writer.transport.abort()
            return None
        transport = cast(asyncio.Transport, writer.transport)
        transport.pause_reading()  # never read again: answers pile up server-side
        transport.set_write_buffer_limits(high=WS_WRITE_HIGH_WATER_BYTES)
        return writer

    # -- the run -----------------------------------------------------------------------

    async def run(self, ends_at: float, stop: Any) -> AttackResult:
        cpu0, wall0 = time.process_time(), time.monotonic()
        tasks = [asyncio.create_task(self.connection_loop()) for _ in range(self.spec.connections)]
        while time.monotonic() < ends_at:
            if stop.is_set():
                self.result.stopped_early_at_s = round(time.monotonic() - self.started_at, 3)
                break
            await asyncio.sleep(min(STOP_POLL_S, max(0.0, ends_at - time.monotonic())))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        result = self.result
        result.connect_failures = dict(self.failures)
        result.answers_by_status = dict(self.answers)
        result.cpu_s = time.process_time() - cpu0
        result.wall_s = time.monotonic() - wall0
        return result


def _handshake(host: str, port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /ws HTTP/1.1\r\nhost: {host}:{port}\r\nupgrade: websocket\r\n"
        f"connection: Upgrade\r\nsec-websocket-key: {key}\r\nsec-websocket-version: 13\r\n\r\n"
    ).encode()


def masked_text_frame(payload: bytes) -> bytes:
    """One client-to-server text frame (FIN, masked with a random key), RFC 6455 §5.2."""
    key = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = bytes([0x81, 0x80 | size])
    elif size < 1 << 16:
        head = bytes([0x81, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([0x81, 0x80 | 127]) + size.to_bytes(8, "big")
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


def _pair_of_frames(channel: str) -> bytes:
    frames = [
        masked_text_frame(orjson.dumps({"op": op, "channels": [channel]}))
        for op in ("unsubscribe", "subscribe")
    ]
    return b"".join(frames)


def attack_main(spec: AttackSpec, pipe: Any, stop: Any) -> None:
    """The entry point of an attack process (multiprocessing, spawn): for each
    `(started_at, ends_at)` received, wait for `started_at`, attack until `ends_at`
    (or until `stop` is set) and send back the `AttackResult`; None ends it."""
    try:
        import uvloop  # noqa: PLC0415 - Linux/macOS only; plain asyncio elsewhere

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        pipe.send(("ready", spec.index))
        while (command := pipe.recv()) is not None:
            started_at, ends_at = command
            time.sleep(max(0.0, started_at - time.monotonic()))
            pipe.send(("done", runner(_Attack(spec, started_at).run(ends_at, stop))))
    except BaseException as error:
        with contextlib.suppress(Exception):
            pipe.send(("failed", f"{type(error).__name__}: {error}"))
        raise
