"""The money rules stated once in the domain: a trade's legs and an order's reservation."""

import pytest

from crossbook.domain import FEE_ACCOUNT_ID, Side, TradeExecuted
from crossbook.domain.fees import reservation_units, reserve_asset
from crossbook.domain.funding import amend_hold_units, place_hold_units
from crossbook.domain.settlement import TradeLegs, trade_legs

from unit_support import Harness, trades

# the harness's market: a tick (0.01) times a lot (0.00001) is 10 minor units of USDT
# (8 decimals); a lot is 1,000 satoshi


def amounts(legs: TradeLegs) -> dict[str, int]:
    return {
        "notional": legs.notional_units,
        "base": legs.base_units,
        "buyer_fee": legs.buyer_fee_units,
        "seller_fee": legs.seller_fee_units,
        "buyer_pays": legs.buyer_pays_units,
        "seller_receives": legs.seller_receives_units,
        "fee_account": legs.fee_units,
    }


def test_trade_legs_of_a_fill() -> None:
    spec = Harness().spec()
    legs = trade_legs(spec, 7, 5_000, 11, 3)
    assert amounts(legs) == {
        "notional": 5_000,
        "base": 7 * spec.lot_base_units,
        "buyer_fee": 11,
        "seller_fee": 3,
        "buyer_pays": 5_011,
        "seller_receives": 4_997,
        "fee_account": 14,
    }
    # per asset the legs sum to zero: quote (buyer pays = seller + fee account), base
    assert legs.buyer_pays_units == legs.seller_receives_units + legs.fee_units


def test_trade_legs_without_fees_move_the_notional_only() -> None:
    legs = TradeLegs(notional_units=1_000, base_units=5, buyer_fee_units=0, seller_fee_units=0)
    assert (legs.buyer_pays_units, legs.seller_receives_units, legs.fee_units) == (1_000, 1_000, 0)


def balances(h: Harness, *users: int) -> dict[tuple[int, str], int]:
    return {
        (user, asset): h.ex.ledger.available(user, asset) + h.ex.ledger.locked(user, asset)
        for user in users
        for asset in ("BTC", "USDT")
    }


def one_trade(h: Harness, maker_side: str, quantity: str, price: str) -> TradeExecuted:
    """User 1 rests `maker_side`, user 2 takes it whole; returns the trade."""
    h.fund(1, "BTC", "10")
    h.fund(1, "USDT", "1000000")
    h.fund(2, "BTC", "10")
    h.fund(2, "USDT", "1000000")
    h.submit(1, maker_side, quantity, price)
    before = balances(h, 1, 2, FEE_ACCOUNT_ID)
    taker_side = "buy" if maker_side == "sell" else "sell"
    [trade] = trades(h.submit(2, taker_side, quantity, price))
    after = balances(h, 1, 2, FEE_ACCOUNT_ID)
    legs = trade_legs(
        h.spec(),
        trade.quantity_lots,
        trade.notional_units,
        trade.buyer_fee_units,
        trade.seller_fee_units,
    )
    buyer, seller = trade.buyer_user_id, trade.seller_user_id
    moved = {key: after[key] - before[key] for key in after if after[key] != before[key]}
    expected = {
        (buyer, "USDT"): -legs.buyer_pays_units,
        (buyer, "BTC"): legs.base_units,
        (seller, "BTC"): -legs.base_units,
        (seller, "USDT"): legs.seller_receives_units,
        (FEE_ACCOUNT_ID, "USDT"): legs.fee_units,
    }
    assert moved == {key: amount for key, amount in expected.items() if amount}
    return trade


def test_buy_taker_pays_the_taker_rate_and_the_selling_maker_the_maker_rate() -> None:
    h = Harness(maker_fee_rate="0.001", taker_fee_rate="0.002")
    trade = one_trade(h, "sell", "1", "50000")
    assert trade.taker_side is Side.BUY
    assert trade.notional_units == 50_000 * 10**8
    assert trade.buyer_fee_units == 100 * 10**8  # taker 0.2 %
    assert trade.seller_fee_units == 50 * 10**8  # maker 0.1 %


def test_sell_taker_pays_the_taker_rate_and_the_buying_maker_the_maker_rate() -> None:
    h = Harness(maker_fee_rate="0.001", taker_fee_rate="0.002")
    trade = one_trade(h, "buy", "1", "50000")
    assert trade.taker_side is Side.SELL
    assert trade.buyer_fee_units == 50 * 10**8  # maker 0.1 %
    assert trade.seller_fee_units == 100 * 10**8  # taker 0.2 %


def test_a_fraction_of_a_minor_unit_of_fee_rounds_up() -> None:
    h = Harness(maker_fee_rate="0.001", taker_fee_rate="0.002")
    trade = one_trade(h, "sell", "0.00001", "0.03")  # notional 30 units
    assert trade.notional_units == 30
    assert (trade.buyer_fee_units, trade.seller_fee_units) == (1, 1)  # 0.06 and 0.03, up


def test_zero_fee_market_moves_nothing_to_the_fee_account() -> None:
    h = Harness(maker_fee_rate="0", taker_fee_rate="0")
    trade = one_trade(h, "sell", "0.5", "40000")
    assert (trade.buyer_fee_units, trade.seller_fee_units) == (0, 0)
    assert h.ex.ledger.available(FEE_ACCOUNT_ID, "USDT") == 0


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
