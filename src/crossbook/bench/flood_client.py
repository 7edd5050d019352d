"""The measured client of `crossbook loadtest --flood`: order entry and /health probes.

One spawned process, apart from the attack's (whose event loop would otherwise
delay these requests and distort their latencies). For each phase it is given a
start time, a warm-up and a measured duration, and runs:

- order entry: pairs of requests from funded users taken in turn: a post-only
  limit buy at a price that rests (`POST /api/v1/orders`), then its cancel
  (`DELETE /api/v1/orders/{id}`). Open loop at `rate_per_s` requests/s (a place
  and its cancel are two): pair k's place is scheduled at `t0 + 2k / rate`, its
  cancel at `t0 + (2k + 1) / rate`, sent then or when the place is answered if
  later. Each request's latency is measured from its *scheduled* time, so a
  cancel that waited for a slow place counts that wait, and so does a request
  waiting for one of the `connections` keep-alive connections (coordinated
  omission avoided, as in `loadtest_client`). A request is measured when its
  scheduled time falls in the measured window;
- /health probes at `probe_rate_per_s` over the measured window, on connections
  of their own, latency from the scheduled time too.

A request or probe not answered within its timeout (`timeout_s`,
`probe_timeout_s`) of its scheduled time is counted as `TIMEOUT` and its
connection closed (a fresh one replaces it); latency percentiles cover answered
requests only. At most `max_in_flight` order-entry requests are scheduled and
unanswered at once; beyond that a pair is not sent (`CLIENT_BEHIND`, both
requests). A cancel whose place left no resting order is not sent (`NO_ORDER`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from crossbook.bench.loadtest_client import HttpConnection, ProtocolError

OK = "OK"
TIMEOUT = "TIMEOUT"  # not answered within the timeout of its scheduled time
CONNECTION_ERROR = "CONNECTION_ERROR"  # the connection failed or answered garbage
CLIENT_BEHIND = "CLIENT_BEHIND"  # not sent: `max_in_flight` requests were outstanding
NO_ORDER = "NO_ORDER"  # a cancel not sent: its place left no resting order
UNFINISHED = "UNFINISHED"  # still outstanding when the phase's drain ended
UNANSWERED = frozenset({TIMEOUT, CONNECTION_ERROR, CLIENT_BEHIND, UNFINISHED})
OPEN_STATUSES = frozenset({"open", "partially_filled"})
DRAIN_GRACE_S = 2.0  # beyond the timeout, for the last requests of a phase
_NETWORK_ERRORS = (OSError, EOFError, asyncio.IncompleteReadError, ProtocolError, ValueError)


@dataclass(frozen=True, slots=True)
class OrderEntrySpec:
    """Everything the process needs (picklable: sent to a spawned process)."""

    host: str
    port: int
    symbol: str
    users: list[tuple[int, str]]  # (user id, trader token)
    prices: list[str]  # post-only buy prices that rest, taken in turn
    quantity: str
    rate_per_s: float  # requests (a place and its cancel are two)
    connections: int
    max_in_flight: int  # requests
    timeout_s: float
    probe_rate_per_s: float
    probe_timeout_s: float


@dataclass(slots=True)
class PhaseResult:
    scheduled: int  # measured order-entry requests scheduled
    sent: int
    codes: dict[str, int]  # measured requests by outcome (OK or an error code)
    latencies_us: bytes  # array('q') of answered measured requests
    probes_scheduled: int
    probe_codes: dict[str, int]
    probe_latencies_us: bytes
    source_address: str | None  # the address the server sees this client connect from
    max_schedule_lag_s: float  # how late the scheduler emitted a measured place, at worst
    cpu_s: float
    wall_s: float


class _Pool:
    """`size` keep-alive connections, one request at a time on each."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.connections = [HttpConnection(host, port) for _ in range(size)]
        self.free: asyncio.Queue[HttpConnection] = asyncio.Queue(size)
        for connection in self.connections:
            self.free.put_nowait(connection)

    async def open_all(self) -> None:
        await asyncio.gather(*(c.open() for c in self.connections))

    def close_all(self) -> None:
        for connection in self.connections:
            connection.close()

    async def request(
        self, payload: bytes, deadline: float, on_sent: Callable[[], None]
    ) -> tuple[int, bytes]:
        """Send on the next free connection; TimeoutError at `deadline` (monotonic s),
        the wait for a connection included. A connection that failed is closed."""
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            connection = await self.free.get()
            try:
                await connection.ensure_fresh()
                on_sent()
                return await connection.request(payload)
            except BaseException:
                connection.close()
                raise
            finally:
                self.free.put_nowait(connection)


class _Phase:
    def __init__(
        self, spec: OrderEntrySpec, started_at: float, warmup_s: float, duration_s: float
    ) -> None:
        self.spec = spec
        self.started_at = started_at
        self.measure_from = started_at + warmup_s
        self.ends_at = self.measure_from + duration_s
        host = f"host: {spec.host}:{spec.port}\r\n".encode()
        self.headers = [
            host + f"authorization: Bearer {token}\r\n".encode() for _, token in spec.users
        ]
        self.health_request = b"GET /health HTTP/1.1\r\n%s\r\n" % host
        self.codes: Counter[str] = Counter()
        self.probe_codes: Counter[str] = Counter()
        self.latencies: array[int] = array("q")
        self.probe_latencies: array[int] = array("q")
        self.scheduled = self.sent = self.probes_scheduled = self.in_flight = 0
        self.max_lag_s = 0.0
        self.tasks: set[asyncio.Task[None]] = set()

    def measured(self, scheduled_at: float) -> bool:
        return self.measure_from <= scheduled_at < self.ends_at

    async def run(self) -> PhaseResult:
        spec = self.spec
        orders = _Pool(spec.host, spec.port, spec.connections)
        probes = _Pool(
            spec.host, spec.port, math.ceil(spec.probe_rate_per_s * spec.probe_timeout_s) + 2
        )
        await asyncio.gather(orders.open_all(), probes.open_all())
        source = orders.connections[0].local_address()
        await _sleep_until(self.started_at)
        cpu0, wall0 = time.process_time(), time.monotonic()
        try:
            await asyncio.gather(self._schedule_orders(orders), self._schedule_probes(probes))
            if self.tasks:
                _, pending = await asyncio.wait(self.tasks, timeout=spec.timeout_s + DRAIN_GRACE_S)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        finally:
            orders.close_all()
            probes.close_all()
        return PhaseResult(
            scheduled=self.scheduled,
            sent=self.sent,
            codes=dict(self.codes),
            latencies_us=self.latencies.tobytes(),
            probes_scheduled=self.probes_scheduled,
            probe_codes=dict(self.probe_codes),
            probe_latencies_us=self.probe_latencies.tobytes(),
            source_address=source,
            max_schedule_lag_s=self.max_lag_s,
            cpu_s=time.process_time() - cpu0,
            wall_s=time.monotonic() - wall0,
        )

    def _spawn(self, job: Any) -> None:
        task = asyncio.create_task(job)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- order entry -------------------------------------------------------------------

    async def _schedule_orders(self, pool: _Pool) -> None:
        spec = self.spec
        interval_s = 1.0 / spec.rate_per_s
        pair = 0
        while (place_at := self.started_at + 2 * pair * interval_s) < self.ends_at:
            now = time.monotonic()
            if place_at > now:
                await asyncio.sleep(place_at - now)
                continue
            cancel_at = place_at + interval_s
            measured = [self.measured(place_at), self.measured(cancel_at)]
            self.scheduled += sum(measured)
            if measured[0]:
                self.max_lag_s = max(self.max_lag_s, now - place_at)
            if self.in_flight + 2 > spec.max_in_flight:
                self.codes[CLIENT_BEHIND] += sum(measured)
            else:
                self.in_flight += 2
                self._spawn(self._pair(pool, pair, place_at, cancel_at))
            pair += 1

    async def _pair(self, pool: _Pool, pair: int, place_at: float, cancel_at: float) -> None:
        spec = self.spec
        user = pair % len(spec.users)
        price = spec.prices[pair % len(spec.prices)]
        body = {"symbol": spec.symbol, "side": "buy", "type": "limit", "post_only": True,
                "price": price, "quantity": spec.quantity}  # fmt: skip
        payload = _post(self.headers[user], orjson.dumps(body))
        order_id: str | None = None
        outstanding = [place_at, cancel_at]  # scheduled times of the requests not yet done
        try:
            answer = await self._order_request(pool, payload, place_at, 201)
            if answer is not None and answer["order"]["status"] in OPEN_STATUSES:
                order_id = str(answer["order"]["id"])
            outstanding.pop(0)
            self.in_flight -= 1
            if order_id is None:
                if self.measured(cancel_at):
                    self.codes[NO_ORDER] += 1
            else:
                await _sleep_until(cancel_at)
                cancel = b"DELETE /api/v1/orders/%s HTTP/1.1\r\n%s\r\n" % (
                    order_id.encode(),
                    self.headers[user],
                )
                await self._order_request(pool, cancel, cancel_at, 200)
            outstanding.pop(0)
            self.in_flight -= 1
        except asyncio.CancelledError:
            self.codes[UNFINISHED] += sum(map(self.measured, outstanding))
            raise

    async def _order_request(
        self, pool: _Pool, payload: bytes, scheduled_at: float, success_status: int
    ) -> Any:
        """Send one request; count its outcome and latency if measured; its `data` if OK."""
        measured = self.measured(scheduled_at)

        def sent() -> None:
            self.sent += measured

        answer = await _timed(pool, payload, scheduled_at, self.spec.timeout_s, sent)
        if isinstance(answer, str):
            code, data = answer, None
        else:
            status, body, latency_us = answer
            code, data = _outcome(status, body, success_status)
            if measured:
                self.latencies.append(latency_us)
        if measured:
            self.codes[code] += 1
        return data if code == OK else None

    # -- /health probes ----------------------------------------------------------------

    async def _schedule_probes(self, pool: _Pool) -> None:
        interval_s = 1.0 / self.spec.probe_rate_per_s
        probe = 0
        while (due := self.measure_from + probe * interval_s) < self.ends_at:
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
                continue
            self.probes_scheduled += 1
            self._spawn(self._probe(pool, due))
            probe += 1

    async def _probe(self, pool: _Pool, due: float) -> None:
        answer = await _timed(pool, self.health_request, due, self.spec.probe_timeout_s, _nothing)
        if isinstance(answer, str):
            self.probe_codes[answer] += 1
            return
        status, _, latency_us = answer
        self.probe_codes[OK if status == 200 else f"HTTP_{status}"] += 1
        self.probe_latencies.append(latency_us)


async def _timed(
    pool: _Pool,
    payload: bytes,
    scheduled_at: float,
    timeout_s: float,
    on_sent: Callable[[], None],
) -> tuple[int, bytes, int] | str:
    """(status, body, µs since `scheduled_at`), or the error code of a request unanswered."""
    try:
        status, body = await pool.request(payload, scheduled_at + timeout_s, on_sent)
    except TimeoutError:
        return TIMEOUT
    except _NETWORK_ERRORS:
        return CONNECTION_ERROR
    return status, body, int((time.monotonic() - scheduled_at) * 1_000_000)


def _nothing() -> None:
    pass


def _outcome(status: int, body: bytes, success_status: int) -> tuple[str, Any]:
    """OK and the envelope's `data`, or the error code of the answer."""
    try:
        envelope = orjson.loads(body)
    except orjson.JSONDecodeError:
        return f"HTTP_{status}", None
    if status != success_status or not isinstance(envelope, dict) or not envelope.get("success"):
        error = envelope.get("error") if isinstance(envelope, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        return str(code or f"HTTP_{status}"), None
    return OK, envelope.get("data")


def _post(headers: bytes, data: bytes) -> bytes:
    return (
        b"POST /api/v1/orders HTTP/1.1\r\n%scontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (headers, len(data), data)
    )


async def _sleep_until(at: float) -> None:
    delay = at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def order_entry_main(spec: OrderEntrySpec, pipe: Any) -> None:
    """The entry point of the measured client (multiprocessing, spawn): for each
    `(started_at, warmup_s, duration_s)` received, run that phase and send back its
    `PhaseResult`; None ends it."""
    try:
        import uvloop  # noqa: PLC0415 - Linux/macOS only; plain asyncio elsewhere

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        pipe.send(("ready", 0))
        while (command := pipe.recv()) is not None:
            pipe.send(("done", runner(_Phase(spec, *command).run())))
    except BaseException as error:
        with contextlib.suppress(Exception):
            pipe.send(("failed", f"{type(error).__name__}: {error}"))
        raise
