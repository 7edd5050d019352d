"""Decimal strings <-> integer grid units: exact or refused, never rounded."""

import pytest

from crossbook.domain import DomainError, ErrorCode
from crossbook.domain.units import MAX_DECIMAL_TEXT_CHARS, Grid, format_scaled, parse_scaled

from unit_support import DOMAIN_COMPILED


@pytest.mark.parametrize(
    ("text", "decimals", "units"),
    [
        ("0", 2, 0),
        ("1", 2, 100),
        ("1.5", 2, 150),
        ("1.50", 2, 150),
        ("1.5000000", 2, 150),
        ("0.01", 2, 1),
        ("50000.00", 2, 5_000_000),
        ("7", 0, 7),
        ("007.10", 1, 71),
    ],
)
def test_parse_scaled_is_exact(text: str, decimals: int, units: int) -> None:
    assert parse_scaled(text, decimals, ErrorCode.INVALID_PRICE, "price") == units


@pytest.mark.parametrize(
    "text",
    [
        "",
        " 1",
        "1 ",
        "-1",
        "+1",
        "1e3",
        "1E3",
        "NaN",
        "nan",
        "inf",
        "Infinity",
        "1,5",
        "1_000",
        ".5",
        "5.",
        "0x10",
        "1.2.3",
        "\u0661",  # an Arabic-Indic digit: not ASCII
        "1" * (MAX_DECIMAL_TEXT_CHARS + 1),
    ],
)
def test_parse_scaled_refuses_anything_but_plain_decimals(text: str) -> None:
    with pytest.raises(DomainError) as raised:
        parse_scaled(text, 8, ErrorCode.INVALID_QUANTITY, "quantity")
    assert raised.value.code is ErrorCode.INVALID_QUANTITY
    assert raised.value.details["field"] == "quantity"


def test_parse_scaled_refuses_non_strings() -> None:
    with pytest.raises(TypeError if DOMAIN_COMPILED else DomainError):
        parse_scaled(1.5, 2, ErrorCode.INVALID_PRICE, "price")  # type: ignore[arg-type]


def test_too_many_decimals_is_refused_not_rounded() -> None:
    with pytest.raises(DomainError) as raised:
        parse_scaled("1.005", 2, ErrorCode.INVALID_PRICE, "price")
    assert "more than 2 decimals" in raised.value.message


@pytest.mark.parametrize(
    ("units", "decimals", "text"),
    [(0, 2, "0.00"), (150, 2, "1.50"), (1, 8, "0.00000001"), (-150, 2, "-1.50"), (42, 0, "42")],
)
def test_format_scaled(units: int, decimals: int, text: str) -> None:
    assert format_scaled(units, decimals) == text


def test_grid_from_step_and_round_trip() -> None:
    grid = Grid.from_step("0.05", ErrorCode.INVALID_MARKET_SPEC, "tick_size")
    assert (grid.decimals, grid.step_units) == (2, 5)
    assert grid.parse("1.10", ErrorCode.INVALID_PRICE, "price") == 22
    assert grid.format(22) == "1.10"
    assert grid.step_text == "0.05"


def test_grid_refuses_off_grid_values() -> None:
    grid = Grid.from_step("0.05", ErrorCode.INVALID_MARKET_SPEC, "tick_size")
    with pytest.raises(DomainError) as raised:
        grid.parse("1.12", ErrorCode.INVALID_PRICE, "price")
    assert raised.value.code is ErrorCode.INVALID_PRICE
    assert "multiple of 0.05" in raised.value.message


@pytest.mark.parametrize("step", ["0", "0.000", "-1", "abc", "1e-2"])
def test_grid_step_must_be_a_positive_plain_decimal(step: str) -> None:
    with pytest.raises(DomainError) as raised:
        Grid.from_step(step, ErrorCode.INVALID_MARKET_SPEC, "tick_size")
    assert raised.value.code is ErrorCode.INVALID_MARKET_SPEC


def test_grid_step_with_trailing_zeros_is_normalised() -> None:
    assert Grid.from_step("0.0100", ErrorCode.INVALID_MARKET_SPEC, "x") == Grid(2, 1)
    assert Grid.from_step("10", ErrorCode.INVALID_MARKET_SPEC, "x") == Grid(0, 10)
