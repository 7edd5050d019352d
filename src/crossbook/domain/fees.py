"""Fee and reservation arithmetic, stated once.

Fees are charged in the quote asset on each side of a trade: the maker pays the
market's maker rate, the taker the taker rate (parts per million of notional).

Rounding rule: an order's fees are rounded UP to a whole minor unit, once, over
its cumulative fee. Each order accrues the exact product `notional * rate_ppm`
of every fill; after a fill the order has paid `ceil(accrued / 1_000_000)` in
total, and the fill's fee is the difference from what it had paid before. So an
order split into many fills pays exactly what it would pay in one fill, and the
worst-case reservation below can never be exceeded.

Reservation (DESIGN rule 3), `reservation_units`: what an order locks, in the
asset `reserve_asset` names (quote for a buy, base for a sell). A sell locks its
remaining base quantity; a buy with a quote budget locks the budget; an open buy
order with limit price L and remaining quantity q keeps locked

    notional(L, q) + ceil((accrued + notional(L, q) * max_rate) / 1e6) - paid

Fills happen at prices <= L, so every fill consumes no more than its share and
the excess (price improvement, maker-rate difference) can be released after
each fill; when q reaches 0 the reservation is exactly 0. A market buy by base
quantity has no limit price: it is reserved at its planned cost instead
(`matching.plan_match`, `funding.market_buy_cost`), which depends on the book.
"""

from __future__ import annotations

from typing import Final

from crossbook.domain.markets import FEE_RATE_SCALE, MarketSpec
from crossbook.domain.orders import Side

# bound once: an enum member lookup on Python 3.11 costs ~55 ns (see `exchange`)
_BUY: Final = Side.BUY
_SELL: Final = Side.SELL


def ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def fee_total(accrued: int) -> int:
    """Whole minor units owed for an exact accrued fee (notional * ppm summed)."""
    return -(-accrued // FEE_RATE_SCALE)


def reserve_asset(spec: MarketSpec, side: Side) -> str:
    """The asset an order on `side` reserves."""
    return spec.quote.code if side is _BUY else spec.base.code


def reservation_units(
    spec: MarketSpec,
    side: Side,
    price_ticks: int,
    remaining_lots: int,
    quote_budget_units: int = 0,
    fee_accrued: int = 0,
    fee_paid_units: int = 0,
) -> int:
    """Units of `reserve_asset` an order must keep locked for its remaining quantity.

    `fee_accrued` and `fee_paid_units` are the order's fee state (0 before any fill).
    A quote budget is locked whole at placement. A market buy by base quantity gives
    0 here: its planned cost is reserved instead (see the module docstring).
    """
    if side is _SELL:
        return remaining_lots * spec.lot_base_units
    if quote_budget_units:
        return quote_budget_units
    notional = price_ticks * remaining_lots * spec.notional_units
    return notional + fee_total(fee_accrued + notional * spec.max_fee_ppm) - fee_paid_units
