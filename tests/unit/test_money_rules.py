"""The money rules stated once in the domain: an order's reservation."""

import pytest

from crossbook.domain import Side
from crossbook.domain.fees import reservation_units, reserve_asset
from crossbook.domain.funding import amend_hold_units, place_hold_units

from unit_support import Harness

# the harness's market: a tick (0.01) times a lot (0.00001) is 10 minor units of USDT
# (8 decimals); a lot is 1,000 satoshi


def test_reservation_of_each_kind_of_order() -> None:
    spec = Harness(maker_fee_rate="0.001", taker_fee_rate="0.002").spec()
    assert reserve_asset(spec, Side.SELL) == "BTC"
    assert reserve_asset(spec, Side.BUY) == "USDT"
    assert reservation_units(spec, Side.SELL, 5_000_000, 3) == 3 * spec.lot_base_units
    assert reservation_units(spec, Side.BUY, 0, 0, 12_345) == 12_345  # a quote budget
    assert reservation_units(spec, Side.BUY, 0, 4) == 0  # by quantity: its planned cost
    # a buy limit: notional plus the worst-case (taker) fee, rounded up
    assert reservation_units(spec, Side.BUY, 3, 1) == 30 + 1
    assert reservation_units(spec, Side.BUY, 5_000_000, 100) == 5 * 10**9 + 10**7


def test_buy_reservation_counts_the_fees_already_accrued_and_paid() -> None:
    spec = Harness(maker_fee_rate="0.001", taker_fee_rate="0.002").spec()
    # 60,000 ppm-units accrued (0.06 units) and 1 unit paid: the next 30 units of
    # notional add 0.06, so the cumulative fee stays 1 and nothing more is owed
    assert reservation_units(spec, Side.BUY, 3, 1, 0, 60_000, 1) == 30
    # filled: nothing left to lock
    assert reservation_units(spec, Side.BUY, 3, 0, 0, 60_000, 1) == 0


@pytest.mark.parametrize(("side", "price"), [("buy", "49000"), ("sell", "51000")])
def test_the_exchange_and_the_wallet_hold_use_the_same_reservation(side: str, price: str) -> None:
    h = Harness(maker_fee_rate="0.001", taker_fee_rate="0.002")
    h.fund(1, "BTC", "10")
    h.fund(1, "USDT", "1000000")
    command = h.place(1, side, "0.37", price)
    h.run(command)
    spec = h.spec()
    expected = reservation_units(spec, command.side, command.price_ticks, command.quantity_lots)
    assert h.ex.ledger.locked(1, reserve_asset(spec, command.side)) == expected
    held = place_hold_units(
        spec,
        command.side,
        quantity_lots=command.quantity_lots,
        price_ticks=command.price_ticks,
        quote_budget_units=0,
    )
    assert held == expected
    extra = amend_hold_units(
        spec,
        command.side,
        price_ticks=command.price_ticks,
        remaining_lots=2 * command.quantity_lots,
        reserved_units=expected,
    )
    doubled = reservation_units(spec, command.side, command.price_ticks, 2 * command.quantity_lots)
    assert extra == doubled - expected
