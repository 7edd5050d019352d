"""Durable engine benchmark: a mixed stream through the engine loop and the SQL store.

What is measured: commands pushed through `Engine.submit` with commit-before-ack
(every answer waits for the batch's transaction), on a fresh database per run:
durable commands/s, trades/s, and the batch commit latency p50/p99 with the mean
batch size. Clients keep up to `window` commands in flight, enough for group
commit to form large batches.

What is not: stream generation, database creation and migration, and the set-up
commands (assets, market, deposits, the pre-filled book) happen before the clock
starts. The stream is `mixed` from `streams` (~60 % adds, ~30 % cancels, ~10 %
takers); the run is refused if any command was rejected, since the stream
predicts every order id.

Run: `crossbook bench durable [--database sqlite|postgres] [--commands N] [--runs R]`.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console
from rich.table import Table

from crossbook.adapters.sql.store import SqlStore
from crossbook.bench import streams
from crossbook.domain import Command, DomainError, Event, TradeExecuted
from crossbook.domain.exchange import BalanceState
from crossbook.engine.engine import BatchStats, Engine, EngineLimits

DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


class NullPublisher:
    def publish(self, events: Sequence[Event], balances: Sequence[BalanceState]) -> None:
        pass


@dataclass(slots=True)
class DurableRun:
    seconds: float
    commands: int
    trades: int
    batches: list[BatchStats] = field(default_factory=list)


def run(
    databases: list[str],
    commands: int,
    runs: int,
    seed: int,
    window: int,
    batch_max: int,
    pg_admin_url: str,
    as_json: bool,
) -> None:
    stream = streams.build("mixed", commands, seed)
    report: dict[str, Any] = {
        "scenario": "mixed",
        "commands": stream.command_count,
        "runs": runs,
        "window": window,
        "batch_max": batch_max,
        "databases": {},
    }
    for database in databases:
        figures = [
            asyncio.run(_run_once(database, stream, window, batch_max, pg_admin_url))
            for _ in range(runs)
        ]
        report["databases"][database] = _summary(figures)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        _print_table(report)


async def _run_once(
    database: str, stream: streams.Stream, window: int, batch_max: int, pg_admin_url: str
) -> DurableRun:
    async with fresh_database(database, pg_admin_url) as url:
        store = await SqlStore.open(url)
        batches: list[BatchStats] = []
        engine = Engine(
            store,
            NullPublisher(),
            limits=EngineLimits(queue_capacity=window, batch_max_commands=batch_max),
            on_batch=batches.append,
        )
        await engine.start()
        try:
            await _submit_all(engine, stream.setup, window)
            batches.clear()
            timed = [c for segment in stream.segments for c in segment.commands]
            started = time.perf_counter()
            results = await _submit_all(engine, timed, window)
            seconds = time.perf_counter() - started
        finally:
            await engine.stop()
            await store.close()
    trades = sum(isinstance(e, TradeExecuted) for events in results for e in events)
    return DurableRun(seconds, len(timed), trades, batches)


async def _submit_all(engine: Engine, commands: list[Command], window: int) -> list[list[Event]]:
    """Submit in order with at most `window` in flight; refuse if any command was rejected."""
    results: list[list[Event]] = []
    in_flight: list[asyncio.Task[list[Event]]] = []
    for command in commands:
        if len(in_flight) == window:
            results.append(await _settled(in_flight.pop(0)))
        in_flight.append(asyncio.ensure_future(engine.submit(command)))
    for task in in_flight:
        results.append(await _settled(task))
    return results


async def _settled(task: asyncio.Task[list[Event]]) -> list[Event]:
    try:
        return await task
    except DomainError as error:
        raise RuntimeError(f"the stream expects no rejection, got {error}") from error


@asynccontextmanager
async def fresh_database(database: str, pg_admin_url: str) -> AsyncIterator[str]:
    if database == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{Path(folder) / 'bench.db'}"
        return
    assert database == "postgres", database
    name = f"crossbook_bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield pg_admin_url.rsplit("/", 1)[0] + f"/{name}"
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def _summary(figures: list[DurableRun]) -> dict[str, Any]:
    commit_ms = sorted(b.commit_ms for f in figures for b in f.batches)
    sizes = [b.commands for f in figures for b in f.batches]
    per_run = [f.commands / f.seconds for f in figures]
    return {
        "commands_per_s": {
            "median": statistics.median(per_run),
            "min": min(per_run),
            "max": max(per_run),
        },
        "trades_per_s": statistics.median(f.trades / f.seconds for f in figures),
        "commit_ms_p50": _percentile(commit_ms, 0.50),
        "commit_ms_p99": _percentile(commit_ms, 0.99),
        "batch_commands_mean": statistics.fmean(sizes) if sizes else 0.0,
        "batches": len(sizes),
        "seconds_per_run": [round(f.seconds, 3) for f in figures],
    }


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def _print_table(report: dict[str, Any]) -> None:
    table = Table(
        title=f"durable engine, mixed stream of {report['commands']:,} commands, "
        f"{report['runs']} runs (median, min-max)"
    )
    for column in (
        "database",
        "commands/s",
        "trades/s",
        "commit p50 ms",
        "commit p99 ms",
        "mean batch",
    ):
        table.add_column(column, justify="right")
    for database, s in report["databases"].items():
        rate = s["commands_per_s"]
        table.add_row(
            database,
            f"{rate['median']:,.0f} ({rate['min']:,.0f}-{rate['max']:,.0f})",
            f"{s['trades_per_s']:,.0f}",
            f"{s['commit_ms_p50']:.1f}",
            f"{s['commit_ms_p99']:.1f}",
            f"{s['batch_commands_mean']:,.0f}",
        )
    Console().print(table)
