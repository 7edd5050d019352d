"""The acceptance of every open order, kept from committed events.

A cancel's events carry what the cancel changed (`OrderUpdated`), not what an
order never changes (side, type, time in force, client order id, creation
time …): that is in its `OrderAccepted`. `OpenOrderIndex` keeps that event for
every open order, by order id and by (user, client order id), so order entry
answers a cancel from its events instead of reading the store.

It is part of the read model: built from the committed snapshot at start-up
(before the engine runs), then told of every committed batch by `MarketData`
(it is a `BatchListener`). So it holds only committed orders (DESIGN rule 4),
and an engine that recovers from a failed commit needs nothing from it.

Invariants: an order is indexed from its committed acceptance until its
committed close; a client order id names at most one indexed order (the
exchange lets only one open order per user carry it).
Known limits: a lookup is a snapshot: the order may close (and its client id
be reused) before a command naming it runs, so callers check the order id in
the command's events. Orders restored at start-up are indexed under a rebuilt
acceptance (`seq` 0). Memory: one entry per open order, bounded by the
exchange's limit of open orders per user.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from crossbook.domain import Event, Order, OrderAccepted, OrderStatus, OrderUpdated
from crossbook.domain.orders import order_from_record
from crossbook.engine.read_model.market_data import MarketDataBatch

_CLOSED = frozenset(status for status in OrderStatus if status.is_terminal)


class OpenOrderIndex:
    __slots__ = ("_by_client_id", "_by_id")

    def __init__(self) -> None:
        self._by_id: dict[int, OrderAccepted] = {}
        self._by_client_id: dict[tuple[int, str], OrderAccepted] = {}

    @classmethod
    def from_snapshot(cls, state: Mapping[str, Any] | None) -> OpenOrderIndex:
        """The index of a committed snapshot's open orders (`Store.load_state()` form)."""
        return cls.from_orders(map(order_from_record, state["orders"] if state else ()))

    @classmethod
    def from_orders(cls, orders: Iterable[Order]) -> OpenOrderIndex:
        """The index of a committed exchange's open orders (`Exchange.orders`)."""
        index = cls()
        for order in orders:
            index._add(OrderAccepted(0, 0, order.created_at_ms, order))
        return index

    def __len__(self) -> int:
        return len(self._by_id)

    def batch_applied(self, batch: MarketDataBatch) -> None:
        """Apply one committed batch."""
        self.apply(batch.events)

    def apply(self, events: Sequence[Event]) -> None:
        for event in events:
            if isinstance(event, OrderAccepted):
                self._add(event)
            elif isinstance(event, OrderUpdated) and event.status in _CLOSED:
                self._remove(event.order_id)

    def find(
        self, user_id: int, order_id: int | None, client_order_id: str | None
    ) -> OrderAccepted | None:
        """The acceptance of the user's open order with this id (or else client order id)."""
        if order_id is not None:
            accepted = self._by_id.get(order_id)
            return accepted if accepted is not None and accepted.user_id == user_id else None
        if client_order_id is None:
            return None
        return self._by_client_id.get((user_id, client_order_id))

    def _add(self, accepted: OrderAccepted) -> None:
        self._by_id[accepted.order_id] = accepted
        if accepted.client_order_id is not None:
            self._by_client_id[accepted.user_id, accepted.client_order_id] = accepted

    def _remove(self, order_id: int) -> None:
        accepted = self._by_id.pop(order_id, None)
        if accepted is not None and accepted.client_order_id is not None:
            key = (accepted.user_id, accepted.client_order_id)
            if self._by_client_id.get(key) is accepted:
                del self._by_client_id[key]
