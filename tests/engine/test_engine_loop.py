"""The engine loop: batching, commit-before-ack, overload, commit failure and recovery."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from engine_fakes import SETUP, FakeClock, MemoryStore, RecordingPublisher, limit

from crossbook.domain import (
    CloseReason,
    DomainError,
    ErrorCode,
    Event,
    OrderAccepted,
    OrderType,
    OrderUpdated,
    PlaceOrder,
    Side,
    TimeInForce,
    TradeExecuted,
)
from crossbook.domain.snapshot import restore
from crossbook.engine.engine import (
    Engine,
    EngineLimits,
    EngineOverloadedError,
    EngineUnavailableError,
)


def run(
    scenario: Callable[[Engine, MemoryStore], Awaitable[None]],
    limits: EngineLimits | None = None,
    store: MemoryStore | None = None,
) -> None:
    async def main() -> None:
        memory = store or MemoryStore()
        engine = Engine(memory, RecordingPublisher(memory), FakeClock(), limits)
        await engine.start()
        try:
            for command in SETUP if memory.counters is None else []:
                await engine.submit(command)
            await scenario(engine, memory)
        finally:
            await engine.stop()

    asyncio.run(main())


def test_submit_returns_events_only_after_they_are_committed() -> None:
    async def scenario(engine: Engine, store: MemoryStore) -> None:
        await engine.submit(limit(1, Side.SELL, 5_000_000, 100_000))
        events = await engine.submit(limit(2, Side.BUY, 5_000_000, 100_000))
        assert any(isinstance(e, TradeExecuted) for e in events)
        assert events[-1].seq <= store.committed_seq
        assert len(store.trades) == 1

    run(scenario)


def test_a_rejection_reaches_its_caller_and_commits_nothing() -> None:
    async def scenario(engine: Engine, store: MemoryStore) -> None:
        commits = store.commits
        with pytest.raises(DomainError) as raised:
            await engine.submit(limit(2, Side.SELL, 5_000_000, 100_000))
        assert raised.value.code is ErrorCode.INSUFFICIENT_BALANCE
        assert store.commits == commits

    run(scenario)


def test_concurrent_commands_are_grouped_into_few_commits() -> None:
    async def scenario(engine: Engine, store: MemoryStore) -> None:
        commits = store.commits
        orders = [limit(2, Side.BUY, 4_000_000 + i, 10) for i in range(200)]
        results = await asyncio.gather(*(engine.submit(o) for o in orders))
        assert len(results) == 200
        assert store.commits - commits < 20
        assert len(engine.exchange.orders) == 200

    run(scenario)


def test_a_full_queue_refuses_at_once() -> None:
    async def scenario(engine: Engine, store: MemoryStore) -> None:
        store.gate = asyncio.Event()  # the next commit blocks: the loop is stuck in it
        store.commit_entered.clear()
        first = asyncio.ensure_future(engine.submit(limit(2, Side.BUY, 4_000_000, 10)))
        await store.commit_entered.wait()
        queued = [
            asyncio.ensure_future(engine.submit(limit(2, Side.BUY, 4_000_000 + i, 10)))
            for i in range(4)
        ]
        await asyncio.sleep(0)
        with pytest.raises(EngineOverloadedError):
            await engine.submit(limit(2, Side.BUY, 3_000_000, 10))
        store.gate.set()
        await asyncio.gather(first, *queued)
        assert len(engine.exchange.orders) == 5

    run(scenario, EngineLimits(queue_capacity=4))


def test_failed_commit_answers_unavailable_and_recovers_the_committed_state() -> None:
    async def scenario(engine: Engine, store: MemoryStore) -> None:
        await engine.submit(limit(1, Side.SELL, 5_000_000, 100_000, client_order_id="s1"))
        before = engine.exchange.state_digest()
        store.fail_next_commits = 1
        with pytest.raises(EngineUnavailableError) as raised:
            await engine.submit(limit(2, Side.BUY, 5_000_000, 100_000, client_order_id="b1"))
        assert raised.value.committed is False  # the store's truth: nothing was written
        assert engine.available
        assert engine.exchange.state_digest() == before  # the failed batch left no trace
        assert not store.trades
        # the caller may retry safely with the same client order id
        events = await engine.submit(limit(2, Side.BUY, 5_000_000, 100_000, client_order_id="b1"))
        assert any(isinstance(e, TradeExecuted) for e in events)
        assert engine.recoveries == 2

    run(scenario)


def test_a_commit_whose_reply_was_lost_answers_its_callers_and_publishes() -> None:
    """The connection dies during COMMIT but the batch committed: the store is the truth,
    so the callers get their outcomes (not "retry", which would place twice) and the
    events reach subscribers with no gap."""

    async def main() -> None:
        store = MemoryStore()
        publisher = RecordingPublisher(store)
        engine = Engine(store, publisher, FakeClock())
        await engine.start()
        try:
            for command in SETUP:
                await engine.submit(command)
            await engine.submit(limit(1, Side.SELL, 5_000_000, 100_000, client_order_id="s1"))
            store.lose_next_replies = 1
            events = await engine.submit(
                limit(2, Side.BUY, 5_000_000, 100_000, client_order_id="b1")
            )
            assert any(isinstance(e, TradeExecuted) for e in events)
            assert len(store.trades) == 1
            assert engine.recoveries == 2  # it did recover from the store first
            committed = restore(await store.load_state() or {})
            assert engine.exchange.state_digest() == committed.state_digest()
            assert [e.seq for e in publisher.events] == list(range(1, store.committed_seq + 1))
        finally:
            await engine.stop()

    asyncio.run(main())


def test_engine_restarts_from_the_store_exactly() -> None:
    store = MemoryStore()
    digests: list[str] = []

    async def first_life(engine: Engine, _: MemoryStore) -> None:
        await engine.submit(limit(1, Side.SELL, 5_000_000, 50_000))
        await engine.submit(
            limit(
                1, Side.SELL, 5_100_000, 50_000, time_in_force=TimeInForce.GTD, expire_at_ms=10**12
            )
        )
        await engine.submit(limit(2, Side.BUY, 5_000_000, 20_000))
        await engine.submit(
            PlaceOrder(
                2,
                "BTC/USDT",
                Side.BUY,
                OrderType.STOP_LIMIT,
                quantity_lots=10,
                price_ticks=6_000_000,
                stop_price_ticks=5_500_000,
            )
        )
        digests.append(engine.exchange.state_digest())

    async def second_life(engine: Engine, _: MemoryStore) -> None:
        digests.append(engine.exchange.state_digest())

    run(first_life, store=store)
    run(second_life, store=store)
    assert digests[0] == digests[1]
    state = asyncio.run(store.load_state())
    assert state is not None and restore(state).state_digest() == digests[0]


def test_submit_before_start_is_refused() -> None:
    store = MemoryStore()
    engine = Engine(store, RecordingPublisher(store))
    with pytest.raises(EngineUnavailableError):
        asyncio.run(engine.submit(limit(2, Side.BUY, 1, 1)))


def test_a_batch_of_refusals_still_commits_the_clock() -> None:
    clock = FakeClock(1_000)

    async def main() -> None:
        store = MemoryStore()
        engine = Engine(store, RecordingPublisher(store), clock)
        await engine.start()
        try:
            for command in SETUP:
                await engine.submit(command)
            clock.now = 5_000
            with pytest.raises(DomainError):
                await engine.submit(limit(2, Side.SELL, 5_000_000, 100_000))
            assert store.counters is not None and store.counters["now_ms"] == 5_000
            commits = store.commits
            with pytest.raises(DomainError):  # same time, nothing changed: no commit
                await engine.submit(limit(2, Side.SELL, 5_000_000, 100_000))
            assert store.commits == commits
        finally:
            await engine.stop()

    asyncio.run(main())


WAIT_S = 5.0  # a generous bound on what must happen "soon"


def expired(order_id: int) -> Callable[[list[Event]], bool]:
    return lambda events: any(
        isinstance(e, OrderUpdated)
        and e.order_id == order_id
        and e.reason is CloseReason.GTD_EXPIRED
        for e in events
    )


def gtd_sell(expire_at_ms: int) -> PlaceOrder:
    return limit(
        1, Side.SELL, 5_000_000, 10, time_in_force=TimeInForce.GTD, expire_at_ms=expire_at_ms
    )


def test_a_gtd_order_expires_at_its_time_on_an_idle_engine() -> None:
    """No command arrives after the order: the engine's own timer ticks at its expiry."""
    clock = FakeClock(1_000)

    async def main() -> None:
        store = MemoryStore()
        publisher = RecordingPublisher(store)
        engine = Engine(store, publisher, clock)
        await engine.start()
        try:
            for command in SETUP:
                await engine.submit(command)
            events = await engine.submit(gtd_sell(1_050))
            (order_id,) = [e.order_id for e in events if isinstance(e, OrderAccepted)]
            clock.now = 1_050  # time passes, nobody trades
            await publisher.until(expired(order_id), WAIT_S)
            assert store.orders[order_id]["status"] == "expired"  # committed, then published
            assert store.counters is not None and store.counters["now_ms"] == 1_050
            assert engine.exchange.orders == {}
        finally:
            await engine.stop()

    asyncio.run(main())


def test_a_gtd_order_due_while_the_engine_was_down_expires_after_the_restart() -> None:
    store = MemoryStore()
    clock = FakeClock(1_000)
    placed: list[int] = []

    async def first_life() -> None:
        engine = Engine(store, RecordingPublisher(store), clock)
        await engine.start()
        try:
            for command in SETUP:
                await engine.submit(command)
            events = await engine.submit(gtd_sell(1_050))
            placed.extend(e.order_id for e in events if isinstance(e, OrderAccepted))
        finally:
            await engine.stop()

    async def second_life() -> None:
        publisher = RecordingPublisher(store)
        engine = Engine(store, publisher, clock)
        await engine.start()  # recovers the open GTD order; no command follows
        try:
            await publisher.until(expired(placed[0]), WAIT_S)
            assert engine.exchange.orders == {}
        finally:
            await engine.stop()

    asyncio.run(first_life())
    clock.now = 2_000
    asyncio.run(second_life())
    assert store.orders[placed[0]]["status"] == "expired"


def test_start_from_a_snapshot_already_read_does_not_read_the_store_again() -> None:
    async def main() -> None:
        memory = MemoryStore()
        first = Engine(memory, RecordingPublisher(memory), FakeClock())
        await first.start()
        for command in SETUP:
            await first.submit(command)
        await first.submit(limit(1, Side.SELL, 5_000_000, 1_000))
        await first.stop()
        snapshot = await memory.load_state()
        loads = memory.loads
        second = Engine(memory, RecordingPublisher(memory), FakeClock())
        await second.start(snapshot)
        try:
            assert memory.loads == loads  # started from the snapshot handed in
            assert second.exchange.state() == first.exchange.state()
        finally:
            await second.stop()

    asyncio.run(main())
