"""A SIGKILL never loses a committed batch, and never leaves half of one.

A child process commits batches of a seeded run and prints the seq of each
batch once `commit` has returned; it is killed with SIGKILL while it is busy
committing. The database must then hold exactly the state after some batch
at or beyond the last acknowledged one (found by replaying the same seeded run).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sql_store_support import Driver, expected_state

from crossbook.adapters.sql import SqlStore

HERE = Path(__file__).resolve().parent
ACKS_BEFORE_KILL = 8
SEED = 51
CHILD_TIMEOUT_S = 60


def run_child_and_kill(url: str) -> int:
    """The last seq the child acknowledged before it was killed."""
    child = subprocess.Popen(
        [sys.executable, str(HERE / "sql_crash_child.py"), url, str(SEED)],
        cwd=HERE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    acked: list[int] = []
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    try:
        while len(acked) < ACKS_BEFORE_KILL and time.monotonic() < deadline:
            line = child.stdout.readline()
            assert line, "the child stopped before it was killed"
            acked.append(int(line))
        time.sleep(0.003 * (acked[-1] % 7))  # land somewhere inside a commit
        os.kill(child.pid, signal.SIGKILL)
        acked += [int(line) for line in child.stdout.read().split()]
    finally:
        child.kill()
        child.wait(timeout=CHILD_TIMEOUT_S)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert len(acked) >= ACKS_BEFORE_KILL
    return acked[-1]


def replay_until(seq: int) -> Driver:
    """The seeded run of the child, batch by batch, until its state is at `seq`."""
    driver = Driver(SEED)
    driver.setup()
    driver.take_batch()
    while driver.exchange.seq < seq:
        driver.run(20)
        driver.take_batch()
    assert driver.exchange.seq == seq, "the stored seq is not a batch boundary"
    return driver


def test_sigkill_keeps_every_acknowledged_batch(database_url: str) -> None:
    acked = run_child_and_kill(database_url)

    async def stored_state() -> dict[str, object] | None:
        async with await SqlStore.open(database_url) as store:
            return await store.load_state()

    state = asyncio.run(stored_state())
    assert state is not None
    counters = state["counters"]
    assert isinstance(counters, dict)
    assert counters["seq"] >= acked
    assert state == expected_state(replay_until(counters["seq"]).exchange)
