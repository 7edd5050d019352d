"""Command-line interface for crossbook (the ``crossbook`` console script).

This module is part of the composition root: it may import any layer, but it
imports heavy or optional parts lazily, inside the command that needs them, so
``crossbook --help`` stays fast and a missing optional part breaks only its own
command.

Commands:
    crossbook serve          run the server (REST, WebSocket, operations endpoints)
    crossbook token          mint a JWT for a user (or --admin) with the configured secret
    crossbook user …         create / list users     } through a running server's
    crossbook deposit …      credit a balance        } admin API (the engine is the
    crossbook withdraw …     debit a balance         } only writer of money and
    crossbook market …       create / halt / resume  } markets)
    crossbook settlement …   list / show / replay the remote-wallet dead-letter queue
    crossbook holds …        list / void the remote-wallet holds nothing owns; status
    crossbook bench …        benchmarks (print figures; they assert nothing)
    crossbook loadtest       order entry over HTTP at a target rate (a benchmark too)
    crossbook wallet serve   run the external wallet service (a process and database of its own)
"""

import sys
from enum import StrEnum
from typing import Annotated

import structlog
import typer

from crossbook import __version__
from crossbook.cli_admin import (
    deposit,
    holds_app,
    market_app,
    settlement_app,
    token,
    user_app,
    withdraw,
)
from crossbook.cli_wallet import wallet_app

app = typer.Typer(
    name="crossbook",
    help="crossbook: spot-exchange trade engine.",
    no_args_is_help=True,
)
bench_app = typer.Typer(
    help="Run benchmarks. They print figures (ops/s, percentiles); they are not tests.",
    no_args_is_help=True,
)
app.add_typer(bench_app, name="bench")
app.add_typer(user_app, name="user")
app.add_typer(market_app, name="market")
app.add_typer(settlement_app, name="settlement")
app.add_typer(holds_app, name="holds")
app.add_typer(wallet_app, name="wallet")
app.command("deposit")(deposit)
app.command("withdraw")(withdraw)
app.command("token")(token)


class Scenario(StrEnum):
    """The command streams ``bench engine`` can replay."""

    ADD_ONLY = "add-only"
    CANCEL_HEAVY = "cancel-heavy"
    MIXED = "mixed"
    SWEEP = "sweep"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"crossbook {__version__}")
        raise typer.Exit


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """crossbook: spot-exchange trade engine."""
    # logs go to stderr: stdout carries results (tables, --json)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))


@bench_app.command("engine")
def bench_engine(
    scenario: Annotated[
        list[Scenario] | None,
        typer.Option(
            "--scenario",
            help="Scenario to run; repeat the option to run several. Default: all.",
            case_sensitive=False,
        ),
    ] = None,
    commands: Annotated[
        int,
        typer.Option("--commands", min=1, help="Number of commands in each generated stream."),
    ] = 200_000,
    runs: Annotated[
        int,
        typer.Option("--runs", min=1, help="Timed runs per scenario."),
    ] = 5,
    seed: Annotated[
        int,
        typer.Option("--seed", help="Seed of the command-stream generator."),
    ] = 42,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print results as JSON instead of a table."),
    ] = False,
) -> None:
    """Benchmark the matching engine on generated command streams."""
    from crossbook.bench import engine  # noqa: PLC0415 - lazy: only this command needs it

    chosen = scenario or list(Scenario)
    scenarios = list(dict.fromkeys(s.value for s in chosen))
    engine.run(scenarios=scenarios, commands=commands, runs=runs, seed=seed, as_json=as_json)


class Database(StrEnum):
    SQLITE = "sqlite"
    POSTGRES = "postgres"


@bench_app.command("durable")
def bench_durable(
    database: Annotated[
        list[Database] | None,
        typer.Option("--database", help="sqlite and/or postgres (repeatable). Default: both."),
    ] = None,
    commands: Annotated[int, typer.Option("--commands", min=1)] = 100_000,
    runs: Annotated[int, typer.Option("--runs", min=1)] = 3,
    seed: Annotated[int, typer.Option("--seed")] = 42,
    window: Annotated[
        int, typer.Option("--window", min=1, help="Commands in flight at once.")
    ] = 20_000,
    batch_max: Annotated[
        int, typer.Option("--batch-max", min=1, help="Most commands per commit.")
    ] = 5_000,
    pg_admin_url: Annotated[
        str, typer.Option("--pg-admin-url", help="Where fresh benchmark databases are made.")
    ] = "postgresql://postgres@127.0.0.1:5432/postgres",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Benchmark the durable engine: commit-before-ack through the SQL store."""
    from crossbook.bench import durable  # noqa: PLC0415 - lazy: only this command needs it

    chosen = list(dict.fromkeys(d.value for d in (database or list(Database))))
    durable.run(chosen, commands, runs, seed, window, batch_max, pg_admin_url, as_json)


class PeerWorkload(StrEnum):
    """The streams ``bench peers`` replays on crossbook and on its peer."""

    MIXED = "mixed"
    PEER_FLOW = "peer-flow"
    SWEEPS = "sweeps"
    ALL = "all"


@bench_app.command("peers")
def bench_peers(
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Interleaved rounds.")] = 3,
    commands: Annotated[
        int, typer.Option("--commands", min=1, help="Timed commands in each stream.")
    ] = 100_000,
    workload: Annotated[
        PeerWorkload, typer.Option("--workload", case_sensitive=False)
    ] = PeerWorkload.ALL,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the first round; each later round adds 1.")
    ] = 42,
    durable_too: Annotated[
        bool,
        typer.Option("--durable/--no-durable", help="Also compare the durable paths."),
    ] = True,
    peer_python: Annotated[
        str, typer.Option("--peer-python", help="A Python >= 3.12 for the peer (name or path).")
    ] = "python3.12",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Benchmark crossbook beside the peer engine matching-engine 0.1.1 on the same streams.

    Skips (exit 0) when the peer cannot be installed here.
    """
    from crossbook.bench import peers  # noqa: PLC0415 - lazy: only this command needs it

    chosen = list(peers.WORKLOADS) if workload is PeerWorkload.ALL else [workload.value]
    code = peers.run(chosen, commands, rounds, seed, peer_python, as_json, durable_too=durable_too)
    raise typer.Exit(code)


@bench_app.command("wallet")
def bench_wallet(
    database: Annotated[
        list[Database] | None,
        typer.Option("--database", help="sqlite and/or postgres (repeatable). Default: both."),
    ] = None,
    operations: Annotated[int, typer.Option("--operations", min=1)] = 2_000,
    runs: Annotated[int, typer.Option("--runs", min=1)] = 3,
    clients: Annotated[
        int,
        typer.Option(
            "--clients", min=0, help="Clients applying one after another (0: all at once)."
        ),
    ] = 0,
    pg_admin_url: Annotated[
        str, typer.Option("--pg-admin-url", help="Where fresh benchmark databases are made.")
    ] = "postgresql://postgres@127.0.0.1:5432/postgres",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Benchmark the wallet service: idempotent operations/s, each committed before it
    is answered."""
    from crossbook.bench import wallet  # noqa: PLC0415 - lazy: only this command needs it

    chosen = list(dict.fromkeys(d.value for d in (database or list(Database))))
    wallet.run(chosen, operations, runs, clients, pg_admin_url, as_json)


class FloodMode(StrEnum):
    READS = "reads"
    WS_SNAPSHOTS = "ws-snapshots"


@app.command("loadtest")
def loadtest(
    url: Annotated[
        str | None,
        typer.Option(
            "--url", help="A running server (default: http://<host>:<port> of the settings)."
        ),
    ] = None,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve", help="Start `crossbook serve` on a free port for the run, rate limit lifted."
        ),
    ] = False,
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="With --serve (default: a fresh SQLite file)."),
    ] = None,
    users: Annotated[
        int | None,
        typer.Option(
            "--users",
            min=1,
            help="Order-entry users (default 50; with --flood, enough for 20 requests/s each).",
        ),
    ] = None,
    rate: Annotated[
        float, typer.Option("--rate", min=0.1, help="Target order-entry requests/s.")
    ] = 100.0,
    duration: Annotated[
        float,
        typer.Option("--duration", min=0.1, help="Measured seconds (per phase with --flood)."),
    ] = 60.0,
    warmup: Annotated[
        float, typer.Option("--warmup", min=0.0, help="Unmeasured seconds first (per phase).")
    ] = 2.0,
    symbol: Annotated[
        str | None,
        typer.Option(
            "--symbol",
            help="An existing market (default: a fresh L<hex>/USDT; BTC/USDT with --flood).",
        ),
    ] = None,
    price: Annotated[
        str | None, typer.Option("--price", help="Reference price (default: from the market).")
    ] = None,
    connections: Annotated[
        int, typer.Option("--connections", min=1, help="Order-entry keep-alive connections.")
    ] = 32,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Client processes.")] = 1,
    max_in_flight: Annotated[
        int | None,
        typer.Option(
            "--max-in-flight",
            min=2,
            help="Unanswered requests before CLIENT_BEHIND (default 1000; with --flood, "
            "all of a stall as long as --timeout).",
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=0.1, help="Per request, seconds (default 10; --flood 30)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the request mix.")] = 42,
    profile: Annotated[
        bool,
        typer.Option("--profile", help="Also show where the server's time went (/metrics, CPU)."),
    ] = False,
    server_log_level: Annotated[
        str, typer.Option("--server-log-level", help="With --serve: the server's log level.")
    ] = "warning",
    flood: Annotated[
        FloodMode | None,
        typer.Option(
            "--flood",
            help="Benchmark order entry beside an attack: quiet then flood phases "
            "(reads: order-book GETs; ws-snapshots: WebSocket re-subscribes never read).",
        ),
    ] = None,
    flood_connections: Annotated[
        int | None,
        typer.Option(
            "--flood-connections", min=1, help="Attack connections (default: reads 200, ws 8)."
        ),
    ] = None,
    flood_depth: Annotated[
        int, typer.Option("--flood-depth", min=1, help="Levels per side each read asks for.")
    ] = 1_000,
    flood_source: Annotated[
        str | None,
        typer.Option(
            "--flood-source",
            help="Address the attack binds to (default 127.0.0.2 on loopback: another client).",
        ),
    ] = None,
    flood_workers: Annotated[
        int, typer.Option("--flood-workers", min=1, help="Attack client processes.")
    ] = 1,
    book_levels: Annotated[
        int,
        typer.Option(
            "--book-levels", min=0, help="With --flood: price levels built on the market first."
        ),
    ] = 3_000,
    rounds: Annotated[
        int, typer.Option("--rounds", min=1, help="With --flood: quiet + flood rounds.")
    ] = 1,
    server_pid: Annotated[
        int | None,
        typer.Option("--server-pid", help="With --flood --url: the server's pid, for its RSS."),
    ] = None,
    probe_rate: Annotated[
        float, typer.Option("--probe-rate", min=0.1, help="With --flood: /health probes/s.")
    ] = 10.0,
    probe_timeout: Annotated[
        float, typer.Option("--probe-timeout", min=0.1, help="With --flood: per probe, seconds.")
    ] = 2.0,
    max_server_rss_mb: Annotated[
        float,
        typer.Option(
            "--max-server-rss-mb", min=1.0, help="With --flood: stop the attack beyond this RSS."
        ),
    ] = 2_048.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Load-test order entry over HTTP: open-loop at a target rate, then figures and integrity.

    With --flood, order entry alone and then beside an attack (reads or ws-snapshots),
    with /health probes and the server's memory, for each phase.

    A benchmark, not a test: exit code 0 whatever the figures, 1 if the integrity
    check failed, 2 if the run could not happen.
    """
    if flood is not None:
        from crossbook.bench import flood as fl  # noqa: PLC0415 - lazy: only this mode needs it

        flood_options = fl.FloodOptions(
            mode=flood.value,
            url=url,
            serve=serve,
            database_url=database_url,
            server_log_level=server_log_level,
            server_pid=server_pid,
            symbol=symbol or fl.DEFAULT_SYMBOL,
            price=price,
            rate_per_s=rate,
            duration_s=duration,
            warmup_s=warmup,
            rounds=rounds,
            users=users,
            connections=connections,
            max_in_flight=max_in_flight,
            timeout_s=timeout or fl.FLOOD_TIMEOUT_S,
            probe_rate_per_s=probe_rate,
            probe_timeout_s=probe_timeout,
            flood_connections=flood_connections,
            flood_depth=flood_depth,
            flood_source=flood_source,
            flood_workers=flood_workers,
            book_levels=book_levels,
            max_server_rss_mb=max_server_rss_mb,
            as_json=as_json,
        )
        raise typer.Exit(fl.run(flood_options))

    from crossbook.bench import loadtest as lt  # noqa: PLC0415 - lazy: only this command needs it

    options = lt.LoadtestOptions(
        url=url,
        serve=serve,
        database_url=database_url,
        users=users or 50,
        rate_per_s=rate,
        duration_s=duration,
        warmup_s=warmup,
        symbol=symbol,
        price=price,
        connections=connections,
        workers=workers,
        max_in_flight=max_in_flight or lt.DEFAULT_MAX_IN_FLIGHT,
        timeout_s=timeout or 10.0,
        seed=seed,
        profile=profile,
        server_log_level=server_log_level,
        as_json=as_json,
    )
    raise typer.Exit(lt.run(options))


@app.command("serve")
def serve(
    host: Annotated[
        str | None, typer.Option("--host", help="Default: settings (127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="Default: settings (8080).")] = None,
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="Default: sqlite:///crossbook.db.")
    ] = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Also create two funded demo users (development).")
    ] = False,
) -> None:
    """Run the server: FastAPI on uvicorn, one process, the engine inside it.

    An empty database gets the default markets (BTC/USDT, ETH/USDT). Settings come
    from CROSSBOOK_* environment variables and the file named by CROSSBOOK_CONFIG_FILE.
    """
    from crossbook import server  # noqa: PLC0415 - lazy: only this command needs it

    server.run(host=host, port=port, database_url=database_url, demo=demo)
