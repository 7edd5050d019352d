"""Order requests → domain commands: decimal strings parsed on the market's grids.

Only syntax and grids are checked here (the edge of DESIGN rule 5); every
trading rule (which fields an order type needs, minimum notional, funds) is the
domain's, so the API and the engine can never disagree about what is valid.
Each refusal is a `DomainError` with the field's specific code.
"""

from __future__ import annotations

from crossbook.api.params import expiry_ms
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


def place_command(spec: MarketSpec, body: PlaceOrderRequest, user_id: int) -> PlaceOrder:
    return PlaceOrder(
        user_id=user_id,
        symbol=spec.symbol,
        side=Side(body.side),
        order_type=OrderType(body.type),
        quantity_lots=0 if body.quantity is None else spec.parse_quantity(body.quantity),
        price_ticks=0 if body.price is None else spec.parse_price(body.price),
        quote_budget_units=(
            0 if body.quote_quantity is None else spec.parse_quote_quantity(body.quote_quantity)
        ),
        stop_price_ticks=(0 if body.stop_price is None else spec.parse_stop_price(body.stop_price)),
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
