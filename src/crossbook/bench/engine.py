"""Engine benchmark: how fast the pure domain executes commands (``crossbook bench engine``).

What is measured: `Exchange.execute` over a whole pre-generated command stream,
through the public entry point and the full domain (validation, funds
reservation, matching, settlement, events, balance-change events). The clock
(`time.perf_counter_ns`) runs around the loop that calls `execute` once per
command, counts the events it returns and counts `DomainError`s; nothing else.

What is not measured: generating the streams (seeded, done before any timing,
see `crossbook.bench.streams`), the set-up of each run (assets, market, deposits,
pre-filled orders), the gateway (decimal parsing, auth), persistence, publishing,
the engine loop and its batching. Events are counted and dropped, not serialised.

Each scenario is generated once, then run `1 + runs` times on a fresh `Exchange`
each time: one untimed warm-up run (it also checks the domain invariants at its
end), then `runs` timed runs. After every run the harness verifies that no
command was rejected, that the exchange assigned exactly the predicted order
ids and made exactly the expected trades; a stream that does not run as
designed stops the benchmark instead of reporting figures about rejections.

Garbage collection in the timed section (the default policy, "tuned"): after
set-up the heap is collected and frozen (`gc.freeze()`), and the generation-0
threshold is raised from 700 to `GC_GEN0_THRESHOLD`; both are undone after the
run. An engine process can do the same. Policy "default" leaves the collector
alone.

Figures per scenario (median, min and max over the timed runs): commands/s,
fills/s (trades per second) and events/s. `sweep` also reports its taker
segments alone ("sweep · takers"): the fill rate of large orders sweeping
many levels, without the time spent building the book. The title (and
``domain_build`` in JSON) says which build of the domain ran: compiled (mypyc)
or pure Python, and why (`crossbook._compiled`); ``CROSSBOOK_PURE_PYTHON=1``
runs the source.

Run it:

    crossbook bench engine                       # all scenarios, table
    crossbook bench engine --scenario mixed --runs 5 --commands 200000
    crossbook bench engine --json > bench.json   # one JSON document
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from crossbook._compiled import current_build
from crossbook.bench import streams
from crossbook.bench.streams import Stream
from crossbook.domain import DomainError, Exchange
from crossbook.domain.invariants import check_all

GC_GEN0_THRESHOLD = 50_000
GC_POLICIES = ("tuned", "default")
WARMUP_RUNS = 1


@dataclass(slots=True)
class Part:
    """Totals of the segments of one label in one run."""

    elapsed_ns: int = 0
    commands: int = 0
    trades: int = 0
    events: int = 0


@dataclass(slots=True)
class RunFigures:
    parts: dict[str, Part] = field(default_factory=dict)

    def total(self) -> Part:
        total = Part()
        for part in self.parts.values():
            total.elapsed_ns += part.elapsed_ns
            total.commands += part.commands
            total.trades += part.trades
            total.events += part.events
        return total


class StreamMisbehavedError(RuntimeError):
    """The stream did not run as designed (a rejection, an unexpected id or trade count)."""


def run(
    scenarios: list[str],
    commands: int,
    runs: int,
    seed: int,
    as_json: bool,
    *,
    gc_policy: str = "tuned",
) -> None:
    """Run each scenario (`runs` timed runs after a warm-up) and print the figures."""
    if gc_policy not in GC_POLICIES:
        raise ValueError(f"unknown gc policy {gc_policy!r}")
    progress = Console(stderr=True, quiet=as_json)
    load_before = _load_average()
    results: dict[str, list[RunFigures]] = {}
    stream_sizes: dict[str, int] = {}
    for scenario in scenarios:
        started = time.perf_counter()
        stream = streams.build(scenario, commands, seed)
        stream_sizes[scenario] = stream.command_count
        progress.print(
            f"{scenario}: {stream.command_count:,} commands generated in "
            f"{time.perf_counter() - started:.1f} s; warm-up and {runs} timed runs"
        )
        try:
            results[scenario] = bench_stream(stream, runs, gc_policy)
        except StreamMisbehavedError as error:
            raise SystemExit(f"crossbook bench engine: {scenario}: {error}") from error
    report = _report(results, stream_sizes, commands, runs, seed, gc_policy)
    report["load_average_1m"] = {"before": load_before, "after": _load_average()}
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        _print_table(report)


def bench_stream(stream: Stream, runs: int, gc_policy: str) -> list[RunFigures]:
    """Warm up, then time `runs` runs of `stream`, each on a fresh exchange."""
    for _ in range(WARMUP_RUNS):
        _run_once(stream, gc_policy, check_invariants=True)
    return [_run_once(stream, gc_policy, check_invariants=False) for _ in range(runs)]


def _run_once(stream: Stream, gc_policy: str, *, check_invariants: bool) -> RunFigures:
    exchange = Exchange()
    execute = exchange.execute
    for command in stream.setup:
        execute(command)
    figures = RunFigures()
    rejected = 0
    first_error: DomainError | None = None
    with _collector(gc_policy):
        for segment in stream.segments:
            trades_before = exchange.next_trade_id
            events = 0
            # -- timed: only the calls into the domain ----------------------------
            started = time.perf_counter_ns()
            for command in segment.commands:
                try:
                    events += len(execute(command))
                except DomainError as error:
                    rejected += 1
                    first_error = first_error or error
            elapsed = time.perf_counter_ns() - started
            # -----------------------------------------------------------------------
            part = figures.parts.setdefault(segment.label, Part())
            part.elapsed_ns += elapsed
            part.commands += len(segment.commands)
            part.trades += exchange.next_trade_id - trades_before
            part.events += events
    _verify(stream, exchange, figures, rejected, first_error)
    if check_invariants:
        check_all(exchange)
    del exchange, execute
    gc.collect()  # the books are cyclic (levels <-> orders): free them before the next run
    return figures


@contextmanager
def _collector(gc_policy: str) -> Iterator[None]:
    if gc_policy == "default":
        yield
        return
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _verify(
    stream: Stream,
    exchange: Exchange,
    figures: RunFigures,
    rejected: int,
    first_error: DomainError | None,
) -> None:
    if rejected:
        raise StreamMisbehavedError(
            f"{rejected} of {stream.command_count:,} commands were rejected "
            f"(first: {first_error}); the figures would measure rejections"
        )
    orders = exchange.next_order_id - 1
    if orders != stream.expected_orders:
        raise StreamMisbehavedError(
            f"{orders:,} orders accepted, the stream predicted {stream.expected_orders:,}"
        )
    trades = figures.total().trades
    if trades != stream.expected_trades:
        raise StreamMisbehavedError(
            f"{trades:,} trades made, the stream expected {stream.expected_trades:,}"
        )


# -- reporting ---------------------------------------------------------------------------


def _load_average() -> float | None:
    """The 1-minute load average (other work on the machine skews the figures), if known."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # not available on this platform
        return None


def _rates(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def _part_report(parts: list[Part]) -> dict[str, Any]:
    seconds = [p.elapsed_ns / 1e9 for p in parts]
    first = parts[0]
    return {
        "commands": first.commands,
        "trades": first.trades,
        "events": first.events,
        "seconds": _rates(seconds),
        "seconds_per_run": [round(x, 4) for x in seconds],
        "commands_per_s": _rates([p.commands / s for p, s in zip(parts, seconds, strict=True)]),
        "fills_per_s": _rates([p.trades / s for p, s in zip(parts, seconds, strict=True)]),
        "events_per_s": _rates([p.events / s for p, s in zip(parts, seconds, strict=True)]),
    }


def _report(
    results: dict[str, list[RunFigures]],
    stream_sizes: dict[str, int],
    commands: int,
    runs: int,
    seed: int,
    gc_policy: str,
) -> dict[str, Any]:
    scenarios: dict[str, Any] = {}
    for scenario, figures in results.items():
        entry = _part_report([f.total() for f in figures])
        entry["rejected"] = 0
        if scenario == "sweep":
            entry["takers_only"] = _part_report([f.parts["sweep"] for f in figures])
        scenarios[scenario] = entry
    return {
        "benchmark": "crossbook bench engine",
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "domain_build": current_build().describe(),  # compiled (mypyc) or pure Python, and why
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "commands_requested": commands,
        "commands_per_stream": stream_sizes,
        "seed": seed,
        "runs": runs,
        "warmup_runs": WARMUP_RUNS,
        "statistic": "median, min and max over the timed runs",
        "gc": _gc_description(gc_policy),
        "scenarios": scenarios,
    }


def _gc_description(gc_policy: str) -> str:
    if gc_policy == "default":
        return "default collector settings"
    return (
        f"gc.freeze() after set-up; generation-0 threshold {GC_GEN0_THRESHOLD:,} "
        f"(default {gc.get_threshold()[0]:,}) during the timed section"
    )


def _fmt_rate(rates: dict[str, float]) -> tuple[str, str]:
    return f"{rates['median']:,.0f}", f"{rates['min']:,.0f} - {rates['max']:,.0f}"


def _print_table(report: dict[str, Any]) -> None:
    load = report["load_average_1m"]
    table = Table(
        title=(
            f"crossbook engine · domain {report['domain_build']} · Python {report['python']} · "
            f"{report['cpu_count']} CPUs · seed {report['seed']} · "
            f"median of {report['runs']} timed runs"
        ),
        caption=(
            f"{report['warmup_runs']} untimed warm-up run per scenario · GC: {report['gc']} · "
            f"load average (1 min) {load['before']} before, {load['after']} after · "
            "no command was rejected"
        ),
    )
    table.add_column("scenario", no_wrap=True)
    table.add_column("commands", justify="right", no_wrap=True)
    table.add_column("commands/s", justify="right", no_wrap=True)
    table.add_column("min - max", justify="right", style="dim", no_wrap=True)
    table.add_column("fills/s", justify="right", no_wrap=True)
    table.add_column("min - max", justify="right", style="dim", no_wrap=True)
    table.add_column("events/s", justify="right", no_wrap=True)
    table.add_column("fills/cmd", justify="right", no_wrap=True)
    rows: list[tuple[str, dict[str, Any]]] = []
    for scenario, entry in report["scenarios"].items():
        rows.append((scenario, entry))
        if "takers_only" in entry:
            rows.append((f"{scenario} · takers", entry["takers_only"]))
    for name, entry in rows:
        commands_median, commands_range = _fmt_rate(entry["commands_per_s"])
        fills_median, fills_range = _fmt_rate(entry["fills_per_s"])
        table.add_row(
            name,
            f"{entry['commands']:,}",
            commands_median,
            commands_range,
            fills_median,
            fills_range,
            f"{entry['events_per_s']['median']:,.0f}",
            f"{entry['trades'] / entry['commands']:.2f}",
        )
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 132)
    console.print(table)
