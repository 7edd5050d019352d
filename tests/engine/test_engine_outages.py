"""The engine loop when the store fails or stalls: callers are answered within a bound,
with the truth when it is known and "outcome unknown" when it is not, and a batch that
committed after all is published before any new work.

The store is `MemoryStore` with its commits or its recovery held on events: a held
commit is a stalled database (it lands when released), a held `load_state` is a
database that does not answer recovery.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from engine_fakes import SETUP, FakeClock, MemoryStore, RecordingPublisher, limit

from crossbook.domain import Event, Side, TradeExecuted
from crossbook.engine.engine import Engine, EngineLimits, EngineUnavailableError

ANSWER_BOUND_S = 5.0  # generous: the limits below answer in well under a second
LIMITS = EngineLimits(commit_deadline_ms=200, outcome_wait_ms=200, recovery_retry_ms=20)


@asynccontextmanager
async def running(store: MemoryStore) -> AsyncIterator[tuple[Engine, RecordingPublisher]]:
    publisher = RecordingPublisher(store)
    engine = Engine(store, publisher, FakeClock(), LIMITS)
    await engine.start()
    try:
        for command in SETUP:
            await engine.submit(command)
        await engine.submit(limit(1, Side.SELL, 5_000_000, 100_000, client_order_id="s1"))
        yield engine, publisher
    finally:
        await engine.stop()


async def refused(engine: Engine, client_order_id: str) -> EngineUnavailableError:
    """Submit a buy that crosses the resting sell; it must be refused within the bound."""
    buy = limit(2, Side.BUY, 5_000_000, 100_000, client_order_id=client_order_id)
    async with asyncio.timeout(ANSWER_BOUND_S):
        with pytest.raises(EngineUnavailableError) as raised:
            await engine.submit(buy)
    return raised.value


async def until(condition: Callable[[], bool], timeout_s: float = ANSWER_BOUND_S) -> None:
    """Poll `condition` until it holds, failing after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.01)


def traded(events: list[Event]) -> bool:
    return any(isinstance(e, TradeExecuted) for e in events)


def gap_free(publisher: RecordingPublisher, store: MemoryStore) -> bool:
    return [e.seq for e in publisher.events] == list(range(1, store.committed_seq + 1))


def test_a_stalled_commit_is_answered_unknown_in_time_and_published_when_it_lands() -> None:
    async def main() -> None:
        store = MemoryStore()
        async with running(store) as (engine, publisher):
            store.gate = asyncio.Event()  # the database stalls: the commit hangs
            error = await refused(engine, "b1")
            assert error.committed is None and error.outcome_unknown
            assert not engine.available  # so /ready says not ready
            assert engine.commit_running_ms > 0
            with pytest.raises(EngineUnavailableError) as later:  # no new work meanwhile
                await engine.submit(limit(2, Side.BUY, 4_000_000, 10))
            assert later.value.committed is False
            assert not traded(publisher.events)

            store.gate.set()  # the stall clears: the late commit lands
            await publisher.until(traded, ANSWER_BOUND_S)
            await until(lambda: engine.available)
            assert len(store.trades) == 1  # applied once
            assert gap_free(publisher, store)
            assert engine.commit_running_ms == 0
            # the caller looks its order up and finds it: it must not place it again
            assert [o["client_order_id"] for o in store.orders.values()] == ["s1", "b1"]
            events = await engine.submit(limit(2, Side.BUY, 4_000_000, 10))
            assert gap_free(publisher, store) and events[-1].seq == store.committed_seq

    asyncio.run(main())


def test_a_lost_commit_while_recovery_cannot_read_is_unknown_then_published() -> None:
    """The connection dies during COMMIT (the batch did commit) and the database does
    not answer recovery: callers cannot be told anything true but "unknown"; once it
    answers, the committed batch goes out before any new work."""

    async def main() -> None:
        store = MemoryStore()
        async with running(store) as (engine, publisher):
            store.lose_next_replies = 1
            store.load_gate = asyncio.Event()
            error = await refused(engine, "b1")
            assert error.committed is None
            assert not engine.available
            assert not traded(publisher.events)  # committed, but not yet known to be

            store.load_gate.set()
            await publisher.until(traded, ANSWER_BOUND_S)
            await until(lambda: engine.available)
            assert engine.recoveries == 2
            assert len(store.trades) == 1
            assert gap_free(publisher, store)

    asyncio.run(main())


def test_a_commit_the_store_knows_failed_is_answered_nothing_done_while_recovery_waits() -> None:
    async def main() -> None:
        store = MemoryStore()
        async with running(store) as (engine, publisher):
            before = engine.exchange.state_digest()
            store.refuse_next_commits = 1  # e.g. the write lock stayed taken to the deadline
            store.load_gate = asyncio.Event()  # and recovery cannot finish yet
            loads = store.loads
            error = await refused(engine, "b1")
            assert error.committed is False and not error.outcome_unknown
            assert not engine.available
            await until(lambda: store.loads > loads)  # recovery is under way, held

            store.load_gate.set()
            await until(lambda: engine.available)
            assert engine.exchange.state_digest() == before
            assert not store.trades and not traded(publisher.events)
            events = await engine.submit(  # the retry with the same client order id
                limit(2, Side.BUY, 5_000_000, 100_000, client_order_id="b1")
            )
            assert traded(events)

    asyncio.run(main())


def test_stop_during_a_stalled_commit_answers_unknown_and_returns() -> None:
    async def main() -> None:
        store = MemoryStore()
        async with running(store) as (engine, _):
            store.gate = asyncio.Event()  # never released
            store.commit_entered.clear()
            caller = asyncio.ensure_future(
                engine.submit(limit(2, Side.BUY, 5_000_000, 100_000, client_order_id="b1"))
            )
            await store.commit_entered.wait()
            async with asyncio.timeout(ANSWER_BOUND_S):
                await engine.stop()
            with pytest.raises(EngineUnavailableError) as raised:
                await caller
            assert raised.value.committed is None

    asyncio.run(main())
