"""Typed records of the committed store, as the read side of the API sees them.

They belong to the engine's `ReadStore` port (adapters fill them, the API reads
them); plain frozen records, no ORM.

`StoredOrder` has exactly the fields of `RECORD_FIELDS`, in that order, with
enums as enums; `record()` gives the dict `order_record` would, which is what
`load_state` hands to `restore`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from crossbook.domain import CloseReason, OrderStatus, OrderType, Side, StpMode, TimeInForce
from crossbook.domain.orders import RECORD_FIELDS


@dataclass(frozen=True, slots=True)
class StoredOrder:
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
    priority: int
    created_at_ms: int
    updated_at_ms: int
    status: OrderStatus
    filled_lots: int
    filled_notional_units: int
    fee_accrued: int
    fee_paid_units: int
    reserved_units: int
    triggered: bool
    close_reason: CloseReason | None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> StoredOrder:
        """From a row of `orders` as any driver returns it (NUMERIC, TEXT, 0/1 …)."""
        close_reason = row["close_reason"]
        return cls(
            order_id=row["order_id"],
            user_id=row["user_id"],
            symbol=row["symbol"],
            side=Side(row["side"]),
            order_type=OrderType(row["order_type"]),
            time_in_force=TimeInForce(row["time_in_force"]),
            price_ticks=row["price_ticks"],
            quantity_lots=row["quantity_lots"],
            quote_budget_units=row["quote_budget_units"],
            stop_price_ticks=row["stop_price_ticks"],
            client_order_id=row["client_order_id"],
            stp_mode=StpMode(row["stp_mode"]),
            post_only=bool(row["post_only"]),
            expire_at_ms=row["expire_at_ms"],
            priority=row["priority"],
            created_at_ms=row["created_at_ms"],
            updated_at_ms=row["updated_at_ms"],
            status=OrderStatus(row["status"]),
            filled_lots=row["filled_lots"],
            filled_notional_units=row["filled_notional_units"],
            fee_accrued=int(row["fee_accrued"]),
            fee_paid_units=row["fee_paid_units"],
            reserved_units=row["reserved_units"],
            triggered=bool(row["triggered"]),
            close_reason=None if close_reason is None else CloseReason(close_reason),
        )

    def record(self) -> dict[str, Any]:
        """The order as `order_record` gives it."""
        return {name: getattr(self, name) for name in RECORD_FIELDS}


@dataclass(frozen=True, slots=True)
class StoredTrade:
    trade_id: int
    seq: int
    market_seq: int
    symbol: str
    price_ticks: int
    quantity_lots: int
    notional_units: int
    taker_side: Side
    maker_order_id: int
    buyer_order_id: int
    seller_order_id: int
    buyer_user_id: int
    seller_user_id: int
    buyer_fee_units: int
    seller_fee_units: int
    executed_at_ms: int
    settlement_status: str
    settled_at_ms: int

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> StoredTrade:
        values = dict(row)
        values["taker_side"] = Side(values["taker_side"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class StoredBalance:
    user_id: int
    asset: str
    available: int
    locked: int


@dataclass(frozen=True, slots=True)
class StoredUser:
    """An account. Ids start at 1; user 0 is the exchange's fee account, never a user."""

    user_id: int
    name: str | None
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class Candle:
    """OHLCV of one market over `[open_time_ms, open_time_ms + interval)`, from its trades.

    Open and close are the prices of the first and last trade (by trade id) in the
    interval; volumes are sums of `quantity_lots` and `notional_units`.
    """

    open_time_ms: int
    open_ticks: int
    high_ticks: int
    low_ticks: int
    close_ticks: int
    volume_lots: int
    quote_volume_units: int
    trade_count: int
