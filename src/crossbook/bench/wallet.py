"""Wallet service benchmark: idempotent operations per second through `WalletService.apply`.

What is measured: `operations` distinct operations (alternately a deposit and a
credit, to 100 accounts, one asset) submitted at once, or by `clients` clients
each applying one after another, on a fresh database per run; every one is
committed before it is answered (group commit: operations queued together share
a transaction). Figures: operations/s per run and their median.

What is not: HTTP (the service is called in-process), database creation and
migration, and loading the service.

Run: `crossbook bench wallet [--database sqlite|postgres] [--operations N] [--runs R]`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import time
from typing import Any

import structlog
from rich.console import Console
from rich.table import Table

from crossbook.bench.durable import fresh_database
from crossbook.wallet_protocol import WalletOp, WalletOpKind
from crossbook.wallet_service.service import WalletService
from crossbook.wallet_service.store import WalletStore

ACCOUNTS = 100


def run(
    databases: list[str],
    operations: int,
    runs: int,
    clients: int,
    pg_admin_url: str,
    as_json: bool,
) -> None:
    # one log line per operation at info would be measured too
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    results: dict[str, Any] = {}
    for database in databases:
        rates = [
            asyncio.run(_one_run(database, n, operations, clients, pg_admin_url))
            for n in range(runs)
        ]
        results[database] = {
            "operations_per_s": {"median": statistics.median(rates), "runs": rates},
            "operations": operations,
            "clients": clients or "all at once",
        }
    if as_json:
        print(json.dumps(results, indent=2))
        return
    table = Table(title="crossbook bench wallet (in-process WalletService, group commit)")
    for column in ("database", "operations/s (median)", "runs", "submitted"):
        table.add_column(column)
    for database, figures in results.items():
        rates = figures["operations_per_s"]
        table.add_row(
            database,
            f"{rates['median']:,.0f}",
            " ".join(f"{r:,.0f}" for r in rates["runs"]),
            f"{operations:,} by {figures['clients']}",
        )
    Console().print(table)


async def _one_run(
    database: str, run_number: int, operations: int, clients: int, pg_admin_url: str
) -> float:
    ops = [
        WalletOp(
            f"bench:{run_number}:{n}",
            WalletOpKind.DEPOSIT if n % 2 == 0 else WalletOpKind.CREDIT,
            n % ACCOUNTS,
            "USDT",
            1 + n,
        )
        for n in range(operations)
    ]
    async with fresh_database(database, pg_admin_url) as url:
        store = await WalletStore.open(url)
        try:
            service = await WalletService.open(store)
            started = time.perf_counter()
            if clients:
                await asyncio.gather(*(_client(service, ops[c::clients]) for c in range(clients)))
            else:
                await asyncio.gather(*(service.apply(op) for op in ops))
            elapsed = time.perf_counter() - started
        finally:
            await store.close()
    return operations / elapsed


async def _client(service: WalletService, ops: list[WalletOp]) -> None:
    for op in ops:
        await service.apply(op)
