"""Request bodies and the documented response shapes (OpenAPI).

Decimal amounts are strings: a JSON number where a decimal is expected is refused
with the field's code (`INVALID_PRICE`, `INVALID_QUANTITY` …), never coerced. The
response models describe exactly what `views` produces; handlers build the JSON
directly (faster than validating every response) and tests check the two agree.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)
from pydantic.json_schema import SkipJsonSchema

from crossbook.api.params import (
    MAX_EPOCH_MS,
    MAX_TIME_CHARS,
    POSITIVE_EPOCH_MS_PATTERN,
    SYMBOL_PATTERN,
)
from crossbook.domain.units import INT64_MAX, MAX_DECIMAL_TEXT_CHARS
from crossbook.domain.validation import CLIENT_ORDER_ID_PATTERN, MAX_CLIENT_ORDER_ID_CHARS

MAX_TEXT_CHARS = 64
DECIMAL_PATTERN = r"^[0-9]+(\.[0-9]+)?$"  # plain positional notation (`domain.units`)
POSITIVE_DECIMAL_PATTERN = r"^([0-9]*[1-9][0-9]*(\.[0-9]+)?|[0-9]+\.[0-9]*[1-9][0-9]*)$"
ASSET_PATTERN = r"^[A-Za-z0-9]{1,16}$"
T = TypeVar("T")


def _integral(value: object) -> object:
    """JSON Schema's integers include numbers such as 60.0: read one as 60 (bodies are
    strict otherwise: a bool, a string or 60.5 is still refused)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Integral = BeforeValidator(_integral)
PositiveDecimal = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=MAX_DECIMAL_TEXT_CHARS, pattern=POSITIVE_DECIMAL_PATTERN
    ),
]


def _decimal(description: str | None = None, examples: list[str] | None = None) -> Any:
    """A positive decimal-string field: its grid is the market's, checked by the domain."""
    return Field(
        None,
        min_length=1,
        max_length=MAX_DECIMAL_TEXT_CHARS,
        pattern=POSITIVE_DECIMAL_PATTERN,
        description=description,
        examples=examples,
    )


SideText = Literal["buy", "sell"]
OrderTypeText = Literal["market", "limit", "stop_limit", "stop_market"]
TimeInForceText = Literal["GTC", "IOC", "FOK", "GTD"]
StpModeText = Literal["cancel_taker", "cancel_maker", "cancel_both", "none"]


def _rule(default: Any = ..., examples: list[str] | None = None, positive: bool = False) -> Any:
    """A decimal-string rule of a new market (checked whole by `MarketSpec.create`)."""
    return Field(
        default,
        min_length=1,
        max_length=MAX_DECIMAL_TEXT_CHARS,
        pattern=POSITIVE_DECIMAL_PATTERN if positive else DECIMAL_PATTERN,
        examples=examples,
    )


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


class PlaceOrderRequest(_Body):
    symbol: str = Field(max_length=33, pattern=SYMBOL_PATTERN, examples=["BTC/USDT"])
    side: SideText
    type: OrderTypeText
    quantity: str | None = _decimal(examples=["1.5"])
    quote_quantity: str | None = _decimal(
        "market buys only: quote to spend, at most 2^63-1 minor units of the quote asset"
    )
    price: str | None = _decimal(examples=["50000.00"])
    stop_price: str | None = _decimal()
    time_in_force: TimeInForceText = "GTC"
    expire_at: (
        Annotated[str, StringConstraints(max_length=MAX_TIME_CHARS)]
        | Annotated[int, Field(ge=1, le=MAX_EPOCH_MS), Integral]
        | None
    ) = Field(
        None,
        description="GTD only: epoch milliseconds (a number or digits) or an RFC 3339 "
        "date-time with its offset, up to 9999-12-31T23:59:59.999Z",
        json_schema_extra={
            "anyOf": [
                {"type": "string", "pattern": POSITIVE_EPOCH_MS_PATTERN, "maxLength": 15},
                {"type": "string", "format": "date-time", "maxLength": MAX_TIME_CHARS},
                {"type": "integer", "minimum": 1, "maximum": MAX_EPOCH_MS},
                {"type": "null"},
            ]
        },
    )
    post_only: bool = False
    client_order_id: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_CLIENT_ORDER_ID_CHARS,
        pattern=f"^{CLIENT_ORDER_ID_PATTERN}$",
    )
    stp_mode: StpModeText = "cancel_taker"

    _side = field_validator("side", "type", "stp_mode", mode="before")(_lower)

    @field_validator("time_in_force", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class AmendOrderRequest(_Body):
    """At least one of the two (absent is unchanged)."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    quantity: PositiveDecimal | SkipJsonSchema[None] = Field(
        None, description="the new total quantity, including what is filled"
    )
    price: PositiveDecimal | SkipJsonSchema[None] = Field(None, description="the new price")


class CreateUserRequest(_Body):
    name: str | None = Field(None, min_length=1, max_length=MAX_TEXT_CHARS)


class IssueTokenRequest(_Body):
    ttl_s: Annotated[int, Field(gt=0, le=366 * 24 * 3600), Integral] | None = None


class TransferRequest(_Body):
    user_id: (
        Annotated[str, StringConstraints(pattern=r"^[0-9]{1,19}$")]
        | Annotated[int, Field(ge=0, le=INT64_MAX), Integral]
    ) = Field(description="the user's id (0 is the fee account), digits or a number")
    asset: str = Field(max_length=16, pattern=ASSET_PATTERN, examples=["USDT"])
    amount: str = Field(
        max_length=MAX_DECIMAL_TEXT_CHARS, pattern=POSITIVE_DECIMAL_PATTERN, examples=["1000.00"]
    )


class CreateMarketRequest(_Body):
    base: str = Field(max_length=16, pattern=ASSET_PATTERN, examples=["BTC"])
    quote: str = Field(max_length=16, pattern=ASSET_PATTERN, examples=["USDT"])
    base_decimals: Annotated[int, Field(ge=0, le=18), Integral] | None = Field(
        None, description="if the asset is new"
    )
    quote_decimals: Annotated[int, Field(ge=0, le=18), Integral] | None = Field(
        None, description="if the asset is new"
    )
    tick_size: str = _rule(examples=["0.01"], positive=True)
    step_size: str = _rule(examples=["0.00001"], positive=True)
    min_quantity: str = _rule(positive=True)
    max_quantity: str = _rule(positive=True)
    min_notional: str = _rule("0")
    max_price: str | None = _rule(None, positive=True)
    maker_fee_rate: str | None = _rule(None)
    taker_fee_rate: str | None = _rule(None)


# -- documented responses ----------------------------------------------------------


class _Out(BaseModel):
    """A documented response shape; undocumented fields are an error (tests validate
    every response they get against these)."""

    model_config = ConfigDict(extra="forbid")


class Meta(_Out):
    request_id: str
    timestamp: str = Field(examples=["2025-11-23T10:30:45.123Z"])
    pagination: dict[str, Any] | None = None


class Envelope(_Out, Generic[T]):
    success: Literal[True]
    data: T
    meta: Meta


class ErrorBody(_Out):
    code: str = Field(examples=["INVALID_QUANTITY"])
    message: str
    details: dict[str, Any]


class ErrorEnvelope(_Out):
    success: Literal[False]
    error: ErrorBody
    meta: Meta


class OrderOut(_Out):
    id: str
    client_order_id: str | None
    user_id: str
    symbol: str
    side: SideText
    type: OrderTypeText
    time_in_force: TimeInForceText
    post_only: bool
    stp_mode: StpModeText
    price: str | None
    stop_price: str | None
    quantity: str | None
    quote_quantity: str | None
    filled_quantity: str
    filled_quote_quantity: str
    fee: str
    fee_asset: str
    status: Literal["open", "partially_filled", "filled", "cancelled", "rejected", "expired"]
    close_reason: str | None
    triggered: bool
    expire_at: str | None
    created_at: str
    updated_at: str


class PublicTradeOut(_Out):
    id: str
    symbol: str
    price: str
    quantity: str
    quote_quantity: str
    taker_side: SideText
    executed_at: str


class TradeOut(PublicTradeOut):
    order_id: str
    side: SideText
    liquidity: Literal["maker", "taker"]
    fee: str
    buyer_fee: str
    seller_fee: str
    fee_asset: str
    settlement_status: Literal["SETTLED", "PENDING", "SETTLEMENT_FAILED"] = Field(
        description="SETTLED in embedded mode; remote-wallet mode: PENDING until the wallet "
        "applied every leg, SETTLEMENT_FAILED while in the dead-letter queue"
    )


class PlacedOrderOut(_Out):
    order: OrderOut
    trades: list[TradeOut]


class LevelOut(_Out):
    price: str
    quantity: str
    num_orders: int


class OrderBookOut(_Out):
    symbol: str
    timestamp: str
    sequence: int
    bids: list[LevelOut]
    asks: list[LevelOut]
    spread: str | None


class TickerOut(_Out):
    symbol: str
    last_price: str | None
    open_24h: str | None
    high_24h: str | None
    low_24h: str | None
    price_change_24h: str | None
    volume_24h: str
    quote_volume_24h: str
    trade_count_24h: int
    best_bid: str | None
    best_bid_quantity: str | None
    best_ask: str | None
    best_ask_quantity: str | None
    window_start: str
    timestamp: str


class MarketOut(_Out):
    symbol: str
    base_asset: str
    quote_asset: str
    base_decimals: int
    quote_decimals: int
    status: Literal["active", "halted"]
    tick_size: str
    step_size: str
    min_quantity: str
    max_quantity: str
    min_notional: str
    max_price: str
    maker_fee_rate: str
    taker_fee_rate: str
    sequence: int


class CandleOut(_Out):
    open_time: str
    interval: str
    open: str
    high: str
    low: str
    close: str
    volume: str
    quote_volume: str
    trade_count: int


class BalanceOut(_Out):
    asset: str
    available: str
    locked: str
    total: str


class UserOut(_Out):
    id: str
    name: str | None
    created_at: str


class TokenOut(_Out):
    token: str
    token_type: Literal["Bearer"]
    expires_at: str


class TransferOut(_Out):
    user_id: str
    asset: str
    amount: str
    balance: BalanceOut


class SettlementLegOut(_Out):
    name: str = Field(examples=["buyer_pays"])
    op: str = Field(examples=["debit"])
    user_id: str
    asset: str
    amount: str
    account: str = Field(examples=["locked"])
    target_key: str | None
    state: str = Field(examples=["applied"])
    generation: int


class SettlementOut(_Out):
    id: str
    kind: str = Field(examples=["trade"])
    trade_id: str | None
    status: str = Field(examples=["SETTLEMENT_FAILED"])
    attempts: int
    reason: str | None
    created_at: str
    updated_at: str
    settled_at: str | None
    failed_at: str | None
    legs: list[SettlementLegOut]


class ReplayOut(_Out):
    replayed: list[str]


class OrphanedHoldOut(_Out):
    key: str = Field(examples=["hold:9f1c2e4b7a6d4c0e8b3a5f7d9e1c2b4a"])
    user_id: str
    asset: str
    amount: str = Field(description="held, in the asset's decimals")
    applied_at: str = Field(description="when the wallet applied the hold (its clock)")
    age_ms: int = Field(description="how long ago, by the exchange's clock, when listed")


class OrphanedHoldsMeta(Meta):
    complete: bool = Field(
        description="false: the scan stopped at its bound; more orphans may follow these"
    )


class OrphanedHoldsEnvelope(Envelope[list[OrphanedHoldOut]]):
    meta: OrphanedHoldsMeta


class VoidOrphanedOut(_Out):
    found: int = Field(description="orphaned holds the pass found")
    voided: int = Field(description="of those, voids the engine committed")
    complete: bool = Field(description="false: the pass stopped at its bound; run it again")


class ReconciliationOut(_Out):
    passes: int = Field(description="passes done since start-up")
    startup_pass_done: bool
    holds_found: int = Field(description="orphans found by passes (one left unvoided counts again)")
    holds_voided: int = Field(description="voids committed, by passes and operators")
    void_failures: int = Field(description="voids the engine did not take")
    orphaned: int = Field(description="orphans the last pass or listing left unvoided")
    last_pass_at: str | None
    last_pass_duration_ms: int | None
    last_pass_complete: bool
    grace_ms: int = Field(description="CROSSBOOK_HOLD_ORPHAN_GRACE_MS")
    interval_ms: int = Field(description="CROSSBOOK_HOLD_RECONCILE_INTERVAL_MS")


class HealthOut(_Out):
    status: str
    checks: dict[str, str] = {}
