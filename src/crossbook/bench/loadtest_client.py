"""The load generator of `crossbook loadtest`: one client process (of `--workers`).

Each worker owns a disjoint share of the run's users and of its schedule: with
`K` workers at a total `rate`, request `i` of the run is scheduled at
`t0 + i / rate` and belongs to worker `i mod K`. The schedule is open-loop: a
request's send time does not depend on earlier answers, and its latency is
measured from its *scheduled* time, so time spent waiting in the client (for a
free connection, or because the event loop woke late) counts; this avoids
coordinated omission. At most `max_in_flight` requests may be scheduled and not
yet answered: one scheduled beyond that is not sent and counts as
`CLIENT_BEHIND`, so a saturated client or server shows up as errors instead of a
quietly lower rate.

HTTP/1.1 keep-alive is spoken directly over asyncio streams (uvloop), one
request at a time per connection. Measured here (2-core machine, the server on
the same box, 8-64 concurrent requests): httpx's `AsyncClient` spent 3-5 ms of
client CPU per request (about 150-270 requests/s from one process), the raw
streams about 0.1 ms, so httpx would have measured itself rather than the server.
The client understands only what `crossbook serve` (uvicorn) answers: a status
line, headers, and a `content-length` or chunked body.

The mix is drawn from a `random.Random` seeded with `--seed` and the worker's
index: the sequence of kinds, users, sides, prices and quantities repeats from
run to run; which order a cancel targets depends on which orders rested, so it
does not repeat exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

PROGRESS_INTERVAL_S = 0.5
KEEPALIVE_REFRESH_S = 4.0  # uvicorn closes idle keep-alive connections after 5 s
MAX_RESTING_PER_USER = 200  # above this a user's limit order becomes a cancel (book bounded)
LIMIT_SHARE = 0.60
MARKET_SHARE = 0.20  # the rest (~20 %) are cancels of the user's own resting orders
OPEN_STATUSES = frozenset({"open", "partially_filled"})

OK = "OK"
CLIENT_BEHIND = "CLIENT_BEHIND"  # not sent: `max_in_flight` requests were outstanding
TIMEOUT = "TIMEOUT"  # sent, no answer within `timeout_s`
CONNECTION_ERROR = "CONNECTION_ERROR"  # the connection failed or answered garbage
UNFINISHED = "UNFINISHED"  # still outstanding when the drain after the run ended


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything one worker process needs (picklable: sent to a spawned process)."""

    index: int
    workers: int
    host: str
    port: int
    symbol: str
    users: list[tuple[int, str]]  # (user id, trader token)
    rate_per_s: float  # of the whole run, all workers together
    warmup_s: float
    duration_s: float
    connections: int
    max_in_flight: int
    timeout_s: float
    seed: int
    buy_prices: list[str]  # limit prices near the reference, for each side
    sell_prices: list[str]
    limit_quantities: list[str]
    market_quantities: list[str]


@dataclass(slots=True)
class Progress:
    """What a worker did since its previous report (counts of measured requests)."""

    index: int
    measuring: bool
    sent: int = 0
    ok: int = 0
    errors: int = 0
    latencies_us: bytes = b""  # array('q') of answered measured requests


@dataclass(slots=True)
class WorkerResult:
    index: int
    scheduled: int  # measured requests scheduled
    sent: int  # measured requests sent
    codes: dict[str, int]  # measured requests by outcome (OK or an error code)
    kinds: dict[str, int]  # measured requests by kind (limit, market, cancel)
    trades_in_responses: int  # trades listed in placement answers, warm-up included
    trades_measured: int
    last_answer_at: float  # monotonic time of the last answer to a measured request
    cpu_s: float
    wall_s: float
    max_schedule_lag_s: float  # how late the scheduler emitted a measured request, at worst
    latencies_us: bytes = b""  # what was not yet sent with a `Progress`


class ProtocolError(Exception):
    pass


class HttpConnection:
    """One keep-alive HTTP/1.1 connection; one request at a time. `local_host`, when
    given, is the address the socket is bound to (the client address the server sees)."""

    def __init__(self, host: str, port: int, local_host: str | None = None) -> None:
        self.host, self.port = host, port
        self.local_addr = None if local_host is None else (local_host, 0)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.last_used = 0.0

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(
            self.host, self.port, local_addr=self.local_addr
        )
        self.last_used = time.monotonic()

    def local_address(self) -> str | None:
        """The address this end of the connection is bound to, while connected."""
        if self._writer is None:
            return None
        name = self._writer.get_extra_info("sockname")
        return None if name is None else str(name[0])

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def ensure_fresh(self) -> None:
        stale = time.monotonic() - self.last_used > KEEPALIVE_REFRESH_S
        if self._writer is None or stale or self._writer.is_closing():
            self.close()
            await self.open()

    async def request(self, data: bytes) -> tuple[int, bytes]:
        reader, writer = self._reader, self._writer
        if reader is None or writer is None:
            raise ProtocolError("not connected")
        writer.write(data)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 "):
            raise ProtocolError(head[:40].decode(errors="replace"))
        status = int(head[9:12])
        lower = head.lower()
        start = lower.find(b"\r\ncontent-length:")
        if start >= 0:
            end = lower.find(b"\r\n", start + 2)
            body = await reader.readexactly(int(lower[start + 17 : end]))
        elif b"\r\ntransfer-encoding: chunked" in lower:
            body = await _read_chunked(reader)
        else:
            raise ProtocolError("an answer without a length")
        self.last_used = time.monotonic()
        if b"\r\nconnection: close" in lower:
            self.close()
        return status, body


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


@dataclass(slots=True)
class _User:
    user_id: int
    headers: bytes  # host and authorization lines, ready to send
    resting: list[str] = field(default_factory=list)  # ids of orders seen open


@dataclass(slots=True)
class _Job:
    kind: str  # limit, market, cancel
    user: _User
    payload: bytes
    scheduled_at: float
    measured: bool


class OrderMix:
    """The request stream: ~60 % limit orders near the reference, ~20 % market
    orders, ~20 % cancels of the user's own resting orders (a limit order when it
    has none, a cancel when it has `MAX_RESTING_PER_USER`)."""

    def __init__(self, spec: WorkerSpec, users: list[_User]) -> None:
        self.spec = spec
        self.users = users
        self.rng = random.Random(spec.seed * 1_000_003 + spec.index)
        self.symbol = spec.symbol

    def next(self) -> tuple[str, _User, bytes]:
        rng = self.rng
        user = self.users[rng.randrange(len(self.users))]
        draw = rng.random()
        if len(user.resting) >= MAX_RESTING_PER_USER or (
            draw >= LIMIT_SHARE + MARKET_SHARE and user.resting
        ):
            return "cancel", user, self._cancel(user)
        if draw < LIMIT_SHARE or draw >= LIMIT_SHARE + MARKET_SHARE:
            return "limit", user, self._limit(user)
        return "market", user, self._market(user)

    def _limit(self, user: _User) -> bytes:
        rng, spec = self.rng, self.spec
        side = "buy" if rng.random() < 0.5 else "sell"
        prices = spec.buy_prices if side == "buy" else spec.sell_prices
        body = {
            "symbol": self.symbol,
            "side": side,
            "type": "limit",
            "price": prices[rng.randrange(len(prices))],
            "quantity": spec.limit_quantities[rng.randrange(len(spec.limit_quantities))],
        }
        return _post(user, body)

    def _market(self, user: _User) -> bytes:
        rng, spec = self.rng, self.spec
        body = {
            "symbol": self.symbol,
            "side": "buy" if rng.random() < 0.5 else "sell",
            "type": "market",
            "quantity": spec.market_quantities[rng.randrange(len(spec.market_quantities))],
        }
        return _post(user, body)

    def _cancel(self, user: _User) -> bytes:
        resting = user.resting
        at = self.rng.randrange(len(resting))
        resting[at], resting[-1] = resting[-1], resting[at]
        order_id = resting.pop()
        return b"DELETE /api/v1/orders/%s HTTP/1.1\r\n%s\r\n" % (order_id.encode(), user.headers)


def _post(user: _User, body: dict[str, Any]) -> bytes:
    data = orjson.dumps(body)
    return (
        b"POST /api/v1/orders HTTP/1.1\r\n%scontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (user.headers, len(data), data)
    )


class Worker:
    def __init__(self, spec: WorkerSpec, out: Any) -> None:
        self.spec = spec
        self.out = out  # a multiprocessing queue to the coordinator
        host = f"host: {spec.host}:{spec.port}\r\n".encode()
        users = [
            _User(uid, host + f"authorization: Bearer {tok}\r\n".encode())
            for uid, tok in spec.users
        ]
        self.mix = OrderMix(spec, users)
        self.queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        self.in_flight = 0  # scheduled (and sent) requests not yet answered
        self.codes: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()
        self.scheduled = self.sent = self.trades_all = self.trades_measured = 0
        self.last_answer_at = 0.0
        self.max_lag_s = 0.0
        self.pending = array("q")  # latencies (µs) not yet reported
        self.progress = Progress(spec.index, measuring=False)

    async def run(self, start: Any) -> None:
        spec = self.spec
        connections = [HttpConnection(spec.host, spec.port) for _ in range(spec.connections)]
        await asyncio.gather(*(c.open() for c in connections))
        self.out.put(("ready", spec.index))
        t0 = start.recv()  # the coordinator's common start time (monotonic, system-wide)
        if t0 is None:
            return
        cpu0, wall0 = time.process_time(), time.monotonic()
        loops = [asyncio.create_task(self._serve(c)) for c in connections]
        reporter = asyncio.create_task(self._report_progress())
        await self._schedule(t0)
        deadline = time.monotonic() + spec.timeout_s + 1.0
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for task in (*loops, reporter):
            task.cancel()
        await asyncio.gather(*loops, reporter, return_exceptions=True)
        for connection in connections:
            connection.close()
        if self.in_flight:
            self.codes[UNFINISHED] += self.in_flight
        self.out.put(("done", spec.index, self._result(cpu0, wall0)))

    async def _schedule(self, t0: float) -> None:
        spec, k = self.spec, self.spec.workers
        total = round((spec.warmup_s + spec.duration_s) * spec.rate_per_s)
        warm = round(spec.warmup_s * spec.rate_per_s)
        i = spec.index
        while i < total:
            now = time.monotonic()
            due = t0 + i / spec.rate_per_s
            if due > now:
                await asyncio.sleep(due - now)
                continue
            while i < total and t0 + i / spec.rate_per_s <= now:  # everything due: a burst
                self._emit(t0 + i / spec.rate_per_s, i >= warm, now)
                i += k
            await asyncio.sleep(0)  # let the connections send what was just queued

    def _emit(self, scheduled_at: float, measured: bool, now: float) -> None:
        kind, user, payload = self.mix.next()
        if measured:
            self.progress.measuring = True
            self.scheduled += 1
            self.kinds[kind] += 1
            self.max_lag_s = max(self.max_lag_s, now - scheduled_at)
        if self.in_flight >= self.spec.max_in_flight:
            if measured:
                self.codes[CLIENT_BEHIND] += 1
                self.progress.errors += 1
            return
        self.in_flight += 1
        self.queue.put_nowait(_Job(kind, user, payload, scheduled_at, measured))

    async def _serve(self, connection: HttpConnection) -> None:
        while True:
            job = await self.queue.get()
            if job is None:
                return
            code = await self._execute(connection, job)
            self.in_flight -= 1
            if job.measured:
                self.codes[code] += 1
                if code == OK:
                    self.progress.ok += 1
                else:
                    self.progress.errors += 1

    async def _execute(self, connection: HttpConnection, job: _Job) -> str:
        try:
            async with asyncio.timeout(self.spec.timeout_s):
                await connection.ensure_fresh()
                if job.measured:
                    self.sent += 1
                    self.progress.sent += 1
                status, body = await connection.request(job.payload)
        except TimeoutError:
            connection.close()
            return TIMEOUT
        except (OSError, EOFError, asyncio.IncompleteReadError, ProtocolError, ValueError):
            connection.close()
            return CONNECTION_ERROR
        answered_at = time.monotonic()
        code = self._outcome(job, status, body)
        if job.measured:
            self.pending.append(int((answered_at - job.scheduled_at) * 1_000_000))
            self.last_answer_at = answered_at
        return code

    def _outcome(self, job: _Job, status: int, body: bytes) -> str:
        if status == 200 and job.kind == "cancel":
            return OK
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            return f"HTTP_{status}"
        if status != 201 or not answer.get("success"):
            error = answer.get("error") or {}
            return str(error.get("code") or f"HTTP_{status}")
        order, trades = answer["data"]["order"], len(answer["data"]["trades"])
        if order["status"] in OPEN_STATUSES:
            job.user.resting.append(order["id"])
        self.trades_all += trades
        if job.measured:
            self.trades_measured += trades
        return OK

    async def _report_progress(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_S)
            self.progress.latencies_us = self.pending.tobytes()
            self.pending = array("q")
            self.out.put(("progress", self.progress))
            self.progress = Progress(self.spec.index, self.progress.measuring)

    def _result(self, cpu0: float, wall0: float) -> WorkerResult:
        return WorkerResult(
            index=self.spec.index,
            scheduled=self.scheduled,
            sent=self.sent,
            codes=dict(self.codes),
            kinds=dict(self.kinds),
            trades_in_responses=self.trades_all,
            trades_measured=self.trades_measured,
            last_answer_at=self.last_answer_at,
            cpu_s=time.process_time() - cpu0,
            wall_s=time.monotonic() - wall0,
            max_schedule_lag_s=self.max_lag_s,
            latencies_us=self.pending.tobytes(),
        )


def worker_main(spec: WorkerSpec, out: Any, start: Any) -> None:
    """The entry point of a worker process (multiprocessing, spawn)."""
    try:
        import uvloop  # noqa: PLC0415 - Linux/macOS only; plain asyncio elsewhere

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        runner(Worker(spec, out).run(start))
    except BaseException as error:
        with contextlib.suppress(Exception):
            out.put(("failed", spec.index, f"{type(error).__name__}: {error}"))
        raise
