"""Public market data: markets, order book, ticker, candles, market trades.

The book, ticker and market list come from the read model (`MarketData`, fed
by committed events), never from the engine's live state; candles and trades
from the committed store (candles from its rollup, in O(candles returned)).
`{symbol}` may be written `BTC/USDT` (as the seed does, so it spans two path
segments), `BTC-USDT` or `btc_usdt`.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from fastapi import APIRouter, Depends, Path, Query
from starlette.requests import Request
from starlette.responses import Response

from crossbook.api.context import ApiContext
from crossbook.api.envelope import success
from crossbook.api.params import (
    ASCII_INTEGER,
    DEFAULT_PAGE_LIMIT,
    SYMBOL_PATTERN,
    PageLimit,
    TimeBound,
    parse_time_ms,
)
from crossbook.api.routes.common import API_PREFIX, context, errors
from crossbook.api.schemas import CandleOut, Envelope, MarketOut, OrderBookOut, TickerOut
from crossbook.api.views import candle_json, market_json, ticker_json
from crossbook.engine.clock import WALL_CLOCK
from crossbook.engine.read_model.candles import CANDLE_INTERVALS_MS

router = APIRouter(prefix=API_PREFIX, tags=["market data"])
Context = Annotated[ApiContext, Depends(context)]
SymbolPath = Annotated[
    str,
    Path(
        description="BTC/USDT, BTC-USDT or btc_usdt", pattern=SYMBOL_PATTERN, examples=["BTC-USDT"]
    ),
]

DEFAULT_BOOK_DEPTH = 20
MAX_BOOK_DEPTH = 1_000  # levels per side of a REST book

CandleInterval = Annotated[
    Literal["1m", "5m", "15m", "1h", "4h", "1d"], Query(description="the candle width")
]
assert set(get_args(get_args(CandleInterval)[0])) == set(CANDLE_INTERVALS_MS)
BookDepth = Annotated[
    int,
    Query(ge=1, le=MAX_BOOK_DEPTH, description=f"levels per side, 1 to {MAX_BOOK_DEPTH}"),
    ASCII_INTEGER,
]


@router.get(
    "/markets",
    response_model=Envelope[list[MarketOut]],
    responses=errors(429),
    summary="List markets",
)
async def list_markets(request: Request, ctx: Context) -> Response:
    markets = ctx.market_data.markets()
    return success(request, [market_json(markets[s]) for s in sorted(markets)])


@router.get(
    "/markets/{symbol:path}/ticker",
    response_model=Envelope[TickerOut],
    responses=errors(404, 429),
    summary="24 h rolling ticker",
)
async def ticker(request: Request, symbol: SymbolPath, ctx: Context) -> Response:
    spec = ctx.market(symbol).spec
    now = WALL_CLOCK.now_ms()
    return success(request, ticker_json(spec, ctx.market_data.ticker(spec.symbol, now), now))


@router.get(
    "/markets/{symbol:path}/candles",
    response_model=Envelope[list[CandleOut]],
    responses=errors(400, 404, 429, 503),
    summary="OHLCV candles from trades, oldest first",
)
async def candles(
    request: Request,
    symbol: SymbolPath,
    ctx: Context,
    interval: CandleInterval = "1m",
    start_time: TimeBound = None,
    end_time: TimeBound = None,
    limit: PageLimit = DEFAULT_PAGE_LIMIT,
) -> Response:
    spec = ctx.market(symbol).spec
    rows = await ctx.store.candles(
        spec.symbol,
        CANDLE_INTERVALS_MS[interval],
        start_ms=parse_time_ms(start_time, "start_time"),
        end_ms=parse_time_ms(end_time, "end_time"),
        limit=limit,
    )
    return success(request, [candle_json(spec, interval, c) for c in rows])


@router.get(
    "/markets/{symbol:path}",
    response_model=Envelope[MarketOut],
    responses=errors(404, 429),
    summary="One market's rules and status",
)
async def get_market(request: Request, symbol: SymbolPath, ctx: Context) -> Response:
    return success(request, market_json(ctx.market(symbol)))


@router.get(
    "/orderbook/{symbol:path}",
    response_model=Envelope[OrderBookOut],
    responses=errors(400, 404, 429),
    summary="Order book snapshot (aggregated levels)",
)
async def order_book(
    request: Request,
    symbol: SymbolPath,
    ctx: Context,
    depth: BookDepth = DEFAULT_BOOK_DEPTH,
) -> Response:
    """Bids best (highest) first, asks best (lowest) first. `sequence` is the market's
    sequence the snapshot includes: the WebSocket diff that follows starts at
    `sequence + 1`."""
    spec = ctx.market(symbol).spec
    book = ctx.market_data.book(spec.symbol, depth)
    return success(request, ctx.books.book_json(spec, book, WALL_CLOCK.now_ms()))
