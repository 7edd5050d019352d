"""crossbook beside its closest Python peer on the same command streams (``bench peers``).

The peer is `matching-engine` 0.1.1 (PyPI, MIT): a price-time book with IOC,
FOK, post-only and self-trade prevention, and a checksummed write-ahead log
with group commit and fsync; it has no balances and no fees. It needs Python
3.12 or later, so it runs in a virtual environment of its own, made once and
cached under ``$XDG_CACHE_HOME/crossbook/bench-peers/`` (``~/.cache`` by
default) with the exact versions of `PEER_REQUIREMENTS`. It is a benchmark
extra, never a dependency of crossbook. Where no such Python is found, or the
packages cannot be installed (no network), the benchmark says so and exits 0.

Each round, for each workload: crossbook generates the command stream from the
round's seed (``seed + round``) with its own generators, writes it in the
neutral form of `peer_driver` to a temporary file, and the two engines replay
it one after the other, crossbook first in even rounds and the peer first in
odd ones:

- crossbook in process: in memory through ``crossbook bench engine``'s code
  path (`engine.bench_stream`: a warm-up with the invariant check, then one
  timed run), and durably through ``crossbook bench durable``'s (`durable`'s
  run on a fresh SQLite file: engine loop, commit before acknowledgement);
- the peer in a subprocess, `peer_driver` run by the peer's Python: in memory,
  then with its WAL and fsync.

Only the replay is timed, on both sides. The rounds' figures are reported with
their medians, and so are the ratios crossbook / peer of each round (paired, on
the same stream) and their median. Both engines must make the same number of
trades on every path, the peer must reject nothing, and their final books must
be the same (orders, prices, remaining quantities, queue order: `book_digest`,
against an untimed crossbook replay), or the run stops: the figures would
otherwise compare different work.

Workloads:
- ``mixed``: crossbook's `mixed` stream (adds near the mid, cancels of live
  orders, marketable IOC and market takers, a pre-filled book of 2,000 orders);
- ``peer-flow``: the mix of the peer's own benchmark generator, re-expressed
  with crossbook's generator (`build_peer_flow`): 1,000 accounts, 25 % cancels,
  5 % market orders, limit orders up to 50 ticks from the mid on the passive
  side and up to 5 through it (about one in ten crosses; the same account may
  be on both sides, so self-trade prevention fires). One difference: its
  cancels pick a live order, where the peer's pick any earlier limit order
  (some of them filled, and so rejected as unknown); crossbook's benchmarks
  refuse streams with rejections. The peer also replays its own generator
  (``peer_native_flow`` in the report) to show what that difference is worth;
- ``sweeps``: crossbook's `sweep` stream; its figure is the fill rate of the
  taker segments (large orders each filling ~100 makers), as ``bench engine``'s
  "sweep · takers" row.

The mapping: prices and quantities are integer ticks and lots in both engines
and are passed unchanged; a crossbook order id (predicted by the generator) is
the peer's order id; market orders go as the peer's market IOC (FOK stays
FOK), with price 0; the self-trade-prevention modes have the same names and
rules. The set-up's assets, market and deposits have no counterpart in the
peer and are left out; its pre-filled orders are replayed (untimed) on both.

Not the same work, by design (the point of the comparison): crossbook reserves
funds, settles fees through a double-entry ledger and emits more events per
command; its durable path goes through the engine loop and commits events,
trades and ledger entries to SQLite (``synchronous = FULL``, so fsynced),
batches of up to 5,000; the peer's WAL holds the commands only, 512 per fsync
(its gateway's default), and no snapshot is taken. Both write under the
system's temporary directory.

Known limits: the two engines run on different interpreters (crossbook on its
own, the peer on 3.12 or later), and the machine's other work lands on both;
the load average is printed with the figures.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from crossbook.bench import durable, engine, peer_driver, streams
from crossbook.bench.streams import Segment, Stream
from crossbook.domain import (
    CancelOrder,
    Command,
    CreateAsset,
    CreateMarket,
    Deposit,
    Exchange,
    OrderAccepted,
    OrderType,
    OrderUpdated,
    PlaceOrder,
    Side,
    TimeInForce,
)
from crossbook.domain.validation import effective_time_in_force

WORKLOADS = ("mixed", "peer-flow", "sweeps")

PEER_PACKAGE = "matching-engine"
PEER_VERSION = "0.1.1"
# its own metadata asks for msgspec>=0.19 and sortedcontainers>=2.4: pinned to what it resolved to
PEER_REQUIREMENTS = (
    f"{PEER_PACKAGE}=={PEER_VERSION}",
    "msgspec==0.23.0",
    "sortedcontainers==2.4.0",
)
PEER_MIN_PYTHON = (3, 12)
PEER_WAL_BATCH = peer_driver.PEER_DEFAULT_WAL_BATCH

# `crossbook bench durable`'s defaults (its command-line options)
DURABLE_WINDOW = 20_000
DURABLE_BATCH_MAX = 5_000

PEER_FLOW_ACCOUNTS = 1_000
PEER_FLOW_CANCEL_SHARE = 0.25
PEER_FLOW_MARKET_SHARE = 0.05
PEER_FLOW_DEPTH_TICKS = 50  # passive side: up to 50 ticks from the mid
PEER_FLOW_CROSS_TICKS = 5  # aggressive side: up to 5 ticks through the mid
PEER_FLOW_MAX_LOTS = 100
# `streams` funds each user with 10**16 USDT units; 1,000 users would pass the 64-bit
# supply bound (a deposit beyond it is refused), so these get 10**15 (1e9 USDT) each
PEER_FLOW_QUOTE_UNITS = 10**15

_PROBE_TIMEOUT_S = 30
_VENV_TIMEOUT_S = 120
_PIP_TIMEOUT_S = 600
_DRIVER_TIMEOUT_S = 3_600
_VERSION_PROBE = "import sys; print('.'.join(map(str, sys.version_info[:3])))"


class PeerUnavailableError(Exception):
    """The peer cannot run here (no suitable Python, or its packages cannot be installed)."""


class RunDivergedError(RuntimeError):
    """The two engines did not do the same work on a stream (or one misbehaved)."""


# -- the streams ---------------------------------------------------------------------


def build_stream(workload: str, commands: int, seed: int) -> Stream:
    if workload == "peer-flow":
        return build_peer_flow(commands, seed)
    if workload == "mixed":
        return streams.build("mixed", commands, seed)
    if workload == "sweeps":
        return streams.build("sweep", commands, seed)
    raise ValueError(f"unknown workload {workload!r}; choose from {', '.join(WORKLOADS)}")


def build_peer_flow(commands: int, seed: int) -> Stream:
    """The peer's benchmark mix, made by crossbook's generator; every command is accepted."""
    # the generator of `streams` (ids, live orders, set-up) is reused, not copied
    gen = streams._Generator("peer-flow", seed, makers=PEER_FLOW_ACCOUNTS, takers=0)
    gen.setup[:] = [_smaller_quote_deposit(command) for command in gen.setup]
    shadow = Exchange()  # learns which orders filled, so that cancels name live ones
    for setup_command in gen.setup:
        shadow.execute(setup_command)
    trades_before = shadow.next_trade_id
    rng = gen.rng
    timed: list[Command] = []
    command: Command
    for _ in range(commands):
        roll = rng.random()
        if roll < PEER_FLOW_CANCEL_SHARE and len(gen.live):
            command = gen.cancel_random()
        else:
            side = gen.random_side()
            lots = rng.randint(1, PEER_FLOW_MAX_LOTS)
            if roll < PEER_FLOW_CANCEL_SHARE + PEER_FLOW_MARKET_SHARE:
                gen.next_order_id += 1
                user_id = rng.choice(gen.makers)
                command = PlaceOrder(
                    user_id, streams.SYMBOL, side, OrderType.MARKET, quantity_lots=lots
                )
            else:
                offset = rng.randint(-PEER_FLOW_CROSS_TICKS, PEER_FLOW_DEPTH_TICKS)
                mid = streams.MID_PRICE_TICKS
                price = mid - offset if side is Side.BUY else mid + offset
                command = gen.place(gen.maker_with_room(), side, price, lots)
        timed.append(command)
        for event in shadow.execute(command):
            if isinstance(event, OrderAccepted):
                assert event.order_id == gen.next_order_id - 1, "order ids mispredicted"
            elif isinstance(event, OrderUpdated) and event.status.is_terminal:
                gen.live.discard(event.order_id)
    return gen.stream(
        [Segment("stream", timed)], expected_trades=shadow.next_trade_id - trades_before
    )


def _smaller_quote_deposit(command: Command) -> Command:
    if isinstance(command, Deposit) and command.asset == streams.QUOTE:
        return Deposit(command.user_id, command.asset, PEER_FLOW_QUOTE_UNITS)
    return command


# -- crossbook's stream in the neutral form ----------------------------------------------


@dataclass(frozen=True, slots=True)
class NeutralStream:
    setup: list[peer_driver.Record]
    segments: list[peer_driver.Segment]
    setup_skipped: int  # assets, market, deposits: nothing of the kind in the peer

    @property
    def setup_orders(self) -> int:
        return len(self.setup)


def to_neutral(stream: Stream) -> NeutralStream:
    """Map a crossbook stream to the peer's vocabulary, order ids as crossbook predicts them."""
    refs = iter(range(1, 2**63))
    skipped = 0
    setup: list[peer_driver.Record] = []
    for command in stream.setup:
        record = to_record(command, refs)
        if record is None:
            skipped += 1
        else:
            setup.append(record)
    segments = []
    for segment in stream.segments:
        records = [to_record(command, refs) for command in segment.commands]
        if any(record is None for record in records):
            raise ValueError(f"segment {segment.label!r} holds a command the peer cannot take")
        segments.append(peer_driver.Segment(segment.label, [r for r in records if r is not None]))
    placed = next(refs) - 1
    if placed != stream.expected_orders:
        raise ValueError(f"{placed} placements, the stream predicts {stream.expected_orders} ids")
    return NeutralStream(setup, segments, skipped)


def to_record(command: Command, refs: Any) -> peer_driver.Record | None:
    """One command as a peer record (None for set-up without a counterpart); `refs` yields the
    order ids crossbook gives placements, in order."""
    if isinstance(command, PlaceOrder):
        return _new_record(command, next(refs))
    if isinstance(command, CancelOrder):
        if command.order_id is None:
            raise ValueError("a cancel by client order id has no counterpart in the peer")
        return peer_driver.CancelRecord(command.order_id, command.user_id)
    if isinstance(command, CreateAsset | CreateMarket | Deposit):
        return None
    raise ValueError(f"{type(command).__name__} has no counterpart in the peer")


def _new_record(cmd: PlaceOrder, ref: int) -> peer_driver.NewRecord:
    if cmd.order_type not in (OrderType.LIMIT, OrderType.MARKET):
        raise ValueError(f"{cmd.order_type} orders have no counterpart in the peer")
    if cmd.quote_budget_units or cmd.expire_at_ms is not None or cmd.hold is not None:
        raise ValueError("quote budgets, expiry and wallet holds have no counterpart in the peer")
    tif = effective_time_in_force(cmd)  # a market order is IOC unless FOK, as in crossbook
    if tif not in (TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK):
        raise ValueError(f"time in force {tif} has no counterpart in the peer")
    is_market = cmd.order_type is OrderType.MARKET
    return peer_driver.NewRecord(
        ref=ref,
        user=cmd.user_id,
        side=cmd.side.value,
        order_type=cmd.order_type.value,
        tif=tif.value.lower(),
        price_ticks=0 if is_market else cmd.price_ticks,
        qty_lots=cmd.quantity_lots,
        post_only=cmd.post_only,
        stp=cmd.stp_mode.value,
    )


def write_neutral(path: Path, workload: str, seed: int, stream: Stream) -> NeutralStream:
    neutral = to_neutral(stream)
    header = {
        "workload": workload,
        "seed": seed,
        "expected_trades": stream.expected_trades,
        "setup_skipped": neutral.setup_skipped,
    }
    with path.open("w", encoding="utf-8") as out:
        peer_driver.write_stream(out, header, neutral.setup, neutral.segments)
    return neutral


# -- the peer's environment ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerEnvironment:
    python: Path  # the virtual environment's interpreter
    base_python: str
    base_version: str
    venv: Path


def prepare_peer(requested: str, progress: Console) -> PeerEnvironment:
    """Find a Python >= 3.12 and the cached environment with the peer, making it if needed."""
    base, version = find_peer_python(requested)
    venv = _cache_root() / f"py{'.'.join(version.split('.')[:2])}-{_venv_key(base)}"
    python = venv / "bin" / "python"
    marker = venv / "crossbook-peer-requirements.txt"
    wanted = "\n".join(PEER_REQUIREMENTS) + "\n"
    if not (python.exists() and marker.exists() and marker.read_text() == wanted):
        progress.print(f"installing {', '.join(PEER_REQUIREMENTS)} into {venv}")
        _make_venv(base, venv, python)
        marker.write_text(wanted)
    installed = _run([str(python), "-I", "-c", "import matching_engine as m; print(m.__version__)"])
    if installed is None or installed.strip() != PEER_VERSION:
        raise PeerUnavailableError(f"{venv} does not import {PEER_PACKAGE} {PEER_VERSION}")
    return PeerEnvironment(python, base, version, venv)


def find_peer_python(requested: str) -> tuple[str, str]:
    """The first candidate that runs and is recent enough: `requested` (a name on PATH or a
    path), then, for a bare name, the pyenv installs of it (a pyenv shim refuses a version
    that is installed but not selected)."""
    candidates: list[str] = []
    if os.sep in requested:
        candidates.append(requested)
    else:
        found = shutil.which(requested)
        if found:
            candidates.append(found)
        pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
        installs = (pyenv_root / "versions").glob(f"*/bin/{requested}")
        candidates += [str(p) for p in sorted(installs, key=_version_key, reverse=True)]
    tried = []
    for candidate in candidates:
        version = _run([candidate, "-c", _VERSION_PROBE])
        if version is not None:
            version = version.strip()
            if tuple(int(x) for x in version.split(".")[:2]) >= PEER_MIN_PYTHON:
                return candidate, version
            tried.append(f"{candidate} ({version})")
        else:
            tried.append(f"{candidate} (does not run)")
    minimum = ".".join(map(str, PEER_MIN_PYTHON))
    raise PeerUnavailableError(
        f"no Python >= {minimum} found for {requested!r}"
        + (f" (tried {', '.join(tried)})" if tried else "")
        + f"; {PEER_PACKAGE} {PEER_VERSION} needs one (--peer-python PATH)"
    )


def _version_key(path: Path) -> tuple[int, ...]:
    parts = path.parents[1].name.split(".")
    return tuple(int(p) if p.isdigit() else -1 for p in parts)


def _cache_root() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "crossbook" / "bench-peers"


def _venv_key(base_python: str) -> str:
    text = "\n".join([os.path.realpath(base_python), *PEER_REQUIREMENTS])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _make_venv(base: str, venv: Path, python: Path) -> None:
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = (
        ([base, "-m", "venv", str(venv)], _VENV_TIMEOUT_S, "create a virtual environment"),
        (
            [
                str(python), "-m", "pip", "install", "--disable-pip-version-check",
                "--no-input", "--retries", "1", "--timeout", "15", *PEER_REQUIREMENTS,
            ],
            _PIP_TIMEOUT_S,
            f"install {' '.join(PEER_REQUIREMENTS)}",
        ),
    )  # fmt: skip
    for command, timeout, what in steps:
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            shutil.rmtree(venv, ignore_errors=True)
            raise PeerUnavailableError(f"could not {what}: {error}") from error
        if done.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            said = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["?"]
            raise PeerUnavailableError(f"could not {what} (exit {done.returncode}: {said[0]})")


def _run(command: list[str]) -> str | None:
    """stdout of a short command, or None if it does not run or fails."""
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


# -- one round ----------------------------------------------------------------------------


@dataclass(slots=True)
class Figures:
    """What one engine did on one path of one round."""

    seconds: float
    commands: int
    trades: int
    taker_seconds: float | None = None  # sweeps, in memory: the taker segments alone
    taker_trades: int | None = None

    def rate(self, metric: str) -> float:
        if metric == "commands_per_s":
            return self.commands / self.seconds
        if metric == "fills_per_s":
            return self.trades / self.seconds
        assert metric == "taker_fills_per_s", metric
        assert self.taker_seconds is not None and self.taker_trades is not None
        return self.taker_trades / self.taker_seconds

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seconds": round(self.seconds, 4),
            "commands": self.commands,
            "trades": self.trades,
            "commands_per_s": round(self.rate("commands_per_s")),
            "fills_per_s": round(self.rate("fills_per_s")),
        }
        if self.taker_seconds is not None:
            out["taker_fills_per_s"] = round(self.rate("taker_fills_per_s"))
        return out


@dataclass(slots=True)
class RoundResult:
    seed: int
    first: str
    commands: int
    trades: int
    setup_orders: int
    paths: dict[str, dict[str, Figures]] = field(default_factory=dict)  # path -> engine -> figs
    peer_resting_orders: int = 0
    peer_book_digest: str = ""
    peer_wal: dict[str, Any] = field(default_factory=dict)  # batches, bytes written


def run_round(
    env: PeerEnvironment, workload: str, commands: int, seed: int, *, peer_first: bool, wal: bool
) -> RoundResult:
    stream = build_stream(workload, commands, seed)
    with tempfile.TemporaryDirectory(prefix="crossbook-peers-") as folder:
        path = Path(folder) / f"{workload}.jsonl"
        neutral = write_neutral(path, workload, seed, stream)
        result = RoundResult(
            seed,
            "peer" if peer_first else "crossbook",
            stream.command_count,
            stream.expected_trades,
            neutral.setup_orders,
        )
        runs: list[Callable[[], None]] = [
            lambda: _crossbook(stream, result, durable_too=wal),
            lambda: _peer(env, path, result, wal=wal),
        ]
        for run_one in reversed(runs) if peer_first else runs:
            run_one()
    if final_book_digest(stream) != result.peer_book_digest:
        raise RunDivergedError(
            f"{workload}, seed {seed}: the peer's final book differs from crossbook's "
            "(orders, prices, remaining quantities or queue order): the mapping is not faithful"
        )
    return result


def final_book_digest(stream: Stream) -> str:
    """Crossbook's book after the whole stream (an untimed replay), as `peer_driver` digests it."""
    exchange = Exchange()
    for command in stream.setup:
        exchange.execute(command)
    for segment in stream.segments:
        for command in segment.commands:
            exchange.execute(command)
    book = exchange.market(streams.SYMBOL).book.l3()
    return peer_driver.book_digest(
        (side.value, price_ticks, order_id, remaining_lots)
        for side, levels in book.items()
        for price_ticks, orders in levels
        for order_id, remaining_lots in orders
    )


def _crossbook(stream: Stream, result: RoundResult, *, durable_too: bool) -> None:
    try:
        (figures,) = engine.bench_stream(stream, 1, "tuned")
    except engine.StreamMisbehavedError as error:
        raise RunDivergedError(f"crossbook: {error}") from error
    total = figures.total()
    memory = Figures(total.elapsed_ns / 1e9, total.commands, total.trades)
    if "sweep" in figures.parts:
        takers = figures.parts["sweep"]
        memory.taker_seconds, memory.taker_trades = takers.elapsed_ns / 1e9, takers.trades
    result.paths.setdefault("memory", {})["crossbook"] = memory
    if durable_too:
        try:
            run = asyncio.run(
                durable._run_once(
                    "sqlite",
                    stream,
                    DURABLE_WINDOW,
                    DURABLE_BATCH_MAX,
                    durable.DEFAULT_PG_ADMIN_URL,
                )
            )
        except RuntimeError as error:
            raise RunDivergedError(f"crossbook durable: {error}") from error
        _same_trades("crossbook durable", run.trades, result.trades)
        figures_durable = Figures(run.seconds, run.commands, run.trades)
        result.paths.setdefault("durable", {})["crossbook"] = figures_durable


def _peer(env: PeerEnvironment, path: Path, result: RoundResult, *, wal: bool) -> None:
    arguments = ["replay", str(path), "--gc-gen0-threshold", str(engine.GC_GEN0_THRESHOLD)]
    report = run_driver(env, [*arguments, *([] if wal else ["--no-wal"])])
    memory = report["memory"]
    if memory["rejected"]:
        raise RunDivergedError(f"the peer rejected {memory['rejected']} commands of the stream")
    parts = memory["parts"]
    figures = Figures(
        sum(p["ns"] for p in parts.values()) / 1e9,
        sum(p["commands"] for p in parts.values()),
        sum(p["trades"] for p in parts.values()),
    )
    if "sweep" in parts:
        figures.taker_seconds, figures.taker_trades = (
            parts["sweep"]["ns"] / 1e9,
            parts["sweep"]["trades"],
        )
    _same_trades("the peer in memory", figures.trades, result.trades)
    result.paths.setdefault("memory", {})["peer"] = figures
    result.peer_resting_orders = memory["resting_orders"]
    result.peer_book_digest = memory["book_digest"]
    if wal:
        log = report["wal"]
        _same_trades("the peer with its WAL", log["trades"], result.trades)
        result.peer_wal = {k: log[k] for k in ("batches", "batch_max", "fsync", "wal_bytes")}
        result.paths.setdefault("durable", {})["peer"] = Figures(
            log["ns"] / 1e9, log["commands"], log["trades"]
        )


def run_driver(env: PeerEnvironment, arguments: list[str]) -> dict[str, Any]:
    """Run `peer_driver` with the peer's Python (isolated: no crossbook, no PYTHONPATH)."""
    command = [str(env.python), "-I", peer_driver.__file__, *arguments]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=_DRIVER_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise RunDivergedError(f"the peer driver ran past {_DRIVER_TIMEOUT_S} s") from error
    if done.returncode != 0:
        raise RunDivergedError(
            f"the peer driver failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
        )
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def _same_trades(who: str, trades: int, expected: int) -> None:
    if trades != expected:
        raise RunDivergedError(
            f"{who} made {trades:,} trades where crossbook made {expected:,}: the engines "
            "did not do the same work, so their figures are not compared"
        )


def run_native_flow(env: PeerEnvironment, commands: int, seed: int, *, wal: bool) -> dict[str, Any]:
    """The peer on its own generator (a reference, not compared with crossbook)."""
    arguments = ["native-flow", "--commands", str(commands), "--seed", str(seed)]
    arguments += ["--accounts", str(PEER_FLOW_ACCOUNTS)]
    arguments += ["--gc-gen0-threshold", str(engine.GC_GEN0_THRESHOLD)]
    report = run_driver(env, [*arguments, *([] if wal else ["--no-wal"])])
    part = report["memory"]["parts"]["stream"]
    out: dict[str, Any] = {
        "seed": seed,
        "commands": part["commands"],
        "trades": part["trades"],
        "rejected": report["memory"]["rejected"],
        "memory_commands_per_s": round(part["commands"] / (part["ns"] / 1e9)),
    }
    if wal:
        log = report["wal"]
        out["wal_commands_per_s"] = round(log["commands"] / (log["ns"] / 1e9))
    return out


# -- the whole run --------------------------------------------------------------------------

# the figure compared on each path: commands/s, except the sweeps' fill rates
HEADLINE = {
    "mixed": {"memory": "commands_per_s", "durable": "commands_per_s"},
    "peer-flow": {"memory": "commands_per_s", "durable": "commands_per_s"},
    "sweeps": {"memory": "taker_fills_per_s", "durable": "fills_per_s"},
}
PATH_NAMES = {"memory": "in memory", "durable": "durable: SQLite | WAL"}


def run(
    workloads: list[str],
    commands: int,
    rounds: int,
    seed: int,
    peer_python: str,
    as_json: bool,
    *,
    durable_too: bool = True,
) -> int:
    """Run the comparison and print it; 0 also when the peer cannot run here (skipped)."""
    progress = Console(stderr=True, quiet=as_json)
    try:
        env = prepare_peer(peer_python, progress)
    except PeerUnavailableError as error:
        return _skip(str(error), as_json)
    load_before = _load_average()
    results: dict[str, list[RoundResult]] = {w: [] for w in workloads}
    native: list[dict[str, Any]] = []
    try:
        for index in range(rounds):
            round_seed = seed + index
            for workload in workloads:
                progress.print(f"round {index + 1}/{rounds}: {workload} (seed {round_seed})")
                result = run_round(
                    env, workload, commands, round_seed, peer_first=index % 2 == 1, wal=durable_too
                )
                results[workload].append(result)
            if "peer-flow" in workloads:
                native.append(run_native_flow(env, commands, round_seed, wal=durable_too))
    except RunDivergedError as error:
        sys.stderr.write(f"crossbook bench peers: {error}\n")
        return 1
    report = _report(env, results, native, commands, rounds, seed)
    report["load_average_1m"] = {"before": load_before, "after": _load_average()}
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        _print_report(report)
    return 0


def _skip(reason: str, as_json: bool) -> int:
    message = f"crossbook bench peers: skipped: {reason}"
    if as_json:
        sys.stdout.write(
            json.dumps({"benchmark": "crossbook bench peers", "skipped": reason}) + "\n"
        )
    else:
        Console(stderr=True).print(message, markup=False, highlight=False)
    return 0


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _report(
    env: PeerEnvironment,
    results: dict[str, list[RoundResult]],
    native: list[dict[str, Any]],
    commands: int,
    rounds: int,
    seed: int,
) -> dict[str, Any]:
    workloads: dict[str, Any] = {}
    for workload, per_round in results.items():
        entry: dict[str, Any] = {
            "commands": [r.commands for r in per_round],
            "fills": [r.trades for r in per_round],
            "setup_orders": [r.setup_orders for r in per_round],
            "peer_resting_orders_at_end": [r.peer_resting_orders for r in per_round],
            "first": [r.first for r in per_round],
        }
        if per_round[0].peer_wal:
            entry["peer_wal"] = [r.peer_wal for r in per_round]
        for path in ("memory", "durable"):
            if path in per_round[0].paths:
                entry[path] = _path_report(per_round, path, HEADLINE[workload][path])
        workloads[workload] = entry
    report: dict[str, Any] = {
        "benchmark": "crossbook bench peers",
        "peer": {
            "package": PEER_PACKAGE,
            "version": PEER_VERSION,
            "requirements": list(PEER_REQUIREMENTS),
            "python": env.base_version,
            "venv": str(env.venv),
        },
        "crossbook_python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "commands_requested": commands,
        "rounds": rounds,
        "seeds": [seed + i for i in range(rounds)],
        "statistic": "per-round figures, their median; ratios crossbook/peer per round, median",
        "paths": {
            "memory": "crossbook: bench engine's timed run after a warm-up; peer: "
            "MatchingEngine.process after a warm-up; gc frozen, gen-0 threshold "
            f"{engine.GC_GEN0_THRESHOLD:,} on both",
            "durable": "crossbook: bench durable's run on SQLite (synchronous=FULL, window "
            f"{DURABLE_WINDOW:,}, batches <= {DURABLE_BATCH_MAX:,}); peer: Journal with "
            f"fsync, {PEER_WAL_BATCH} commands per group commit, no snapshots",
        },
        "workloads": workloads,
    }
    if native:
        report["peer_native_flow"] = {
            "what": "the peer on its own generator (order_flow, 1,000 accounts); its cancels "
            "may name filled orders, rejected as unknown: not run by crossbook",
            "rounds": native,
            "memory_commands_per_s_median": statistics.median(
                n["memory_commands_per_s"] for n in native
            ),
        }
        if "wal_commands_per_s" in native[0]:
            report["peer_native_flow"]["wal_commands_per_s_median"] = statistics.median(
                n["wal_commands_per_s"] for n in native
            )
    return report


def _path_report(per_round: list[RoundResult], path: str, metric: str) -> dict[str, Any]:
    crossbook = [r.paths[path]["crossbook"] for r in per_round]
    peer = [r.paths[path]["peer"] for r in per_round]
    ours = [f.rate(metric) for f in crossbook]
    theirs = [f.rate(metric) for f in peer]
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    return {
        "metric": metric,
        "crossbook": {
            "per_round": [round(x) for x in ours],
            "median": round(statistics.median(ours)),
        },
        "peer": {
            "per_round": [round(x) for x in theirs],
            "median": round(statistics.median(theirs)),
        },
        "ratio_crossbook_to_peer": {
            "per_round": [round(x, 3) for x in ratios],
            "median": round(statistics.median(ratios), 3),
        },
        "crossbook_figures": [f.as_dict() for f in crossbook],
        "peer_figures": [f.as_dict() for f in peer],
    }


_METRIC_LABELS = {
    "commands_per_s": "commands/s",
    "fills_per_s": "fills/s",
    "taker_fills_per_s": "taker fills/s",
}


def _print_report(report: dict[str, Any]) -> None:
    peer = report["peer"]
    table = Table(
        title=(
            f"crossbook (Python {report['crossbook_python']}) vs {peer['package']} "
            f"{peer['version']} (Python {peer['python']}) · same streams · "
            f"{report['rounds']} interleaved rounds, seeds {report['seeds'][0]}.."
            f"{report['seeds'][-1]} · {report['cpu_count']} CPUs"
        )
    )
    for column in ("workload", "path", "figure"):
        table.add_column(column, no_wrap=True, min_width=len(column))
    for column in ("crossbook", "peer", "crossbook/peer"):
        table.add_column(column, justify="right", no_wrap=True, min_width=len(column))
    for column in ("crossbook per round", "peer per round", "ratio per round"):
        table.add_column(column, justify="right", style="dim")  # wraps in a narrow terminal
    for workload, entry in report["workloads"].items():
        for path in ("memory", "durable"):
            if path not in entry:
                continue
            figures = entry[path]
            ours, theirs = figures["crossbook"], figures["peer"]
            ratio = figures["ratio_crossbook_to_peer"]
            table.add_row(
                workload if path == "memory" else "",
                PATH_NAMES[path],
                _METRIC_LABELS[figures["metric"]],
                _k(ours["median"]),
                _k(theirs["median"]),
                f"{ratio['median']:.2f}",
                " ".join(_k(x) for x in ours["per_round"]),
                " ".join(_k(x) for x in theirs["per_round"]),
                " ".join(f"{x:.2f}" for x in ratio["per_round"]),
            )
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 200)
    console.print(table)
    lines = [f"{w}: {_counts(e)}" for w, e in report["workloads"].items()]
    native = report.get("peer_native_flow")
    if native:
        wal = native.get("wal_commands_per_s_median")
        rejected = "/".join(f"{n['rejected']:,}" for n in native["rounds"])
        lines.append(
            "reference, not compared: the peer on its own order_flow generator, "
            f"{_k(native['memory_commands_per_s_median'])} commands/s in memory"
            + (f", {_k(wal)} with its WAL" if wal is not None else "")
            + f" ({rejected} of its cancels rejected per round: filled or cancelled before)"
        )
    load = report["load_average_1m"]
    lines += [
        f"in memory: {report['paths']['memory']}",
        f"durable: {report['paths']['durable']}",
        "figures: medians of the rounds; ratio: median of the per-round ratios · "
        f"load average (1 min) {load['before']} before, {load['after']} after · "
        "the peer has no balances, fees or ledger",
    ]
    for line in lines:
        console.print(line, markup=False, highlight=False)


def _counts(entry: dict[str, Any]) -> str:
    commands = "/".join(f"{c:,}" for c in entry["commands"])
    fills = "/".join(f"{t:,}" for t in entry["fills"])
    setup = entry["setup_orders"][0]
    return f"{commands} timed commands, {fills} fills per round, {setup:,} orders pre-filled"


def _k(value: float) -> str:
    return f"{value / 1000:,.1f}K" if value >= 10_000 else f"{value:,.0f}"
