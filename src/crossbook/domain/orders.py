"""Orders: their kinds, their one status enum with its transition table, and the
mutable `Order` record the engine keeps while an order is open.

Invariants:
- `0 <= filled_lots <= quantity_lots` (quote-budget market buys have
  `quantity_lots == 0` and are bounded by `quote_budget_units` instead).
- Status only moves along `STATUS_TRANSITIONS`; a terminal order never changes.
- `reserved_units` is what this order holds locked in the ledger: quote units
  for a buy, base units for a sell. The sum over a user's open orders equals
  the user's locked balance of that asset (checked in `invariants`).
- `fee_paid_units == ceil(fee_accrued / FEE_RATE_SCALE)`: fees are rounded up once
  over the order's cumulative notional, so splitting an order into many fills
  never costs more than filling it at once.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from crossbook.domain.book import PriceLevel


class Side(enum.StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderType(enum.StrEnum):
    LIMIT = "limit"
    MARKET = "market"
    STOP_LIMIT = "stop_limit"
    STOP_MARKET = "stop_market"


class TimeInForce(enum.StrEnum):
    GTC = "GTC"  # good till cancelled
    IOC = "IOC"  # immediate or cancel: the unfilled rest expires
    FOK = "FOK"  # fill or kill: all at once or nothing
    GTD = "GTD"  # good till date: expires at `expire_at_ms`


class StpMode(enum.StrEnum):
    """Self-trade prevention, applied with the taker's mode when it meets its own order."""

    CANCEL_TAKER = "cancel_taker"
    CANCEL_MAKER = "cancel_maker"
    CANCEL_BOTH = "cancel_both"
    NONE = "none"


DEFAULT_STP_MODE: Final = StpMode.CANCEL_TAKER


class OrderStatus(enum.StrEnum):
    OPEN = "open"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        return not STATUS_TRANSITIONS[self]


STATUS_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.OPEN: frozenset(
        {
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED,
            OrderStatus.CANCELLED,
            OrderStatus.EXPIRED,
            OrderStatus.REJECTED,
        }
    ),
    OrderStatus.PARTIALLY_FILLED: frozenset(
        {
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED,
            OrderStatus.CANCELLED,
            OrderStatus.EXPIRED,
        }
    ),
    OrderStatus.FILLED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
    OrderStatus.REJECTED: frozenset(),
    OrderStatus.EXPIRED: frozenset(),
}


class CloseReason(enum.StrEnum):
    """Why an order stopped being open (carried on its last `OrderUpdated`)."""

    FILLED = "filled"
    CANCELLED_BY_USER = "cancelled_by_user"
    SELF_TRADE_PREVENTION = "self_trade_prevention"
    UNFILLED_IOC = "unfilled_ioc"
    UNFILLED_FOK = "unfilled_fok"
    NO_LIQUIDITY = "no_liquidity"
    GTD_EXPIRED = "gtd_expired"
    FILL_LIMIT = "fill_limit"
    POST_ONLY_WOULD_TAKE = "post_only_would_take"


_OPEN: Final = OrderStatus.OPEN  # bound once: see the note on enum lookups in `exchange`
# the statuses of an open order: resting in a book, or a stop waiting to trigger
OPEN_STATUSES: Final = (OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED)
_STOP_MARKET: Final = OrderType.STOP_MARKET
_MARKET: Final = OrderType.MARKET


class Order:
    """An order while the engine holds it. Hot path: plain slots, no validation."""

    __slots__ = (
        "client_order_id",
        "close_reason",
        "created_at_ms",
        "expire_at_ms",
        "fee_accrued",
        "fee_paid_units",
        "filled_lots",
        "filled_notional_units",
        "level",
        "next",
        "order_id",
        "order_type",
        "post_only",
        "prev",
        "price_ticks",
        "priority",
        "quantity_lots",
        "quote_budget_units",
        "reserved_units",
        "side",
        "status",
        "stop_price_ticks",
        "stp_mode",
        "symbol",
        "time_in_force",
        "triggered",
        "updated_at_ms",
        "user_id",
    )

    def __init__(
        self,
        order_id: int,
        user_id: int,
        symbol: str,
        side: Side,
        order_type: OrderType,
        time_in_force: TimeInForce,
        price_ticks: int,
        quantity_lots: int,
        quote_budget_units: int,
        stop_price_ticks: int,
        client_order_id: str | None,
        stp_mode: StpMode,
        post_only: bool,
        expire_at_ms: int | None,
        priority: int,
        now_ms: int,
    ) -> None:
        self.order_id = order_id
        self.user_id = user_id
        self.symbol = symbol
        self.side = side
        self.order_type = order_type
        self.time_in_force = time_in_force
        self.price_ticks = price_ticks  # limit price; 0 for market orders
        self.quantity_lots = quantity_lots  # 0 for a market buy by quote budget
        self.quote_budget_units = quote_budget_units  # > 0 only for a quote-budget buy
        self.stop_price_ticks = stop_price_ticks  # 0 unless a stop order
        self.client_order_id = client_order_id
        self.stp_mode = stp_mode
        self.post_only = post_only
        self.expire_at_ms = expire_at_ms
        self.priority = priority  # time priority: smaller is earlier
        self.created_at_ms = now_ms
        self.updated_at_ms = now_ms
        self.status = _OPEN
        self.filled_lots = 0
        self.filled_notional_units = 0
        self.fee_accrued = 0  # sum of notional * fee_ppm over fills (exact)
        self.fee_paid_units = 0
        self.reserved_units = 0
        self.triggered = stop_price_ticks == 0
        self.close_reason: CloseReason | None = None  # set when the order closes
        self.level: PriceLevel | None = None
        self.prev: Order | None = None
        self.next: Order | None = None

    @property
    def remaining_lots(self) -> int:
        return self.quantity_lots - self.filled_lots

    @property
    def is_stop(self) -> bool:
        return self.stop_price_ticks > 0

    @property
    def is_market(self) -> bool:
        return self.order_type is _MARKET or self.order_type is _STOP_MARKET

    def set_status(self, status: OrderStatus) -> None:
        assert status in STATUS_TRANSITIONS[self.status], (self.order_id, self.status, status)
        self.status = status

    def __repr__(self) -> str:
        return (
            f"Order({self.order_id}, user={self.user_id}, {self.symbol} {self.side} "
            f"{self.order_type} {self.remaining_lots}@{self.price_ticks} {self.status})"
        )


RECORD_FIELDS: Final = (
    "order_id",
    "user_id",
    "symbol",
    "side",
    "order_type",
    "time_in_force",
    "price_ticks",
    "quantity_lots",
    "quote_budget_units",
    "stop_price_ticks",
    "client_order_id",
    "stp_mode",
    "post_only",
    "expire_at_ms",
    "priority",
    "created_at_ms",
    "updated_at_ms",
    "status",
    "filled_lots",
    "filled_notional_units",
    "fee_accrued",
    "fee_paid_units",
    "reserved_units",
    "triggered",
    "close_reason",
)  # everything that makes an order what it is (book links excluded)


def order_record(order: Order) -> dict[str, Any]:
    """An order as plain data: what a store keeps and `order_from_record` rebuilds."""
    return {name: getattr(order, name) for name in RECORD_FIELDS}


def order_from_record(record: dict[str, Any]) -> Order:
    r = record
    order = Order(
        r["order_id"],
        r["user_id"],
        r["symbol"],
        Side(r["side"]),
        OrderType(r["order_type"]),
        TimeInForce(r["time_in_force"]),
        r["price_ticks"],
        r["quantity_lots"],
        r["quote_budget_units"],
        r["stop_price_ticks"],
        r["client_order_id"],
        StpMode(r["stp_mode"]),
        r["post_only"],
        r["expire_at_ms"],
        r["priority"],
        r["created_at_ms"],
    )
    order.updated_at_ms = r["updated_at_ms"]
    order.status = OrderStatus(r["status"])
    order.filled_lots = r["filled_lots"]
    order.filled_notional_units = r["filled_notional_units"]
    order.fee_accrued = r["fee_accrued"]
    order.fee_paid_units = r["fee_paid_units"]
    order.reserved_units = r["reserved_units"]
    order.triggered = r["triggered"]
    order.close_reason = None if r["close_reason"] is None else CloseReason(r["close_reason"])
    return order
