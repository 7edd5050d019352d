"""Fee and reservation arithmetic, stated once.

Fees are charged in the quote asset on each side of a trade: the maker pays the
market's maker rate, the taker the taker rate (parts per million of notional).

Rounding rule: an order's fees are rounded UP to a whole minor unit, once, over
its cumulative fee. Each order accrues the exact product `notional * rate_ppm`
of every fill; after a fill the order has paid `ceil(accrued / 1_000_000)` in
total, and the fill's fee is the difference from what it had paid before. So an
order split into many fills pays exactly what it would pay in one fill, and the
worst-case reservation below can never be exceeded.

Buy reservation (DESIGN rule 3): an open buy order with limit price L and
remaining quantity q keeps locked

    notional(L, q) + ceil((accrued + notional(L, q) * max_rate) / 1e6) - paid

Fills happen at prices <= L, so every fill consumes no more than its share and
the excess (price improvement, maker-rate difference) can be released after
each fill; when q reaches 0 the reservation is exactly 0.
"""

from __future__ import annotations

from crossbook.domain.markets import FEE_RATE_SCALE, MarketSpec


def ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def fee_total(accrued: int) -> int:
    """Whole minor units owed for an exact accrued fee (notional * ppm summed)."""
    return -(-accrued // FEE_RATE_SCALE)


def buy_reservation(
    spec: MarketSpec, price_ticks: int, remaining_lots: int, accrued: int, paid_units: int
) -> int:
    """Quote units an open buy order must keep locked for its remaining quantity."""
    notional = price_ticks * remaining_lots * spec.notional_units
    return notional + fee_total(accrued + notional * spec.max_fee_ppm) - paid_units
