"""`crossbook loadtest`: order entry over real HTTP at a steady target rate.

What it measures: a running server (`--url`), or one it starts itself (`--serve`,
on a fresh SQLite file or `--database-url`), under an open-loop stream of
order-entry requests (`POST /orders`, `DELETE /orders/{id}`) from `--users`
funded users at `--rate` requests/s for `--duration` s after `--warmup` s:
achieved requests/s, outcomes by code, latency p50/p95/p99/p99.9/max measured
from each request's *scheduled* send time (coordinated omission avoided; see
`loadtest_client`), trades executed, the client's own CPU use, and, with
`--profile`, where the server's time went (its `/metrics` and, when it started
the server, CPU use by process). It ends with an integrity check: per asset,
the run's users and the fee account hold exactly what was deposited (the fee
account counted by its change over the run), and the book is not crossed. On a
remote-wallet server it first waits for the settlement outbox to drain (and
reports how long that took), since balances are final only once settled.
With `--flood`, order entry beside an attack instead: see `flood`.

Set-up: a fresh market `L<hex>/USDT` per run (its base asset is the run's
alone), `--users` users created, funded generously and given tokens through the
admin API with an admin token signed locally with the configured JWT secret
(`CROSSBOOK_JWT_SECRET`, as `crossbook token --admin`). With `--serve` the
per-user order rate limit is lifted (`CROSSBOOK_ORDER_RATE_PER_S`, `_BURST`) and
request logs are at `--server-log-level` (default warning: one JSON line per
request at info costs the server measurable CPU).

Known limits:
- a benchmark, not a test: it asserts nothing about timing; it exits 0 whatever
  the figures, 1 if the integrity check failed, 2 if the run could not happen;
- the client runs on the same machine as the server (and the database): its
  CPU is taken from theirs, which the report shows (`client` cores);
- plain HTTP only; one request at a time per connection (no pipelining);
- conservation of USDT (shared with other markets) holds only if nothing else
  trades or moves USDT on the server during the run; with `--symbol` naming an
  existing market the same holds for its base asset;
- latency percentiles cover answered requests; refused-before-sending
  (`CLIENT_BEHIND`), timed-out and failed ones are counted as errors instead.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import queue
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import make_url

from crossbook.api.auth import Principal, Role, TokenCodec
from crossbook.bench import loadtest_report as figures
from crossbook.bench.loadtest_client import (
    CLIENT_BEHIND,
    OK,
    Progress,
    WorkerResult,
    WorkerSpec,
    worker_main,
)
from crossbook.config import load_settings

DEFAULT_MAX_IN_FLIGHT = 1000  # scheduled, unanswered requests (all workers); beyond: CLIENT_BEHIND
SERVER_START_TIMEOUT_S = 60.0
WORKER_READY_TIMEOUT_S = 60.0
START_DELAY_S = 0.5  # between "all workers ready" and the first scheduled request
REFRESH_S = 0.5
SETTLEMENT_DRAIN_LIMIT_S = 600.0  # remote-wallet mode: how long to wait for the outbox
SETTLEMENT_POLL_S = 0.2
DEAD_WORKER_GRACE_S = 2.0
ADMIN_TIMEOUT_S = 30.0
FRESH_QUOTE = "USDT"
FRESH_RULES = {"tick_size": "0.01", "step_size": "0.0001", "min_quantity": "0.0001",
               "max_quantity": "1000"}  # fmt: skip
FRESH_REFERENCE_PRICE = Decimal("1000.00")
PRICE_OFFSETS_TICKS = range(-4, 2)  # buys at ref-4..ref+1 ticks, sells mirrored: some cross
LIMIT_LOTS = range(10, 101, 10)  # limit quantities, in units of the smallest order
MARKET_LOTS = range(5, 31, 5)
FUND_BASE_UNITS = 10_000_000  # base deposited per user, in units of the smallest order
LIFTED_RATE = "1000000000"


class LoadtestError(Exception):
    """The run could not happen (server unreachable, set-up refused, a worker died)."""


@dataclass(frozen=True, slots=True)
class LoadtestOptions:
    url: str | None = None
    serve: bool = False
    database_url: str | None = None
    users: int = 50
    rate_per_s: float = 100.0
    duration_s: float = 60.0
    warmup_s: float = 2.0
    symbol: str | None = None
    price: str | None = None
    connections: int = 32
    workers: int = 1
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    timeout_s: float = 10.0
    seed: int = 42
    profile: bool = False
    server_log_level: str = "warning"
    as_json: bool = False


@dataclass(slots=True)
class Target:
    url: str
    host: str
    port: int
    server_pid: int | None  # when this run started the server
    database: str | None

    @property
    def database_name(self) -> str | None:
        """The PostgreSQL database's name, when this run started the server on one."""
        if self.database is None or not self.database.startswith("postgres"):
            return None
        return make_url(self.database).database


@dataclass(slots=True)
class Plan:
    symbol: str
    base: str
    quote: str
    fresh_market: bool
    reference_price: str
    users: list[tuple[int, str]]
    deposits: dict[str, Decimal]
    fee_before: dict[str, Decimal]
    trade_id_before: int
    buy_prices: list[str]
    sell_prices: list[str]
    limit_quantities: list[str]
    market_quantities: list[str]


@dataclass(slots=True)
class Outcome:
    results: list[WorkerResult]
    latencies_us: array[int]
    measure_started_at: float
    window_s: float
    cpu: dict[str, Any]
    metrics_before: figures.Samples | None = None
    metrics_after: figures.Samples | None = None


def run(options: LoadtestOptions) -> int:
    err = Console(stderr=True)
    try:
        with open_target(options, err) as target, admin_client(target) as admin:
            plan = _set_up(admin, options, err)
            outcome = _drive(target, plan, options, err)
            report = _report(admin, target, plan, outcome, options)
    except LoadtestError as error:
        err.print(f"[red]loadtest could not run:[/red] {error}")
        return 2
    if options.as_json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report)
    return 0 if report["integrity"]["passed"] else 1


# -- the server ------------------------------------------------------------------------


@contextlib.contextmanager
def open_target(options: LoadtestOptions, err: Console) -> Iterator[Target]:
    """The server of the run: the one at `--url`, or one started for it (`--serve`)."""
    if options.serve and options.url:
        raise LoadtestError("--url and --serve exclude each other")
    if options.database_url and not options.serve:
        raise LoadtestError("--database-url is for the server --serve starts")
    if not options.serve:
        settings = load_settings()
        url = (options.url or f"http://{settings.host}:{settings.port}").rstrip("/")
        parsed = httpx.URL(url)
        if parsed.scheme != "http" or not parsed.host:
            raise LoadtestError(f"--url must be http://HOST[:PORT], not {url}")
        yield Target(url, parsed.host, parsed.port or 80, None, None)
        return
    with _served(options, err) as target:
        yield target


@contextlib.contextmanager
def _served(options: LoadtestOptions, err: Console) -> Iterator[Target]:
    """`crossbook serve` as a child process on a free port, stopped at the end."""
    with tempfile.TemporaryDirectory(prefix="crossbook-loadtest-") as folder:
        database = options.database_url or f"sqlite:///{Path(folder) / 'loadtest.db'}"
        port = _free_port()
        env = {
            **os.environ,
            "CROSSBOOK_ORDER_RATE_PER_S": LIFTED_RATE,
            "CROSSBOOK_ORDER_BURST": LIFTED_RATE,
            "CROSSBOOK_LOG_LEVEL": options.server_log_level,
        }
        command = [sys.executable, "-m", "crossbook", "serve", "--host", "127.0.0.1",
                   "--port", str(port), "--database-url", database]  # fmt: skip
        log_path = Path(folder) / "server.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        target = Target(f"http://127.0.0.1:{port}", "127.0.0.1", port, process.pid, database)
        try:
            _wait_ready(target.url, process, log_path)
            err.print(f"server started: {target.url} (pid {process.pid}, {redacted(database)})")
            yield target
        finally:
            process.terminate()
            try:
                process.wait(SERVER_START_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise LoadtestError(f"the server exited ({process.returncode}):\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/ready", timeout=2.0).status_code == 200:
                return
        time.sleep(0.2)
    raise LoadtestError(f"the server was not ready within {SERVER_START_TIMEOUT_S:.0f} s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def redacted(database: str) -> str:
    return make_url(database).render_as_string(hide_password=True)


# -- set-up through the admin API ------------------------------------------------------


class Admin:
    def __init__(self, client: httpx.Client) -> None:
        self.http = client

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = self.http.request(method, path, json=body)
        except httpx.HTTPError as error:
            raise LoadtestError(f"{method} {path}: {error}") from None
        try:
            payload = response.json()
        except ValueError:
            raise LoadtestError(f"{method} {path}: {response.status_code}") from None
        if not payload.get("success"):
            refusal = payload.get("error", {})
            raise LoadtestError(f"{method} {path}: {refusal.get('code')} {refusal.get('message')}")
        return payload["data"]

    def balances(self, user_id: int) -> dict[str, Decimal]:
        rows = self.call("GET", f"/api/v1/admin/users/{user_id}/balances")
        return {row["asset"]: Decimal(row["total"]) for row in rows}


@contextlib.contextmanager
def admin_client(target: Target) -> Iterator[Admin]:
    """The admin API of `target`, with an admin token signed with the configured secret."""
    settings = load_settings()
    codec = TokenCodec(settings.jwt_secret_value, settings.jwt_ttl_s)
    token = codec.issue(Principal(Role.ADMIN, None), ttl_s=24 * 3600)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=target.url, headers=headers, timeout=ADMIN_TIMEOUT_S) as client:
        yield Admin(client)


def _set_up(admin: Admin, options: LoadtestOptions, err: Console) -> Plan:
    market, fresh = _market(admin, options)
    symbol, base, quote = market["symbol"], market["base_asset"], market["quote_asset"]
    reference = _reference_price(admin, market, fresh, options.price)
    step, min_quantity = Decimal(market["step_size"]), Decimal(market["min_quantity"])
    unit = max(step, (min_quantity / step).to_integral_value(rounding="ROUND_CEILING") * step)
    deposits = {
        base: Decimal(FUND_BASE_UNITS) * unit,
        quote: (Decimal(FUND_BASE_UNITS) * unit * reference * 2).to_integral_value("ROUND_CEILING"),
    }
    fee_before = admin.balances(0)
    trade_id_before = 0 if fresh else _newest_trade_id(admin, symbol)
    err.print(f"setting up {options.users} users on {symbol} (reference price {reference})")
    ttl_s = int(options.warmup_s + options.duration_s) + 3600
    users = [funded_user(admin, deposits, ttl_s, f"loadtest-{n}") for n in range(options.users)]
    tick = Decimal(market["tick_size"])
    return Plan(
        symbol=symbol,
        base=base,
        quote=quote,
        fresh_market=fresh,
        reference_price=str(reference),
        users=users,
        deposits={asset: amount * options.users for asset, amount in deposits.items()},
        fee_before=fee_before,
        trade_id_before=trade_id_before,
        buy_prices=[_grid(reference + d * tick, tick) for d in PRICE_OFFSETS_TICKS],
        sell_prices=[_grid(reference - d * tick, tick) for d in PRICE_OFFSETS_TICKS],
        limit_quantities=[_grid(unit * n, step) for n in LIMIT_LOTS],
        market_quantities=[_grid(unit * n, step) for n in MARKET_LOTS],
    )


def _market(admin: Admin, options: LoadtestOptions) -> tuple[dict[str, Any], bool]:
    if options.symbol:
        path_symbol = options.symbol.replace("/", "-")
        return admin.call("GET", f"/api/v1/markets/{path_symbol}"), False
    body = {"base": f"L{secrets.token_hex(4).upper()}", "quote": FRESH_QUOTE,
            "base_decimals": 8, **FRESH_RULES}  # fmt: skip
    return admin.call("POST", "/api/v1/admin/markets", body), True


def _reference_price(
    admin: Admin, market: dict[str, Any], fresh: bool, price: str | None
) -> Decimal:
    tick = Decimal(market["tick_size"])
    if price is not None:
        return (Decimal(price) / tick).to_integral_value() * tick
    if fresh:
        return FRESH_REFERENCE_PRICE
    path_symbol = market["symbol"].replace("/", "-")
    book = admin.call("GET", f"/api/v1/orderbook/{path_symbol}?depth=1")
    sides = [Decimal(book[s][0]["price"]) for s in ("bids", "asks") if book[s]]
    if sides:
        return (sum(sides, Decimal(0)) / len(sides) / tick).to_integral_value() * tick
    last = admin.call("GET", f"/api/v1/markets/{path_symbol}/ticker")["last_price"]
    if last is None:
        raise LoadtestError(f"{market['symbol']} has no book and no trade: give --price")
    return Decimal(last)


def funded_user(
    admin: Admin, deposits: dict[str, Decimal], ttl_s: int, name: str
) -> tuple[int, str]:
    """A new user `name`, given `deposits`, and a trader token valid `ttl_s` seconds."""
    user = admin.call("POST", "/api/v1/admin/users", {"name": name})
    user_id = int(user["id"])
    for asset, amount in deposits.items():
        body = {"user_id": user_id, "asset": asset, "amount": f"{amount:f}"}
        admin.call("POST", "/api/v1/admin/deposits", body)
    token = admin.call("POST", f"/api/v1/admin/users/{user_id}/tokens", {"ttl_s": ttl_s})
    return user_id, str(token["token"])


def _grid(value: Decimal, step: Decimal) -> str:
    return f"{value.quantize(step):f}"


def _newest_trade_id(admin: Admin, symbol: str) -> int:
    page = admin.call("GET", f"/api/v1/trades?symbol={symbol.replace('/', '-')}&limit=1")
    return int(page[0]["id"]) if page else 0


# -- the run ---------------------------------------------------------------------------


def _specs(target: Target, plan: Plan, options: LoadtestOptions) -> list[WorkerSpec]:
    k = max(1, min(options.workers, len(plan.users)))
    return [
        WorkerSpec(
            index=w,
            workers=k,
            host=target.host,
            port=target.port,
            symbol=plan.symbol,
            users=plan.users[w::k],
            rate_per_s=options.rate_per_s,
            warmup_s=options.warmup_s,
            duration_s=options.duration_s,
            connections=max(1, options.connections // k + (w < options.connections % k)),
            max_in_flight=max(1, options.max_in_flight // k),
            timeout_s=options.timeout_s,
            seed=options.seed,
            buy_prices=plan.buy_prices,
            sell_prices=plan.sell_prices,
            limit_quantities=plan.limit_quantities,
            market_quantities=plan.market_quantities,
        )
        for w in range(k)
    ]


class _Progress:
    """The live line: counts of measured requests, current rate, p99 so far."""

    def __init__(self, options: LoadtestOptions, t0: float) -> None:
        self.options = options
        self.t0 = t0
        self.sent = self.ok = self.errors = 0
        self.histogram = figures.CoarseHistogram()
        self.latencies: array[int] = array("q")
        self.window: list[tuple[float, int]] = []  # (time, ok so far): the current rate

    def add(self, progress: Progress) -> None:
        self.sent += progress.sent
        self.ok += progress.ok
        self.errors += progress.errors
        chunk: array[int] = array("q")
        chunk.frombytes(progress.latencies_us)
        self.latencies.extend(chunk)
        self.histogram.record_many(chunk)

    def add_final(self, result: WorkerResult) -> None:
        chunk: array[int] = array("q")
        chunk.frombytes(result.latencies_us)
        self.latencies.extend(chunk)

    def line(self, now: float) -> Text:
        self.window = [*self.window[-3:], (now, self.ok)]
        (t_a, ok_a), (t_b, ok_b) = self.window[0], self.window[-1]
        rate = (ok_b - ok_a) / (t_b - t_a) if t_b > t_a else 0.0
        elapsed = now - self.t0
        phase = "warm-up" if elapsed < self.options.warmup_s else "measuring"
        total = self.options.warmup_s + self.options.duration_s
        p99 = self.histogram.percentile(0.99) / 1000
        return Text(
            f"{phase} {min(elapsed, total):5.1f}/{total:.0f} s  sent {self.sent:,}  "
            f"ok {self.ok:,}  errors {self.errors:,}  {rate:,.0f} ok/s  p99 {p99:.1f} ms"
        )


def _drive(target: Target, plan: Plan, options: LoadtestOptions, err: Console) -> Outcome:
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads
    out: Any = context.Queue()
    specs = _specs(target, plan, options)
    pipes, processes = [], []
    for spec in specs:
        parent_end, child_end = context.Pipe()
        process = context.Process(target=worker_main, args=(spec, out, child_end), daemon=True)
        process.start()
        pipes.append(parent_end)
        processes.append(process)
    try:
        _await_ready(out, len(specs))
        t0 = time.monotonic() + START_DELAY_S
        for pipe in pipes:
            pipe.send(t0)
        return _follow(out, processes, target, options, t0, err)
    finally:
        for pipe in pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)  # a worker still waiting for its start ends
        for process in processes:
            process.join(5.0)
            if process.is_alive():
                process.kill()


def _await_ready(out: Any, count: int) -> None:
    ready = 0
    deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
    while ready < count:
        try:
            message = out.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise LoadtestError("the client workers did not start") from None
        if message[0] == "failed":
            raise LoadtestError(f"client worker {message[1]}: {message[2]}")
        ready += message[0] == "ready"


def _follow(
    out: Any,
    processes: list[Any],
    target: Target,
    options: LoadtestOptions,
    t0: float,
    err: Console,
) -> Outcome:
    measure_at = t0 + options.warmup_s
    progress = _Progress(options, t0)
    results: list[WorkerResult] = []
    before: tuple[float, figures.CpuSnapshot, figures.Samples | None] | None = None
    next_refresh = 0.0
    dead_since: float | None = None
    with Live(progress.line(t0), console=err, auto_refresh=False, transient=True) as live:
        while len(results) < len(processes):
            now = time.monotonic()
            if before is None and now >= measure_at:
                cpu_before = figures.cpu_snapshot(target.server_pid, target.database_name)
                before = (now, cpu_before, _scrape(target, options))
            if now >= next_refresh:
                live.update(progress.line(now), refresh=True)
                next_refresh = now + REFRESH_S
            try:
                message = out.get(timeout=0.1)
            except queue.Empty:
                dead_since = _check_alive(processes, results, dead_since, now)
                continue
            if message[0] == "progress":
                progress.add(message[1])
            elif message[0] == "done":
                results.append(message[2])
                progress.add_final(message[2])
            elif message[0] == "failed":
                raise LoadtestError(f"client worker {message[1]}: {message[2]}")
    ended = time.monotonic()
    cpu_after = figures.cpu_snapshot(target.server_pid, target.database_name)
    metrics_after = _scrape(target, options)
    if before is None:  # the run ended before its measured window (cannot happen: duration > 0)
        before = (measure_at, cpu_after, metrics_after)
    window_s = ended - before[0]
    client_cores = sum(r.cpu_s for r in results) / max([1e-9, *(r.wall_s for r in results)])
    requests = sum(r.sent for r in results)
    cpu = figures.cpu_figures(before[1], cpu_after, window_s, client_cores * window_s, requests)
    return Outcome(results, progress.latencies, measure_at, window_s, cpu, before[2], metrics_after)


def _check_alive(
    processes: list[Any], results: list[WorkerResult], dead_since: float | None, now: float
) -> float | None:
    """When a worker exited without its result: the time it was first seen so; after
    `DEAD_WORKER_GRACE_S` (its last message may still be in the queue), an error."""
    finished = {r.index for r in results}
    dead = [i for i, p in enumerate(processes) if i not in finished and not p.is_alive()]
    if not dead:
        return None
    if dead_since is not None and now - dead_since > DEAD_WORKER_GRACE_S:
        code = processes[dead[0]].exitcode
        raise LoadtestError(f"client worker {dead[0]} died (exit code {code})")
    return dead_since if dead_since is not None else now


def _scrape(target: Target, options: LoadtestOptions) -> figures.Samples | None:
    if not options.profile:
        return None
    try:
        return figures.parse_metrics(httpx.get(f"{target.url}/metrics", timeout=10.0).text)
    except httpx.HTTPError:
        return None


# -- after the run ---------------------------------------------------------------------


def _count_trades(admin: Admin, symbol: str, after_id: int) -> int:
    """Trades of the market with an id above `after_id`, paging newest first."""
    path = f"/api/v1/trades?symbol={symbol.replace('/', '-')}&limit=1000"
    count, before = 0, ""
    while True:
        page = admin.call("GET", path + before)
        ids = [int(t["id"]) for t in page]
        count += sum(i > after_id for i in ids)
        if len(ids) < 1000 or min(ids) <= after_id:
            return count
        before = f"&before={min(ids)}"


def _drain_settlements(admin: Admin) -> dict[str, Any] | None:
    """Remote-wallet mode: wait (bounded) for the settlement outbox to drain, so balances
    are final before the integrity check; None for an embedded server (no settlements)."""
    path = "/api/v1/admin/settlements?status={}&limit=1000"
    try:
        pending = admin.call("GET", path.format("PENDING"))
    except LoadtestError as error:
        if "NOT_FOUND" in str(error):
            return None
        raise
    started = time.monotonic()
    while pending and time.monotonic() - started < SETTLEMENT_DRAIN_LIMIT_S:
        time.sleep(SETTLEMENT_POLL_S)
        pending = admin.call("GET", path.format("PENDING"))
    return {
        "drain_s": round(time.monotonic() - started, 3),
        "still_pending": len(pending),
        "dead_letters": len(admin.call("GET", path.format("SETTLEMENT_FAILED"))),
    }


def _integrity(admin: Admin, plan: Plan) -> dict[str, Any]:
    settlement = _drain_settlements(admin)
    held: dict[str, Decimal] = {}
    for user_id, _ in plan.users:
        for asset, total in admin.balances(user_id).items():
            held[asset] = held.get(asset, Decimal(0)) + total
    fee_after = admin.balances(0)
    conservation = {}
    for asset, deposited in plan.deposits.items():
        fee_change = fee_after.get(asset, Decimal(0)) - plan.fee_before.get(asset, Decimal(0))
        actual = held.get(asset, Decimal(0)) + fee_change
        conservation[asset] = {
            "deposited": f"{deposited:f}",
            "users_plus_fee_change": f"{actual:f}",
            "ok": actual == deposited,
        }
    book = admin.call("GET", f"/api/v1/orderbook/{plan.symbol.replace('/', '-')}?depth=1")
    bid = book["bids"][0]["price"] if book["bids"] else None
    ask = book["asks"][0]["price"] if book["asks"] else None
    crossed = bid is not None and ask is not None and Decimal(bid) >= Decimal(ask)
    passed = not crossed and all(c["ok"] for c in conservation.values())
    if settlement is not None:
        passed = passed and not settlement["still_pending"] and not settlement["dead_letters"]
    return {
        "passed": passed,
        "conservation": conservation,
        "book": {"best_bid": bid, "best_ask": ask, "crossed": crossed},
        "settlement": settlement,
    }


def _report(
    admin: Admin, target: Target, plan: Plan, outcome: Outcome, options: LoadtestOptions
) -> dict[str, Any]:
    results = outcome.results
    codes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for r in results:
        codes.update(r.codes)
        kinds.update(r.kinds)
    scheduled = sum(r.scheduled for r in results)
    answered_window = max(
        options.duration_s, max(r.last_answer_at for r in results) - outcome.measure_started_at
    )
    latency = figures.latency_ms(outcome.latencies_us)
    ok = codes.get(OK, 0)
    trades = _count_trades(admin, plan.symbol, plan.trade_id_before)
    lag_ms = max(r.max_schedule_lag_s for r in results) * 1000
    saturated = any(r.cpu_s > 0.9 * r.wall_s for r in results)
    report: dict[str, Any] = {
        "symbol": plan.symbol,
        "reference_price": plan.reference_price,
        "server": {"url": target.url, "started_by_loadtest": target.server_pid is not None,
                   "database": redacted(target.database) if target.database else None},
        "target_rate_per_s": options.rate_per_s,
        "duration_s": options.duration_s,
        "warmup_s": options.warmup_s,
        "users": options.users,
        "connections": options.connections,
        "workers": len(results),
        "max_in_flight": options.max_in_flight,
        "seed": options.seed,
        "requests": {
            "scheduled": scheduled,
            "sent": sum(r.sent for r in results),
            "answered": latency["count"],
            "ok": ok,
            "errors": {c: n for c, n in sorted(codes.items()) if c != OK},
            "by_kind": dict(sorted(kinds.items())),
        },
        "achieved_rate_per_s": round(latency["count"] / answered_window, 1),
        "ok_rate_per_s": round(ok / answered_window, 1),
        "success_ratio": round(ok / scheduled, 5) if scheduled else 0.0,
        "latency_ms": {k: round(v, 3) if isinstance(v, float) else v for k, v in latency.items()},
        "trades": {
            "executed": trades,
            "in_responses": sum(r.trades_in_responses for r in results),
            "in_measured_responses": sum(r.trades_measured for r in results),
        },
        "client": {
            "cores_used": round(sum(r.cpu_s / r.wall_s for r in results if r.wall_s), 2),
            "max_schedule_lag_ms": round(lag_ms, 3),
            "saturated": saturated,
        },
        "integrity": _integrity(admin, plan),
        "notes": _notes(codes, saturated),
    }  # fmt: skip
    if options.profile:
        report["profile"] = _profile(outcome, latency)
    return report


def _notes(codes: Counter[str], saturated: bool) -> list[str]:
    notes = []
    if saturated:
        notes.append("a client process used >90 % of a core: the figures may measure the client")
    if codes.get(CLIENT_BEHIND):
        notes.append(
            "CLIENT_BEHIND: --max-in-flight requests were unanswered, so the rest were not sent"
        )
    if codes.get("RATE_LIMITED"):
        notes.append("RATE_LIMITED: the server's per-user limit (use --serve, or more --users)")
    return notes


def _profile(outcome: Outcome, latency: dict[str, float | int]) -> dict[str, Any]:
    profile: dict[str, Any] = {"cpu": outcome.cpu}
    if outcome.metrics_before is not None and outcome.metrics_after is not None:
        server = figures.server_profile(outcome.metrics_before, outcome.metrics_after)
        profile["server"] = server
        profile["time_split"] = figures.time_split(float(latency["mean"]), server)
    return profile


# -- output ----------------------------------------------------------------------------


def _print_report(report: dict[str, Any]) -> None:
    requests, latency = report["requests"], report["latency_ms"]
    table = Table(
        title=f"loadtest {report['symbol']}: {report['target_rate_per_s']:,.0f}/s target for "
        f"{report['duration_s']:g} s (+{report['warmup_s']:g} s warm-up), "
        f"{report['users']} users, {report['connections']} connections, "
        f"{report['workers']} client process(es)",
        show_header=False,
    )
    table.add_column("what")
    table.add_column("figure", justify="right")
    rows: list[tuple[str, str]] = [
        ("achieved (answered/s)", f"{report['achieved_rate_per_s']:,.1f}"),
        ("ok/s", f"{report['ok_rate_per_s']:,.1f}"),
        ("scheduled / sent / ok", f"{requests['scheduled']:,} / {requests['sent']:,} / "
         f"{requests['ok']:,}"),
        ("success", f"{report['success_ratio'] * 100:.2f} %"),
        ("errors", f"{sum(requests['errors'].values()):,}"),
        *((f"error {code}", f"{n:,}") for code, n in requests["errors"].items()),
        ("mix (limit / market / cancel)", " / ".join(
            f"{requests['by_kind'].get(k, 0):,}" for k in ("limit", "market", "cancel"))),
        ("latency p50 / p95 / p99 ms", f"{latency['p50']:.2f} / {latency['p95']:.2f} / "
         f"{latency['p99']:.2f}"),
        ("latency p99.9 / max / mean ms", f"{latency['p999']:.2f} / {latency['max']:.2f} / "
         f"{latency['mean']:.2f}"),
        ("trades executed (run)", f"{report['trades']['executed']:,}"),
        ("client cores used / max lag ms", f"{report['client']['cores_used']:.2f} / "
         f"{report['client']['max_schedule_lag_ms']:.1f}"
         + ("  SATURATED" if report["client"]["saturated"] else "")),
        *_integrity_rows(report["integrity"]),
        *_profile_rows(report.get("profile")),
    ]  # fmt: skip
    for what, value in rows:
        table.add_row(what, value)
    console = Console()
    console.print(table)
    for note in report["notes"]:
        console.print(f"note: {note}")


def _integrity_rows(integrity: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [
        (f"conservation {asset}", "ok" if c["ok"] else
         f"FAILED: {c['users_plus_fee_change']} held, {c['deposited']} deposited")
        for asset, c in integrity["conservation"].items()
    ]  # fmt: skip
    settlement = integrity.get("settlement")
    if settlement is not None:
        rows.append(
            (
                "settlement (remote wallet)",
                f"drained in {settlement['drain_s']} s after the run; "
                f"{settlement['still_pending']} pending, "
                f"{settlement['dead_letters']} dead-lettered",
            )
        )
    book = integrity["book"]
    verdict = "CROSSED" if book["crossed"] else "not crossed"
    rows.append(("book", f"{verdict} ({book['best_bid']} / {book['best_ask']})"))
    rows.append(("integrity", "passed" if integrity["passed"] else "FAILED"))
    return rows


def _profile_rows(profile: dict[str, Any] | None) -> list[tuple[str, str]]:
    if profile is None:
        return []
    cpu = profile["cpu"]
    keys = ("machine_cores", "server_cores", "client_cores", "database_cores", "other_cores")
    rows = [("cores busy: machine / server / client / database / other", " / ".join(
        "-" if cpu.get(k) is None else f"{cpu[k]:.2f}" for k in keys))]  # fmt: skip
    if cpu.get("server_us_per_request") is not None:
        rows.append(("server CPU µs per request", f"{cpu['server_us_per_request']:,.0f}"))
    server = profile.get("server")
    if server:
        place, commit = server["http_place"], server["commit"]
        rows += [
            ("server POST /orders mean ms (p99 ≤)", f"{place['mean_ms']} ({place['p99_le_ms']})"),
            ("commit mean ms (p99 ≤), batches", f"{commit['mean_ms']} ({commit['p99_le_ms']}), "
             f"{commit['batches']:,}"),
            ("commands per batch (mean)", f"{server['batch_commands_mean']}"),
        ]  # fmt: skip
    split = profile.get("time_split")
    if split:
        rows.append(("mean ms: outside server / gateway+engine / commit", (
            f"{split['outside_server_ms']:.2f} / {split['gateway_and_engine_ms']:.2f} / "
            f"{split['commit_wait_ms']:.2f}")))  # fmt: skip
    return rows
