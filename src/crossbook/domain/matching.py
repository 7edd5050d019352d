"""Price-time priority matching, as a plan computed before anything changes.

`plan_match` walks the opposite side of the book best price first, and within a
level in time priority, and returns the steps an incoming (taker) order would
take: fills `(maker, lots)` and self-trade-prevention cancels `(maker, 0)`. It
reads the book and mutates nothing, so the caller can check the plan (FOK
completeness, the exact cost of a market buy, post-only) before reserving funds
or changing state, and then apply exactly that plan.

Rules the plan encodes:
- a level is eligible while it crosses the taker's limit (market: any price);
- self-trade prevention uses the taker's mode when the next maker belongs to the
  taker's user: cancel_taker stops the taker; cancel_maker cancels that maker and
  goes on; cancel_both does both; none trades normally;
- a quote-budget buy takes, at each maker, the most lots whose notional plus the
  taker's cumulative fee stay within the budget, and stops at the first maker it
  cannot afford one lot of (later prices are no better);
- at most `max_steps` steps are planned (DESIGN rule 7); hitting the limit is
  reported so the caller never rests an order that still crosses.
"""

from __future__ import annotations

from typing import Final

from crossbook.domain.book import BookSide
from crossbook.domain.fees import fee_total
from crossbook.domain.markets import FEE_RATE_SCALE
from crossbook.domain.orders import Order, Side, StpMode

_BUY: Final = Side.BUY  # bound once: see the note on enum lookups in `exchange`
_CANCEL_MAKER: Final = StpMode.CANCEL_MAKER
_CANCEL_TAKER: Final = StpMode.CANCEL_TAKER
_STP_NONE: Final = StpMode.NONE


class MatchPlan:
    __slots__ = (
        "cost_units",
        "exhausted_budget",
        "fee_accrued",
        "filled_lots",
        "limit_hit",
        "notional_units",
        "steps",
        "stp_stops_taker",
    )

    def __init__(self) -> None:
        self.steps: list[tuple[Order, int]] = []
        self.filled_lots = 0
        self.notional_units = 0
        self.fee_accrued = 0  # the taker's accrued fee after the plan, starting from its own
        self.cost_units = 0  # for a buy taker: notional + fees this plan would pay
        self.stp_stops_taker = False
        self.limit_hit = False
        self.exhausted_budget = False  # a quote-budget buy met a maker it cannot afford a lot of


def plan_match(
    opposite: BookSide,
    *,
    taker_side: Side,
    taker_user_id: int,
    stp_mode: StpMode,
    limit_ticks: int,
    max_lots: int,
    budget_units: int,
    notional_units: int,
    taker_fee_ppm: int,
    fee_accrued: int,
    fee_paid_units: int,
    max_steps: int,
) -> MatchPlan:
    """Plan the fills of a taker; `limit_ticks == 0` means market, `max_lots == 0` means
    "limited by `budget_units` only" (quote-budget buy)."""
    plan = MatchPlan()
    plan.fee_accrued = fee_accrued
    is_buy = taker_side is _BUY
    want = max_lots
    spent = 0  # notional + fee increments, for the budget
    steps = plan.steps
    levels = opposite.levels
    # The levels best first, read directly (a generator costs ~0.2 µs per taker), and the
    # budget arithmetic only for budget takers: 9 % of a fill in `crossbook bench engine`.
    for key in reversed(opposite.keys):
        level = levels[key]
        price = level.price_ticks
        if limit_ticks and (price > limit_ticks if is_buy else price < limit_ticks):
            break
        maker = level.head
        while maker is not None:
            if len(steps) == max_steps:
                plan.limit_hit = True
                return _finish(plan, fee_paid_units)
            if maker.user_id == taker_user_id and stp_mode is not _STP_NONE:
                if stp_mode is not _CANCEL_TAKER:
                    steps.append((maker, 0))
                if stp_mode is not _CANCEL_MAKER:
                    plan.stp_stops_taker = True
                    return _finish(plan, fee_paid_units)
                maker = maker.next
                continue
            available = maker.quantity_lots - maker.filled_lots
            if max_lots:
                lots = min(available, want - plan.filled_lots)
            else:
                lots = _affordable_lots(
                    price,
                    available,
                    budget_units - spent,
                    notional_units,
                    taker_fee_ppm,
                    plan.fee_accrued,
                )
                if lots == 0:
                    plan.exhausted_budget = True
                    return _finish(plan, fee_paid_units)
                # affording less than the maker offers means no further lot is affordable
                plan.exhausted_budget = lots < available
            notional = price * lots * notional_units
            accrued_before = plan.fee_accrued
            plan.fee_accrued += notional * taker_fee_ppm
            if not max_lots:
                spent += notional + fee_total(plan.fee_accrued) - fee_total(accrued_before)
            steps.append((maker, lots))
            plan.filled_lots += lots
            plan.notional_units += notional
            if plan.exhausted_budget or (max_lots and plan.filled_lots == want):
                return _finish(plan, fee_paid_units)
            maker = maker.next
    return _finish(plan, fee_paid_units)


def unmatched_plan(fee_accrued: int, fee_paid_units: int) -> MatchPlan:
    """What `plan_match` returns when no maker is eligible, without walking the book."""
    plan = MatchPlan()
    plan.fee_accrued = fee_accrued
    return _finish(plan, fee_paid_units)


def _finish(plan: MatchPlan, fee_paid_units: int) -> MatchPlan:
    plan.cost_units = plan.notional_units + fee_total(plan.fee_accrued) - fee_paid_units
    return plan


def _affordable_lots(
    price_ticks: int,
    available_lots: int,
    budget_left: int,
    notional_units: int,
    fee_ppm: int,
    accrued: int,
) -> int:
    """Most lots (<= available) whose notional plus fee increment fit `budget_left`."""
    if budget_left <= 0:
        return 0
    paid = fee_total(accrued)
    unit = price_ticks * notional_units
    # cost(k) = k*unit + ceil((accrued + k*unit*fee)/S) - paid <= budget_left; start from the
    # real-valued bound and step down: the ceiling makes the estimate at most one lot high.
    estimate = ((budget_left + paid) * FEE_RATE_SCALE - accrued) // (
        unit * (FEE_RATE_SCALE + fee_ppm)
    )
    lots = max(0, min(available_lots, estimate))
    for _ in range(3):
        if (
            lots == 0
            or lots * unit + fee_total(accrued + lots * unit * fee_ppm) - paid <= budget_left
        ):
            return lots
        lots -= 1
    raise AssertionError((price_ticks, available_lots, budget_left, accrued))
