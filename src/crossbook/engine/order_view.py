"""`OrderView`: the one shape of an order outside the engine loop.

Built from the store's record (`from_stored`) or from committed events: a
placement's `OrderAccepted` and its last `OrderUpdated` (`from_events`), or a
known order with the last `OrderUpdated` of a later command (`with_update`). So
order entry answers from a command's events, without reading the store.

Invariant: an `OrderUpdated` carries everything about an order that a command can
change (price, quantity, status, fills, fee, trigger, close reason, time);
`OrderAccepted` carries the rest, which never changes once the order is accepted.
Gateways format a view; they never build one field by field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from crossbook.domain import (
    CloseReason,
    Event,
    OrderAccepted,
    OrderStatus,
    OrderType,
    OrderUpdated,
    Side,
    StpMode,
    TimeInForce,
    TradeExecuted,
)
from crossbook.engine.read_model.records import StoredOrder

STOP_TYPES = (OrderType.STOP_LIMIT, OrderType.STOP_MARKET)


@dataclass(frozen=True, slots=True)
class OrderView:
    order_id: int
    user_id: int
    symbol: str
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    price_ticks: int
    quantity_lots: int
    quote_budget_units: int
    stop_price_ticks: int
    client_order_id: str | None
    stp_mode: StpMode
    post_only: bool
    expire_at_ms: int | None
    created_at_ms: int
    updated_at_ms: int
    status: OrderStatus
    filled_lots: int
    filled_notional_units: int
    fee_paid_units: int
    triggered: bool
    close_reason: CloseReason | None

    @classmethod
    def from_stored(cls, o: StoredOrder) -> OrderView:
        return cls(
            o.order_id, o.user_id, o.symbol, o.side, o.order_type, o.time_in_force,
            o.price_ticks, o.quantity_lots, o.quote_budget_units, o.stop_price_ticks,
            o.client_order_id, o.stp_mode, o.post_only, o.expire_at_ms, o.created_at_ms,
            o.updated_at_ms, o.status, o.filled_lots, o.filled_notional_units,
            o.fee_paid_units, o.triggered, o.close_reason,
        )  # fmt: skip

    @classmethod
    def from_events(cls, accepted: OrderAccepted, update: OrderUpdated | None) -> OrderView:
        """The order after a command: its acceptance and its last update in that command."""
        a, u = accepted, update
        return cls(
            order_id=a.order_id,
            user_id=a.user_id,
            symbol=a.symbol,
            side=a.side,
            order_type=a.order_type,
            time_in_force=a.time_in_force,
            price_ticks=a.price_ticks if u is None else u.price_ticks,
            quantity_lots=a.quantity_lots if u is None else u.quantity_lots,
            quote_budget_units=a.quote_budget_units,
            stop_price_ticks=a.stop_price_ticks,
            client_order_id=a.client_order_id,
            stp_mode=a.stp_mode,
            post_only=a.post_only,
            expire_at_ms=a.expire_at_ms,
            created_at_ms=a.ts_ms,
            updated_at_ms=a.ts_ms if u is None else u.ts_ms,
            status=OrderStatus.OPEN if u is None else u.status,
            filled_lots=0 if u is None else u.filled_lots,
            filled_notional_units=0 if u is None else u.filled_notional_units,
            fee_paid_units=0 if u is None else u.fee_paid_units,
            triggered=a.order_type not in STOP_TYPES if u is None else u.triggered,
            close_reason=None if u is None else u.reason,
        )

    def with_update(self, update: OrderUpdated) -> OrderView:
        """This order as `update` (a later command's last update of it) left it."""
        assert update.order_id == self.order_id, (update.order_id, self.order_id)
        return dataclasses.replace(
            self,
            price_ticks=update.price_ticks,
            quantity_lots=update.quantity_lots,
            updated_at_ms=update.ts_ms,
            status=update.status,
            filled_lots=update.filled_lots,
            filled_notional_units=update.filled_notional_units,
            fee_paid_units=update.fee_paid_units,
            triggered=update.triggered,
            close_reason=update.reason,
        )


def placed_order(events: Sequence[Event]) -> tuple[OrderView, list[TradeExecuted]]:
    """The order a PlaceOrder command created, and its trades, from that command's events."""
    accepted = next(e for e in events if isinstance(e, OrderAccepted))
    return order_in(events, accepted), trades_of(events, accepted.order_id)


def order_in(events: Sequence[Event], accepted: OrderAccepted) -> OrderView:
    return OrderView.from_events(accepted, last_update(events, accepted.order_id))


def last_update(events: Sequence[Event], order_id: int) -> OrderUpdated | None:
    """The last `OrderUpdated` of `order_id` among `events` (None if it has none)."""
    last: OrderUpdated | None = None
    for event in events:
        if isinstance(event, OrderUpdated) and event.order_id == order_id:
            last = event
    return last


def trades_of(events: Sequence[Event], order_id: int) -> list[TradeExecuted]:
    return [
        e
        for e in events
        if isinstance(e, TradeExecuted) and (order_id in (e.buyer_order_id, e.seller_order_id))
    ]
