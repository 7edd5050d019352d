"""The API's rejections: one stable code and one HTTP status each, mapped in ONE place.

Domain codes (`ErrorCode`) keep their names on the wire; `ApiCode` adds the
gateway's own (authentication, rate limits, engine availability, malformed
requests). Every rejection is a 4xx except `ENGINE_UNAVAILABLE`,
`WALLET_UNAVAILABLE` and `STORE_UNAVAILABLE` (503, retry later: the database did
not answer a read in time), `SERVER_BUSY` (503: every connection
the server takes is in use), `NOT_READY` (503, only from `/ready`) and
`INTERNAL_ERROR` (500, a bug).

The engine layer's refusals (engine overloaded or unavailable, wallet outage,
a refused transfer, and a failed wallet call that an engine-layer service
passes on as the port raised it, as the hold reconciler does) become their API
errors in `from_engine`, and the outcome of a submitted command is labelled for
metrics by `outcome_code`, so a refusal has the same code on the wire and in
`crossbook_orders`.
"""

from __future__ import annotations

import enum
import typing
from collections.abc import Mapping

from crossbook.domain import DomainError, ErrorCode
from crossbook.engine.engine import EngineOverloadedError, EngineUnavailableError
from crossbook.engine.funds import InvalidIdempotencyKeyError, TransferRefusedError
from crossbook.engine.order_entry import WalletOutageError
from crossbook.engine.ports import WalletRejectedError, WalletUnavailableError


class ApiCode(enum.StrEnum):
    INVALID_REQUEST = "INVALID_REQUEST"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    USER_NOT_FOUND = "USER_NOT_FOUND"
    RATE_LIMITED = "RATE_LIMITED"
    TOO_MANY_CONNECTIONS = "TOO_MANY_CONNECTIONS"
    SERVER_BUSY = "SERVER_BUSY"
    ENGINE_OVERLOADED = "ENGINE_OVERLOADED"
    ENGINE_UNAVAILABLE = "ENGINE_UNAVAILABLE"
    WALLET_UNAVAILABLE = "WALLET_UNAVAILABLE"
    STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
    SETTLEMENT_NOT_FOUND = "SETTLEMENT_NOT_FOUND"
    SETTLEMENT_NOT_FAILED = "SETTLEMENT_NOT_FAILED"
    HOLD_NOT_FOUND = "HOLD_NOT_FOUND"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    NOT_READY = "NOT_READY"
    INTERNAL_ERROR = "INTERNAL_ERROR"


API_STATUS: Mapping[ApiCode, int] = {
    ApiCode.INVALID_REQUEST: 400,
    ApiCode.UNAUTHORIZED: 401,
    ApiCode.FORBIDDEN: 403,
    ApiCode.NOT_FOUND: 404,
    ApiCode.METHOD_NOT_ALLOWED: 405,
    ApiCode.PAYLOAD_TOO_LARGE: 413,
    ApiCode.USER_NOT_FOUND: 404,
    ApiCode.RATE_LIMITED: 429,
    ApiCode.TOO_MANY_CONNECTIONS: 429,
    ApiCode.SERVER_BUSY: 503,
    ApiCode.ENGINE_OVERLOADED: 429,
    ApiCode.ENGINE_UNAVAILABLE: 503,
    ApiCode.WALLET_UNAVAILABLE: 503,
    ApiCode.STORE_UNAVAILABLE: 503,
    ApiCode.SETTLEMENT_NOT_FOUND: 404,
    ApiCode.SETTLEMENT_NOT_FAILED: 409,
    ApiCode.HOLD_NOT_FOUND: 404,
    ApiCode.IDEMPOTENCY_KEY_REUSED: 409,
    ApiCode.NOT_READY: 503,
    ApiCode.INTERNAL_ERROR: 500,
}

DOMAIN_STATUS: Mapping[ErrorCode, int] = {
    ErrorCode.INVALID_PRICE: 400,
    ErrorCode.INVALID_QUANTITY: 400,
    ErrorCode.INVALID_AMOUNT: 400,
    ErrorCode.INVALID_STOP_PRICE: 400,
    ErrorCode.INVALID_EXPIRY: 400,
    ErrorCode.INVALID_ORDER: 400,
    ErrorCode.INVALID_MARKET_SPEC: 400,
    ErrorCode.INVALID_ASSET: 400,
    ErrorCode.INVALID_USER: 400,
    ErrorCode.MIN_NOTIONAL: 400,
    ErrorCode.INSUFFICIENT_BALANCE: 400,
    ErrorCode.MARKET_NOT_FOUND: 404,
    ErrorCode.MARKET_EXISTS: 409,
    ErrorCode.MARKET_HALTED: 409,
    ErrorCode.ASSET_NOT_FOUND: 404,
    ErrorCode.ASSET_EXISTS: 409,
    ErrorCode.ORDER_NOT_FOUND: 404,
    ErrorCode.ORDER_NOT_AMENDABLE: 409,
    ErrorCode.DUPLICATE_CLIENT_ORDER_ID: 409,
    ErrorCode.POST_ONLY_WOULD_TAKE: 400,
    ErrorCode.STOP_WOULD_TRIGGER: 400,
    ErrorCode.TOO_MANY_OPEN_ORDERS: 400,
    ErrorCode.FUNDS_HELD_BY_WALLET: 409,
}

# a request field that fails the schema is reported with the code of what it carries
FIELD_CODES: Mapping[str, str] = {
    "price": ErrorCode.INVALID_PRICE,
    "stop_price": ErrorCode.INVALID_STOP_PRICE,
    "quantity": ErrorCode.INVALID_QUANTITY,
    "quote_quantity": ErrorCode.INVALID_QUANTITY,
    "amount": ErrorCode.INVALID_AMOUNT,
    "expire_at": ErrorCode.INVALID_EXPIRY,
    "side": ErrorCode.INVALID_ORDER,
    "type": ErrorCode.INVALID_ORDER,
    "time_in_force": ErrorCode.INVALID_ORDER,
    "stp_mode": ErrorCode.INVALID_ORDER,
    "post_only": ErrorCode.INVALID_ORDER,
    "client_order_id": ErrorCode.INVALID_ORDER,
    "asset": ErrorCode.INVALID_ASSET,
    "base": ErrorCode.INVALID_ASSET,
    "quote": ErrorCode.INVALID_ASSET,
    "base_decimals": ErrorCode.INVALID_ASSET,
    "quote_decimals": ErrorCode.INVALID_ASSET,
    "tick_size": ErrorCode.INVALID_MARKET_SPEC,
    "step_size": ErrorCode.INVALID_MARKET_SPEC,
    "min_quantity": ErrorCode.INVALID_MARKET_SPEC,
    "max_quantity": ErrorCode.INVALID_MARKET_SPEC,
    "max_price": ErrorCode.INVALID_MARKET_SPEC,
    "maker_fee_rate": ErrorCode.INVALID_MARKET_SPEC,
    "taker_fee_rate": ErrorCode.INVALID_MARKET_SPEC,
    "min_notional": ErrorCode.INVALID_AMOUNT,
}


# a reference of the wrong form (a path parameter, a body's user id) names nothing:
# the code of an unknown one
REFERENCE_CODES: Mapping[tuple[str, str], str] = {
    ("path", "order_id"): ErrorCode.ORDER_NOT_FOUND,
    ("path", "client_order_id"): ErrorCode.ORDER_NOT_FOUND,
    ("path", "symbol"): ErrorCode.MARKET_NOT_FOUND,
    ("path", "user_id"): ApiCode.USER_NOT_FOUND,
    ("path", "settlement_id"): ApiCode.SETTLEMENT_NOT_FOUND,
    ("path", "hold_key"): ApiCode.HOLD_NOT_FOUND,
    ("body", "user_id"): ApiCode.USER_NOT_FOUND,
}


class ApiError(Exception):
    """A refused request: status, stable code, message, details (and extra headers)."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        details: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = str(code)
        self.message = message
        self.status = status if status is not None else status_of(self.code)
        self.details = dict(details or {})
        self.headers = dict(headers or {})


def status_of(code: str) -> int:
    if code in DOMAIN_STATUS:
        return DOMAIN_STATUS[ErrorCode(code)]
    if code in API_STATUS:
        return API_STATUS[ApiCode(code)]
    return 400  # a field-specific code such as INVALID_PRICE is always in DOMAIN_STATUS


def from_domain(error: DomainError) -> ApiError:
    return ApiError(error.code, error.message, details=error.details)


EngineRefusal = (
    EngineOverloadedError
    | EngineUnavailableError
    | WalletOutageError
    | TransferRefusedError
    | InvalidIdempotencyKeyError
    | WalletUnavailableError
    | WalletRejectedError
)
ENGINE_REFUSALS: tuple[type[Exception], ...] = typing.get_args(EngineRefusal)  # one handler each


def from_engine(error: EngineRefusal) -> ApiError:
    """The API error of an engine-layer refusal (a `DomainError` maps by its code)."""
    if isinstance(error, EngineOverloadedError):
        return ApiError(
            ApiCode.ENGINE_OVERLOADED, "engine queue is full", headers={"Retry-After": "1"}
        )
    if isinstance(error, EngineUnavailableError):
        return engine_unavailable(error)
    if isinstance(error, WalletOutageError):
        return ApiError(
            ApiCode.WALLET_UNAVAILABLE,
            f"wallet service unavailable ({error.reason}); nothing was accepted, retry"
            " (a transfer: with the same Idempotency-Key)",
            headers={"Retry-After": "1"},
        )
    if isinstance(error, WalletUnavailableError | WalletRejectedError):
        reason = error.code if isinstance(error, WalletRejectedError) else str(error)
        return ApiError(
            ApiCode.WALLET_UNAVAILABLE,
            f"wallet service unavailable ({reason}); nothing was done, retry",
            headers={"Retry-After": "1"},
        )
    if isinstance(error, InvalidIdempotencyKeyError):
        return ApiError(
            ApiCode.INVALID_REQUEST,
            "Idempotency-Key must be 1-64 characters of A-Z a-z 0-9 . _ : -",
            details={"field": "Idempotency-Key"},
        )
    if error.code == ApiCode.IDEMPOTENCY_KEY_REUSED:
        return ApiError(
            ApiCode.IDEMPOTENCY_KEY_REUSED,
            "this Idempotency-Key was used for a different transfer",
        )
    return ApiError(ApiCode.INVALID_REQUEST, error.message, details=error.details)


def engine_unavailable(unavailable: EngineUnavailableError) -> ApiError:
    """503 ENGINE_UNAVAILABLE, saying whether anything may have been done."""
    if unavailable.outcome_unknown:
        return ApiError(
            ApiCode.ENGINE_UNAVAILABLE,
            "engine unavailable; the outcome is unknown: look the order up by its "
            "client_order_id before retrying",
            headers={"Retry-After": "1"},
            details={"outcome": "unknown"},
        )
    return ApiError(
        ApiCode.ENGINE_UNAVAILABLE,
        "engine unavailable; nothing was done, retry",
        headers={"Retry-After": "1"},
        details={"outcome": "not_done"},
    )


def outcome_code(refusal: Exception | None) -> str:
    """The `result` label of a submitted command's outcome: "ok" or its refusal's code."""
    if refusal is None:
        return "ok"
    if isinstance(refusal, DomainError):
        return str(refusal.code)
    assert isinstance(refusal, EngineRefusal), refusal
    return from_engine(refusal).code
