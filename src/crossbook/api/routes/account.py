"""The caller's balances and trades, and public trades of a market (`/trades`)."""

from __future__ import annotations

from typing import Annotated, TypedDict

from fastapi import APIRouter, Depends, Query
from fastapi.security import HTTPAuthorizationCredentials
from starlette.requests import Request
from starlette.responses import Response

from crossbook.api.context import ApiContext, context_of
from crossbook.api.envelope import success
from crossbook.api.errors import ApiCode, ApiError
from crossbook.api.params import (
    DEFAULT_PAGE_LIMIT,
    IdCursor,
    PageLimit,
    SymbolQuery,
    TimeBound,
    cursor_id,
    parse_time_ms,
)
from crossbook.api.routes.common import (
    API_PREFIX,
    balances_json,
    bearer,
    context,
    errors,
    page_meta,
    trader_id,
)
from crossbook.api.schemas import BalanceOut, Envelope, PublicTradeOut, TradeOut
from crossbook.api.views import fills_json, trade_json


class _TradeWindow(TypedDict):
    start_ms: int | None
    end_ms: int | None
    before_trade_id: int | None
    after_trade_id: int | None
    limit: int


router = APIRouter(prefix=API_PREFIX, tags=["account"])
Context = Annotated[ApiContext, Depends(context)]
TRUE_TEXTS = frozenset({"1", "on", "t", "true", "y", "yes"})  # the query's true booleans


async def mine_caller(request: Request) -> int | None:
    """With `mine=true`, the authenticated trader, checked before any other parameter
    (a caller without a token hears 401, whatever else the query holds)."""
    mine = request.query_params.get("mine")
    if mine is None or mine.lower() not in TRUE_TEXTS:
        return None
    return context_of(request).trader(request)


@router.get(
    "/balances",
    response_model=Envelope[list[BalanceOut]],
    responses=errors(401, 403, 429, 503),
    summary="The caller's balances: available and locked per asset",
)
async def balances(
    request: Request, user_id: Annotated[int, Depends(trader_id)], ctx: Context
) -> Response:
    return success(request, await balances_json(ctx, user_id))


@router.get(
    "/trades",
    response_model=Envelope[list[TradeOut] | list[PublicTradeOut]],
    responses=errors(400, 401, 403, 404, 429, 503),
    summary="Trades of a market, or the caller's trades (mine=true)",
)
async def trades(
    request: Request,
    ctx: Context,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    caller: Annotated[int | None, Depends(mine_caller)],
    symbol: SymbolQuery = None,
    mine: Annotated[bool, Query(description="the caller's trades (needs a token)")] = False,
    start_time: TimeBound = None,
    end_time: TimeBound = None,
    before: IdCursor = None,
    after: IdCursor = None,
    limit: PageLimit = DEFAULT_PAGE_LIMIT,
) -> Response:
    """Without `mine`: the public trades of `symbol` (required), newest first.
    With `mine=true`: the caller's fills (optionally of `symbol`) with the caller's
    side, liquidity, order id and fee; a self-trade (stp_mode none) is two fills of
    one trade id, its buy and its sell. `limit` and the cursors count trades."""
    spec_symbol = None if symbol is None else ctx.market(symbol).spec.symbol
    window: _TradeWindow = {
        "start_ms": parse_time_ms(start_time, "start_time"),
        "end_ms": parse_time_ms(end_time, "end_time"),
        "before_trade_id": cursor_id(before),
        "after_trade_id": cursor_id(after),
        "limit": limit,
    }
    if mine:
        user_id = ctx.trader(request) if caller is None else caller
        rows = await ctx.store.list_user_trades(user_id, symbol=spec_symbol, **window)
        data = [fill for t in rows for fill in fills_json(ctx.spec(t.symbol), t, user_id)]
    else:
        if spec_symbol is None:
            raise ApiError(
                ApiCode.INVALID_REQUEST,
                "symbol is required for market trades (or pass mine=true)",
                details={"field": "symbol"},
            )
        rows = await ctx.store.list_market_trades(spec_symbol, **window)
        data = [trade_json(ctx.spec(t.symbol), t) for t in rows]
    return success(request, data, extra_meta=page_meta(rows, limit, "trade_id"))
