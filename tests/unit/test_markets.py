"""Market specs: the grids, the integer conversion factors and their limits."""

import pytest

from crossbook.domain import Asset, DomainError, ErrorCode, MarketSpec
from crossbook.domain.units import INT64_MAX

BTC = Asset.create("BTC", 8)
USDT = Asset.create("USDT", 6)


def spec(**rules: str) -> MarketSpec:
    defaults = {
        "tick_size": "0.01",
        "lot_size": "0.0001",
        "min_quantity": "0.0001",
        "max_quantity": "100",
    }
    return MarketSpec.create(BTC, USDT, **(defaults | rules))


def test_conversion_factors_are_exact() -> None:
    s = spec()
    assert s.symbol == "BTC/USDT"
    assert s.lot_base_units == 10_000  # 0.0001 BTC in satoshi
    assert s.notional_units == 1  # 0.01 * 0.0001 USDT = 1e-6 USDT = 1 minor unit
    price, qty = s.parse_price("50000.00"), s.parse_quantity("1.5")
    assert s.notional(price, qty) == 75_000 * 10**6
    assert s.base_units(qty) == 150_000_000


def test_default_fee_rates_are_maker_5_and_taker_10_bps() -> None:
    s = spec()
    assert (s.maker_fee_ppm, s.taker_fee_ppm, s.max_fee_ppm) == (500, 1000, 1000)


def test_fee_rates_are_parsed_exactly_and_bounded() -> None:
    assert spec(maker_fee_rate="0.00075").maker_fee_ppm == 750
    with pytest.raises(DomainError) as raised:
        spec(taker_fee_rate="1.5")
    assert raised.value.code is ErrorCode.INVALID_MARKET_SPEC
    with pytest.raises(DomainError):
        spec(taker_fee_rate="0.0000001")  # finer than one ppm


def test_grid_finer_than_asset_precision_is_refused() -> None:
    with pytest.raises(DomainError) as raised:
        spec(lot_size="0.000000001")  # 1e-9 BTC: below one satoshi
    assert raised.value.code is ErrorCode.INVALID_MARKET_SPEC
    with pytest.raises(DomainError):
        spec(tick_size="0.0001", lot_size="0.0001")  # 1e-8 USDT per tick*lot: below 1e-6


def test_min_and_max_quantity_must_be_ordered_and_on_grid() -> None:
    for rules in (
        {"min_quantity": "2", "max_quantity": "1"},
        {"min_quantity": "0.00015"},
        {"min_quantity": "0"},
    ):
        with pytest.raises(DomainError) as raised:
            spec(**rules)
        assert raised.value.code is ErrorCode.INVALID_MARKET_SPEC


def test_max_notional_fits_int64() -> None:
    s = spec()
    assert s.max_price_ticks * s.max_quantity_lots * s.notional_units <= INT64_MAX
    with pytest.raises(DomainError):
        spec(max_price="10000000000000000000")


def test_base_and_quote_must_differ() -> None:
    with pytest.raises(DomainError):
        MarketSpec.create(BTC, BTC, tick_size="1", lot_size="1", min_quantity="1", max_quantity="2")


def test_parse_price_and_quantity_codes() -> None:
    s = spec(max_price="100000")
    cases = [
        (s.parse_price, "0", ErrorCode.INVALID_PRICE),
        (s.parse_price, "100000.01", ErrorCode.INVALID_PRICE),
        (s.parse_price, "1.001", ErrorCode.INVALID_PRICE),
        (s.parse_quantity, "0", ErrorCode.INVALID_QUANTITY),
        (s.parse_quantity, "0.00001", ErrorCode.INVALID_QUANTITY),
        # the documented codes: a stop price is INVALID_STOP_PRICE, a quote budget is the
        # order's quantity (INVALID_QUANTITY), up to 2**63 - 1 minor units
        (s.parse_stop_price, "1.001", ErrorCode.INVALID_STOP_PRICE),
        (s.parse_stop_price, "0", ErrorCode.INVALID_STOP_PRICE),
        (s.parse_stop_price, "1e2", ErrorCode.INVALID_STOP_PRICE),
        (s.parse_quote_quantity, "0.0000001", ErrorCode.INVALID_QUANTITY),
        (s.parse_quote_quantity, "0", ErrorCode.INVALID_QUANTITY),
        (s.parse_quote_quantity, "1e2", ErrorCode.INVALID_QUANTITY),
        (s.parse_quote_quantity, "-5", ErrorCode.INVALID_QUANTITY),
        (s.parse_quote_quantity, "NaN", ErrorCode.INVALID_QUANTITY),
        (s.parse_quote_quantity, "9223372036854.775808", ErrorCode.INVALID_QUANTITY),
    ]
    for parse, text, code in cases:
        with pytest.raises(DomainError) as raised:
            parse(text)
        assert raised.value.code is code, text


def test_quote_quantity_up_to_the_64_bit_bound_is_accepted() -> None:
    s = spec()  # a 6-decimal quote asset: 2**63 - 1 minor units
    assert s.parse_quote_quantity("9223372036854.775807") == 2**63 - 1


def test_a_value_on_the_grid_is_accepted_with_trailing_zeros() -> None:
    s = spec()  # tick 0.01: exact values are accepted however many zeros follow
    assert s.parse_price("50000.0000") == s.parse_price("50000") == 5_000_000
    with pytest.raises(DomainError):
        s.parse_price("50000.001")


def test_formatting_uses_the_market_precision() -> None:
    s = spec()
    assert s.format_price(5_000_000) == "50000.00"
    assert s.format_quantity(15_000) == "1.5000"
    assert s.format_quote(75_000_000) == "75.000000"


@pytest.mark.parametrize(
    ("code", "decimals"), [("btc", 8), ("", 8), ("B" * 17, 8), ("X", 19), ("X", -1)]
)
def test_asset_validation(code: str, decimals: int) -> None:
    with pytest.raises(DomainError) as raised:
        Asset.create(code, decimals)
    assert raised.value.code is ErrorCode.INVALID_ASSET
