"""Decimal strings <-> integer grid units (`crossbook.domain.units`, `MarketSpec`).

Properties: formatting then parsing gives back the integer; parsing any spelling
of a grid value (leading zeros, trailing zeros, no fraction) gives the same
integer and formats to the grid's normal form; a value off the grid or with
more decimals than the grid has is refused with the caller's code, never
rounded; and no input whatsoever raises anything but `DomainError` (in the
compiled build, a value that is not a string raises `TypeError`: it enforces the
annotations). Python's `Decimal` is the oracle for what a string means.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from crossbook._compiled import current_build
from crossbook.domain import Asset, DomainError, ErrorCode, MarketSpec
from crossbook.domain.units import MAX_DECIMAL_TEXT_CHARS, Grid, format_scaled, parse_scaled

CODE = ErrorCode.INVALID_PRICE  # any code: parsing must report the one it is given

grids = st.builds(Grid, decimals=st.integers(0, 18), step_units=st.integers(1, 10**6))
step_counts = st.integers(0, 10**12)


def value_of(grid: Grid, steps: int) -> Decimal:
    """What `steps` steps of `grid` are worth, exactly."""
    return Decimal(steps * grid.step_units).scaleb(-grid.decimals)


def refused(parse: object, *args: object) -> ErrorCode:
    """Call `parse(*args)`, which must raise `DomainError`; return its code."""
    with pytest.raises(DomainError) as caught:
        parse(*args)  # type: ignore[operator]
    return caught.value.code


def spellings(canonical: str, leading_zeros: int, trailing_zeros: int, trim: bool) -> str:
    """Another spelling of the same decimal number as `canonical`."""
    whole, _, fraction = canonical.partition(".")
    if trim:
        fraction = fraction.rstrip("0")
    fraction += "0" * trailing_zeros
    text = "0" * leading_zeros + whole
    return f"{text}.{fraction}" if fraction else text


@given(grid=grids, steps=step_counts)
def test_parse_inverts_format(grid: Grid, steps: int) -> None:
    text = grid.format(steps)
    assert Decimal(text) == value_of(grid, steps)
    assert grid.parse(text, CODE, "price") == steps


@given(
    grid=grids,
    steps=step_counts,
    leading_zeros=st.integers(0, 3),
    trailing_zeros=st.integers(0, 3),
    trim=st.booleans(),
)
def test_format_of_parse_is_the_normal_form(
    grid: Grid, steps: int, leading_zeros: int, trailing_zeros: int, trim: bool
) -> None:
    canonical = grid.format(steps)
    text = spellings(canonical, leading_zeros, trailing_zeros, trim)
    assume(len(text) <= MAX_DECIMAL_TEXT_CHARS)
    assert Decimal(text) == Decimal(canonical)
    parsed = grid.parse(text, CODE, "price")
    assert parsed == steps
    normal = grid.format(parsed)
    assert normal == canonical
    assert len(normal.partition(".")[2]) == grid.decimals  # exactly the grid's decimals


@given(grid=grids, steps=step_counts, data=st.data())
def test_off_grid_values_are_refused_not_rounded(
    grid: Grid, steps: int, data: st.DataObject
) -> None:
    assume(grid.step_units > 1)
    offset = data.draw(st.integers(1, grid.step_units - 1), label="units past a step")
    text = format_scaled(steps * grid.step_units + offset, grid.decimals)
    assert refused(grid.parse, text, CODE, "price") == CODE


@given(
    grid=grids,
    steps=step_counts,
    extra=st.text("0123456789", max_size=3),
    last=st.sampled_from("123456789"),
)
def test_more_decimals_than_the_grid_are_refused(
    grid: Grid, steps: int, extra: str, last: str
) -> None:
    canonical = grid.format(steps)
    text = canonical + extra + last if grid.decimals else f"{canonical}.{extra}{last}"
    assume(len(text) <= MAX_DECIMAL_TEXT_CHARS)
    assert refused(grid.parse, text, CODE, "price") == CODE


near_decimals = st.from_regex(r"\A[-+ ]?[0-9_]{0,6}([.,][0-9]{0,6})?([eE][-+]?[0-9]{1,3})?\s?\Z")
garbage = st.one_of(
    st.text(max_size=50),
    near_decimals,
    st.sampled_from(
        ("NaN", "inf", "-0", "1e3", "0x10", "\u0661\u0662", "1_0", " 1", "1.", ".5", "")
    ),
)


@given(grid=grids, text=garbage)
def test_any_text_parses_exactly_or_raises_domain_error(grid: Grid, text: str) -> None:
    try:
        steps = grid.parse(text, CODE, "price")
    except DomainError as error:
        assert error.code == CODE
        return
    # accepted: plain ASCII digits with at most one point, exactly on the grid
    assert len(text) <= MAX_DECIMAL_TEXT_CHARS
    assert text.isascii() and text.replace(".", "", 1).isdigit() and not text.endswith(".")
    assert not text.startswith(".")
    assert Decimal(text) == value_of(grid, steps)


@pytest.mark.parametrize(
    "text",
    [
        "1.",
        ".5",
        "+1",
        "-1",
        "1e2",
        "1E2",
        " 1",
        "1 ",
        "1\n",
        "1_0",
        "1,5",
        "0x1",
        "\u0661",
        "NaN",
        "inf",
        "",
    ],
)
def test_only_plain_positional_decimals_are_accepted(text: str) -> None:
    """Each of these is a number to `Decimal` or `float` (or nearly): all refused here."""
    grid = Grid(2, 1)  # cents: every value above would be on this grid
    assert refused(grid.parse, text, CODE, "price") == CODE


@given(value=st.one_of(st.none(), st.integers(), st.floats(), st.binary(max_size=5)))
def test_non_text_is_refused_with_the_given_code(value: object) -> None:
    if current_build().compiled:  # the compiled domain enforces the `str` annotation itself
        with pytest.raises(TypeError):
            parse_scaled(value, 8, CODE, "amount")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            Grid(2, 1).parse(value, CODE, "amount")  # type: ignore[arg-type]
        return
    assert refused(parse_scaled, value, 8, CODE, "amount") == CODE
    assert refused(Grid(2, 1).parse, value, CODE, "amount") == CODE


@given(text=st.text("0123456789", min_size=MAX_DECIMAL_TEXT_CHARS + 1, max_size=80))
def test_overlong_text_is_refused_before_arithmetic(text: str) -> None:
    assert refused(parse_scaled, text, 0, CODE, "amount") == CODE


# -- MarketSpec: prices and quantities of a market --------------------------------------

market_specs = st.builds(
    lambda decimals, step, max_steps: MarketSpec.create(
        Asset("BTC", 8),
        Asset("USDT", 8),
        tick_size=format_scaled(step, decimals),
        lot_size="0.001",
        min_quantity="0.001",
        max_quantity="1000",
        max_price=format_scaled(step * max_steps, decimals),
    ),
    decimals=st.integers(0, 5),  # tick × lot must stay on USDT's 8 decimals
    step=st.sampled_from((1, 2, 5, 25)),
    max_steps=st.integers(1, 10**6),
)


@given(spec=market_specs, data=st.data())
def test_price_round_trip_within_range(spec: MarketSpec, data: st.DataObject) -> None:
    ticks = data.draw(st.integers(1, spec.max_price_ticks), label="ticks")
    text = spec.format_price(ticks)
    assert spec.parse_price(text) == ticks
    assert spec.format_price(spec.parse_price(text + "0" if "." in text else text)) == text


@given(spec=market_specs, beyond=st.integers(1, 10**6))
def test_prices_out_of_range_are_refused(spec: MarketSpec, beyond: int) -> None:
    assert refused(spec.parse_price, spec.format_price(0)) == ErrorCode.INVALID_PRICE
    too_high = spec.format_price(spec.max_price_ticks + beyond)
    assert refused(spec.parse_price, too_high) == ErrorCode.INVALID_PRICE


@given(spec=market_specs, data=st.data())
def test_off_tick_prices_are_refused(spec: MarketSpec, data: st.DataObject) -> None:
    grid = spec.price_grid
    assume(grid.step_units > 1)
    ticks = data.draw(st.integers(0, spec.max_price_ticks - 1), label="ticks")
    offset = data.draw(st.integers(1, grid.step_units - 1), label="offset")
    text = format_scaled(ticks * grid.step_units + offset, grid.decimals)
    assert refused(spec.parse_price, text) == ErrorCode.INVALID_PRICE


@given(spec=market_specs, lots=st.integers(1, 10**9))
def test_quantity_round_trip_and_zero_refused(spec: MarketSpec, lots: int) -> None:
    assert spec.parse_quantity(spec.format_quantity(lots)) == lots
    assert refused(spec.parse_quantity, "0") == ErrorCode.INVALID_QUANTITY
    assert refused(spec.parse_quantity, "0.0005") == ErrorCode.INVALID_QUANTITY  # half a lot


@given(decimals=st.integers(0, 18), units=st.integers(0, 10**20))
def test_asset_amounts_round_trip(decimals: int, units: int) -> None:
    asset = Asset("USDT", decimals)
    text = asset.format_amount(units)
    assert Decimal(text) == Decimal(units).scaleb(-decimals)
    assert asset.parse_amount(text) == units
