"""Events: what a command did, in order. Past tense, plain data.

Every event has `seq`, the exchange-wide sequence (gap-free, starting at 1), and
`ts_ms`, the time the command was executed at. Events that concern one market's
public state (orders, trades, market status) also carry `market_seq`, that
market's own gap-free sequence (1 = `MarketCreated`); it numbers the order-book
diff stream. Money and asset events have `market_seq = 0`.

Balances are state, not events: a command's effect on them follows from its
order and trade events, and their new values are read once per batch
(`Exchange.take_balance_changes`), not reported per command.

Hot-path objects: plain slotted classes, no validation. The events made on every
order (`OrderAccepted`, `OrderUpdated`, `TradeExecuted`) set the
base fields themselves instead of calling `super().__init__`, which costs about
0.1 µs on Python 3.11 (`crossbook bench engine`: 6-13 % of a command or a fill).
`to_dict` gives a canonical plain-data form for logs, stores and
determinism checks.
"""

from __future__ import annotations

from typing import Any, ClassVar

from crossbook.domain.markets import MarketSpec, MarketStatus
from crossbook.domain.orders import CloseReason, Order, OrderStatus, Side


class Event:
    __slots__ = ("market_seq", "seq", "ts_ms")
    kind: ClassVar[str] = "event"
    # The attributes `to_dict` emits after "kind", in order: the base classes' slots,
    # then the class's own. Every class with slots spells them out again because the
    # classes mypyc compiles have no `__slots__` at run time (tests/unit/test_events.py
    # checks that the two agree).
    field_names: ClassVar[tuple[str, ...]] = ("market_seq", "seq", "ts_ms")

    def __init__(self, seq: int, market_seq: int, ts_ms: int) -> None:
        self.seq = seq
        self.market_seq = market_seq
        self.ts_ms = ts_ms

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for name in self.field_names:
            value = getattr(self, name)
            out[name] = value.to_dict() if hasattr(value, "to_dict") else value
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()})"


class AssetCreated(Event):
    __slots__ = ("code", "decimals")
    field_names = (*Event.field_names, "code", "decimals")
    kind = "asset_created"

    def __init__(self, seq: int, ts_ms: int, code: str, decimals: int) -> None:
        super().__init__(seq, 0, ts_ms)
        self.code = code
        self.decimals = decimals


class MarketCreated(Event):
    __slots__ = ("spec",)
    field_names = (*Event.field_names, "spec")
    kind = "market_created"

    def __init__(self, seq: int, market_seq: int, ts_ms: int, spec: MarketSpec) -> None:
        super().__init__(seq, market_seq, ts_ms)
        self.spec = spec

    def to_dict(self) -> dict[str, Any]:
        s = self.spec
        return {
            "kind": self.kind,
            "seq": self.seq,
            "market_seq": self.market_seq,
            "ts_ms": self.ts_ms,
            "symbol": s.symbol,
            "base": s.base.code,
            "quote": s.quote.code,
            "tick_size": s.price_grid.step_text,
            "lot_size": s.quantity_grid.step_text,
            "min_quantity_lots": s.min_quantity_lots,
            "max_quantity_lots": s.max_quantity_lots,
            "min_notional_units": s.min_notional_units,
            "max_price_ticks": s.max_price_ticks,
            "maker_fee_ppm": s.maker_fee_ppm,
            "taker_fee_ppm": s.taker_fee_ppm,
        }


class MarketStatusChanged(Event):
    __slots__ = ("status", "symbol")
    field_names = (*Event.field_names, "status", "symbol")
    kind = "market_status_changed"

    def __init__(
        self, seq: int, market_seq: int, ts_ms: int, symbol: str, status: MarketStatus
    ) -> None:
        super().__init__(seq, market_seq, ts_ms)
        self.symbol = symbol
        self.status = status


class Transfer(Event):
    """Money moved in or out of `user_id`'s available funds of `asset` (`Deposited`,
    `Withdrawn`; neither is the other). `available_units` and `locked_units`: that
    balance after it."""

    __slots__ = ("amount_units", "asset", "available_units", "locked_units", "user_id")
    field_names = (
        *Event.field_names,
        "amount_units",
        "asset",
        "available_units",
        "locked_units",
        "user_id",
    )

    def __init__(
        self,
        seq: int,
        ts_ms: int,
        user_id: int,
        asset: str,
        amount_units: int,
        available_units: int,
        locked_units: int,
    ) -> None:
        super().__init__(seq, 0, ts_ms)
        self.user_id = user_id
        self.asset = asset
        self.amount_units = amount_units
        self.available_units = available_units
        self.locked_units = locked_units


class Deposited(Transfer):
    """Money entered the exchange: `amount_units` of `asset` to `user_id`'s available funds."""

    __slots__ = ()
    kind = "deposited"


class Withdrawn(Transfer):
    """Money left the exchange: `amount_units` of `asset` from `user_id`'s available funds."""

    __slots__ = ()
    kind = "withdrawn"


class HoldReleased(Event):
    """Remote-wallet mode: funds the engine held for `user_id` go back to the wallet.

    Released reservations (cancels, expiries, price improvement, the part of a
    hold a placement did not need) in one command, per user and asset. The
    wallet releases them from the user's locked funds.
    """

    __slots__ = ("amount_units", "asset", "user_id")
    field_names = (*Event.field_names, "amount_units", "asset", "user_id")
    kind = "hold_released"

    def __init__(self, seq: int, ts_ms: int, user_id: int, asset: str, amount_units: int) -> None:
        super().__init__(seq, 0, ts_ms)
        self.user_id = user_id
        self.asset = asset
        self.amount_units = amount_units


class HoldConsumed(Event):
    """Remote-wallet mode: the wallet's hold `hold_key` funds order `order_id` (its
    placement, or an amend that costs more). The wallet keeps it locked; the ledger's
    reservation, trades and releases account for it from here on. It records the hold's
    fate: a hold that no `HoldConsumed` or `HoldVoided` names funds nothing."""

    __slots__ = ("amount_units", "asset", "hold_key", "order_id", "user_id")
    field_names = (*Event.field_names, "amount_units", "asset", "hold_key", "order_id", "user_id")
    kind = "hold_consumed"

    def __init__(
        self,
        seq: int,
        ts_ms: int,
        user_id: int,
        asset: str,
        hold_key: str,
        amount_units: int,
        order_id: int,
    ) -> None:
        super().__init__(seq, 0, ts_ms)
        self.user_id = user_id
        self.asset = asset
        self.hold_key = hold_key
        self.amount_units = amount_units
        self.order_id = order_id


class HoldVoided(Event):
    """Remote-wallet mode: the hold `hold_key` funds nothing; the wallet must void it."""

    __slots__ = ("amount_units", "asset", "hold_key", "user_id")
    field_names = (*Event.field_names, "amount_units", "asset", "hold_key", "user_id")
    kind = "hold_voided"

    def __init__(
        self, seq: int, ts_ms: int, user_id: int, asset: str, hold_key: str, amount_units: int
    ) -> None:
        super().__init__(seq, 0, ts_ms)
        self.user_id = user_id
        self.asset = asset
        self.hold_key = hold_key
        self.amount_units = amount_units


class OrderAccepted(Event):
    """An order passed validation and its funds are reserved. Carries the full order."""

    __slots__ = (
        "client_order_id",
        "expire_at_ms",
        "order_id",
        "order_type",
        "post_only",
        "price_ticks",
        "priority",
        "quantity_lots",
        "quote_budget_units",
        "reserved_units",
        "side",
        "stop_price_ticks",
        "stp_mode",
        "symbol",
        "time_in_force",
        "user_id",
    )
    field_names = (
        *Event.field_names,
        "client_order_id",
        "expire_at_ms",
        "order_id",
        "order_type",
        "post_only",
        "price_ticks",
        "priority",
        "quantity_lots",
        "quote_budget_units",
        "reserved_units",
        "side",
        "stop_price_ticks",
        "stp_mode",
        "symbol",
        "time_in_force",
        "user_id",
    )
    kind = "order_accepted"

    def __init__(self, seq: int, market_seq: int, ts_ms: int, order: Order) -> None:
        self.seq = seq  # base fields set inline: hot path, see the module docstring
        self.market_seq = market_seq
        self.ts_ms = ts_ms
        self.order_id = order.order_id
        self.user_id = order.user_id
        self.symbol = order.symbol
        self.side = order.side
        self.order_type = order.order_type
        self.time_in_force = order.time_in_force
        self.price_ticks = order.price_ticks
        self.quantity_lots = order.quantity_lots
        self.quote_budget_units = order.quote_budget_units
        self.stop_price_ticks = order.stop_price_ticks
        self.client_order_id = order.client_order_id
        self.stp_mode = order.stp_mode
        self.post_only = order.post_only
        self.expire_at_ms = order.expire_at_ms
        self.priority = order.priority
        self.reserved_units = order.reserved_units


class OrderUpdated(Event):
    """An order's state after a change: a fill, an amend, a trigger, or its close.

    `reason` is set when the order closed (its status is terminal) and says why.
    """

    __slots__ = (
        "fee_paid_units",
        "filled_lots",
        "filled_notional_units",
        "order_id",
        "price_ticks",
        "priority",
        "quantity_lots",
        "reason",
        "reserved_units",
        "status",
        "symbol",
        "triggered",
        "user_id",
    )
    field_names = (
        *Event.field_names,
        "fee_paid_units",
        "filled_lots",
        "filled_notional_units",
        "order_id",
        "price_ticks",
        "priority",
        "quantity_lots",
        "reason",
        "reserved_units",
        "status",
        "symbol",
        "triggered",
        "user_id",
    )
    kind = "order_updated"

    def __init__(
        self, seq: int, market_seq: int, ts_ms: int, order: Order, reason: CloseReason | None
    ) -> None:
        self.seq = seq  # base fields set inline: hot path, see the module docstring
        self.market_seq = market_seq
        self.ts_ms = ts_ms
        self.order_id = order.order_id
        self.user_id = order.user_id
        self.symbol = order.symbol
        self.status: OrderStatus = order.status
        self.price_ticks = order.price_ticks
        self.quantity_lots = order.quantity_lots
        self.filled_lots = order.filled_lots
        self.filled_notional_units = order.filled_notional_units
        self.fee_paid_units = order.fee_paid_units
        self.reserved_units = order.reserved_units
        self.priority = order.priority
        self.triggered = order.triggered
        self.reason = reason


class TradeExecuted(Event):
    """One fill between a resting maker and an incoming taker, settled from locked funds."""

    __slots__ = (
        "buyer_fee_units",
        "buyer_order_id",
        "buyer_user_id",
        "maker_order_id",
        "notional_units",
        "price_ticks",
        "quantity_lots",
        "seller_fee_units",
        "seller_order_id",
        "seller_user_id",
        "symbol",
        "taker_side",
        "trade_id",
    )
    field_names = (
        *Event.field_names,
        "buyer_fee_units",
        "buyer_order_id",
        "buyer_user_id",
        "maker_order_id",
        "notional_units",
        "price_ticks",
        "quantity_lots",
        "seller_fee_units",
        "seller_order_id",
        "seller_user_id",
        "symbol",
        "taker_side",
        "trade_id",
    )
    kind = "trade_executed"

    def __init__(
        self,
        seq: int,
        market_seq: int,
        ts_ms: int,
        trade_id: int,
        symbol: str,
        price_ticks: int,
        quantity_lots: int,
        notional_units: int,
        taker_side: Side,
        maker_order_id: int,
        buyer_order_id: int,
        seller_order_id: int,
        buyer_user_id: int,
        seller_user_id: int,
        buyer_fee_units: int,
        seller_fee_units: int,
    ) -> None:
        self.seq = seq  # base fields set inline: hot path, see the module docstring
        self.market_seq = market_seq
        self.ts_ms = ts_ms
        self.trade_id = trade_id
        self.symbol = symbol
        self.price_ticks = price_ticks
        self.quantity_lots = quantity_lots
        self.notional_units = notional_units
        self.taker_side = taker_side
        self.maker_order_id = maker_order_id
        self.buyer_order_id = buyer_order_id
        self.seller_order_id = seller_order_id
        self.buyer_user_id = buyer_user_id
        self.seller_user_id = seller_user_id
        self.buyer_fee_units = buyer_fee_units
        self.seller_fee_units = seller_fee_units
