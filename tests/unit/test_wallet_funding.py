"""Remote-wallet funding (`Funding.WALLET`) and the hold arithmetic of `domain/funding`.

Every case drives a wallet-funded exchange together with a model wallet (a
`WalletLedger`, the wallet service's ledger): the wallet locks a
hold before the command, and after it applies the command's events: each
trade's legs (debit the payers' locked funds, credit the payees' available
funds), `HoldReleased` (locked -> available) and `HoldVoided` (the voided hold
is released). After every command the exchange passes `check_all` (in this mode
nothing is available in the exchange between commands) and the wallet has
nothing in transit.

Market used throughout: BTC/USDT, 8 decimals each, tick 0.0001 and lot 0.0001,
so one tick × one lot is 1 USDT minor unit (`notional = price_ticks * lots`)
and one lot is 10,000 BTC minor units; maker fee 500 ppm, taker fee 1,000 ppm.
A buy of 10 lots at 10,000 ticks reserves 100,000 + 100 (taker fee) = 100,100.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import TypeVar

import pytest

from crossbook.domain import (
    FEE_ACCOUNT_ID,
    AmendOrder,
    CancelOrder,
    CloseReason,
    Command,
    CreateAsset,
    CreateMarket,
    Deposit,
    DomainError,
    ErrorCode,
    Event,
    Exchange,
    Funding,
    Hold,
    HoldConsumed,
    HoldReleased,
    HoldVoided,
    MarketSpec,
    OrderAccepted,
    OrderStatus,
    OrderType,
    OrderUpdated,
    PlaceOrder,
    Side,
    StpMode,
    Tick,
    TimeInForce,
    TradeExecuted,
    VoidHold,
    Withdraw,
)
from crossbook.domain.fees import reserve_asset
from crossbook.domain.funding import amend_hold_units, market_buy_cost, place_hold_units
from crossbook.domain.invariants import check_all
from crossbook.domain.snapshot import restore
from crossbook.wallet_service.ledger import WalletLedger

BTC = "BTC/USDT"
WALLET_START = 1_000_000  # minor units of each asset each user holds in the wallet
USERS = (1, 2, 3)

SETUP: tuple[Command, ...] = (
    CreateAsset("BTC", 8),
    CreateAsset("USDT", 8),
    CreateMarket(
        "BTC",
        "USDT",
        tick_size="0.0001",
        lot_size="0.0001",
        min_quantity="0.0001",
        max_quantity="100",
        maker_fee_rate="0.0005",
        taker_fee_rate="0.001",
    ),
)


def new_exchange(funding: Funding) -> Exchange:
    ex = Exchange(None, funding)
    for command in SETUP:
        ex.execute(command)
    return ex


class WalletDesk:
    """A wallet-funded exchange and the model wallet that holds its users' money."""

    def __init__(self) -> None:
        self.ex = new_exchange(Funding.WALLET)
        self.spec: MarketSpec = self.ex.market(BTC).spec
        self.wallet = WalletLedger()
        self.holds = 0
        self.events: list[Event] = []  # every accepted command's events
        for user in USERS:
            for asset in ("BTC", "USDT"):
                self.wallet.deposit(user, asset, WALLET_START)

    # -- the wallet side ---------------------------------------------------------------

    def hold(self, user_id: int, asset: str, amount: int) -> Hold:
        """Lock `amount` in the wallet (as the wallet service does) and return the hold."""
        self.wallet.reserve(user_id, asset, amount)
        self.holds += 1
        return Hold(f"hold-{self.holds}", asset, amount)

    def apply(self, events: Iterable[Event]) -> None:
        """What the wallet does with a command's events (see the module docstring)."""
        wallet, spec = self.wallet, self.spec
        for event in events:
            if isinstance(event, TradeExecuted):
                base_units = event.quantity_lots * spec.lot_base_units
                buyer, seller = event.buyer_user_id, event.seller_user_id
                wallet.debit(
                    buyer, "USDT", event.notional_units + event.buyer_fee_units, from_locked=True
                )
                wallet.debit(seller, "BTC", base_units, from_locked=True)
                wallet.credit(buyer, "BTC", base_units, to_locked=False)
                wallet.credit(
                    seller, "USDT", event.notional_units - event.seller_fee_units, to_locked=False
                )
                fees = event.buyer_fee_units + event.seller_fee_units
                if fees:
                    wallet.credit(FEE_ACCOUNT_ID, "USDT", fees, to_locked=False)
            elif isinstance(event, HoldReleased | HoldVoided):
                wallet.release(event.user_id, event.asset, event.amount_units)

    def wallet_balance(self, user_id: int, asset: str) -> tuple[int, int]:
        return (self.wallet.available(user_id, asset), self.wallet.locked(user_id, asset))

    # -- the exchange side -------------------------------------------------------------

    def run(self, command: Command) -> list[Event]:
        events = self.ex.execute(command)
        check_all(self.ex)
        self.events.extend(events)
        self.apply(events)
        assert all(v == 0 for v in self.wallet.in_transit.values()), self.wallet.in_transit
        return events

    def refuse(self, command: Command, code: ErrorCode) -> DomainError:
        """`command` is refused with `code`, changing nothing; an applied hold is voided."""
        before = self.ex.state_digest()
        with pytest.raises(DomainError) as caught:
            self.ex.execute(command)
        assert caught.value.code == code, caught.value
        assert self.ex.state_digest() == before
        hold = command.hold if isinstance(command, PlaceOrder | AmendOrder) else None
        if hold is not None and hold.amount_units > 0:  # the wallet applied it: void it
            [voided] = self.run(VoidHold(command.user_id, hold))  # type: ignore[union-attr]
            assert isinstance(voided, HoldVoided)
        return caught.value

    def ex_balance(self, user_id: int, asset: str) -> tuple[int, int]:
        ledger = self.ex.ledger
        return (ledger.available(user_id, asset), ledger.locked(user_id, asset))

    def limit(
        self,
        user_id: int,
        side: Side,
        lots: int,
        price_ticks: int,
        *,
        hold_units: int | None = None,
        **fields: object,
    ) -> list[Event]:
        """Place a limit order held at its worst case (or at `hold_units`)."""
        if hold_units is None:
            hold_units = place_hold_units(
                self.spec, side, quantity_lots=lots, price_ticks=price_ticks, quote_budget_units=0
            )
        hold = self.hold(user_id, reserve_asset(self.spec, side), hold_units)
        return self.run(
            PlaceOrder(
                user_id,
                BTC,
                side,
                OrderType.LIMIT,
                quantity_lots=lots,
                price_ticks=price_ticks,
                hold=hold,
                **fields,  # type: ignore[arg-type]
            )
        )

    def asks(self) -> list[tuple[int, int]]:
        return [
            (lv.price_ticks, lv.total_lots)
            for lv in self.ex.market(BTC).book.asks.levels_best_first()
        ]


E = TypeVar("E", bound=Event)


def of_type(events: Iterable[Event], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


def released(events: Iterable[Event]) -> list[tuple[int, str, int]]:
    return [(e.user_id, e.asset, e.amount_units) for e in of_type(events, HoldReleased)]


def accepted_id(events: Iterable[Event]) -> int:
    [accepted] = of_type(events, OrderAccepted)
    return accepted.order_id


def assert_gap_free(events: list[Event], first_seq: int) -> None:
    assert [e.seq for e in events] == list(range(first_seq, first_seq + len(events)))


# -- deposits and withdrawals belong to the wallet ---------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        Deposit(1, "USDT", 100),
        Withdraw(1, "USDT", 100),
        Deposit(FEE_ACCOUNT_ID, "BTC", 5),
        Withdraw(FEE_ACCOUNT_ID, "USDT", 1),
    ],
)
def test_deposit_and_withdraw_are_refused_in_wallet_mode(command: Command) -> None:
    desk = WalletDesk()
    desk.refuse(command, ErrorCode.FUNDS_HELD_BY_WALLET)
    assert desk.ex.ledger.balances == {}
    assert desk.ex.ledger.net_deposits == {}


def test_deposit_and_withdraw_work_in_embedded_mode() -> None:
    ex = new_exchange(Funding.EMBEDDED)
    ex.execute(Deposit(1, "USDT", 100))
    ex.execute(Withdraw(1, "USDT", 40))
    assert (ex.ledger.available(1, "USDT"), ex.ledger.net_deposits["USDT"]) == (60, 60)


# -- placing an order with a hold ----------------------------------------------------------


def test_limit_buy_with_an_exact_hold_reserves_all_of_it_and_leaves_nothing_available() -> None:
    desk = WalletDesk()
    assert (
        place_hold_units(
            desk.spec, Side.BUY, quantity_lots=10, price_ticks=10_000, quote_budget_units=0
        )
        == 100_100
    )
    seq_before = desk.ex.seq
    desk.ex.take_balance_changes()
    events = desk.limit(1, Side.BUY, 10, 10_000)
    assert [type(e) for e in events] == [OrderAccepted, HoldConsumed]
    assert_gap_free(events, seq_before + 1)
    [accepted] = of_type(events, OrderAccepted)
    assert accepted.reserved_units == 100_100
    [consumed] = of_type(events, HoldConsumed)
    assert (consumed.user_id, consumed.asset, consumed.amount_units, consumed.order_id) == (
        1,
        "USDT",
        100_100,
        accepted.order_id,
    )
    [change] = desk.ex.take_balance_changes()
    assert change == (
        1,
        "USDT",
        0,
        100_100,
    )
    assert desk.ex_balance(1, "USDT") == (0, 100_100)
    assert desk.wallet_balance(1, "USDT") == (899_900, 100_100)


def test_limit_sell_holds_the_base_quantity() -> None:
    desk = WalletDesk()
    events = desk.limit(2, Side.SELL, 7, 10_000)
    assert of_type(events, OrderAccepted)[0].reserved_units == 70_000
    assert released(events) == []
    assert desk.ex_balance(2, "BTC") == (0, 70_000)
    assert desk.wallet_balance(2, "BTC") == (930_000, 70_000)


def test_a_hold_larger_than_needed_is_funded_and_the_excess_comes_back_released() -> None:
    desk = WalletDesk()
    seq_before = desk.ex.seq
    events = desk.limit(1, Side.BUY, 10, 10_000, hold_units=150_000)
    assert [type(e) for e in events] == [
        OrderAccepted,
        HoldConsumed,
        HoldReleased,
    ]
    assert of_type(events, HoldConsumed)[0].amount_units == 150_000  # the whole hold
    assert_gap_free(events, seq_before + 1)
    assert released(events) == [(1, "USDT", 49_900)]
    [change] = desk.ex.take_balance_changes()
    assert change == (1, "USDT", 0, 100_100)
    assert desk.ex_balance(1, "USDT") == (0, 100_100)
    assert desk.wallet_balance(1, "USDT") == (899_900, 100_100)


@pytest.mark.parametrize(
    ("side", "hold", "code"),
    [
        (Side.BUY, Hold("k", "USDT", 100_099), ErrorCode.INSUFFICIENT_BALANCE),  # one unit short
        (Side.BUY, None, ErrorCode.INSUFFICIENT_BALANCE),  # missing
        (Side.BUY, Hold("k", "BTC", 100_100), ErrorCode.INVALID_ORDER),  # wrong asset
        (Side.BUY, Hold("k", "USDT", 0), ErrorCode.INVALID_ORDER),  # empty
        (Side.BUY, Hold("k", "USDT", -100_100), ErrorCode.INVALID_ORDER),  # negative
        (Side.SELL, Hold("k", "USDT", 100_000), ErrorCode.INVALID_ORDER),  # sell held in quote
        (Side.SELL, Hold("k", "BTC", 99_999), ErrorCode.INSUFFICIENT_BALANCE),
        (Side.SELL, None, ErrorCode.INSUFFICIENT_BALANCE),
    ],
)
def test_a_hold_that_does_not_fund_the_order_is_refused_changing_nothing(
    side: Side, hold: Hold | None, code: ErrorCode
) -> None:
    desk = WalletDesk()
    desk.limit(3, Side.BUY, 1, 9_000)  # something already open
    state_before = desk.ex.state()
    if hold is not None and hold.amount_units > 0:
        hold = desk.hold(1, hold.asset, hold.amount_units)  # the wallet applied it
    command = PlaceOrder(
        1, BTC, side, OrderType.LIMIT, quantity_lots=10, price_ticks=10_000, hold=hold
    )
    error = desk.refuse(command, code)  # voids an applied hold
    if code is ErrorCode.INSUFFICIENT_BALANCE:
        required = 100_100 if side is Side.BUY else 100_000
        assert error.details["required"] == required
        assert error.details["available"] == (0 if hold is None else hold.amount_units)
    after = desk.ex.state()
    assert after["balances"] == state_before["balances"]
    assert after["orders"] == state_before["orders"]
    for asset in ("BTC", "USDT"):
        assert desk.wallet_balance(1, asset) == (WALLET_START, 0)
        assert desk.ex_balance(1, asset) == (0, 0)


# -- trades: proceeds go back through the legs, the rest is released -----------------------


def test_a_trade_sweeps_the_proceeds_without_releasing_them() -> None:
    desk = WalletDesk()
    desk.limit(2, Side.SELL, 10, 10_000)  # maker: 100,000 BTC units locked
    events = desk.limit(1, Side.BUY, 10, 10_000)  # taker: 100,100 USDT held, all used
    [trade] = of_type(events, TradeExecuted)
    assert (trade.notional_units, trade.buyer_fee_units, trade.seller_fee_units) == (
        100_000,
        100,
        50,
    )
    assert released(events) == []
    # nothing stays in the exchange: the proceeds went back with the trade
    for key, balance in desk.ex.ledger.balances.items():
        assert (balance.available, balance.locked) == (0, 0), key
    changes = {(user, asset): (a, lo) for user, asset, a, lo in desk.ex.take_balance_changes()}
    assert changes == {
        (1, "USDT"): (0, 0),
        (2, "BTC"): (0, 0),
        (1, "BTC"): (0, 0),
        (2, "USDT"): (0, 0),
        (FEE_ACCOUNT_ID, "USDT"): (0, 0),
    }
    assert desk.wallet_balance(1, "USDT") == (WALLET_START - 100_100, 0)
    assert desk.wallet_balance(1, "BTC") == (WALLET_START + 100_000, 0)
    assert desk.wallet_balance(2, "USDT") == (WALLET_START + 99_950, 0)
    assert desk.wallet_balance(2, "BTC") == (WALLET_START - 100_000, 0)
    assert desk.wallet_balance(FEE_ACCOUNT_ID, "USDT") == (150, 0)


def test_price_improvement_of_a_buy_taker_is_released() -> None:
    desk = WalletDesk()
    desk.limit(2, Side.SELL, 10, 10_000)
    events = desk.limit(1, Side.BUY, 10, 11_000)  # holds 110,000 + 110 = 110,110
    [trade] = of_type(events, TradeExecuted)
    assert trade.price_ticks == 10_000  # pays 100,000 + 100
    assert released(events) == [(1, "USDT", 10_010)]
    assert desk.ex_balance(1, "USDT") == (0, 0)
    assert desk.wallet_balance(1, "USDT") == (WALLET_START - 100_100, 0)
    assert desk.wallet_balance(1, "BTC") == (WALLET_START + 100_000, 0)


def test_a_partly_filled_buy_rests_with_its_trimmed_reservation() -> None:
    desk = WalletDesk()
    desk.limit(2, Side.SELL, 4, 10_000)
    events = desk.limit(1, Side.BUY, 10, 11_000)  # holds 110,110
    [trade] = of_type(events, TradeExecuted)
    assert (trade.quantity_lots, trade.notional_units, trade.buyer_fee_units) == (4, 40_000, 40)
    # the remaining 6 lots at 11,000: 66,000 + ceil((40e6 + 66e6) / 1e6) - 40 paid = 66,066;
    # 110,110 - 40,040 spent - 66,066 kept = 4,004 released
    assert released(events) == [(1, "USDT", 4_004)]
    assert desk.ex_balance(1, "USDT") == (0, 66_066)
    assert desk.wallet_balance(1, "USDT") == (WALLET_START - 40_040 - 66_066, 66_066)
    assert desk.wallet_balance(1, "BTC") == (WALLET_START + 40_000, 0)


def test_a_market_buy_by_quantity_held_at_the_book_cost_uses_all_of_it() -> None:
    desk = WalletDesk()
    desk.limit(2, Side.SELL, 3, 10_000)
    desk.limit(3, Side.SELL, 5, 10_100)
    cost = market_buy_cost(desk.spec, 6, desk.asks())
    assert cost == 30_000 + 30_300 + 61  # fee ceil(60.3)
    hold = desk.hold(1, "USDT", cost)
    events = desk.run(PlaceOrder(1, BTC, Side.BUY, OrderType.MARKET, quantity_lots=6, hold=hold))
    assert [t.quantity_lots for t in of_type(events, TradeExecuted)] == [3, 3]
    assert of_type(events, OrderAccepted)[0].reserved_units == cost
    assert released(events) == []
    assert desk.wallet_balance(1, "USDT") == (WALLET_START - cost, 0)
    assert desk.wallet_balance(1, "BTC") == (WALLET_START + 60_000, 0)


def test_a_quote_budget_buy_releases_what_it_did_not_spend() -> None:
    desk = WalletDesk()
    desk.limit(2, Side.SELL, 10, 10_000)
    budget = 50_000  # 4 lots cost 40,040; a 5th would cost 50,050 in all
    assert (
        place_hold_units(
            desk.spec, Side.BUY, quantity_lots=0, price_ticks=0, quote_budget_units=budget
        )
        == budget
    )
    hold = desk.hold(1, "USDT", budget)
    events = desk.run(
        PlaceOrder(1, BTC, Side.BUY, OrderType.MARKET, quote_budget_units=budget, hold=hold)
    )
    assert sum(t.quantity_lots for t in of_type(events, TradeExecuted)) == 4
    assert released(events) == [(1, "USDT", 9_960)]
    assert desk.wallet_balance(1, "USDT") == (WALLET_START - 40_040, 0)


def test_a_stop_triggered_by_another_users_trade_is_swept_in_that_command() -> None:
    desk = WalletDesk()
    desk.limit(2, Side.SELL, 1, 10_000)
    desk.limit(1, Side.BUY, 1, 10_000)  # last price 10,000
    desk.limit(2, Side.SELL, 10, 10_100)
    stop_hold = place_hold_units(
        desk.spec, Side.BUY, quantity_lots=5, price_ticks=10_200, quote_budget_units=0
    )
    assert stop_hold == 51_000 + 51
    hold = desk.hold(3, "USDT", stop_hold)
    stop = desk.run(
        PlaceOrder(
            3,
            BTC,
            Side.BUY,
            OrderType.STOP_LIMIT,
            quantity_lots=5,
            price_ticks=10_200,
            stop_price_ticks=10_100,
            hold=hold,
        )
    )
    assert released(stop) == [] and desk.ex_balance(3, "USDT") == (0, 51_051)
    events = desk.limit(1, Side.BUY, 2, 10_100)  # trades at 10,100: the stop fires
    stop_fills = [t for t in of_type(events, TradeExecuted) if t.buyer_user_id == 3]
    assert [(t.quantity_lots, t.price_ticks, t.buyer_fee_units) for t in stop_fills] == [
        (5, 10_100, 51)  # fee ceil(50.5)
    ]
    # user 3 paid 50,551 of 51,051; its BTC went back as proceeds, not as a release
    assert released(events) == [(3, "USDT", 500)]
    assert desk.ex_balance(3, "USDT") == (0, 0)
    assert desk.wallet_balance(3, "USDT") == (WALLET_START - 50_551, 0)
    assert desk.wallet_balance(3, "BTC") == (WALLET_START + 50_000, 0)
    assert desk.ex_balance(2, "BTC") == (0, 30_000)  # 3 lots still resting
    fees = sum(t.buyer_fee_units + t.seller_fee_units for t in of_type(desk.events, TradeExecuted))
    assert fees == 10 + 5 + 21 + 11 + 51 + 25  # 1 lot at 10,000; 2 then 5 lots at 10,100
    assert desk.wallet_balance(FEE_ACCOUNT_ID, "USDT") == (fees, 0)


# -- releasing reservations: cancel, expiry, amend -----------------------------------------


def test_cancel_releases_the_remaining_reservation() -> None:
    desk = WalletDesk()
    desk.limit(2, Side.SELL, 4, 10_000)
    order_id = accepted_id(desk.limit(1, Side.BUY, 10, 11_000))
    assert desk.ex_balance(1, "USDT") == (0, 66_066)
    events = desk.run(CancelOrder(1, order_id))
    assert released(events) == [(1, "USDT", 66_066)]
    [update] = of_type(events, OrderUpdated)
    assert (update.status, update.reason) == (OrderStatus.CANCELLED, CloseReason.CANCELLED_BY_USER)
    assert desk.ex_balance(1, "USDT") == (0, 0)
    assert desk.wallet_balance(1, "USDT") == (WALLET_START - 40_040, 0)


def test_cancel_of_a_resting_sell_releases_its_base() -> None:
    desk = WalletDesk()
    order_id = accepted_id(desk.limit(2, Side.SELL, 7, 10_000))
    events = desk.run(CancelOrder(2, order_id))
    assert released(events) == [(2, "BTC", 70_000)]
    assert desk.wallet_balance(2, "BTC") == (WALLET_START, 0)
    assert desk.ex.ledger.balances[(2, "BTC")].locked == 0


def test_gtd_expiry_on_tick_releases_the_reservation() -> None:
    desk = WalletDesk()
    order_id = accepted_id(
        desk.limit(1, Side.BUY, 10, 10_000, time_in_force=TimeInForce.GTD, expire_at_ms=5_000)
    )
    assert desk.run(Tick(4_999)) == []
    assert desk.ex_balance(1, "USDT") == (0, 100_100)
    events = desk.run(Tick(5_000))
    [update] = of_type(events, OrderUpdated)
    assert (update.order_id, update.status, update.reason) == (
        order_id,
        OrderStatus.EXPIRED,
        CloseReason.GTD_EXPIRED,
    )
    assert released(events) == [(1, "USDT", 100_100)]
    assert desk.ex_balance(1, "USDT") == (0, 0)
    assert desk.wallet_balance(1, "USDT") == (WALLET_START, 0)
    assert desk.ex.orders == {}


def test_amend_to_a_higher_price_needs_a_hold() -> None:
    desk = WalletDesk()
    order_id = accepted_id(desk.limit(1, Side.BUY, 10, 10_000))  # reserves 100,100
    extra = amend_hold_units(
        desk.spec, Side.BUY, price_ticks=10_500, remaining_lots=10, reserved_units=100_100
    )
    assert extra == 105_105 - 100_100
    error = desk.refuse(AmendOrder(1, order_id, price_ticks=10_500), ErrorCode.INSUFFICIENT_BALANCE)
    assert (error.details["required"], error.details["available"]) == (5_005, 0)
    desk.refuse(
        AmendOrder(1, order_id, price_ticks=10_500, hold=desk.hold(1, "USDT", extra - 1)),
        ErrorCode.INSUFFICIENT_BALANCE,
    )
    events = desk.run(AmendOrder(1, order_id, price_ticks=10_500, hold=desk.hold(1, "USDT", extra)))
    assert released(events) == []
    [update] = of_type(events, OrderUpdated)
    assert (update.price_ticks, update.reserved_units) == (10_500, 105_105)
    assert desk.ex_balance(1, "USDT") == (0, 105_105)
    assert desk.wallet_balance(1, "USDT") == (WALLET_START - 105_105, 105_105)


def test_amend_to_a_lower_price_releases_the_difference_and_any_hold_given() -> None:
    desk = WalletDesk()
    order_id = accepted_id(desk.limit(1, Side.BUY, 10, 10_000))
    assert (
        amend_hold_units(
            desk.spec, Side.BUY, price_ticks=9_000, remaining_lots=10, reserved_units=100_100
        )
        == 0
    )
    events = desk.run(AmendOrder(1, order_id, price_ticks=9_000))
    assert released(events) == [(1, "USDT", 100_100 - 90_090)]
    # a hold the amend does not need is funded and handed straight back, in one release
    events = desk.run(AmendOrder(1, order_id, price_ticks=8_000, hold=desk.hold(1, "USDT", 25)))
    assert released(events) == [(1, "USDT", 90_090 - 80_080 + 25)]
    assert desk.ex_balance(1, "USDT") == (0, 80_080)
    assert desk.wallet_balance(1, "USDT") == (WALLET_START - 80_080, 80_080)


def test_amend_of_a_sell_quantity_holds_or_releases_base() -> None:
    desk = WalletDesk()
    order_id = accepted_id(desk.limit(2, Side.SELL, 5, 10_000))
    extra = amend_hold_units(
        desk.spec, Side.SELL, price_ticks=10_000, remaining_lots=8, reserved_units=50_000
    )
    assert extra == 30_000
    desk.refuse(AmendOrder(2, order_id, quantity_lots=8), ErrorCode.INSUFFICIENT_BALANCE)
    desk.run(AmendOrder(2, order_id, quantity_lots=8, hold=desk.hold(2, "BTC", extra)))
    assert desk.ex_balance(2, "BTC") == (0, 80_000)
    events = desk.run(AmendOrder(2, order_id, quantity_lots=3))
    assert released(events) == [(2, "BTC", 50_000)]
    assert desk.wallet_balance(2, "BTC") == (WALLET_START - 30_000, 30_000)


@pytest.mark.parametrize(("hold_units", "excess"), [(5_306, 1), (5_305, 0)])
def test_amend_hold_bounds_the_exact_need_of_an_order_that_paid_fees(
    hold_units: int, excess: int
) -> None:
    desk = WalletDesk()
    desk.limit(2, Side.SELL, 1, 10_500)
    # buys 1 lot as taker (fee 10.5 -> 11 paid), 10 lots rest at 10,500 holding
    # 105,000 + ceil((10.5e6 + 105e6) / 1e6) - 11 = 105,105
    order_id = accepted_id(desk.limit(1, Side.BUY, 11, 10_500))
    order = desk.ex.orders[order_id]
    assert (order.fee_paid_units, order.reserved_units) == (11, 105_105)
    # at 11,030: exact 110,300 + ceil(120.8) - 11 = 110,410; the bound 110,300 + ceil(110.3)
    bound = amend_hold_units(
        desk.spec, Side.BUY, price_ticks=11_030, remaining_lots=10, reserved_units=105_105
    )
    assert bound == 110_411 - 105_105
    desk.refuse(
        AmendOrder(1, order_id, price_ticks=11_030, hold=desk.hold(1, "USDT", 5_304)),
        ErrorCode.INSUFFICIENT_BALANCE,
    )
    hold = desk.hold(1, "USDT", hold_units)
    events = desk.run(AmendOrder(1, order_id, price_ticks=11_030, hold=hold))
    # the bound is one unit above the exact need, which the exchange hands back
    assert released(events) == ([(1, "USDT", excess)] if excess else [])
    assert desk.ex_balance(1, "USDT") == (0, 110_410)
    assert desk.wallet_balance(1, "USDT")[1] == 110_410


# -- VoidHold ---------------------------------------------------------------------------------


def test_void_hold_emits_hold_voided_and_changes_no_balance() -> None:
    desk = WalletDesk()
    desk.limit(1, Side.BUY, 10, 10_000)
    balances_before = desk.ex.state()["balances"]
    seq_before = desk.ex.seq
    hold = desk.hold(1, "USDT", 500)
    events = desk.run(VoidHold(1, hold))
    [voided] = events
    assert isinstance(voided, HoldVoided)
    assert (voided.seq, voided.user_id, voided.asset, voided.hold_key, voided.amount_units) == (
        seq_before + 1,
        1,
        "USDT",
        hold.key,
        500,
    )
    assert voided.market_seq == 0
    assert desk.ex.state()["balances"] == balances_before
    assert desk.wallet_balance(1, "USDT") == (WALLET_START - 100_100, 100_100)


def test_void_hold_for_the_fee_account_is_refused() -> None:
    desk = WalletDesk()
    desk.refuse(VoidHold(FEE_ACCOUNT_ID, Hold("k", "USDT", 1)), ErrorCode.INVALID_USER)


# -- holds in embedded mode -----------------------------------------------------------------


def embedded_with_order() -> tuple[Exchange, int]:
    ex = new_exchange(Funding.EMBEDDED)
    ex.execute(Deposit(1, "USDT", WALLET_START))
    events = ex.execute(
        PlaceOrder(1, BTC, Side.BUY, OrderType.LIMIT, quantity_lots=10, price_ticks=10_000)
    )
    return ex, accepted_id(events)


@pytest.mark.parametrize(
    "make_command",
    [
        lambda oid: PlaceOrder(
            1,
            BTC,
            Side.BUY,
            OrderType.LIMIT,
            quantity_lots=1,
            price_ticks=10_000,
            hold=Hold("k", "USDT", 10_010),
        ),
        lambda oid: AmendOrder(1, oid, price_ticks=10_500, hold=Hold("k", "USDT", 5_005)),
        lambda oid: AmendOrder(1, oid, price_ticks=9_000, hold=Hold("k", "USDT", 1)),
        lambda oid: VoidHold(1, Hold("k", "USDT", 1)),
    ],
    ids=["place", "amend-up", "amend-down", "void"],
)
def test_holds_are_refused_in_embedded_mode(make_command: Callable[[int], Command]) -> None:
    ex, order_id = embedded_with_order()
    command = make_command(order_id)
    before = ex.state_digest()
    with pytest.raises(DomainError) as caught:
        ex.execute(command)
    assert caught.value.code is ErrorCode.INVALID_ORDER
    assert ex.state_digest() == before
    check_all(ex)


# -- restore ------------------------------------------------------------------------------------


def busy_desk() -> WalletDesk:
    """Resting orders both sides, a partial fill, a waiting stop and a GTD order."""
    desk = WalletDesk()
    desk.limit(2, Side.SELL, 4, 10_000)
    desk.limit(1, Side.BUY, 10, 11_000)  # partly filled, rests
    desk.limit(2, Side.SELL, 6, 12_000)
    desk.limit(3, Side.BUY, 3, 10_500, time_in_force=TimeInForce.GTD, expire_at_ms=9_000)
    desk.run(
        PlaceOrder(
            3,
            BTC,
            Side.SELL,
            OrderType.STOP_MARKET,
            quantity_lots=2,
            stop_price_ticks=9_000,
            hold=desk.hold(3, "BTC", 20_000),
        )
    )
    return desk


def test_restore_round_trips_a_wallet_funded_exchange() -> None:
    desk = busy_desk()
    state = desk.ex.state()
    copy = restore(state, None, Funding.WALLET)
    assert copy.funding is Funding.WALLET
    assert copy.state_digest() == desk.ex.state_digest()
    check_all(copy)
    through_json = restore(json.loads(json.dumps(state, default=str)), None, Funding.WALLET)
    assert through_json.state_digest() == desk.ex.state_digest()
    # both answer every later command identically
    stop_id = max(desk.ex.orders)
    later: list[Command] = [
        Deposit(1, "USDT", 5),  # still refused after a restore
        Tick(9_000),  # the GTD bid expires: released
        # sells into the partly filled bid at 11,000 (6 lots), 2 lots rest at 8,000
        PlaceOrder(
            2,
            BTC,
            Side.SELL,
            OrderType.LIMIT,
            quantity_lots=8,
            price_ticks=8_000,
            hold=Hold("later-1", "BTC", 80_000),
        ),
        # trades at 8,000: the stop-market sell fires, finds no bid, and is released
        PlaceOrder(
            1,
            BTC,
            Side.BUY,
            OrderType.LIMIT,
            quantity_lots=2,
            price_ticks=8_000,
            hold=Hold("later-2", "USDT", 16_016),
        ),
    ]
    for command in later:
        expected = outcome(desk.ex, command)
        assert outcome(copy, command) == expected
        check_all(copy)
        check_all(desk.ex)
    last_events = json.loads(expected)
    assert [
        (e["user_id"], e["asset"], e["amount_units"])
        for e in last_events
        if e["kind"] == "hold_released"
    ] == [(3, "BTC", 20_000)]  # the stop's base, its buyer's USDT all spent
    assert [e["reason"] for e in last_events if e.get("order_id") == stop_id][-1] == (
        "no_liquidity"
    )
    assert stop_id not in copy.orders
    assert copy.state_digest() == desk.ex.state_digest()


def outcome(ex: Exchange, command: Command) -> str:
    try:
        events = ex.execute(command)
    except DomainError as error:
        return f"refused {error.code}"
    return json.dumps([e.to_dict() for e in events], default=str, sort_keys=True)


# -- domain/funding.py ------------------------------------------------------------------------


def test_reserve_asset() -> None:
    spec = new_exchange(Funding.WALLET).market(BTC).spec
    assert reserve_asset(spec, Side.BUY) == "USDT"
    assert reserve_asset(spec, Side.SELL) == "BTC"


def test_place_hold_units_per_order_kind() -> None:
    spec = new_exchange(Funding.WALLET).market(BTC).spec
    asks = [(10_000, 3), (10_100, 5)]

    def hold(side: Side, lots: int = 0, price: int = 0, budget: int = 0) -> int:
        return place_hold_units(
            spec, side, quantity_lots=lots, price_ticks=price, quote_budget_units=budget, asks=asks
        )

    assert hold(Side.SELL, 7, 10_000) == 70_000
    assert hold(Side.SELL, 7) == 70_000  # market sell: the same base
    assert hold(Side.BUY, 10, 10_000) == 100_100
    assert hold(Side.BUY, 3, 10_001) == 30_003 + 31  # fee ceil(30.003)
    assert hold(Side.BUY, budget=12_345) == 12_345
    assert hold(Side.BUY, 6) == 60_300 + 61  # market buy: walks the asks
    # malformed orders hold nothing (the exchange refuses them anyway)
    assert hold(Side.SELL, 0, 10_000) == 0
    assert hold(Side.SELL, -1) == 0
    assert hold(Side.BUY, 0, 10_000) == 0
    assert hold(Side.BUY, 5, -1) == 0
    assert hold(Side.BUY, budget=-5) == 0


def test_market_buy_cost_walks_levels_in_order() -> None:
    spec = new_exchange(Funding.WALLET).market(BTC).spec
    asks = [(10_000, 3), (10_100, 5), (10_200, 1)]
    assert market_buy_cost(spec, 2, asks) == 20_000 + 20
    assert market_buy_cost(spec, 3, asks) == 30_000 + 30
    assert market_buy_cost(spec, 4, asks) == 40_100 + 41  # fee ceil(40.1)
    assert market_buy_cost(spec, 9, asks) == 30_000 + 50_500 + 10_200 + 91  # the whole book
    assert market_buy_cost(spec, 50, asks) == 90_700 + 91  # more than the book: what is there
    assert market_buy_cost(spec, 5, []) == 0


@pytest.mark.parametrize("lots", [1, 2, 3, 5, 9, 12, 14, 30])
@pytest.mark.parametrize("funding", [Funding.EMBEDDED, Funding.WALLET])
def test_market_buy_cost_equals_what_the_exchange_reserves(lots: int, funding: Funding) -> None:
    ex = new_exchange(funding)
    wallet_funded = funding is Funding.WALLET
    if not wallet_funded:
        for user in (1, 2, 3):
            ex.execute(Deposit(user, "BTC", WALLET_START))
        ex.execute(Deposit(1, "USDT", WALLET_START))
    for user, lots_, price in ((2, 2, 10_003), (3, 1, 10_003), (2, 4, 10_050), (3, 7, 10_101)):
        hold = Hold(f"s{user}{price}", "BTC", lots_ * 10_000) if wallet_funded else None
        ex.execute(
            PlaceOrder(
                user,
                BTC,
                Side.SELL,
                OrderType.LIMIT,
                quantity_lots=lots_,
                price_ticks=price,
                hold=hold,
            )
        )
    spec = ex.market(BTC).spec
    asks = [(lv.price_ticks, lv.total_lots) for lv in ex.market(BTC).book.asks.levels_best_first()]
    assert asks == [(10_003, 3), (10_050, 4), (10_101, 7)]
    cost = market_buy_cost(spec, lots, asks)
    assert cost == place_hold_units(
        spec, Side.BUY, quantity_lots=lots, price_ticks=0, quote_budget_units=0, asks=asks
    )
    hold = Hold("buy", "USDT", cost) if wallet_funded else None
    events = ex.execute(
        PlaceOrder(1, BTC, Side.BUY, OrderType.MARKET, quantity_lots=lots, hold=hold)
    )
    check_all(ex)
    [accepted] = of_type(events, OrderAccepted)
    assert accepted.reserved_units == cost
    fills = of_type(events, TradeExecuted)
    assert sum(t.notional_units + t.buyer_fee_units for t in fills) == cost
    assert released(events) == []


def test_amend_hold_units_cases() -> None:
    spec = new_exchange(Funding.WALLET).market(BTC).spec

    def extra(side: Side, price: int, remaining: int, reserved: int) -> int:
        return amend_hold_units(
            spec, side, price_ticks=price, remaining_lots=remaining, reserved_units=reserved
        )

    assert extra(Side.SELL, 10_000, 8, 50_000) == 30_000
    assert extra(Side.SELL, 10_000, 3, 50_000) == 0  # a smaller sell needs nothing
    assert extra(Side.SELL, 1, 5, 50_000) == 0  # a sell's price does not matter
    assert extra(Side.BUY, 10_500, 10, 100_100) == 5_005
    assert extra(Side.BUY, 9_000, 10, 100_100) == 0
    assert extra(Side.BUY, 10_000, 10, 100_100) == 0
    assert extra(Side.BUY, 10_000, 0, 0) == 0  # malformed: nothing
    assert extra(Side.BUY, 0, 10, 0) == 0


# -- a found bug: market_buy_cost ignores self-trade prevention ------------------------------


def test_market_buy_cost_covers_a_cancel_maker_buy_over_the_buyers_own_asks() -> None:
    """A cancel_maker market buy skips (cancels) the buyer's own asks and walks deeper:
    its hold leaves them out of the walk, so it covers what the exchange reserves."""
    desk = WalletDesk()
    desk.limit(1, Side.SELL, 10, 10_000)  # the buyer's own ask, cheapest
    desk.limit(2, Side.SELL, 10, 20_000)
    assert market_buy_cost(desk.spec, 10, desk.asks()) < 200_000  # the plain walk is short
    cost = place_hold_units(
        desk.spec,
        Side.BUY,
        quantity_lots=10,
        price_ticks=0,
        quote_budget_units=0,
        asks=desk.asks(),
        stp_mode=StpMode.CANCEL_MAKER,
        own_asks={10_000: 10},
    )
    hold = desk.hold(1, "USDT", cost)
    command = PlaceOrder(
        1,
        BTC,
        Side.BUY,
        OrderType.MARKET,
        quantity_lots=10,
        stp_mode=StpMode.CANCEL_MAKER,
        hold=hold,
    )
    embedded = new_exchange(Funding.EMBEDDED)
    embedded.execute(Deposit(1, "BTC", 100_000))
    embedded.execute(Deposit(1, "USDT", WALLET_START))
    embedded.execute(Deposit(2, "BTC", 100_000))
    for user, price in ((1, 10_000), (2, 20_000)):
        embedded.execute(
            PlaceOrder(user, BTC, Side.SELL, OrderType.LIMIT, quantity_lots=10, price_ticks=price)
        )
    embedded_events = embedded.execute(
        PlaceOrder(
            1, BTC, Side.BUY, OrderType.MARKET, quantity_lots=10, stp_mode=StpMode.CANCEL_MAKER
        )
    )
    reserved = of_type(embedded_events, OrderAccepted)[0].reserved_units
    assert reserved == 200_000 + 200  # the embedded exchange reserves the deeper walk
    assert cost == reserved
    events = desk.run(command)
    assert sum(t.quantity_lots for t in of_type(events, TradeExecuted)) == 10


# -- self-trade prevention that stops a market buy at the buyer's own ask ------------------


def test_a_market_buy_stopped_at_its_own_ask_is_held_for_the_other_lots_of_that_level() -> None:
    """cancel_taker and cancel_both end the walk at the first level holding an own ask,
    taking at most its other lots there (where the own ask sits in the queue is not
    known): an upper bound; exact (0 there) when the level holds only own asks."""
    spec = new_exchange(Funding.WALLET).market(BTC).spec
    asks = [(10_000, 3), (10_100, 5), (10_200, 4)]

    def hold(stp: StpMode, own: dict[int, int], lots: int = 10) -> int:
        return place_hold_units(
            spec,
            Side.BUY,
            quantity_lots=lots,
            price_ticks=0,
            quote_budget_units=0,
            asks=asks,
            stp_mode=stp,
            own_asks=own,
        )

    for stp in (StpMode.CANCEL_TAKER, StpMode.CANCEL_BOTH):
        assert hold(stp, {10_100: 2}) == 30_000 + 30_300 + 61  # 3 other lots at 10,100
        assert hold(stp, {10_000: 3}) == 0  # only own asks first: stopped at no cost
        assert hold(stp, {10_100: 2}, lots=2) == 20_000 + 20  # runs out before the own ask
    assert hold(StpMode.CANCEL_MAKER, {10_100: 2}) == 30_000 + 30_300 + 40_800 + 102
    assert hold(StpMode.NONE, {10_100: 2}) == 30_000 + 50_500 + 20_400 + 101


def test_a_market_buy_stp_cancels_at_no_cost_is_accepted_without_a_hold() -> None:
    """Held at 0 (the buyer's own ask is all the first level holds), the order reaches the
    exchange with no hold; self-trade prevention cancels it: nothing traded or locked."""
    desk = WalletDesk()
    desk.limit(1, Side.SELL, 4, 10_000)
    desk.limit(2, Side.SELL, 4, 10_100)
    assert (
        place_hold_units(
            desk.spec,
            Side.BUY,
            quantity_lots=6,
            price_ticks=0,
            quote_budget_units=0,
            asks=desk.asks(),
            stp_mode=StpMode.CANCEL_TAKER,
            own_asks={10_000: 4},
        )
        == 0
    )
    wallet_before = desk.wallet_balance(1, "USDT")
    events = desk.run(
        PlaceOrder(
            1, BTC, Side.BUY, OrderType.MARKET, quantity_lots=6, stp_mode=StpMode.CANCEL_TAKER
        )
    )
    assert not of_type(events, TradeExecuted)
    [closed] = of_type(events, OrderUpdated)
    assert (closed.status, closed.reason) == (
        OrderStatus.CANCELLED,
        CloseReason.SELF_TRADE_PREVENTION,
    )
    assert desk.ex_balance(1, "USDT") == (0, 0)
    assert desk.wallet_balance(1, "USDT") == wallet_before
    assert desk.asks() == [(10_000, 4), (10_100, 4)]  # cancel_taker keeps the own ask
