"""The engine's ports: what it needs from outside, as small Protocols.

Adapters implement them (the SQL store, later an event bus); tests use fakes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from crossbook.domain import Event
from crossbook.engine.batch import CommitBatch


class Store(Protocol):
    """The durable truth. `commit` is one transaction: all of the batch or none of it."""

    async def load_state(self) -> dict[str, Any] | None:
        """The committed exchange in `Exchange.state()` form (open orders only), or None."""
        ...

    async def commit(self, batch: CommitBatch) -> None: ...


class Publisher(Protocol):
    """Receives a batch's events only after the transaction holding them committed."""

    def publish(self, events: Sequence[Event]) -> None: ...


class Clock(Protocol):
    def now_ms(self) -> int: ...
