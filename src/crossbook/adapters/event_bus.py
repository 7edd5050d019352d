"""In-process publish/subscribe of committed events (the engine's `Publisher`).

The engine publishes each committed batch once; every subscriber gets every
batch, in commit order, through its own bounded queue. A subscriber that falls
`max_pending_batches` behind is cut off rather than allowed to grow memory: its
next read raises `SlowConsumerError` (a WebSocket layer then disconnects that
client, which resubscribes and resynchronises from a snapshot).

Invariants: `publish` never blocks and never fails because of a subscriber;
batches reach each live subscriber in `seq` order with no gaps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from crossbook.domain import Event

DEFAULT_MAX_PENDING_BATCHES = 1_000


class SlowConsumerError(Exception):
    """The subscriber fell too far behind and was cut off."""


class Subscription:
    def __init__(self, bus: EventBus, max_pending_batches: int) -> None:
        assert max_pending_batches > 0, max_pending_batches
        self._bus = bus
        self._queue: asyncio.Queue[Sequence[Event]] = asyncio.Queue(max_pending_batches)
        self.overflowed = False

    def offer(self, events: Sequence[Event]) -> bool:
        """Queue a batch; False (and the subscription ends) if it is full."""
        try:
            self._queue.put_nowait(events)
        except asyncio.QueueFull:
            self.overflowed = True
            return False
        return True

    async def next_batch(self) -> Sequence[Event]:
        """The next committed batch; raises `SlowConsumerError` once cut off."""
        if self.overflowed:
            raise SlowConsumerError("subscriber fell behind and was cut off")
        return await self._queue.get()

    def close(self) -> None:
        self._bus.unsubscribe(self)


class EventBus:
    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []

    def subscribe(self, max_pending_batches: int = DEFAULT_MAX_PENDING_BATCHES) -> Subscription:
        subscription = Subscription(self, max_pending_batches)
        self._subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        self._subscriptions = [s for s in self._subscriptions if s.offer(events)]
