"""The pure, deterministic core of crossbook (standard library only).

Public surface: `Exchange` and its commands, events, errors and value types.
Nothing here reads a clock, draws random numbers or does I/O.
"""

from crossbook.domain.commands import (
    AmendOrder,
    CancelOrder,
    Command,
    CreateAsset,
    CreateMarket,
    Deposit,
    Hold,
    PlaceOrder,
    SetMarketStatus,
    Tick,
    VoidHold,
    Withdraw,
)
from crossbook.domain.errors import DomainError, ErrorCode
from crossbook.domain.events import (
    AssetCreated,
    Deposited,
    Event,
    HoldConsumed,
    HoldReleased,
    HoldVoided,
    MarketCreated,
    MarketStatusChanged,
    OrderAccepted,
    OrderUpdated,
    TradeExecuted,
    Withdrawn,
)
from crossbook.domain.exchange import Exchange, ExchangeLimits, Funding, Market
from crossbook.domain.ledger import FEE_ACCOUNT_ID
from crossbook.domain.markets import Asset, MarketSpec, MarketStatus
from crossbook.domain.orders import (
    CloseReason,
    Order,
    OrderStatus,
    OrderType,
    Side,
    StpMode,
    TimeInForce,
)
from crossbook.domain.units import INT64_MAX

__all__ = [
    "FEE_ACCOUNT_ID",
    "INT64_MAX",
    "AmendOrder",
    "Asset",
    "AssetCreated",
    "CancelOrder",
    "CloseReason",
    "Command",
    "CreateAsset",
    "CreateMarket",
    "Deposit",
    "Deposited",
    "DomainError",
    "ErrorCode",
    "Event",
    "Exchange",
    "ExchangeLimits",
    "Funding",
    "Hold",
    "HoldConsumed",
    "HoldReleased",
    "HoldVoided",
    "Market",
    "MarketCreated",
    "MarketSpec",
    "MarketStatus",
    "MarketStatusChanged",
    "Order",
    "OrderAccepted",
    "OrderStatus",
    "OrderType",
    "OrderUpdated",
    "PlaceOrder",
    "SetMarketStatus",
    "Side",
    "StpMode",
    "Tick",
    "TimeInForce",
    "TradeExecuted",
    "VoidHold",
    "Withdraw",
    "Withdrawn",
]
