"""The in-process event bus: committed batches to every subscriber, slow ones cut off."""

from __future__ import annotations

import asyncio

import pytest
from engine_fakes import SETUP, FakeClock, MemoryStore, limit

from crossbook.adapters.event_bus import EventBus, SlowConsumerError
from crossbook.domain import Side, TradeExecuted
from crossbook.engine.engine import Engine


def test_every_subscriber_gets_every_committed_batch_in_order() -> None:
    async def main() -> None:
        store, bus = MemoryStore(), EventBus()
        first, second = bus.subscribe(), bus.subscribe()
        engine = Engine(store, bus, FakeClock())
        await engine.start()
        try:
            for command in SETUP:
                await engine.submit(command)
            await engine.submit(limit(1, Side.SELL, 5_000_000, 1_000))
            await engine.submit(limit(2, Side.BUY, 5_000_000, 1_000))
        finally:
            await engine.stop()
        for subscription in (first, second):
            seqs: list[int] = []
            while len(seqs) < store.committed_seq:
                batch = await subscription.next_batch()
                assert batch[-1].seq <= store.committed_seq  # committed before published
                seqs.extend(e.seq for e in batch)
            assert seqs == list(range(1, store.committed_seq + 1))
        assert any(isinstance(e, TradeExecuted) for e in store.events)

    asyncio.run(main())


def test_a_slow_subscriber_is_cut_off_without_blocking_others() -> None:
    async def main() -> None:
        bus = EventBus()
        slow, fast = bus.subscribe(max_pending_batches=2), bus.subscribe(max_pending_batches=10)
        store = MemoryStore()
        engine = Engine(store, bus, FakeClock())
        await engine.start()
        try:
            for command in SETUP:  # five batches, one per command
                await engine.submit(command)
        finally:
            await engine.stop()
        assert bus.subscriber_count == 1
        with pytest.raises(SlowConsumerError):
            await slow.next_batch()
        assert (await fast.next_batch())[0].seq == 1

    asyncio.run(main())


def test_unsubscribe_stops_delivery() -> None:
    bus = EventBus()
    subscription = bus.subscribe()
    subscription.close()
    assert bus.subscriber_count == 0
