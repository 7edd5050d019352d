"""Every rejection code has exactly one HTTP status; only unavailability and bugs are 5xx."""

from crossbook.api.errors import API_STATUS, DOMAIN_STATUS, FIELD_CODES, ApiCode, status_of
from crossbook.domain import ErrorCode


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
