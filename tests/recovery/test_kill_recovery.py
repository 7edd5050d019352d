"""SIGKILL the engine while it commits under load; restart; prove nothing was lost.

For each database (SQLite and PostgreSQL) a worker process trades with 32
concurrent clients and prints every answer it gives. The test kills it with
SIGKILL after a random number of answers, at least `KILLS` times in a row, and
after each kill checks the database directly:
- every acknowledged order and trade is there (and the committed sequence is at
  least the highest acknowledged one): no acknowledged work is lost;
- the event log is gap-free and agrees with the counters; every order's filled
  quantity equals the sum of its trades: nothing unacknowledged is half-applied;
- the state restored from the store passes every invariant.
The next worker recovers from that state and carries on.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from crossbook.adapters.sql.store import SqlStore
from crossbook.domain.invariants import check_all
from crossbook.domain.snapshot import restore

KILLS = int(os.environ.get("CROSSBOOK_KILLS", "20"))
WORKER = Path(__file__).with_name("kill_worker.py")
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
READY_TIMEOUT_S = 60.0
ACK_TIMEOUT_S = 30.0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'kill.db'}"
        return
    name = f"crossbook_kill_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def run_until_killed(url: str, seed: int, acks_before_kill: int) -> list[dict[str, Any]]:
    """Start a worker, SIGKILL it after `acks_before_kill` answers; return every answer seen.

    Answers are read straight from the pipe; only complete lines count (a line cut by
    the kill was never fully received, so it was never an acknowledgement).
    """
    worker = subprocess.Popen(
        [sys.executable, str(WORKER), url, str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        bufsize=0,
    )
    assert worker.stdout is not None
    fd = worker.stdout.fileno()
    answers: list[dict[str, Any]] = []
    pending = b""

    def take(chunk: bytes) -> None:
        nonlocal pending
        *lines, pending = (pending + chunk).split(b"\n")
        answers.extend(json.loads(line) for line in lines)

    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while sum(a["kind"] != "ready" for a in answers) < acks_before_kill:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"worker stalled after {len(answers)} answers"
            if not selector.select(remaining):
                continue
            chunk = os.read(fd, 1 << 16)
            assert chunk, f"worker exited early with {worker.poll()}"
            take(chunk)
            if any(a["kind"] == "ready" for a in answers[-1:]):
                deadline = time.monotonic() + ACK_TIMEOUT_S
    worker.send_signal(signal.SIGKILL)
    while chunk := os.read(fd, 1 << 16):  # answers already in the pipe; EOF once it died
        take(chunk)
    assert worker.wait(timeout=ACK_TIMEOUT_S) == -signal.SIGKILL
    worker.stdout.close()
    return answers


def test_sigkill_under_load_loses_nothing_acknowledged(database_url: str) -> None:
    rng = random.Random(20261124)
    acknowledged: list[dict[str, Any]] = []
    for kill in range(KILLS):
        answers = run_until_killed(database_url, rng.randrange(10**9), rng.randint(5, 400))
        acknowledged.extend(a for a in answers if a["kind"] == "done")
        asyncio.run(verify(database_url, acknowledged, kill))


async def verify(url: str, acknowledged: list[dict[str, Any]], kill: int) -> None:
    store = await SqlStore.open(url, migrate=False)
    try:
        state = await store.load_state()
        assert state is not None
        exchange = restore(state)
        check_all(exchange)
        for answer in acknowledged:
            for order_id, user_id in answer["orders"]:
                assert await store.reads.get_order(user_id, order_id) is not None, (kill, order_id)
    finally:
        await store.close()
    counters = state["counters"]
    acked_seq = max((a["seq"] for a in acknowledged if a["seq"] is not None), default=0)
    assert counters["seq"] >= acked_seq, (kill, counters["seq"], acked_seq)
    acked_trades = [t for a in acknowledged for t in a["trades"]]
    rows = await database_facts(url)
    assert rows["event_seqs"] == (1, counters["seq"], counters["seq"]), (kill, rows)
    assert rows["trade_ids"] == (1, counters["next_trade_id"] - 1, counters["next_trade_id"] - 1), (
        kill,
        rows,
    )
    assert max(acked_trades, default=0) <= counters["next_trade_id"] - 1
    assert rows["orders_off_by_trades"] == 0, (kill, rows)


FACTS = {
    "event_seqs": "SELECT MIN(seq), MAX(seq), COUNT(*) FROM events",
    "trade_ids": "SELECT MIN(trade_id), MAX(trade_id), COUNT(*) FROM trades",
    "orders_off_by_trades": """
        SELECT COUNT(*) FROM orders o LEFT JOIN (
            SELECT order_id, SUM(quantity_lots) AS lots FROM (
                SELECT buyer_order_id AS order_id, quantity_lots FROM trades
                UNION ALL SELECT seller_order_id, quantity_lots FROM trades) legs
            GROUP BY order_id) t ON t.order_id = o.order_id
        WHERE o.filled_lots <> COALESCE(t.lots, 0)""",
}


async def database_facts(url: str) -> dict[str, Any]:
    """The consistency facts, read with plain SQL straight from the database."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
            return {k: _one(connection.execute(sql).fetchone()) for k, sql in FACTS.items()}
    connection = await asyncpg.connect(url)
    try:
        return {k: _one(tuple(await connection.fetchrow(sql))) for k, sql in FACTS.items()}
    finally:
        await connection.close()


def _one(row: Any) -> Any:
    return row[0] if len(row) == 1 else tuple(row)
