"""Order requests → domain commands: decimal strings parsed on the market's grids.

Only syntax and grids are checked here (the edge of DESIGN rule 5); every
trading rule (which fields an order type needs, minimum notional, funds) is the
domain's, so the API and the engine can never disagree about what is valid.
Each refusal is a `DomainError` with the field's specific code.
"""

from __future__ import annotations

from crossbook.api.envelope import ms_from_iso
from crossbook.api.schemas import AmendOrderRequest, PlaceOrderRequest
from crossbook.domain import (
    AmendOrder,
    DomainError,
    ErrorCode,
    MarketSpec,
    OrderType,
    PlaceOrder,
    Side,
    StpMode,
    TimeInForce,
)

MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def place_command(spec: MarketSpec, body: PlaceOrderRequest, user_id: int) -> PlaceOrder:
    return PlaceOrder(
        user_id=user_id,
        symbol=spec.symbol,
        side=Side(body.side),
        order_type=OrderType(body.type),
        quantity_lots=0 if body.quantity is None else spec.parse_quantity(body.quantity),
        price_ticks=0 if body.price is None else spec.parse_price(body.price),
        quote_budget_units=(
            0 if body.quote_quantity is None else _budget(spec, body.quote_quantity)
        ),
        stop_price_ticks=(
            0 if body.stop_price is None else spec.parse_price(body.stop_price, "stop_price")
        ),
        time_in_force=TimeInForce(body.time_in_force),
        post_only=body.post_only,
        client_order_id=body.client_order_id,
        stp_mode=StpMode(body.stp_mode),
        expire_at_ms=None if body.expire_at is None else expiry_ms(body.expire_at),
    )


def amend_command(
    spec: MarketSpec, body: AmendOrderRequest, user_id: int, order_id: int
) -> AmendOrder:
    if body.quantity is None and body.price is None:
        raise DomainError(ErrorCode.INVALID_ORDER, "an amend needs a new quantity or price")
    return AmendOrder(
        user_id=user_id,
        order_id=order_id,
        quantity_lots=None if body.quantity is None else spec.parse_quantity(body.quantity),
        price_ticks=None if body.price is None else spec.parse_price(body.price),
    )


def _budget(spec: MarketSpec, text: str) -> int:
    units = spec.parse_quote_amount(text, "quote_quantity")
    if units <= 0:
        raise DomainError(
            ErrorCode.INVALID_QUANTITY,
            "quote_quantity must be greater than 0",
            field="quote_quantity",
            provided=text,
        )
    return units


def expiry_ms(value: str | int) -> int:
    """A GTD expiry: epoch milliseconds (a number or digits), or ISO 8601 with a zone."""
    if isinstance(value, int):  # the request schema is strict: never a bool here
        ms = value
    elif value.isdigit() and len(value) <= 15:
        ms = int(value)
    else:
        parsed = ms_from_iso(value)
        if parsed is None:
            raise DomainError(
                ErrorCode.INVALID_EXPIRY,
                "expire_at must be epoch milliseconds or ISO 8601 with a time zone",
                field="expire_at",
                provided=value,
            )
        ms = parsed
    if not 0 < ms <= MAX_EPOCH_MS:
        raise DomainError(
            ErrorCode.INVALID_EXPIRY, "expire_at is out of range", field="expire_at", provided=value
        )
    return ms
