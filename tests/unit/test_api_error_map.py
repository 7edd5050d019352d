"""Every rejection code has exactly one HTTP status; only unavailability and bugs are 5xx."""

from crossbook.api.errors import (
    API_STATUS,
    DOMAIN_STATUS,
    ENGINE_REFUSALS,
    FIELD_CODES,
    ApiCode,
    from_engine,
    outcome_code,
    status_of,
)
from crossbook.domain import DomainError, ErrorCode
from crossbook.engine.engine import EngineOverloadedError, EngineUnavailableError
from crossbook.engine.funds import InvalidIdempotencyKeyError, TransferRefusedError
from crossbook.engine.order_entry import WalletOutageError
from crossbook.engine.ports import WalletRejectedError, WalletUnavailableError


def test_every_domain_code_is_mapped_to_a_4xx() -> None:
    assert set(DOMAIN_STATUS) == set(ErrorCode)
    assert all(400 <= status < 500 for status in DOMAIN_STATUS.values())


def test_every_gateway_code_is_mapped_and_only_unavailability_and_bugs_are_5xx() -> None:
    assert set(API_STATUS) == set(ApiCode)
    server_side = {code for code, status in API_STATUS.items() if status >= 500}
    assert server_side == {
        ApiCode.ENGINE_UNAVAILABLE,
        ApiCode.WALLET_UNAVAILABLE,
        ApiCode.STORE_UNAVAILABLE,
        ApiCode.SERVER_BUSY,
        ApiCode.NOT_READY,
        ApiCode.INTERNAL_ERROR,
    }


def test_codes_do_not_collide_and_field_codes_are_domain_codes() -> None:
    assert not {str(c) for c in ErrorCode} & {str(c) for c in ApiCode}
    assert set(FIELD_CODES.values()) <= set(ErrorCode)
    assert status_of("INSUFFICIENT_BALANCE") == 400
    assert status_of("MARKET_NOT_FOUND") == 404
    assert status_of("RATE_LIMITED") == 429


def test_engine_layer_refusals_have_one_code_each_on_the_wire_and_in_metrics() -> None:
    cases = [
        (EngineOverloadedError("full"), ApiCode.ENGINE_OVERLOADED, 429),
        (EngineUnavailableError("down"), ApiCode.ENGINE_UNAVAILABLE, 503),
        (WalletOutageError("circuit open"), ApiCode.WALLET_UNAVAILABLE, 503),
        (TransferRefusedError("IDEMPOTENCY_KEY_REUSED", "m", {}), "IDEMPOTENCY_KEY_REUSED", 409),
        (TransferRefusedError("BALANCE_LIMIT", "too much", {"limit": "9"}), "INVALID_REQUEST", 400),
        (InvalidIdempotencyKeyError("no spaces"), ApiCode.INVALID_REQUEST, 400),
        (WalletUnavailableError("timed out"), ApiCode.WALLET_UNAVAILABLE, 503),
        (WalletRejectedError("UNAUTHORIZED", "bad token"), ApiCode.WALLET_UNAVAILABLE, 503),
    ]
    assert {type(error) for error, _, _ in cases} == set(ENGINE_REFUSALS)
    for error, code, status in cases:
        api_error = from_engine(error)
        assert (api_error.code, api_error.status) == (code, status)
        assert outcome_code(error) == code
    assert from_engine(EngineUnavailableError("down")).details == {"outcome": "not_done"}
    unknown = from_engine(EngineUnavailableError("stalled", committed=None))
    assert unknown.details == {"outcome": "unknown"}
    assert "(circuit open)" in from_engine(WalletOutageError("circuit open")).message
    refused = from_engine(TransferRefusedError("BALANCE_LIMIT", "too much", {"limit": "9"}))
    assert (refused.message, refused.details) == ("too much", {"limit": "9"})
    assert outcome_code(None) == "ok"
    assert outcome_code(DomainError(ErrorCode.MIN_NOTIONAL, "small")) == "MIN_NOTIONAL"
