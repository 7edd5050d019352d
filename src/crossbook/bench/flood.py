"""`crossbook loadtest --flood reads|ws-snapshots`: order entry beside an attack.

What it measures: how much a hostile client slows another user's order entry,
the server's liveness and its memory. Each round is a QUIET phase (order entry
alone) then a FLOOD phase (the same order entry with the attack running
beside it), `--rounds` times, on one server. For each phase:
- order entry: another funded user's post-only buy then its cancel, open loop
  at `--rate` requests/s, latency p50/p99/max from each request's scheduled
  time, outcomes by code (see `flood_client`);
- `/health` probes at `--probe-rate` with a `--probe-timeout`: latency and
  unanswered probes;
- the server's RSS (`VmRSS` of `/proc/<pid>/status`) at the phase's start, its
  peak (sampled every `RSS_SAMPLE_S`) and its end; its CPU and the machine's;
- the attack (FLOOD only, see `flood_attacks`): for `reads`, requests sent and
  answers by status; for `ws-snapshots`, frames sent and the connections the
  server closed, and when; the attack client's own CPU;
- after FLOOD: how long until `/health` answered again once the attack stopped.
Then medians per phase kind over the rounds, and FLOOD / QUIET ratios.

Set-up, before the first phase: a book of `--book-levels` distinct price levels
on `--symbol` (default BTC/USDT, the market the attacks target) built with
post-only orders through the REST API (`flood_book`), the order-entry users
(enough to stay under the default per-user order rate limit when it is not
lifted), the size and time of one read and one snapshot of that book.

The attack comes from another client address than order entry's (by default
127.0.0.2 when the server is on loopback, `--flood-source` otherwise), so a
per-address limit on the server can tell them apart; the report says which
addresses were used. The attack and order entry run in separate client
processes; the coordinator (this module) only samples and collects.

Known limits:
- a benchmark, not a test: it asserts nothing about timing; exit code 0
  whatever the figures, 2 if the run could not happen;
- everything shares the machine (2 cores here): the attack client's CPU is
  taken from the server's, which the report shows (`attack client cores`);
  with cheap answers the client may be what limits the attack;
- the RSS is known only for a server started with `--serve` or named with
  `--server-pid`, and only on Linux; a phase's peak is the highest sample;
- memory that a flood made the server allocate is often not given back to the
  OS, so a later round starts from a higher RSS;
- the attack is stopped early if the server's RSS exceeds `--max-server-rss-mb`
  (the report says when), so the machine survives an unbounded server;
- order-entry requests unanswered within `--timeout` are counted, not part of
  the percentiles: a p99 beside a large unanswered count understates the wait,
  so each phase also has the percentiles with the unanswered counted at the
  timeout (a lower bound of their latency);
- an attack the server cannot keep up with builds a backlog that grows through
  the phase: then latencies grow with `--duration` and are not a steady state.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import multiprocessing
import os
import socket
import statistics
import threading
import time
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from multiprocessing.connection import wait
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from crossbook.bench import loadtest_report as figures
from crossbook.bench.flood_attacks import (
    MODES,
    READS,
    WS_SNAPSHOTS,
    AttackResult,
    AttackSpec,
    attack_main,
)
from crossbook.bench.flood_book import (
    ORDERS_PER_USER,
    BookBuild,
    build_book,
    builders_needed,
    level_prices,
    measure_read,
    measure_snapshot,
)
from crossbook.bench.flood_client import (
    OK,
    UNANSWERED,
    OrderEntrySpec,
    PhaseResult,
    order_entry_main,
)
from crossbook.bench.loadtest import (
    Admin,
    LoadtestError,
    LoadtestOptions,
    Target,
    admin_client,
    funded_user,
    open_target,
    redacted,
)

QUIET = "quiet"
FLOOD = "flood"
DEFAULT_CONNECTIONS = {READS: 200, WS_SNAPSHOTS: 8}
DEFAULT_SYMBOL = "BTC/USDT"
FLOOD_TIMEOUT_S = 30.0  # per order-entry request: long enough to see a stall's latencies
DEFAULT_REFERENCE_TICKS = 1_000_000  # a market with no book and no trade: 10,000.00 at 0.01
ORDER_ENTRY_RATE_PER_USER_S = 20.0  # below the default per-user order rate limit (50/s)
ORDER_ENTRY_PRICE_STEPS = 10  # buys at the best bid of the built book .. 10 ticks below
ORDER_ENTRY_FUNDED_ORDERS = 100_000  # quote deposited per order-entry user, in orders
START_DELAY_S = 0.5  # between sending a phase's start time and that time
READY_TIMEOUT_S = 60.0
COLLECT_GRACE_S = 30.0  # beyond a phase's planned end, drain and timeout, for its results
RSS_SAMPLE_S = 0.1
RECOVERY_LIMIT_S = 120.0
RECOVERY_POLL_S = 0.2
RECOVERY_PROBE_TIMEOUT_S = 1.0
SATURATED_SHARE = 0.9  # of a core per client process: that process limited itself
MAX_CLOSE_TIMES_REPORTED = 50


@dataclass(frozen=True, slots=True)
class FloodOptions:
    mode: str  # READS or WS_SNAPSHOTS
    url: str | None = None
    serve: bool = False
    database_url: str | None = None
    server_log_level: str = "warning"
    server_pid: int | None = None
    symbol: str = DEFAULT_SYMBOL
    price: str | None = None
    rate_per_s: float = 50.0  # order-entry requests (a place and its cancel are two)
    duration_s: float = 20.0  # measured, per phase
    warmup_s: float = 2.0  # per phase, before its measured window
    rounds: int = 1
    pause_s: float = 2.0  # between phases
    users: int | None = None  # order-entry users (default: from the rate)
    connections: int = 32  # order entry's keep-alive connections
    max_in_flight: int | None = None  # order-entry requests (default: all of a stall)
    timeout_s: float = FLOOD_TIMEOUT_S  # per order-entry request, from its scheduled time
    probe_rate_per_s: float = 10.0
    probe_timeout_s: float = 2.0
    flood_connections: int | None = None  # default: DEFAULT_CONNECTIONS[mode]
    flood_depth: int = 1_000
    flood_source: str | None = None
    flood_workers: int = 1
    book_levels: int = 3_000
    max_server_rss_mb: float = 2_048.0
    as_json: bool = False

    def target_options(self) -> LoadtestOptions:
        return LoadtestOptions(
            url=self.url,
            serve=self.serve,
            database_url=self.database_url,
            server_log_level=self.server_log_level,
        )


@dataclass(slots=True)
class Setup:
    symbol: str
    path_symbol: str
    reference_price: str
    host: str  # the server's address as connected to
    order_entry_address: str  # the client address order entry and /health come from
    flood_source: str | None  # the address the attack binds to (None: the OS picks)
    order_entry: OrderEntrySpec
    attacks: list[AttackSpec]
    book: BookBuild | None
    read_cost: dict[str, Any]
    snapshot_cost: dict[str, Any]
    server_pid: int | None


def run(options: FloodOptions) -> int:
    err = Console(stderr=True)
    try:
        _check(options)
        with (
            open_target(options.target_options(), err) as target,
            admin_client(target) as admin,
        ):
            setup = _set_up(admin, target, options, err)
            with _clients(setup) as clients:
                phases = [
                    _phase(clients, kind, n, target, setup, options, err)
                    for n in range(1, options.rounds + 1)
                    for kind in (QUIET, FLOOD)
                ]
            report = _report(target, setup, phases, options)
    except LoadtestError as error:
        err.print(f"[red]loadtest --flood could not run:[/red] {error}")
        return 2
    if options.as_json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report)
    return 0


def _check(options: FloodOptions) -> None:
    if options.mode not in MODES:
        raise LoadtestError(f"--flood is one of {', '.join(MODES)}, not {options.mode}")
    if options.serve and options.server_pid is not None:
        raise LoadtestError("--server-pid is for --url (--serve knows its server)")
    if options.book_levels < 0 or options.flood_workers < 1 or options.rounds < 1:
        raise LoadtestError("--book-levels ≥ 0, --flood-workers ≥ 1 and --rounds ≥ 1")


# -- set-up ----------------------------------------------------------------------------


def _set_up(admin: Admin, target: Target, options: FloodOptions, err: Console) -> Setup:
    path_symbol = options.symbol.replace("/", "-")
    market = admin.call("GET", f"/api/v1/markets/{path_symbol}")
    symbol, quote, base = market["symbol"], market["quote_asset"], market["base_asset"]
    tick, step = Decimal(market["tick_size"]), Decimal(market["step_size"])
    min_quantity = Decimal(market["min_quantity"])
    unit = max(step, (min_quantity / step).to_integral_value(rounding="ROUND_CEILING") * step)
    reference = _reference_price(admin, path_symbol, tick, options.price)
    if reference / tick <= math.ceil(options.book_levels / 2) + ORDER_ENTRY_PRICE_STEPS:
        raise LoadtestError(f"reference price {reference} is too low for the book: give --price")
    ttl_s = int(options.rounds * 2 * (options.warmup_s + options.duration_s + 300)) + 3600
    book = None
    if options.book_levels:
        book = _build_book(admin, target, symbol, (base, quote), reference, tick, unit, options)
        err.print(f"book of {symbol}: {book.placed:,} levels placed in {book.seconds:.1f} s")
    users_count = options.users or max(
        1, math.ceil(options.rate_per_s / ORDER_ENTRY_RATE_PER_USER_S)
    )
    funds = {quote: _whole(reference * unit * ORDER_ENTRY_FUNDED_ORDERS)}
    users = [funded_user(admin, funds, ttl_s, f"flood-order-entry-{n}") for n in range(users_count)]
    host, order_entry_address = _addresses(target)
    flood_source = options.flood_source or _default_flood_source(order_entry_address)
    in_flight = options.max_in_flight or math.ceil(options.rate_per_s * (options.timeout_s + 1)) + 2
    order_entry = OrderEntrySpec(
        host=host,
        port=target.port,
        symbol=symbol,
        users=users,
        prices=[_grid(reference - (1 + i) * tick, tick) for i in range(ORDER_ENTRY_PRICE_STEPS)],
        quantity=_grid(unit, step),
        rate_per_s=options.rate_per_s,
        connections=options.connections,
        max_in_flight=max(2, in_flight),
        timeout_s=options.timeout_s,
        probe_rate_per_s=options.probe_rate_per_s,
        probe_timeout_s=options.probe_timeout_s,
    )
    return Setup(
        symbol=symbol,
        path_symbol=path_symbol,
        reference_price=str(reference),
        host=host,
        order_entry_address=order_entry_address,
        flood_source=flood_source,
        order_entry=order_entry,
        attacks=_attack_specs(options, host, target.port, path_symbol, flood_source),
        book=book,
        read_cost=measure_read(target.url, path_symbol, options.flood_depth),
        snapshot_cost=measure_snapshot(host, target.port, f"orderbook:{path_symbol}"),
        server_pid=target.server_pid or options.server_pid,
    )


def _build_book(
    admin: Admin,
    target: Target,
    symbol: str,
    assets: tuple[str, str],
    reference: Decimal,
    tick: Decimal,
    unit: Decimal,
    options: FloodOptions,
) -> BookBuild:
    base, quote = assets
    per_user = Decimal(ORDERS_PER_USER * 2)  # twice what its orders lock, fees included
    funds = {base: unit * per_user, quote: _whole(reference * unit * per_user)}
    count = builders_needed(options.book_levels)
    ttl_s = 3600
    tokens = [funded_user(admin, funds, ttl_s, f"flood-book-{n}")[1] for n in range(count)]
    prices = level_prices(reference, tick, options.book_levels)
    quantity = f"{unit:f}"
    host, _ = _addresses(target)
    return build_book(host, target.port, symbol, tokens, prices, quantity)


def _reference_price(admin: Admin, path_symbol: str, tick: Decimal, price: str | None) -> Decimal:
    """`--price`, else the book's mid (or its one side), else the last trade, else a default."""
    if price is not None:
        return (Decimal(price) / tick).to_integral_value() * tick
    book = admin.call("GET", f"/api/v1/orderbook/{path_symbol}?depth=1")
    sides = [Decimal(book[s][0]["price"]) for s in ("bids", "asks") if book[s]]
    if sides:
        return (sum(sides, Decimal(0)) / len(sides) / tick).to_integral_value() * tick
    last = admin.call("GET", f"/api/v1/markets/{path_symbol}/ticker").get("last_price")
    return Decimal(last) if last is not None else tick * DEFAULT_REFERENCE_TICKS


def _addresses(target: Target) -> tuple[str, str]:
    """The server's IP address and this machine's address as the server sees it."""
    try:
        with socket.create_connection((target.host, target.port), timeout=10) as probe:
            return str(probe.getpeername()[0]), str(probe.getsockname()[0])
    except OSError as error:
        raise LoadtestError(f"cannot connect to {target.url}: {error}") from None


def _default_flood_source(order_entry_address: str) -> str | None:
    """Another loopback address when order entry's is one (Linux answers on all of
    127/8), else None: off loopback the attack cannot pick a second address itself."""
    address = ipaddress.ip_address(order_entry_address)
    if address.version != 4 or not address.is_loopback:
        return None
    return "127.0.0.2" if order_entry_address != "127.0.0.2" else "127.0.0.3"


def _attack_specs(
    options: FloodOptions, host: str, port: int, path_symbol: str, source: str | None
) -> list[AttackSpec]:
    total = options.flood_connections or DEFAULT_CONNECTIONS[options.mode]
    workers = max(1, min(options.flood_workers, total))
    return [
        AttackSpec(
            index=w,
            mode=options.mode,
            host=host,
            port=port,
            source=source,
            connections=total // workers + (w < total % workers),
            read_path=f"/api/v1/orderbook/{path_symbol}?depth={options.flood_depth}",
            channel=f"orderbook:{path_symbol}",
        )
        for w in range(workers)
    ]


def _whole(amount: Decimal) -> Decimal:
    return amount.to_integral_value(rounding="ROUND_CEILING")


def _grid(value: Decimal, step: Decimal) -> str:
    return f"{value.quantize(step):f}"


# -- client processes ------------------------------------------------------------------


@dataclass(slots=True)
class _Clients:
    order_entry: Any  # the pipe to the order-entry process
    attacks: list[Any]  # pipes to the attack processes
    processes: list[Any]
    stop: Any  # a multiprocessing Event: the attack stops when it is set


@contextlib.contextmanager
def _clients(setup: Setup) -> Iterator[_Clients]:
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads
    stop = context.Event()
    pipes, processes = [], []
    jobs: list[tuple[Any, tuple[Any, ...]]] = [(order_entry_main, (setup.order_entry,))]
    jobs += [(attack_main, (spec,)) for spec in setup.attacks]
    try:
        for target, args in jobs:
            parent_end, child_end = context.Pipe()
            extra = (stop,) if target is attack_main else ()
            process = context.Process(target=target, args=(*args, child_end, *extra), daemon=True)
            process.start()
            pipes.append(parent_end)
            processes.append(process)
        for pipe, process in zip(pipes, processes, strict=True):
            _expect(pipe, process, "ready", READY_TIMEOUT_S)
        yield _Clients(pipes[0], pipes[1:], processes, stop)
    finally:
        for pipe in pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for process in processes:
            process.join(5.0)
            if process.is_alive():
                process.kill()
                process.join()


def _expect(pipe: Any, process: Any, kind: str, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while not pipe.poll(0.1):
        if not process.is_alive():
            raise LoadtestError(f"a client process died (exit code {process.exitcode})")
        if time.monotonic() > deadline:
            raise LoadtestError(f"a client process did not send {kind!r} in {timeout_s:.0f} s")
    message = pipe.recv()
    if message[0] == "failed":
        raise LoadtestError(f"a client process failed: {message[1]}")
    return message[1]


# -- one phase -------------------------------------------------------------------------


@dataclass(slots=True)
class _Rss:
    """The server's resident memory over a phase, in MB (None: unknown)."""

    pid: int | None
    start_mb: float | None = None
    peak_mb: float | None = None
    end_mb: float | None = None

    def sample(self) -> float | None:
        value = _rss_mb(self.pid)
        if value is not None:
            self.peak_mb = value if self.peak_mb is None else max(self.peak_mb, value)
        return value


def _rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass(slots=True)
class _Recovery:
    """From the end of an attack: the seconds until `/health` answered 200 again."""

    url: str
    since: float = field(default_factory=time.monotonic)
    seconds: float | None = None
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.since = time.monotonic()
        self.thread = threading.Thread(target=self._watch, name="flood-recovery", daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while time.monotonic() - self.since < RECOVERY_LIMIT_S:
            with contextlib.suppress(httpx.HTTPError):
                answer = httpx.get(f"{self.url}/health", timeout=RECOVERY_PROBE_TIMEOUT_S)
                if answer.status_code == 200:
                    self.seconds = round(time.monotonic() - self.since, 3)
                    return
            time.sleep(RECOVERY_POLL_S)

    def result(self) -> float | None:
        if self.thread is not None:
            self.thread.join(RECOVERY_LIMIT_S + RECOVERY_PROBE_TIMEOUT_S)
        return self.seconds


def _phase(
    clients: _Clients,
    kind: str,
    round_number: int,
    target: Target,
    setup: Setup,
    options: FloodOptions,
    err: Console,
) -> dict[str, Any]:
    flooding = kind == FLOOD
    err.print(f"round {round_number} {kind}: {options.warmup_s + options.duration_s:g} s …")
    rss = _Rss(setup.server_pid)
    rss.start_mb = rss.sample()
    cpu_before = figures.cpu_snapshot(setup.server_pid)
    started_at = time.monotonic() + START_DELAY_S
    attack_ends_at = started_at + options.warmup_s + options.duration_s
    clients.order_entry.send((started_at, options.warmup_s, options.duration_s))
    attackers = clients.attacks if flooding else []
    for pipe in attackers:
        pipe.send((started_at, attack_ends_at))
    recovery = _Recovery(target.url)
    stopped_at_s: float | None = None
    pending: dict[Any, str] = {clients.order_entry: "order entry"}
    pending |= {pipe: "attack" for pipe in attackers}
    order_entry: PhaseResult | None = None
    attacks: list[AttackResult] = []
    deadline = attack_ends_at + options.timeout_s + COLLECT_GRACE_S
    while pending:
        ready = wait(list(pending), timeout=RSS_SAMPLE_S)
        for pipe in [p for p in pending if p in ready]:
            message = pipe.recv()
            if message[0] == "failed":
                raise LoadtestError(f"the {pending[pipe]} client failed: {message[1]}")
            if pending.pop(pipe) == "order entry":
                order_entry = message[1]
            else:
                attacks.append(message[1])
                if len(attacks) == len(attackers):
                    recovery.start()
        now_mb = rss.sample()
        if (
            flooding
            and stopped_at_s is None
            and now_mb is not None
            and now_mb > options.max_server_rss_mb
        ):
            clients.stop.set()
            stopped_at_s = round(time.monotonic() - started_at, 3)
            err.print(
                f"server RSS {now_mb:,.0f} MB > {options.max_server_rss_mb:,.0f}: attack stopped"
            )
        _check_alive(clients, deadline)
    rss.end_mb = rss.sample()
    cpu_after = figures.cpu_snapshot(setup.server_pid)
    recovered_s = recovery.result() if flooding else None
    clients.stop.clear()
    assert order_entry is not None
    phase = _phase_figures(kind, round_number, order_entry, attacks, options)
    phase["server"] = {
        "rss_mb": {"start": rss.start_mb, "peak": rss.peak_mb, "end": rss.end_mb},
        **_cpu(cpu_before, cpu_after),
    }
    if flooding:
        phase["attack"]["stopped_early_at_s"] = stopped_at_s
        phase["recovery_s"] = recovered_s
    _print_phase_line(phase, err)
    time.sleep(options.pause_s)
    return phase


def _check_alive(clients: _Clients, deadline: float) -> None:
    for process in clients.processes:
        if not process.is_alive():
            raise LoadtestError(f"a client process died (exit code {process.exitcode})")
    if time.monotonic() > deadline:
        raise LoadtestError("the clients did not report the phase in time")


def _cpu(before: figures.CpuSnapshot, after: figures.CpuSnapshot) -> dict[str, float | None]:
    out: dict[str, float | None] = {"cores": None, "machine_cores": None}
    if before.machine_total_s is None or after.machine_total_s is None:
        return out
    cores = os.cpu_count() or 1
    wall_s = (after.machine_total_s - before.machine_total_s) / cores
    if wall_s <= 0:
        return out
    if before.machine_busy_s is not None and after.machine_busy_s is not None:
        out["machine_cores"] = round((after.machine_busy_s - before.machine_busy_s) / wall_s, 2)
    if before.server_s is not None and after.server_s is not None:
        out["cores"] = round((after.server_s - before.server_s) / wall_s, 2)
    return out


# -- figures ---------------------------------------------------------------------------


def _latency(
    samples: bytes, unanswered: int = 0, timeout_s: float = 0.0
) -> dict[str, float | int | None]:
    """Exact percentiles in ms; None for each when nothing was answered. With
    `unanswered`, those requests count as answered at their timeout: a lower bound
    of what they took, so a percentile is one the unanswered cannot hide."""
    values: array[int] = array("q")
    values.frombytes(samples)
    values.extend([int(timeout_s * 1_000_000)] * unanswered)
    latency = figures.latency_ms(values)
    if not values:
        return {k: 0 if k == "count" else None for k in latency}
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in latency.items()}


def _phase_figures(
    kind: str,
    round_number: int,
    result: PhaseResult,
    attacks: list[AttackResult],
    options: FloodOptions,
) -> dict[str, Any]:
    latency = _latency(result.latencies_us)
    probes = _latency(result.probe_latencies_us)
    unanswered = sum(n for c, n in result.codes.items() if c in UNANSWERED)
    probes_unanswered = sum(n for c, n in result.probe_codes.items() if c in UNANSWERED)
    bounded = _latency(result.latencies_us, unanswered, options.timeout_s)
    probes_bounded = _latency(result.probe_latencies_us, probes_unanswered, options.probe_timeout_s)
    shown = ("count", "p50", "p99", "max")
    phase: dict[str, Any] = {
        "phase": kind,
        "round": round_number,
        "order_entry": {
            "scheduled": result.scheduled,
            "sent": result.sent,
            "answered": latency["count"],
            "ok": result.codes.get(OK, 0),
            "errors": {c: n for c, n in sorted(result.codes.items()) if c != OK},
            "unanswered": unanswered,
            "latency_ms": latency,
            "latency_ms_unanswered_at_timeout": {k: bounded[k] for k in shown},
            "max_schedule_lag_ms": round(result.max_schedule_lag_s * 1000, 3),
            "client_cores": round(result.cpu_s / result.wall_s, 2) if result.wall_s else None,
        },
        "health": {
            "probes": result.probes_scheduled,
            "answered": probes["count"],
            "unanswered": probes_unanswered,
            "by_code": dict(sorted(result.probe_codes.items())),
            "latency_ms": {k: probes[k] for k in shown},
            "latency_ms_unanswered_at_timeout": {k: probes_bounded[k] for k in shown},
        },
    }
    if kind == FLOOD:
        phase["attack"] = _attack_figures(attacks, options)
    return phase


def _attack_figures(attacks: list[AttackResult], options: FloodOptions) -> dict[str, Any]:
    failures: Counter[str] = Counter()
    answers: Counter[str] = Counter()
    closes: list[float] = []
    for attack in attacks:
        failures.update(attack.connect_failures)
        answers.update(attack.answers_by_status)
        closes += attack.closed_at_s
    wall_s = max([1e-9, *(a.wall_s for a in attacks)])
    figures_: dict[str, Any] = {
        "mode": options.mode,
        "connections_opened": sum(a.connections_opened for a in attacks),
        "connect_failures": dict(sorted(failures.items())),
        "closed_by_server": sum(a.closed_by_server for a in attacks),
        "first_close_at_s": min(closes) if closes else None,
        "closed_at_s": sorted(closes)[:MAX_CLOSE_TIMES_REPORTED],
        "client_cores": round(sum(a.cpu_s for a in attacks) / wall_s, 2),
        "client_processes": len(attacks),
        "seconds": round(wall_s, 3),
    }
    if options.mode == READS:
        answered = sum(answers.values())
        figures_ |= {
            "requests_sent": sum(a.requests_sent for a in attacks),
            "answered": answered,
            "answers_by_status": dict(sorted(answers.items())),
            "answers_per_s": round(answered / wall_s, 1),
            "received_mb": round(sum(a.bytes_received for a in attacks) / 1e6, 1),
        }
    else:
        frames = sum(a.frames_sent for a in attacks)
        figures_ |= {"frames_sent": frames, "frames_per_s": round(frames / wall_s, 1)}
    return figures_


# flat figures of a phase (key → value), the rows of the summary; errors and statuses
# add their own rows (order_entry_error_<CODE>, attack_answers_http_<status>)
_ROWS = (
    ("order_entry_latency_ms_p50", "order entry p50 ms", ("order_entry", "latency_ms", "p50")),
    ("order_entry_latency_ms_p99", "order entry p99 ms", ("order_entry", "latency_ms", "p99")),
    ("order_entry_latency_ms_max", "order entry max ms", ("order_entry", "latency_ms", "max")),
    ("order_entry_latency_ms_p50_unanswered_at_timeout",
     "order entry p50 ms (unanswered = timeout)",
     ("order_entry", "latency_ms_unanswered_at_timeout", "p50")),
    ("order_entry_latency_ms_p99_unanswered_at_timeout",
     "order entry p99 ms (unanswered = timeout)",
     ("order_entry", "latency_ms_unanswered_at_timeout", "p99")),
    ("order_entry_scheduled", "order entry scheduled", ("order_entry", "scheduled")),
    ("order_entry_ok", "order entry ok", ("order_entry", "ok")),
    ("order_entry_unanswered", "order entry unanswered", ("order_entry", "unanswered")),
    ("health_latency_ms_p50", "/health p50 ms", ("health", "latency_ms", "p50")),
    ("health_latency_ms_p99", "/health p99 ms", ("health", "latency_ms", "p99")),
    ("health_latency_ms_max", "/health max ms", ("health", "latency_ms", "max")),
    ("health_latency_ms_p99_unanswered_at_timeout", "/health p99 ms (unanswered = timeout)",
     ("health", "latency_ms_unanswered_at_timeout", "p99")),
    ("health_probes", "/health probes", ("health", "probes")),
    ("health_unanswered", "/health unanswered", ("health", "unanswered")),
    ("server_rss_mb_start", "server RSS start MB", ("server", "rss_mb", "start")),
    ("server_rss_mb_peak", "server RSS peak MB", ("server", "rss_mb", "peak")),
    ("server_rss_mb_end", "server RSS end MB", ("server", "rss_mb", "end")),
    ("server_cores", "server cores", ("server", "cores")),
    ("machine_cores", "machine cores busy", ("server", "machine_cores")),
    ("order_entry_client_cores", "order-entry client cores", ("order_entry", "client_cores")),
    ("attack_requests_sent", "attack requests sent", ("attack", "requests_sent")),
    ("attack_answered", "attack answered", ("attack", "answered")),
    ("attack_answers_per_s", "attack answers/s", ("attack", "answers_per_s")),
    ("attack_frames_sent", "attack frames sent", ("attack", "frames_sent")),
    ("attack_connections_opened", "attack connections opened", ("attack", "connections_opened")),
    ("attack_closed_by_server", "attack connections closed by server",
     ("attack", "closed_by_server")),
    ("attack_first_close_at_s", "attack first close at s", ("attack", "first_close_at_s")),
    ("attack_stopped_early_at_s", "attack stopped (RSS cap) at s",
     ("attack", "stopped_early_at_s")),
    ("attack_client_cores", "attack client cores", ("attack", "client_cores")),
    ("recovery_s", "/health answered again after s", ("recovery_s",)),
)  # fmt: skip
_RATIO_KEYS = (
    "order_entry_latency_ms_p50",
    "order_entry_latency_ms_p99",
    "order_entry_latency_ms_max",
    "order_entry_latency_ms_p50_unanswered_at_timeout",
    "order_entry_latency_ms_p99_unanswered_at_timeout",
    "health_latency_ms_p99",
    "health_latency_ms_p99_unanswered_at_timeout",
    "server_rss_mb_peak",
)


def _flat(phase: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, _, path in _ROWS:
        value: Any = phase
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        flat[key] = value
    for code, n in phase["order_entry"]["errors"].items():
        flat[f"order_entry_error_{code}"] = n
    for code, n in phase["health"]["by_code"].items():
        if code != OK:
            flat[f"health_error_{code}"] = n
    attack = phase.get("attack") or {}
    for status, n in attack.get("answers_by_status", {}).items():
        flat[f"attack_answers_http_{status}"] = n
    for reason, n in attack.get("connect_failures", {}).items():
        flat[f"attack_connect_failures_{reason}"] = n
    return flat


def _summary(phases: list[dict[str, Any]]) -> dict[str, Any]:
    """Per phase kind, the median of each figure over the rounds; FLOOD / QUIET ratios."""
    summary: dict[str, Any] = {}
    for kind in (QUIET, FLOOD):
        flats = [_flat(p) for p in phases if p["phase"] == kind]
        keys = list(dict.fromkeys(k for f in flats for k in f))
        medians: dict[str, Any] = {}
        for key in keys:
            values = [f.get(key, 0 if _counted(key) else None) for f in flats]
            numbers = [v for v in values if isinstance(v, int | float)]
            medians[key] = _median(numbers) if numbers else None
        summary[kind] = medians
    ratios = {}
    for key in _RATIO_KEYS:
        quiet, flood = summary[QUIET].get(key), summary[FLOOD].get(key)
        ratios[key] = round(flood / quiet, 2) if quiet and flood is not None else None
    summary["flood_over_quiet"] = ratios
    return summary


def _counted(key: str) -> bool:
    """A count by code, absent from a phase where it is zero."""
    return key.startswith(tuple(prefix for prefix, _, _ in _DETAILS))


def _median(numbers: list[int | float]) -> int | float:
    """The median, an integer if the values are (counts stay counts)."""
    median = statistics.median(numbers)
    if all(isinstance(n, int) for n in numbers) and float(median).is_integer():
        return int(median)
    return round(median, 3)


def _report(
    target: Target, setup: Setup, phases: list[dict[str, Any]], options: FloodOptions
) -> dict[str, Any]:
    book = setup.book
    report: dict[str, Any] = {
        "mode": options.mode,
        "symbol": setup.symbol,
        "reference_price": setup.reference_price,
        "server": {
            "url": target.url,
            "started_by_loadtest": target.server_pid is not None,
            "pid": setup.server_pid,
            "database": redacted(target.database) if target.database else None,
        },
        "rounds": options.rounds,
        "duration_s": options.duration_s,
        "warmup_s": options.warmup_s,
        "order_entry": {
            "rate_per_s": options.rate_per_s,
            "users": len(setup.order_entry.users),
            "connections": options.connections,
            "timeout_s": options.timeout_s,
            "source_address": setup.order_entry_address,
        },
        "health_probes": {
            "rate_per_s": options.probe_rate_per_s,
            "timeout_s": options.probe_timeout_s,
        },
        "flood": {
            "mode": options.mode,
            "connections": sum(a.connections for a in setup.attacks),
            "client_processes": len(setup.attacks),
            "source_address": setup.flood_source,
            "depth": options.flood_depth if options.mode == READS else None,
            "channel": setup.attacks[0].channel if options.mode == WS_SNAPSHOTS else None,
            "max_server_rss_mb": options.max_server_rss_mb,
        },
        "book": None if book is None else {
            "levels": book.levels, "placed": book.placed, "refused": book.refused,
            "build_s": book.seconds,
        },
        "read_cost": setup.read_cost,
        "snapshot_cost": setup.snapshot_cost,
        "phases": phases,
        "summary": _summary(phases),
    }  # fmt: skip
    report["notes"] = _notes(report, setup)
    return report


def _notes(report: dict[str, Any], setup: Setup) -> list[str]:
    notes = []
    source, own = setup.flood_source, setup.order_entry_address
    if source is None or source == own:
        notes.append(
            f"the flood and order entry share the client address {own}: a per-address limit "
            "on the server throttles both (give --flood-source)"
        )
    else:
        notes.append(
            f"the flood comes from {source}, order entry and /health from {own}: the server "
            "sees two client addresses"
        )
    if setup.server_pid is None:
        notes.append("server RSS and CPU unknown: give --server-pid with --url")
    floods = [p for p in report["phases"] if p["phase"] == FLOOD]
    processes = report["flood"]["client_processes"]
    if any(p["attack"]["client_cores"] >= SATURATED_SHARE * processes for p in floods):
        notes.append(
            "the attack's client process(es) used about a core each: the attack was limited by "
            "the client's CPU as well as the server's (see --flood-workers)"
        )
    cores = os.cpu_count() or 1
    busy = [p["server"]["machine_cores"] for p in report["phases"]]
    if any(b is not None and b >= SATURATED_SHARE * cores for b in busy):
        notes.append(
            f"the machine's {cores} cores were saturated in a phase (server and clients share them)"
        )
    for p in floods:
        stopped = p["attack"]["stopped_early_at_s"]
        if stopped is not None:
            notes.append(
                f"round {p['round']}: the attack was stopped at {stopped} s (server RSS over "
                "--max-server-rss-mb)"
            )
        if p.get("recovery_s") is None:
            notes.append(
                f"round {p['round']}: /health did not answer within {RECOVERY_LIMIT_S:.0f} s "
                "after the attack"
            )
    if any(p["order_entry"]["unanswered"] for p in report["phases"]):
        notes.append(
            "unanswered order-entry requests (timeout, …) are not in the percentiles; the rows "
            "'(unanswered = timeout)' count them at --timeout (a lower bound)"
        )
    book = report["book"]
    if book is not None and book["refused"]:
        notes.append(f"book set-up refusals: {book['refused']}")
    return notes


# -- output ----------------------------------------------------------------------------


def _print_phase_line(phase: dict[str, Any], err: Console) -> None:
    entry, health, rss = phase["order_entry"], phase["health"], phase["server"]["rss_mb"]
    latency = entry["latency_ms"]
    err.print(
        f"  order entry p50 {_cell(latency['p50'])} ms, p99 {_cell(latency['p99'])} ms, "
        f"unanswered {entry['unanswered']}; /health unanswered "
        f"{health['unanswered']}/{health['probes']}; RSS peak {_cell(rss['peak'])} MB"
    )


def _print_report(report: dict[str, Any]) -> None:
    console = Console()
    flood, entry = report["flood"], report["order_entry"]
    title = (
        f"loadtest --flood {report['mode']} on {report['symbol']}: {flood['connections']} "
        f"attack connections from {flood['source_address'] or 'the default address'}, order "
        f"entry {entry['rate_per_s']:g}/s from {entry['source_address']}, "
        f"{report['rounds']} round(s) of {report['duration_s']:g} s quiet + "
        f"{report['duration_s']:g} s flood"
    )
    table = Table(title=title)
    table.add_column("figure")
    summary, phases = report["summary"], report["phases"]
    columns: list[tuple[str, dict[str, Any]]] = [
        ("quiet", summary[QUIET]),
        ("flood", summary[FLOOD]),
    ]
    if report["rounds"] > 1:
        columns = [(f"{name} (median)", values) for name, values in columns]
        columns += [(f"{p['phase']} {p['round']}", _flat(p)) for p in phases]
    for name, _ in columns:
        table.add_column(name, justify="right")
    table.add_column("flood / quiet", justify="right")
    keys = _ordered(list(dict.fromkeys(k for _, values in columns for k in values)))
    for key in keys:
        if all(values.get(key) is None for _, values in columns):
            continue
        ratio = summary["flood_over_quiet"].get(key)
        cells = [_cell(values.get(key)) for _, values in columns]
        table.add_row(_label(key), *cells, "-" if ratio is None else f"{ratio:g}x")
    console.print(table)
    console.print(f"book: {report['book']}")
    console.print(f"one read: {report['read_cost']}; one snapshot: {report['snapshot_cost']}")
    for phase in phases:
        closes = (phase.get("attack") or {}).get("closed_at_s")
        if closes:
            console.print(f"round {phase['round']}: attack connections closed at s: {closes}")
    for note in report["notes"]:
        console.print(f"note: {note}")


# the counts by code that follow a row of the summary, and how they are labelled
_DETAILS = (
    ("order_entry_error_", "order_entry_unanswered", "order entry error "),
    ("health_error_", "health_unanswered", "/health error "),
    ("attack_answers_http_", "attack_answered", "attack answers HTTP "),
    ("attack_connect_failures_", "attack_connections_opened", "attack connect failures "),
)


def _ordered(keys: list[str]) -> list[str]:
    """The summary's rows in `_ROWS` order, each count by code after its total."""
    out = [key for key, _, _ in _ROWS]
    for prefix, after, _ in _DETAILS:
        at = out.index(after) + 1
        out[at:at] = sorted(k for k in keys if k.startswith(prefix))
    return [key for key in out if key in keys]


def _label(key: str) -> str:
    labels = {key: label for key, label, _ in _ROWS}
    if key in labels:
        return labels[key]
    for prefix, _, label in _DETAILS:
        if key.startswith(prefix):
            return label + key.removeprefix(prefix)
    return key


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)
