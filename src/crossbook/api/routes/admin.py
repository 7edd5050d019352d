"""`/admin`: users, tokens, deposits and withdrawals, markets (create, halt, resume).

Every route needs an admin token. Money moves only through the funds service
(`engine.funds`): engine commands (`Deposit`, `Withdraw`) when balances are the
engine's, so the ledger stays the single writer's, or wallet transfers in
remote-wallet mode (an `Idempotency-Key` header makes a retry safe). A new
market's spec is validated here before anything is submitted, so a bad request
creates neither its assets nor its market.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from starlette.requests import Request
from starlette.responses import Response

from crossbook.api.auth import Principal, Role
from crossbook.api.context import ApiContext
from crossbook.api.envelope import iso_ms, success
from crossbook.api.errors import ApiCode, ApiError
from crossbook.api.params import (
    DEFAULT_PAGE_LIMIT,
    ID_PATTERN,
    IdCursor,
    PageLimit,
    cursor_id,
    parse_id,
)
from crossbook.api.routes.common import (
    API_PREFIX,
    admin,
    balances_json,
    context,
    errors,
)
from crossbook.api.schemas import (
    BalanceOut,
    CreateMarketRequest,
    CreateUserRequest,
    Envelope,
    IssueTokenRequest,
    MarketOut,
    TokenOut,
    TransferOut,
    TransferRequest,
    UserOut,
)
from crossbook.api.views import balance_json, market_json
from crossbook.domain import (
    FEE_ACCOUNT_ID,
    Asset,
    CreateAsset,
    CreateMarket,
    DomainError,
    ErrorCode,
    MarketSpec,
    MarketStatus,
    SetMarketStatus,
)
from crossbook.engine.clock import WALL_CLOCK
from crossbook.engine.read_model.records import StoredBalance, StoredUser

# a deposit or a withdrawal: (user id, asset, units, idempotency key) -> balance after
Transfer = Callable[[int, str, int, str | None], Awaitable[StoredBalance]]

router = APIRouter(prefix=f"{API_PREFIX}/admin", tags=["admin"], dependencies=[Depends(admin)])
Context = Annotated[ApiContext, Depends(context)]
UserIdPath = Annotated[
    str, Path(description="a user id (0 is the fee account)", pattern=ID_PATTERN)
]


@router.post(
    "/users",
    status_code=201,
    response_model=Envelope[UserOut],
    responses=errors(400, 401, 403, 503),
    summary="Create a user",
)
async def create_user(request: Request, body: CreateUserRequest, ctx: Context) -> Response:
    user = await ctx.users.create_user(body.name, WALL_CLOCK.now_ms())
    ctx.auth.user_created(user.user_id)
    return success(request, user_json(user), status=201)


@router.get(
    "/users",
    response_model=Envelope[list[UserOut]],
    responses=errors(400, 401, 403, 429, 503),
    summary="List users by id",
)
async def list_users(
    request: Request, ctx: Context, after: IdCursor = None, limit: PageLimit = DEFAULT_PAGE_LIMIT
) -> Response:
    """`after`: only users with a larger id (a keyset cursor)."""
    users = await ctx.users.list_users(after_user_id=cursor_id(after) or 0, limit=limit)
    return success(request, [user_json(u) for u in users])


@router.post(
    "/users/{user_id}/tokens",
    status_code=201,
    response_model=Envelope[TokenOut],
    responses=errors(400, 401, 403, 404, 503),
    summary="Issue a trader token for a user",
)
async def issue_token(
    request: Request, user_id: UserIdPath, ctx: Context, body: IssueTokenRequest | None = None
) -> Response:
    """The body is optional: without one (or without `ttl_s`) the token lives `jwt_ttl_s`."""
    user = await _user(ctx, user_id)
    ttl_s = (body.ttl_s if body is not None else None) or ctx.auth.tokens.ttl_s
    issued_s = WALL_CLOCK.now_ms() // 1000
    token = ctx.auth.tokens.issue(Principal(Role.TRADER, user.user_id), ttl_s=ttl_s, now_s=issued_s)
    data = {"token": token, "token_type": "Bearer", "expires_at": iso_ms((issued_s + ttl_s) * 1000)}
    return success(request, data, status=201)


@router.get(
    "/users/{user_id}/balances",
    response_model=Envelope[list[BalanceOut]],
    responses=errors(400, 401, 403, 404, 429, 503),
    summary="A user's (or the fee account's) balances",
)
async def user_balances(request: Request, user_id: UserIdPath, ctx: Context) -> Response:
    uid = await _account_id(ctx, user_id)
    return success(request, await balances_json(ctx, uid))


@router.post(
    "/deposits",
    status_code=201,
    response_model=Envelope[TransferOut],
    responses=errors(400, 401, 403, 404, 429, 503),
    summary="Credit a user's available balance",
)
async def deposit(request: Request, body: TransferRequest, ctx: Context) -> Response:
    return await _transfer(request, body, ctx, ctx.funds.deposit)


@router.post(
    "/withdrawals",
    status_code=201,
    response_model=Envelope[TransferOut],
    responses=errors(400, 401, 403, 404, 429, 503),
    summary="Debit a user's available balance",
)
async def withdraw(request: Request, body: TransferRequest, ctx: Context) -> Response:
    return await _transfer(request, body, ctx, ctx.funds.withdraw)


@router.post(
    "/markets",
    status_code=201,
    response_model=Envelope[MarketOut],
    responses=errors(400, 401, 403, 409, 429, 503),
    summary="Create a market (and its assets if new)",
)
async def create_market(request: Request, body: CreateMarketRequest, ctx: Context) -> Response:
    known = ctx.market_data.assets()
    base = _asset(known, body.base.upper(), body.base_decimals, "base")
    quote = _asset(known, body.quote.upper(), body.quote_decimals, "quote")
    command = CreateMarket(
        base=base.code,
        quote=quote.code,
        tick_size=body.tick_size,
        lot_size=body.step_size,
        min_quantity=body.min_quantity,
        max_quantity=body.max_quantity,
        min_notional=body.min_notional,
        max_price=body.max_price,
        maker_fee_rate=body.maker_fee_rate or ctx.options.maker_fee_rate,
        taker_fee_rate=body.taker_fee_rate or ctx.options.taker_fee_rate,
    )
    try:
        spec = market_spec(base, quote, command)  # refuses a bad spec before any change
    except DomainError as error:  # the domain's lot_size is this API's step_size
        details = dict(error.details)
        if "field" in details:
            details["field"] = str(details["field"]).replace("lot_size", "step_size")
        message = error.message.replace("lot_size", "step_size")
        raise ApiError(error.code, message, details=details) from None
    if ctx.market_data.market(spec.symbol) is not None:
        raise ApiError(ErrorCode.MARKET_EXISTS, f"market {spec.symbol} exists")
    for asset in (base, quote):
        if asset.code not in known:
            await ctx.commands.submit(CreateAsset(asset.code, asset.decimals), "admin")
    await ctx.commands.submit(command, "admin")
    return success(request, market_json(ctx.market(spec.symbol)), status=201)


@router.post(
    "/markets/{symbol:path}/halt",
    response_model=Envelope[MarketOut],
    responses=errors(401, 403, 404, 409, 503),
    summary="Halt trading (resting orders stay; cancels are still accepted)",
)
async def halt(request: Request, symbol: str, ctx: Context) -> Response:
    return await _set_status(request, symbol, ctx, MarketStatus.HALTED)


@router.post(
    "/markets/{symbol:path}/resume",
    response_model=Envelope[MarketOut],
    responses=errors(401, 403, 404, 409, 503),
    summary="Resume trading",
)
async def resume(request: Request, symbol: str, ctx: Context) -> Response:
    return await _set_status(request, symbol, ctx, MarketStatus.ACTIVE)


# -- helpers ---------------------------------------------------------------------------


def user_json(user: StoredUser) -> dict[str, Any]:
    return {"id": str(user.user_id), "name": user.name, "created_at": iso_ms(user.created_at_ms)}


def market_spec(base: Asset, quote: Asset, c: CreateMarket) -> MarketSpec:
    return MarketSpec.create(
        base,
        quote,
        tick_size=c.tick_size,
        lot_size=c.lot_size,
        min_quantity=c.min_quantity,
        max_quantity=c.max_quantity,
        min_notional=c.min_notional,
        max_price=c.max_price,
        maker_fee_rate=c.maker_fee_rate,
        taker_fee_rate=c.taker_fee_rate,
    )


def _asset(known: Any, code: str, decimals: int | None, field: str) -> Asset:
    if code in known:
        asset: Asset = known[code]
        if decimals is not None and decimals != asset.decimals:
            raise ApiError(
                ErrorCode.INVALID_ASSET,
                f"{code} exists with {asset.decimals} decimals",
                details={"field": f"{field}_decimals", "provided": decimals},
            )
        return asset
    if decimals is None:
        raise ApiError(
            ErrorCode.INVALID_ASSET,
            f"{code} is a new asset: {field}_decimals is required",
            details={"field": f"{field}_decimals"},
        )
    return Asset.create(code, decimals)


async def _user(ctx: ApiContext, text: str) -> StoredUser:
    user_id = parse_id(text, ApiCode.USER_NOT_FOUND, "user id")
    user = await ctx.users.get_user(user_id)
    if user is None:
        raise ApiError(ApiCode.USER_NOT_FOUND, f"user {text} not found", details={"id": text})
    return user


async def _account_id(ctx: ApiContext, text: str) -> int:
    """A user's id, or the fee account's (0), which is not a user."""
    if text == str(FEE_ACCOUNT_ID):
        return FEE_ACCOUNT_ID
    return (await _user(ctx, text)).user_id


async def _transfer(
    request: Request,
    body: TransferRequest,
    ctx: Context,
    transfer: Transfer,
) -> Response:
    uid = await _account_id(ctx, str(body.user_id))
    asset = ctx.market_data.assets().get(body.asset.upper())
    if asset is None:
        raise ApiError(
            ErrorCode.ASSET_NOT_FOUND, f"unknown asset {body.asset}", details={"asset": body.asset}
        )
    units = asset.parse_amount(body.amount)
    if units <= 0:
        raise ApiError(
            ErrorCode.INVALID_AMOUNT,
            "amount must be greater than 0",
            details={"field": "amount", "provided": body.amount},
        )
    # the optional Idempotency-Key header: the funds service checks and uses it
    balance = await transfer(uid, asset.code, units, request.headers.get("idempotency-key"))
    data = {
        "user_id": str(uid),
        "asset": asset.code,
        "amount": asset.format_amount(units),
        "balance": balance_json(asset, balance),
    }
    return success(request, data, status=201)


async def _set_status(
    request: Request, symbol: str, ctx: Context, status: MarketStatus
) -> Response:
    spec = ctx.market(symbol).spec
    await ctx.commands.submit(SetMarketStatus(spec.symbol, status), "admin")
    return success(request, market_json(ctx.market(spec.symbol)))
