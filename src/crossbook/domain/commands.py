"""Commands: the only way to change the exchange (`Exchange.execute`).

Commands carry integer grid units: the gateway parses decimal strings with the
market's spec (`MarketSpec.parse_price` …) before building one. Time passes only
through `Tick(now_ms)`: the engine sends one before each batch with its clock
reading, and every other command happens at the exchange's current time. So a
replay of the same commands (ticks included) reproduces the same events.
"""

from __future__ import annotations

from dataclasses import dataclass

from crossbook.domain.markets import DEFAULT_MAKER_FEE_RATE, DEFAULT_TAKER_FEE_RATE, MarketStatus
from crossbook.domain.orders import DEFAULT_STP_MODE, OrderType, Side, StpMode, TimeInForce


@dataclass(frozen=True, slots=True)
class CreateAsset:
    code: str
    decimals: int


@dataclass(frozen=True, slots=True)
class CreateMarket:
    base: str
    quote: str
    tick_size: str
    lot_size: str
    min_quantity: str
    max_quantity: str
    min_notional: str = "0"
    max_price: str | None = None
    maker_fee_rate: str = DEFAULT_MAKER_FEE_RATE
    taker_fee_rate: str = DEFAULT_TAKER_FEE_RATE


@dataclass(frozen=True, slots=True)
class SetMarketStatus:
    symbol: str
    status: MarketStatus


@dataclass(frozen=True, slots=True)
class Deposit:
    user_id: int
    asset: str
    amount_units: int


@dataclass(frozen=True, slots=True)
class Withdraw:
    user_id: int
    asset: str
    amount_units: int


@dataclass(frozen=True, slots=True)
class Hold:
    """Funds an external wallet confirmed it holds for one command (remote-wallet mode).

    `key` is the idempotency key the hold was made with; `amount_units` is in
    `asset`, which must be the asset the command reserves.
    """

    key: str
    asset: str
    amount_units: int


@dataclass(frozen=True, slots=True)
class VoidHold:
    """A wallet hold no command will use (refused, or never reached the engine).

    It changes no balance: it records that the wallet must void the hold (release
    it if it was applied), which the settlement outbox then does.
    """

    user_id: int
    hold: Hold


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    """Place an order.

    - limit / stop_limit: `price_ticks` and `quantity_lots`;
    - market: `quantity_lots`, or (buy only) `quote_budget_units` to spend;
    - stop_*: `stop_price_ticks`; a stop_market buy needs a quote budget, since
      its cost cannot be known, and so reserved, before it triggers.
    """

    user_id: int
    symbol: str
    side: Side
    order_type: OrderType
    quantity_lots: int = 0
    price_ticks: int = 0
    quote_budget_units: int = 0
    stop_price_ticks: int = 0
    time_in_force: TimeInForce = TimeInForce.GTC
    post_only: bool = False
    client_order_id: str | None = None
    stp_mode: StpMode = DEFAULT_STP_MODE
    expire_at_ms: int | None = None
    hold: Hold | None = None  # remote-wallet mode only: what funds the reservation


@dataclass(frozen=True, slots=True)
class CancelOrder:
    """Cancel one of the user's open orders, by order id or by client order id."""

    user_id: int
    order_id: int | None = None
    client_order_id: str | None = None


@dataclass(frozen=True, slots=True)
class AmendOrder:
    """Change a resting limit order's quantity (total, including filled) and/or price.

    Reducing the quantity at the same price keeps time priority; any other change
    is a cancel-replace: the order keeps its id but goes to the back of the queue
    (and may trade at once if its new price crosses).
    """

    user_id: int
    order_id: int
    quantity_lots: int | None = None
    price_ticks: int | None = None
    hold: Hold | None = None  # remote-wallet mode only: funds a larger reservation


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passes to `now_ms` (never backwards): GTD orders that are due expire."""

    now_ms: int


Command = (
    CreateAsset
    | CreateMarket
    | SetMarketStatus
    | Deposit
    | Withdraw
    | PlaceOrder
    | CancelOrder
    | AmendOrder
    | VoidHold
    | Tick
)
