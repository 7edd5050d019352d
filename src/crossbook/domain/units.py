"""Exact conversion between decimal strings and integer grid units.

Inside crossbook every amount is an integer count of a grid step: prices are
ticks, quantities are lots, balances are minor units of an asset. This module is
the only place that reads or writes decimal text.

Invariants:
- Parsing is exact or refused: a value with more significant decimals than the
  grid has, or that is not a whole number of steps, raises a `DomainError` with
  the caller's code. Nothing is ever rounded.
- Accepted text is plain positional notation: digits, optionally one point and
  more digits. No sign, exponent, whitespace, underscore, NaN or infinity.
- `format(parse(s))` is `s` normalised to the grid's number of decimals.

Limits: text longer than `MAX_DECIMAL_TEXT_CHARS` is refused before any
arithmetic, so absurd inputs cost nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from crossbook.domain.errors import DomainError, ErrorCode

INT64_MAX: Final = 2**63 - 1  # the largest amount, id or count any store or message carries
MAX_DECIMAL_TEXT_CHARS: Final = 40
MAX_GRID_DECIMALS: Final = 18

_PLAIN_DECIMAL: Final = re.compile(r"([0-9]+)(?:\.([0-9]+))?")


def parse_scaled(text: str, decimals: int, code: ErrorCode, field: str) -> int:
    """Parse `text` as an exact integer count of 10**-decimals units."""
    if not isinstance(text, str) or len(text) > MAX_DECIMAL_TEXT_CHARS:
        raise DomainError(code, f"{field} must be a decimal string", field=field, provided=text)
    match = _PLAIN_DECIMAL.fullmatch(text)
    if match is None:
        raise DomainError(
            code, f"{field} must be a plain decimal such as 1.25", field=field, provided=text
        )
    whole, fraction = match.group(1), match.group(2) or ""
    significant = fraction.rstrip("0")
    if len(significant) > decimals:
        raise DomainError(
            code,
            f"{field} has more than {decimals} decimals",
            field=field,
            provided=text,
        )
    return int(whole + significant.ljust(decimals, "0"))


def format_scaled(units: int, decimals: int) -> str:
    """Format an integer count of 10**-decimals units with exactly `decimals` decimals."""
    sign = "-" if units < 0 else ""
    digits = str(abs(units)).rjust(decimals + 1, "0")
    if decimals == 0:
        return sign + digits
    return f"{sign}{digits[:-decimals]}.{digits[-decimals:]}"


@dataclass(frozen=True, slots=True)
class Grid:
    """A decimal grid: values are whole multiples of `step_units` × 10**-decimals."""

    decimals: int
    step_units: int

    def __post_init__(self) -> None:
        assert 0 <= self.decimals <= MAX_GRID_DECIMALS, self.decimals
        assert self.step_units > 0, self.step_units

    @classmethod
    def from_step(cls, step: str, code: ErrorCode, field: str) -> Grid:
        """Build the grid whose step is the decimal string `step` (e.g. "0.01")."""
        if not isinstance(step, str) or len(step) > MAX_DECIMAL_TEXT_CHARS:
            raise DomainError(code, f"{field} must be a decimal string", field=field)
        match = _PLAIN_DECIMAL.fullmatch(step)
        if match is None:
            raise DomainError(code, f"{field} must be a plain decimal", field=field, provided=step)
        decimals = len((match.group(2) or "").rstrip("0"))
        if decimals > MAX_GRID_DECIMALS:
            raise DomainError(code, f"{field} is too fine", field=field, provided=step)
        units = parse_scaled(step, decimals, code, field)
        if units <= 0:
            raise DomainError(code, f"{field} must be positive", field=field, provided=step)
        return cls(decimals, units)

    @property
    def step_text(self) -> str:
        return format_scaled(self.step_units, self.decimals)

    def parse(self, text: str, code: ErrorCode, field: str) -> int:
        """Parse `text` to a whole number of steps; off-grid values are refused."""
        units = parse_scaled(text, self.decimals, code, field)
        steps, remainder = divmod(units, self.step_units)
        if remainder:
            raise DomainError(
                code,
                f"{field} must be a multiple of {self.step_text}",
                field=field,
                provided=text,
            )
        return steps

    def format(self, steps: int) -> str:
        return format_scaled(steps * self.step_units, self.decimals)
