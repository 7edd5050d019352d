"""What an external wallet must hold before a command reaches the exchange.

Remote-wallet mode (see `exchange`): an order enters the engine only with a
`Hold` covering its worst-case reservation, computed here with the function
the exchange reserves with (`fees.reservation_units`), so the two cannot disagree:

- sell: the base quantity;
- buy with a quote budget: the budget;
- buy limit (and stop-limit): the reservation at the limit price, no fee paid yet;
- market buy by base quantity: the cost of walking the ask levels given (price
  ascending), plus the taker fee: what `matching` would plan on that book. The
  user's own resting asks (`own_asks`) change the walk with self-trade
  prevention: `cancel_maker` skips them and walks deeper, so they are taken out
  of the levels; `cancel_taker` and `cancel_both` stop the order at the first of
  them, so the walk ends at that level, taking at most its other lots (an upper
  bound: see the known limits).

An amend needs a hold only for what its new reservation may exceed the current
one: the reservation with no fee accrued or paid bounds the exact reservation of
an order that has already paid fees (a ceiling of a sum never exceeds the sum of
the ceilings), so the bound is always enough.

Known limits:
- a market buy by quantity is held at the cost of the book the caller saw; if
  the book moved against it before the order reached the engine, the exchange
  refuses it (INSUFFICIENT_BALANCE) and the hold is voided. One whose walk
  costs nothing (an empty book, or self-trade prevention stopping it before any
  other user's ask) is held at 0: it goes with no hold at all, and is refused
  the same way if the book moved;
- the levels are aggregated and other users' orders are not visible to the
  caller, so where the user's own ask sits in its level's queue is not known: a
  `cancel_taker` or `cancel_both` market buy whose walk meets it is held as if
  all the level's other lots (up to its quantity) were ahead of it. Exact when
  the level holds only the user's asks, or the quantity runs out before it;
  otherwise a user who cannot cover the bound is refused (INSUFFICIENT_BALANCE)
  although the exchange, which knows the queue, may stop the order sooner,
  perhaps at no cost. A market buy by quote amount (held at its budget), or
  cancelling the own ask first, avoids it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from crossbook.domain.fees import fee_total, reservation_units
from crossbook.domain.markets import MarketSpec
from crossbook.domain.orders import Side, StpMode


def place_hold_units(
    spec: MarketSpec,
    side: Side,
    *,
    quantity_lots: int,
    price_ticks: int,
    quote_budget_units: int,
    asks: Iterable[tuple[int, int]] = (),
    stp_mode: StpMode = StpMode.CANCEL_TAKER,
    own_asks: Mapping[int, int] | None = None,
) -> int:
    """The worst-case reservation of a placement (0: nothing to hold, the order is
    malformed or a market buy's walk costs nothing).

    `own_asks`: price ticks -> lots of the user's own resting asks (market buys only).
    """
    if side is Side.SELL:
        if quantity_lots <= 0:
            return 0
    elif quote_budget_units:
        if quote_budget_units < 0:
            return 0
    elif quantity_lots <= 0 or price_ticks < 0:
        return 0
    elif not price_ticks:  # a market buy by base quantity: the cost of its walk
        if own_asks and stp_mode is not StpMode.NONE:
            asks = _without_own(asks, own_asks, stop_at_own=stp_mode is not StpMode.CANCEL_MAKER)
        return market_buy_cost(spec, quantity_lots, asks)
    return reservation_units(spec, side, price_ticks, quantity_lots, quote_budget_units)


def _without_own(
    asks: Iterable[tuple[int, int]], own_asks: Mapping[int, int], *, stop_at_own: bool
) -> Iterable[tuple[int, int]]:
    for price_ticks, lots in asks:
        own = own_asks.get(price_ticks, 0)
        yield price_ticks, lots - own
        if own and stop_at_own:
            return


def market_buy_cost(spec: MarketSpec, quantity_lots: int, asks: Iterable[tuple[int, int]]) -> int:
    """Notional plus taker fee of buying `quantity_lots` from `asks` (price ascending)."""
    notional = 0
    left = quantity_lots
    for price_ticks, lots in asks:
        take = min(lots, left)
        if take <= 0:
            continue
        notional += price_ticks * take * spec.notional_units
        left -= take
        if not left:
            break
    return notional + fee_total(notional * spec.taker_fee_ppm)


def amend_hold_units(
    spec: MarketSpec,
    side: Side,
    *,
    price_ticks: int,
    remaining_lots: int,
    reserved_units: int,
) -> int:
    """What an amend to (`price_ticks`, `remaining_lots`) may need beyond `reserved_units`."""
    if remaining_lots <= 0 or price_ticks <= 0:
        return 0
    needed = reservation_units(spec, side, price_ticks, remaining_lots)
    return max(0, needed - reserved_units)
