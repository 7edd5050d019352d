"""The ledger: available/locked per user and asset, conservation, settlement legs."""

import pytest

from crossbook.domain import FEE_ACCOUNT_ID, DomainError, ErrorCode
from crossbook.domain.ledger import Ledger
from crossbook.domain.settlement import TradeLegs


def test_deposit_withdraw_and_net_deposits() -> None:
    ledger = Ledger()
    ledger.deposit(1, "USDT", 100)
    ledger.withdraw(1, "USDT", 30)
    assert (ledger.available(1, "USDT"), ledger.locked(1, "USDT")) == (70, 0)
    assert ledger.net_deposits == {"USDT": 70}


def test_withdraw_and_reserve_refuse_without_changing_anything() -> None:
    ledger = Ledger()
    ledger.deposit(1, "USDT", 100)
    ledger.drain_touched()
    for action in (ledger.withdraw, ledger.reserve):
        with pytest.raises(DomainError) as raised:
            action(1, "USDT", 101)
        assert raised.value.code is ErrorCode.INSUFFICIENT_BALANCE
        assert raised.value.details == {"asset": "USDT", "required": 101, "available": 100}
    assert (ledger.available(1, "USDT"), ledger.locked(1, "USDT")) == (100, 0)
    assert not ledger.touched


def test_reserve_and_release_move_between_available_and_locked() -> None:
    ledger = Ledger()
    ledger.deposit(1, "BTC", 10)
    ledger.reserve(1, "BTC", 4)
    assert (ledger.available(1, "BTC"), ledger.locked(1, "BTC")) == (6, 4)
    ledger.release(1, "BTC", 3)
    assert (ledger.available(1, "BTC"), ledger.locked(1, "BTC")) == (9, 1)
    with pytest.raises(AssertionError):
        ledger.release(1, "BTC", 2)  # more than is locked: a bug, not a rejection


def test_settle_fill_moves_every_leg_from_locked_funds() -> None:
    ledger = Ledger()
    ledger.deposit(1, "USDT", 1_060)
    ledger.deposit(2, "BTC", 5)
    ledger.reserve(1, "USDT", 1_060)
    ledger.reserve(2, "BTC", 5)
    legs = TradeLegs(notional_units=1_000, base_units=5, buyer_fee_units=10, seller_fee_units=5)
    ledger.settle_fill(1, 2, "BTC", "USDT", legs)
    assert (ledger.available(1, "BTC"), ledger.locked(1, "USDT")) == (5, 50)
    assert (ledger.available(2, "USDT"), ledger.locked(2, "BTC")) == (995, 0)
    assert ledger.available(FEE_ACCOUNT_ID, "USDT") == 15
    total = sum(b.total for (_, asset), b in ledger.balances.items() if asset == "USDT")
    assert total == ledger.net_deposits["USDT"]


def test_touched_balances_are_reported_once_in_first_touch_order() -> None:
    ledger = Ledger()
    ledger.deposit(2, "BTC", 1)
    ledger.deposit(1, "USDT", 1)
    ledger.deposit(2, "BTC", 1)
    assert [key for key, _ in ledger.drain_touched()] == [(2, "BTC"), (1, "USDT")]
    assert ledger.drain_touched() == []
