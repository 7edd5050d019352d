"""SIGKILL the exchange between the wallet's hold and the engine's commit: no hold stays locked.

In remote-wallet mode an order is held at the wallet (`hold:<uuid>`) before it
reaches the engine. If the process dies in between, the hold funds nothing, and
only the hold reconciler (`/admin/holds/…`) can find it (the wallet lists the
holds it still has applied) and void it.

A real `crossbook wallet serve` (SQLite) and a real `crossbook serve` in
remote-wallet mode (PostgreSQL, a database of its own) with a short orphan grace
and reconcile interval. Six async clients trade one market continuously: resting
and crossing limit orders around a mid, market orders, cancels of their own open
orders; refusals (insufficient funds, 503 while the exchange recovers, transport
errors while it is dead) are part of the workload. `KILLS` times, at a random
moment under load (the seed is printed; `HOLD_CRASH_SEED` replays one), the
exchange dies by SIGKILL, starts again on the same database and is waited for
until its reconciler's start-up pass is done. In some rounds a hold is also made
directly at the wallet just before the kill, as a dying exchange leaves one: it
must end voided.

Once the load stops and the reconciler reports nothing orphaned with the outbox
drained, for every user and asset the wallet's locked balance equals what the
user's open orders reserve in the exchange's committed store (`orders.reserved_units`);
the wallet's totals are the deposits; every hold the wallet still has applied is
one the exchange's store recorded (`holds`), and none that it recorded as voided;
and the scenario's integrity checks hold. The second test cancels every open
order and wants nothing locked anywhere.

The figures (kills, holds reconciled, restart to start-up pass done) are printed
(`pytest -s`) and written as JSON beside the logs.

What this file assumes of the reconciler's surface, each in one helper below:
`reconciliation` (the status route and its fields), `orphaned_holds`,
`recorded_holds` (the `holds` table: `hold_key`, `fate`), `is_void_fate`, and the
metric names in `RECONCILER_METRICS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import sqlite3
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from e2e_support import OPEN_STATUSES, Exchange, Market, Scenario, ServerProcess, Trader
from test_e2e_remote_wallet import check_wallet_books, remote_env, settlements, wait_drained

from wallet_support import HOLD, WalletProcess

pytestmark = pytest.mark.postgres

CLIENTS = 6
KILLS = 6
ORPHAN_ROUNDS = frozenset({1, 3, KILLS - 1})  # the last one too: the last process voids one
KILL_DELAY_S = (0.2, 1.5)  # a kill comes this long after an order was accepted (the workload)
GRACE_MS = 3_500  # CROSSBOOK_HOLD_ORPHAN_GRACE_MS (> wallet timeout + commit deadline + wait)
INTERVAL_MS = 300  # CROSSBOOK_HOLD_RECONCILE_INTERVAL_MS
RECONCILER_ENV = {
    "CROSSBOOK_HOLD_ORPHAN_GRACE_MS": str(GRACE_MS),
    "CROSSBOOK_HOLD_RECONCILE_INTERVAL_MS": str(INTERVAL_MS),
}
FUNDS = {"base": "5", "quote": "500000"}  # each user's deposits
MID_PRICE = Decimal(50_000)
TICK = Decimal("0.01")
LOT = Decimal("0.0001")
MAX_OPEN_PER_CLIENT = 120  # a client cancels before placing once it has this many open
PACE_S = 0.02  # at most this long between one client's requests (the workload's pace)
BACKOFF_S = 0.05  # a client's pause after a transport error (the exchange is dead)
CLIENT_TIMEOUT_S = 10.0  # failure bound for one client request
ORPHAN_UNITS = {"base": 100_000, "quote": 25_000_000}  # 0.001 BTC, 25 USDT at most
TOLERATED_STATUSES = frozenset({200, 201, 400, 404, 409, 429, 503})

POLL_S = 0.05  # interval between polls, within the bounds below
STARTUP_PASS_TIMEOUT_S = 30.0  # failure bound: restart to the start-up pass done
ACCEPT_TIMEOUT_S = 30.0  # failure bound for the load to get an order accepted
QUIESCE_TIMEOUT_S = 60.0  # failure bound for nothing orphaned and the outbox drained
HOLDS_PAGE_LIMIT = 1_000
MAX_HOLD_PAGES = 1_000  # failure bound for paging through the wallet's holds

ServerFactory = Callable[..., tuple[ServerProcess, str]]  # the `start_server` fixture


# -- what this test assumes of the reconciler's surface (adjust here) ------------------------

RECONCILIATION = "/admin/holds/reconciliation"
ORPHANED = "/admin/holds/orphaned"
STATUS_FIELDS = frozenset(
    {
        "passes",
        "startup_pass_done",
        "holds_found",
        "holds_voided",
        "void_failures",
        "orphaned",
        "last_pass_at",
        "last_pass_duration_ms",
        "last_pass_complete",
    }
)
ORPHAN_FIELDS = frozenset({"key", "user_id", "asset", "amount", "applied_at", "age_ms"})
RECONCILER_METRICS = (
    "crossbook_hold_reconcile_passes_total",
    "crossbook_holds_orphaned_found_total",
    "crossbook_holds_orphaned_voided_total",
    "crossbook_holds_orphaned",
)


def admin_data(response: httpx.Response, what: str) -> Any:
    """The `data` of an admin answer; None for a 503 (recovering: poll again)."""
    if response.status_code == 503:
        return None
    if response.status_code == 404:
        raise AssertionError(
            f"GET /api/v1{what} answered 404 ({response.text[:300]}): "
            "the hold reconciler's admin routes are not there"
        )
    body = response.json()
    assert response.status_code == 200 and body.get("success") is True, (what, body)
    return body["data"]


def reconciliation_status(response: httpx.Response) -> dict[str, Any] | None:
    """`GET /admin/holds/reconciliation`: the reconciler's status, or None (503)."""
    status: dict[str, Any] | None = admin_data(response, RECONCILIATION)
    if status is not None:
        assert set(status) >= STATUS_FIELDS, status
    return status


def orphaned_holds(exchange: Exchange) -> list[dict[str, Any]]:
    """`GET /admin/holds/orphaned`: the holds the reconciler counts as orphaned now."""
    holds: list[dict[str, Any]] = admin_data(exchange.admin.call("GET", ORPHANED), ORPHANED)
    for hold in holds:
        assert set(hold) >= ORPHAN_FIELDS, hold
    return holds


def recorded_holds(database_url: str) -> dict[str, str]:
    """The exchange store's `holds` table: hold key -> its fate (consumed or voided)."""
    return dict(store_rows(database_url, "SELECT hold_key, fate FROM holds"))


def is_void_fate(fate: str) -> bool:
    return "void" in fate.lower()


def metric_samples(server: ServerProcess) -> dict[str, float]:
    """Every sample of `/metrics` by name, the label sets of one name summed."""
    samples: dict[str, float] = {}
    for line in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            name_part, value = line.rsplit(" ", 1)
            name = name_part.split("{", 1)[0]
            samples[name] = samples.get(name, 0.0) + float(value)
    return samples


# -- the exchange's committed store, read directly ------------------------------------------


def store_rows(database_url: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of one read-only query on the exchange's database (SQLite or PostgreSQL)."""
    if database_url.startswith("sqlite"):
        path = database_url.split(":///", 1)[1]
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return [tuple(row) for row in db.execute(sql).fetchall()]
    url = "postgresql://" + database_url.split("://", 1)[1]  # without a +driver

    async def fetch() -> list[tuple[Any, ...]]:
        connection = await asyncpg.connect(url, timeout=10)
        try:
            return [tuple(row) for row in await connection.fetch(sql)]
        finally:
            await connection.close()

    return asyncio.run(fetch())


def reservations(database_url: str) -> dict[tuple[int, str], int]:
    """(user id, asset) -> the sum of its open orders' `reserved_units` (quote for a buy,
    base for a sell); a closed order must reserve nothing."""
    rows = store_rows(
        database_url,
        "SELECT o.user_id, o.side, o.status, o.reserved_units, m.base, m.quote "
        "FROM orders o JOIN markets m ON m.symbol = o.symbol WHERE o.reserved_units <> 0",
    )
    reserved: Counter[tuple[int, str]] = Counter()
    for user_id, side, status, units, base, quote in rows:
        assert status in OPEN_STATUSES, ("a closed order reserves", user_id, side, status, units)
        reserved[int(user_id), quote if side == "buy" else base] += int(units)
    return dict(reserved)


# -- the wallet -------------------------------------------------------------------------------


def wallet_applied_holds(wallet: WalletProcess) -> dict[str, dict[str, Any]]:
    """Every hold the wallet still has applied (`GET /v1/holds`, all pages), by key."""
    params: dict[str, Any] = {
        "applied_before_ms": int(time.time() * 1000) + 3_600_000,  # one window for all pages
        "limit": HOLDS_PAGE_LIMIT,
    }
    holds: dict[str, dict[str, Any]] = {}
    for _ in range(MAX_HOLD_PAGES):
        response = wallet.request("GET", "/v1/holds", params=params)
        body = response.json()
        assert response.status_code == 200 and body["success"], body
        holds.update((hold["key"], hold) for hold in body["data"])
        cursor = body["meta"]["next"]
        if cursor is None:
            return holds
        params |= cursor
    raise AssertionError(f"more than {MAX_HOLD_PAGES} pages of holds")


def unknown_holds(crash: Crash) -> dict[str, dict[str, Any]]:
    """Holds the wallet has applied that the exchange's store never recorded, or recorded
    as voided: each one locks funds that no order of the exchange will ever use."""
    recorded = recorded_holds(crash.server.database_url)
    return {
        key: hold
        for key, hold in wallet_applied_holds(crash.wallet).items()
        if key not in recorded or is_void_fate(recorded[key])
    }


def leave_orphan_hold(crash: Crash, rng: random.Random) -> str:
    """What an exchange dying between the hold and the commit leaves: a hold at the wallet
    (key `hold:<uuid>`, the exchange's service token) for a trading user that no order
    will ever use. Its key."""
    role = rng.choice(("base", "quote"))
    asset = getattr(crash.market, role)
    for trader in rng.sample(crash.traders, len(crash.traders)):
        available = crash.wallet.balances(trader.user_id).get(asset, (0, 0))[0]
        if not available:
            continue
        key = f"hold:{uuid.uuid4().hex}"
        units = min(available, ORPHAN_UNITS[role])
        op = {"key": key, "op": str(HOLD), "user_id": trader.user_id, "asset": asset}
        response = crash.wallet.post(op | {"amount_units": str(units)})
        if response.status_code == 200:
            crash.orphans.append(key)
            return key
        # the user's own orders took the funds meanwhile
        assert response.json()["error"]["code"] == "INSUFFICIENT_BALANCE", response.text
    raise AssertionError(f"no user had {asset} available for an orphan hold")


# -- the scenario ------------------------------------------------------------------------------


@dataclass
class Restart:
    ready_ms: float  # from the new process's start to /ready
    startup_pass_ms: float  # from the new process's start to `startup_pass_done`
    startup_status: dict[str, Any]
    dying_status: dict[str, Any] | None  # the killed process's last status


@dataclass
class Crash:
    wallet: WalletProcess
    server: ServerProcess
    exchange: Exchange
    scenario: Scenario
    market: Market
    traders: list[Trader]
    seed: int
    orphans: list[str] = field(default_factory=list)  # keys of the holds left at the wallet
    restarts: list[Restart] = field(default_factory=list)
    final_status: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)


class Load:
    """The clients: each places and cancels orders until `stop` is set."""

    def __init__(self, crash: Crash, rng: random.Random) -> None:
        self.crash = crash
        self.seeds = [rng.getrandbits(32) for _ in crash.traders]
        self.stop = asyncio.Event()
        self.accepted = asyncio.Event()  # set by every accepted order
        self.answers: Counter[str] = Counter()  # "201", "400 INSUFFICIENT_BALANCE", "transport"
        self.unexpected: list[str] = []

    async def run(self) -> None:
        pairs = zip(self.crash.traders, self.seeds, strict=True)
        await asyncio.gather(*(self.client(trader, seed) for trader, seed in pairs))

    async def next_acceptance(self) -> None:
        """Until some client has an order accepted (after this call)."""
        self.accepted.clear()
        try:
            await asyncio.wait_for(self.accepted.wait(), ACCEPT_TIMEOUT_S)
        except TimeoutError:
            raise AssertionError(
                f"no order accepted within {ACCEPT_TIMEOUT_S} s: {dict(self.answers)}"
            ) from None

    async def client(self, trader: Trader, seed: int) -> None:
        rng = random.Random(seed)
        open_ids: list[str] = []
        async with httpx.AsyncClient(headers=trader.http.headers, timeout=CLIENT_TIMEOUT_S) as http:
            while not self.stop.is_set():
                method, path, body = self.action(rng, open_ids)
                try:
                    response = await http.request(method, trader.http.url(path), json=body)
                except httpx.TransportError:  # the exchange is dead or dying
                    self.answers["transport"] += 1
                    await asyncio.sleep(BACKOFF_S)
                    continue
                self.record(method, path, response, open_ids)
                await asyncio.sleep(rng.uniform(0, PACE_S))

    def action(
        self, rng: random.Random, open_ids: list[str]
    ) -> tuple[str, str, dict[str, Any] | None]:
        roll = rng.random()
        if open_ids and (roll < 0.3 or len(open_ids) >= MAX_OPEN_PER_CLIENT):
            order_id = open_ids.pop(rng.randrange(len(open_ids)))
            return "DELETE", f"/orders/{order_id}", None
        side = rng.choice(("buy", "sell"))
        body: dict[str, Any] = {"symbol": self.crash.market.symbol, "side": side}
        body["quantity"] = str(rng.randint(10, 500) * LOT)
        if roll > 0.88:
            return "POST", "/orders", body | {"type": "market"}
        toward = 1 if side == "buy" else -1  # a buy above the mid crosses, a sell below
        ticks = rng.randint(0, 1_500) if roll > 0.65 else -rng.randint(1, 2_000)
        price = MID_PRICE + toward * ticks * TICK
        return "POST", "/orders", body | {"type": "limit", "price": str(price)}

    def record(self, method: str, path: str, response: httpx.Response, open_ids: list[str]) -> None:
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        code = "" if payload.get("success") else payload.get("error", {}).get("code", "?")
        self.answers[f"{response.status_code} {code}".strip()] += 1
        if response.status_code not in TOLERATED_STATUSES:
            self.unexpected.append(f"{method} {path}: {response.status_code} {response.text[:300]}")
        if method == "POST" and response.status_code == 201:
            order = payload["data"]["order"]
            if order["status"] in OPEN_STATUSES:
                open_ids.append(order["id"])
            self.accepted.set()


async def kill_rounds(crash: Crash, rng: random.Random, load: Load) -> None:
    """`KILLS` times: under load, SIGKILL, start again, wait for the start-up pass."""
    server = crash.server
    async with httpx.AsyncClient(headers=crash.exchange.admin.headers, timeout=10) as admin:
        for n in range(KILLS):
            await load.next_acceptance()
            await asyncio.sleep(rng.uniform(*KILL_DELAY_S))  # a random moment under load
            dying = await current_status(admin, server)
            if n in ORPHAN_ROUNDS:
                await asyncio.to_thread(leave_orphan_hold, crash, rng)
            await asyncio.to_thread(server.kill)
            started = time.monotonic()
            await asyncio.to_thread(server.start)
            ready = time.monotonic()
            status = await wait_startup_pass(admin, server)
            done = time.monotonic()
            crash.restarts.append(
                Restart(1000 * (ready - started), 1000 * (done - started), status, dying)
            )


async def current_status(admin: httpx.AsyncClient, server: ServerProcess) -> dict[str, Any] | None:
    with contextlib.suppress(httpx.TransportError):
        return reconciliation_status(await admin.get(f"{server.url}/api/v1{RECONCILIATION}"))
    return None


async def wait_startup_pass(admin: httpx.AsyncClient, server: ServerProcess) -> dict[str, Any]:
    """Poll the reconciler's status until its start-up pass is done (bounded)."""
    deadline = time.monotonic() + STARTUP_PASS_TIMEOUT_S
    status: dict[str, Any] | None = None
    while True:
        status = await current_status(admin, server) or status
        if status is not None and status["startup_pass_done"]:
            return status
        assert time.monotonic() < deadline, f"no start-up pass within the bound: {status}"
        await asyncio.sleep(POLL_S)


async def crash_under_load(crash: Crash, rng: random.Random) -> Load:
    load = Load(crash, rng)
    clients = asyncio.create_task(load.run())
    try:
        await kill_rounds(crash, rng, load)
    finally:
        load.stop.set()
        await clients
    return load


def sync_status(exchange: Exchange) -> dict[str, Any] | None:
    return reconciliation_status(exchange.admin.call("GET", RECONCILIATION))


def wait_reconciled(crash: Crash, load_stopped: float) -> dict[str, Any]:
    """Until two passes have started after every hold of the load was past the grace, the
    last found nothing orphaned, none is listed and no settlement is PENDING (bounded).
    The reconciler's status then."""
    exchange = crash.exchange
    past_grace = load_stopped + GRACE_MS / 1000
    deadline = time.monotonic() + QUIESCE_TIMEOUT_S
    passes_at_grace: int | None = None
    while True:
        status = sync_status(exchange)
        if status is not None:
            if passes_at_grace is None and time.monotonic() >= past_grace:
                passes_at_grace = status["passes"]
            if (
                passes_at_grace is not None
                and status["passes"] >= passes_at_grace + 2
                and status["last_pass_complete"]
                and status["orphaned"] == 0
                and not orphaned_holds(exchange)
                and not settlements(exchange, "PENDING")
            ):
                return status
        assert time.monotonic() < deadline, f"still orphaned or pending: {status}"
        time.sleep(POLL_S)


def figures(crash: Crash, load: Load, elapsed_s: float) -> dict[str, Any]:
    to_pass = [r.startup_pass_ms for r in crash.restarts]
    # each process counts its own voids: the killed ones' last status, then the last one's
    voided = [(r.dying_status or {}).get("holds_voided", 0) for r in crash.restarts]
    voided.append(crash.final_status["holds_voided"])
    return {
        "seed": crash.seed,
        "kills": len(crash.restarts),
        "holds_planted_at_the_wallet": len(crash.orphans),
        "holds_voided_by_reconcilers": sum(voided),
        "holds_voided_per_process": voided,
        "holds_voided_at_startup_pass": [r.startup_status["holds_voided"] for r in crash.restarts],
        "restart_to_ready_ms": [round(r.ready_ms) for r in crash.restarts],
        "restart_to_startup_pass_ms": [round(ms) for ms in to_pass],
        "restart_to_startup_pass_ms_median": round(statistics.median(to_pass)),
        "restart_to_startup_pass_ms_max": round(max(to_pass)),
        "final_status": crash.final_status,
        "answers": dict(load.answers.most_common()),
        "wall_time_s": round(elapsed_s, 1),
    }


@pytest.fixture(scope="module")
def crashed(
    start_server: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Crash]:
    """The exchange killed `KILLS` times under load, then quiet: nothing orphaned, the
    outbox drained."""
    began = time.monotonic()
    seed = int(os.environ.get("HOLD_CRASH_SEED") or secrets.randbits(32))
    print(f"\nhold crash seed: {seed} (HOLD_CRASH_SEED={seed} replays the same random choices)")
    rng = random.Random(seed)
    directory = tmp_path_factory.mktemp("hold-crash")
    wallet = WalletProcess("wallet-hold-crash", f"sqlite:///{directory / 'wallet.db'}", directory)
    wallet.start()
    try:
        server, _ = start_server("hold-crash", remote_env(wallet) | RECONCILER_ENV)
        exchange = Exchange(server)
        try:
            scenario = Scenario(exchange)
            market = scenario.market()
            funds = {market.base: FUNDS["base"], market.quote: FUNDS["quote"]}
            traders = [scenario.trader(funds) for _ in range(CLIENTS)]
            crash = Crash(wallet, server, exchange, scenario, market, traders, seed)
            assert sync_status(exchange) is not None  # the route is there before any load
            load = asyncio.run(crash_under_load(crash, rng))
            crash.final_status = wait_reconciled(crash, time.monotonic())
            wait_drained(exchange)
            assert not load.unexpected, load.unexpected[:20]
            crash.figures = figures(crash, load, time.monotonic() - began)
            text = json.dumps(crash.figures, indent=2, sort_keys=True)
            (directory / "hold_crash_figures.json").write_text(text + "\n")
            print(f"hold crash figures ({directory / 'hold_crash_figures.json'}):\n{text}")
            yield crash
        finally:
            exchange.close()
            server.stop()
    finally:
        wallet.close()


# -- the tests ---------------------------------------------------------------------------------


def units(amount: Decimal, decimals: int) -> int:
    return int(amount.scaleb(decimals))


def test_no_hold_stays_locked_after_repeated_sigkills_under_load(crashed: Crash) -> None:
    crash, market = crashed, crashed.market
    assert len(crash.restarts) == KILLS
    assert settlements(crash.exchange, "SETTLEMENT_FAILED") == []
    assert orphaned_holds(crash.exchange) == []
    assert unknown_holds(crash) == {}

    recorded = recorded_holds(crash.server.database_url)
    assert len(crash.orphans) == len(ORPHAN_ROUNDS)
    for key in crash.orphans:  # each hold a dying exchange left: found and voided
        operation = crash.wallet.operation(key)
        assert operation is not None and operation["status"] == "voided", (key, operation)
        assert key in recorded and is_void_fate(recorded[key]), (key, recorded.get(key))
    # the last process found the hold left just before the last kill at its start-up
    status = crash.final_status
    assert status["startup_pass_done"] and status["holds_voided"] >= 1, status
    assert status["holds_found"] >= status["holds_voided"], status

    reserved = reservations(crash.server.database_url)
    for user_id in [t.user_id for t in crash.traders] + [0]:
        wallet_balances = crash.wallet.balances(user_id)
        for asset in (market.base, market.quote):
            locked = wallet_balances.get(asset, (0, 0))[1]
            assert locked == reserved.get((user_id, asset), 0), (user_id, asset, locked)

    decimals = {market.base: market.base_decimals, market.quote: market.quote_decimals}
    totals = crash.wallet.totals()
    assert set(totals) == set(decimals), totals
    for asset, places in decimals.items():
        deposited = units(crash.scenario.deposits[asset], places)
        assert totals[asset] == (deposited, deposited, 0), (asset, totals[asset], deposited)

    samples = metric_samples(crash.server)
    assert all(name in samples for name in RECONCILER_METRICS), sorted(samples)
    assert samples["crossbook_holds_orphaned"] == 0
    assert samples["crossbook_hold_reconcile_passes_total"] >= 1
    crash.scenario.check_integrity()
    check_wallet_books(crash.wallet)


def test_cancelling_every_order_after_the_kills_leaves_nothing_locked(crashed: Crash) -> None:
    crash = crashed
    for trader in crash.traders:
        for order in trader.http.pages("/orders", status="active"):
            cancelled = trader.http.ok("DELETE", f"/orders/{order['id']}")
            assert cancelled["status"] not in OPEN_STATUSES, cancelled
    wait_drained(crash.exchange)  # the releases reach the wallet
    assert settlements(crash.exchange, "SETTLEMENT_FAILED") == []
    for user_id in [t.user_id for t in crash.traders] + [0]:
        locked = {a: b[1] for a, b in crash.wallet.balances(user_id).items() if b[1]}
        assert locked == {}, (user_id, locked)
    assert reservations(crash.server.database_url) == {}
    assert orphaned_holds(crash.exchange) == []
    assert unknown_holds(crash) == {}
    crash.scenario.check_integrity()
    check_wallet_books(crash.wallet)
