"""`/orders`: place, cancel (idempotent), amend, get and list the caller's orders.

Placing, amending and cancelling are the order-entry service's
(`engine.order_entry`): a route parses the request, calls it and shows its
outcome, built from the committed events. Only a cancel of an order that is
not open reads the store, to answer the closed order unchanged (or 404).
Another user's order is reported exactly as an unknown one (404
ORDER_NOT_FOUND), never 403, so ids reveal nothing about other accounts.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from starlette.requests import Request
from starlette.responses import Response

from crossbook.api.context import ApiContext
from crossbook.api.envelope import success
from crossbook.api.errors import ApiError
from crossbook.api.order_requests import amend_command, place_command
from crossbook.api.params import (
    DEFAULT_PAGE_LIMIT,
    ID_PATTERN,
    IdCursor,
    PageLimit,
    SymbolQuery,
    TimeBound,
    cursor_id,
    parse_order_id,
    parse_time_ms,
)
from crossbook.api.routes.common import (
    API_PREFIX,
    context,
    errors,
    page_meta,
    rate_limited,
    trader_id,
)
from crossbook.api.schemas import (
    AmendOrderRequest,
    Envelope,
    OrderOut,
    PlacedOrderOut,
    PlaceOrderRequest,
)
from crossbook.api.views import order_json, trade_json
from crossbook.domain import CancelOrder, ErrorCode, MarketSpec, OrderStatus
from crossbook.domain.orders import OPEN_STATUSES
from crossbook.domain.validation import CLIENT_ORDER_ID_PATTERN, MAX_CLIENT_ORDER_ID_CHARS
from crossbook.engine.order_entry import CancelOutcome, OrderOutcome
from crossbook.engine.order_view import OrderView
from crossbook.engine.read_model.records import StoredOrder

router = APIRouter(prefix=f"{API_PREFIX}/orders", tags=["orders"])

UserId = Annotated[int, Depends(trader_id)]
Context = Annotated[ApiContext, Depends(context)]
OrderIdPath = Annotated[
    str, Path(description="the order's id", examples=["1001"], pattern=ID_PATTERN)
]
ClientOrderIdPath = Annotated[
    str,
    Path(
        description="the client order id given at placement",
        min_length=1,
        max_length=MAX_CLIENT_ORDER_ID_CHARS,
        pattern=f"^{CLIENT_ORDER_ID_PATTERN}$",
    ),
]

ACTIVE_STATUS_ALIAS = "active"  # open + partially_filled
_STATUS_WORDS = "|".join([ACTIVE_STATUS_ALIAS, *(s.value for s in OrderStatus)])
STATUS_PATTERN = f"^({_STATUS_WORDS})(,({_STATUS_WORDS}))*$"


@router.post(
    "",
    status_code=201,
    response_model=Envelope[PlacedOrderOut],
    responses=errors(400, 401, 403, 404, 409, 413, 429, 503),
    summary="Place an order",
)
async def place_order(
    request: Request, body: PlaceOrderRequest, user_id: UserId, ctx: Context
) -> Response:
    """Market, limit, stop-limit or stop-market; GTC/IOC/FOK/GTD; post-only; STP mode.

    Answers only after the order and its trades are committed: 201 with the order
    as it stands after matching and the trades it took part in.
    """
    rate_limited(ctx, user_id)
    spec = ctx.market(body.symbol).spec
    placed = await ctx.orders.place(place_command(spec, body, user_id), spec)
    return success(request, _order_outcome_json(spec, placed, user_id), status=201)


@router.get(
    "/client/{client_order_id}",
    response_model=Envelope[OrderOut],
    responses=errors(401, 403, 404, 429, 503),
    summary="Get the caller's newest order with a client order id",
)
async def get_order_by_client_id(
    request: Request, client_order_id: ClientOrderIdPath, user_id: UserId, ctx: Context
) -> Response:
    """Find an order whose placement answer was lost (client ids are reusable once
    the order closed: this is the newest)."""
    return success(request, await _client_order_json(ctx, user_id, client_order_id))


@router.delete(
    "/client/{client_order_id}",
    response_model=Envelope[OrderOut],
    responses=errors(401, 403, 404, 429, 503),
    summary="Cancel by client order id (idempotent)",
)
async def cancel_order_by_client_id(
    request: Request, client_order_id: ClientOrderIdPath, user_id: UserId, ctx: Context
) -> Response:
    """Cancel the caller's open order with this client id; if none is open, return the
    newest closed one with it unchanged (200), or 404."""
    cancelled = await _cancel(ctx, CancelOrder(user_id, client_order_id=client_order_id))
    if cancelled.order is None:
        return success(request, await _client_order_json(ctx, user_id, client_order_id))
    return success(request, _view_json(ctx, cancelled.order))


@router.delete(
    "/{order_id}",
    response_model=Envelope[OrderOut],
    responses=errors(401, 403, 404, 429, 503),
    summary="Cancel an order (idempotent)",
)
async def cancel_order(
    request: Request, order_id: OrderIdPath, user_id: UserId, ctx: Context
) -> Response:
    """Cancel one of the caller's orders. Cancelling an order that is already closed
    (cancelled, filled, expired) returns it unchanged with 200."""
    oid = parse_order_id(order_id)
    cancelled = await _cancel(ctx, CancelOrder(user_id, order_id=oid))
    if cancelled.order is None:
        return success(request, await _owned_order_json(ctx, user_id, oid))
    return success(request, _view_json(ctx, cancelled.order))


@router.patch(
    "/{order_id}",
    response_model=Envelope[PlacedOrderOut],
    responses=errors(400, 401, 403, 404, 409, 429, 503),
    summary="Amend a resting limit order",
)
async def amend_order(
    request: Request,
    order_id: OrderIdPath,
    body: AmendOrderRequest,
    user_id: UserId,
    ctx: Context,
) -> Response:
    """Change quantity (total, including filled) and/or price. Reducing the quantity
    keeps time priority; any other change moves the order to the back of its level
    and may trade at once (the trades are returned)."""
    oid = parse_order_id(order_id)
    rate_limited(ctx, user_id)
    stored = await _owned_order(ctx, user_id, oid)
    spec = ctx.spec(stored.symbol)
    amended = await ctx.orders.amend(amend_command(spec, body, user_id, oid), spec, stored)
    return success(request, _order_outcome_json(spec, amended, user_id))


@router.get(
    "/{order_id}",
    response_model=Envelope[OrderOut],
    responses=errors(401, 403, 404, 429, 503),
    summary="Get one of the caller's orders",
)
async def get_order(
    request: Request, order_id: OrderIdPath, user_id: UserId, ctx: Context
) -> Response:
    return success(request, await _owned_order_json(ctx, user_id, parse_order_id(order_id)))


@router.get(
    "",
    response_model=Envelope[list[OrderOut]],
    responses=errors(400, 401, 403, 404, 429, 503),
    summary="List the caller's orders, newest first",
)
async def list_orders(
    request: Request,
    user_id: UserId,
    ctx: Context,
    status: Annotated[
        str | None,
        Query(
            description="comma-separated statuses (open, partially_filled, filled, cancelled, "
            "expired, rejected); `active` = open + partially_filled",
            pattern=STATUS_PATTERN,
            max_length=200,
        ),
    ] = None,
    symbol: SymbolQuery = None,
    start_time: TimeBound = None,
    end_time: TimeBound = None,
    before: IdCursor = None,
    after: IdCursor = None,
    limit: PageLimit = DEFAULT_PAGE_LIMIT,
) -> Response:
    """`before`/`after` are keyset cursors: only orders with a smaller / larger id."""
    orders = await ctx.store.list_orders(
        user_id,
        statuses=_statuses(status),
        symbol=None if symbol is None else ctx.market(symbol).spec.symbol,
        start_ms=parse_time_ms(start_time, "start_time"),
        end_ms=parse_time_ms(end_time, "end_time"),
        before_order_id=cursor_id(before),
        after_order_id=cursor_id(after),
        limit=limit,
    )
    data = [order_json(ctx.spec(o.symbol), OrderView.from_stored(o)) for o in orders]
    return success(request, data, extra_meta=page_meta(orders, limit, "order_id"))


async def _cancel(ctx: ApiContext, command: CancelOrder) -> CancelOutcome:
    """Cancel if open. An order that is not open (closed, unknown, another user's) is
    left to the caller's store read, which answers the closed one or 404."""
    rate_limited(ctx, command.user_id)
    return await ctx.orders.cancel(command)


def _order_outcome_json(spec: MarketSpec, outcome: OrderOutcome, user_id: int) -> dict[str, Any]:
    """A placed or amended order and the trades it took part in, as its owner sees them."""
    settled = outcome.trades_settled
    return {
        "order": order_json(spec, outcome.order),
        "trades": [trade_json(spec, t, user_id, settled=settled) for t in outcome.trades],
    }


def _view_json(ctx: ApiContext, order: OrderView) -> dict[str, Any]:
    return order_json(ctx.spec(order.symbol), order)


async def _owned_order(ctx: ApiContext, user_id: int, order_id: int) -> StoredOrder:
    stored = await ctx.store.get_order(user_id, order_id)
    if stored is None:
        raise ApiError(
            ErrorCode.ORDER_NOT_FOUND,
            f"order {order_id} not found",
            details={"order_id": str(order_id)},
        )
    return stored


async def _owned_order_json(ctx: ApiContext, user_id: int, order_id: int) -> dict[str, Any]:
    return _view_json(ctx, OrderView.from_stored(await _owned_order(ctx, user_id, order_id)))


async def _client_order_json(ctx: ApiContext, user_id: int, client_order_id: str) -> dict[str, Any]:
    stored = await ctx.store.get_order_by_client_id(user_id, client_order_id)
    if stored is None or stored.client_order_id != client_order_id:
        raise ApiError(
            ErrorCode.ORDER_NOT_FOUND,
            "no order with that client order id",
            details={"client_order_id": client_order_id},
        )
    return _view_json(ctx, OrderView.from_stored(stored))


def _statuses(text: str | None) -> list[OrderStatus] | None:
    """The statuses of a `status` filter (its words checked by `STATUS_PATTERN`)."""
    if text is None:
        return None
    out: list[OrderStatus] = []
    for part in text.split(","):
        out += OPEN_STATUSES if part == ACTIVE_STATUS_ALIAS else (OrderStatus(part),)
    return out
