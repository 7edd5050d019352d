"""What several routes share: authentication, rate limits, pages, documented errors,
and the 404 of a remote-wallet-only route in embedded mode."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import Request

from crossbook.api.context import ApiContext, context_of
from crossbook.api.errors import ApiCode, ApiError
from crossbook.api.rate_limit import retry_after_header
from crossbook.api.schemas import ErrorEnvelope
from crossbook.api.views import balance_json

API_PREFIX = "/api/v1"
T = TypeVar("T")

# Dependencies are `async def`: FastAPI runs a plain `def` dependency in a thread pool,
# which cost about a tenth of a request's server time (`crossbook loadtest --profile`).
bearer = HTTPBearer(auto_error=False, description="JWT (HS256) from `crossbook token`")

_ERROR_TEXT = {
    400: "Invalid request (a specific code such as INVALID_PRICE, INSUFFICIENT_BALANCE)",
    401: "Missing, invalid or expired token (UNAUTHORIZED)",
    403: "Token lacks the role (FORBIDDEN)",
    404: "Unknown resource (MARKET_NOT_FOUND, ORDER_NOT_FOUND, USER_NOT_FOUND, NOT_FOUND)",
    409: "Conflicts with the current state (MARKET_HALTED, DUPLICATE_CLIENT_ORDER_ID …)",
    413: "Body too large (PAYLOAD_TOO_LARGE)",
    429: "Rate limited (RATE_LIMITED: order entry per user, reads per address) or engine"
    " overloaded (ENGINE_OVERLOADED); see Retry-After",
    503: "Engine, database or wallet unavailable (ENGINE_UNAVAILABLE, STORE_UNAVAILABLE,"
    " WALLET_UNAVAILABLE); retry after Retry-After. ENGINE_UNAVAILABLE says in"
    " details.outcome whether the command was not done (not_done) or may have been"
    " (unknown: look the order up by its client_order_id first)",
}


def errors(
    *statuses: int, text: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the given error statuses, all in the error envelope; `text`
    replaces the generic description of a status where a route's codes are its own."""
    texts = {**_ERROR_TEXT, **(text or {})}
    return {s: {"model": ErrorEnvelope, "description": texts[s]} for s in statuses}


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def trader_id(request: Request, _: Credentials) -> int:
    """The authenticated trader's user id (401/403 otherwise)."""
    return context_of(request).trader(request)


async def admin(request: Request, _: Credentials) -> None:
    context_of(request).admin(request)


async def context(request: Request) -> ApiContext:
    return context_of(request)


def remote_wallet_only(part: T | None, what: str) -> T:
    """`part` of remote-wallet mode (settlements, the hold reconciler); None in embedded
    mode, where its routes answer 404 NOT_FOUND as if they did not exist."""
    if part is None:
        raise ApiError(ApiCode.NOT_FOUND, f"{what} exist only in remote-wallet mode")
    return part


def rate_limited(ctx: ApiContext, user_id: int) -> None:
    wait_s = ctx.rate_limiter.take(user_id)
    if wait_s > 0:
        ctx.metrics.orders.labels("any", ApiCode.RATE_LIMITED).inc()
        raise ApiError(
            ApiCode.RATE_LIMITED,
            "too many order requests",
            headers={"Retry-After": retry_after_header(wait_s)},
            details={"retry_after_s": int(retry_after_header(wait_s))},  # the header's seconds
        )


async def balances_json(ctx: ApiContext, user_id: int) -> list[dict[str, Any]]:
    """A user's balances, wherever they live (the engine's ledger or the wallet)."""
    rows = await ctx.funds.balances(user_id)
    assets = ctx.market_data.assets()
    return [balance_json(assets[b.asset], b) for b in rows if b.asset in assets]


def page_meta(items: list[Any], limit: int, id_of: str) -> dict[str, Any]:
    """Keyset cursors of a newest-first page: `before=next_before` gives the next older
    page (null when this page was not full), `after=next_after` the next newer one."""
    return {
        "pagination": {
            "limit": limit,
            "count": len(items),
            "next_before": str(getattr(items[-1], id_of)) if len(items) == limit else None,
            "next_after": str(getattr(items[0], id_of)) if items else None,
        }
    }
