"""Integers wider than 64 bits, stored exactly: the `WideInteger` column type.

NUMERIC(40, 0) on PostgreSQL, decimal TEXT on SQLite (whose INTEGER is 64-bit
and whose REAL would round). For sums the domain does not bound to 64 bits
(per-asset totals over many accounts, an order's accrued fee).

Invariant: a value read back equals the value written, whatever the backend.

Known limits: at most `WIDE_INTEGER_DIGITS` decimal digits; SQLite cannot do
arithmetic on the TEXT column beyond 64 bits, so callers write absolute values
computed in Python, never `column + delta`.
"""

from __future__ import annotations

from sqlalchemy import Numeric, Text

from crossbook.domain.units import INT64_MAX

WIDE_INTEGER_DIGITS = 40  # more than 2**128 needs (39 digits)

WideInteger = Numeric(WIDE_INTEGER_DIGITS, 0).with_variant(Text(), "sqlite")


def wide_value(value: int, *, as_text: bool) -> int | str:
    """A `WideInteger` for the driver: decimal text on SQLite beyond 64 bits, else the int.

    On SQLite an integer bound to the TEXT column is stored as its decimal text by
    the column's affinity, so only values the driver cannot bind are converted here.
    """
    return str(value) if as_text and not -INT64_MAX - 1 <= value <= INT64_MAX else value
