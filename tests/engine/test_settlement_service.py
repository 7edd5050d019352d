"""The settlement workers of remote-wallet mode (`crossbook.engine.settlement`).

Settlements come from real events: a wallet-funded `Exchange` trades orders
whose holds were made in a `FakeWallet`, and `plan_settlements` turns its events
into the outbox rows a commit would store. The same orders run on an embedded
`Exchange` (deposits instead of holds), whose ledger is what the wallet must hold
once everything is settled.

Market: BTC/USDT, tick 0.0001 and lot 0.0001, so notional = price_ticks × lots
USDT minor units and one lot is 10,000 BTC units; maker fee 500 ppm, taker 1,000.
A trade of 10 lots at 10,000 ticks: the buyer (taker) pays 100,000 + 100, the
seller (maker) delivers 100,000 BTC units and receives 100,000 - 50, fees 150.

Synchronisation is `service.wait_idle()` (or `FakeSleep.until`), never a sleep;
backoff waits are recorded by the injected `sleep`, not waited.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace

import pytest
from settlement_fakes import FakeClock, FakeSleep, FakeWallet, FaultKind, MemorySettlementStore

from crossbook.domain import (
    Command,
    CreateAsset,
    CreateMarket,
    Deposit,
    Event,
    Exchange,
    Funding,
    Hold,
    HoldReleased,
    HoldVoided,
    OrderType,
    PlaceOrder,
    Side,
    TradeExecuted,
    VoidHold,
)
from crossbook.domain.fees import reserve_asset
from crossbook.domain.funding import place_hold_units
from crossbook.engine.breaker import BreakerState, CircuitBreaker
from crossbook.engine.guarded_wallet import GuardedWallet
from crossbook.engine.retry import RetryPolicy
from crossbook.engine.settlement import (
    SettlementLimits,
    SettlementNotFailedError,
    SettlementNotFoundError,
    SettlementService,
)
from crossbook.engine.settlement_plan import (
    LegState,
    PlannedSettlement,
    SettlementKind,
    SettlementStatus,
    StoredSettlement,
    plan_settlements,
)
from crossbook.wallet_protocol import WalletOp, WalletOpKind

BTC = "BTC/USDT"
START_UNITS = 10_000_000  # of each asset, per user, deposited in the wallet
USERS = range(1, 41)
TRADE_LEGS = ("buyer_pays", "seller_delivers", "buyer_receives", "seller_receives", "fee")
POLICY = RetryPolicy(max_attempts=3, initial_backoff_ms=100, max_backoff_ms=250)
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

PENDING, SETTLED = SettlementStatus.PENDING, SettlementStatus.SETTLED
FAILED = SettlementStatus.SETTLEMENT_FAILED


def new_exchange(funding: Funding) -> Exchange:
    exchange = Exchange(None, funding)
    for command in SETUP:
        exchange.execute(command)
    return exchange


class Desk:
    """The same orders on a wallet-funded exchange (held in the wallet) and an embedded one."""

    def __init__(self, wallet: FakeWallet) -> None:
        self.wallet = wallet
        self.ex = new_exchange(Funding.WALLET)
        self.embedded = new_exchange(Funding.EMBEDDED)
        self.spec = self.ex.market(BTC).spec
        self.events: list[Event] = []
        self._holds = 0
        for user in USERS:
            for asset in ("BTC", "USDT"):
                key = f"deposit:{user}:{asset}"
                wallet.setup(WalletOp(key, WalletOpKind.DEPOSIT, user, asset, START_UNITS))
                self.embedded.execute(Deposit(user, asset, START_UNITS))

    def hold(self, user_id: int, asset: str, amount: int, *, applied: bool = True) -> Hold:
        """A hold the gateway asked the wallet for (`applied=False`: it never arrived)."""
        self._holds += 1
        key = f"hold:{self._holds}"
        if applied:
            self.wallet.setup(WalletOp(key, WalletOpKind.HOLD, user_id, asset, amount))
        return Hold(key, asset, amount)

    def limit(self, user_id: int, side: Side, lots: int, price_ticks: int) -> list[Event]:
        units = place_hold_units(
            self.spec, side, quantity_lots=lots, price_ticks=price_ticks, quote_budget_units=0
        )
        hold = self.hold(user_id, reserve_asset(self.spec, side), units)
        order = PlaceOrder(
            user_id, BTC, side, OrderType.LIMIT, quantity_lots=lots, price_ticks=price_ticks
        )
        events = self.ex.execute(replace(order, hold=hold))
        self.embedded.execute(order)
        self.events.extend(events)
        return events

    def trade(
        self, seller: int, buyer: int, *, lots: int = 10, price: int = 10_000, bid: int = 0
    ) -> list[Event]:
        """A resting sell taken by a buy (bidding `bid` > `price`: the excess is released)."""
        events = self.limit(seller, Side.SELL, lots, price)
        return events + self.limit(buyer, Side.BUY, lots, bid or price)

    def void(self, user_id: int, asset: str, amount: int, *, applied: bool) -> list[Event]:
        """The gateway gives up a hold no order will use (applied in the wallet or not)."""
        events = self.ex.execute(
            VoidHold(user_id, self.hold(user_id, asset, amount, applied=applied))
        )
        self.events.extend(events)
        return events

    def planned(self, events: Iterable[Event] | None = None) -> list[PlannedSettlement]:
        return plan_settlements(self.events if events is None else events, {BTC: self.spec})

    def embedded_balances(self) -> dict[tuple[int, str], tuple[int, int]]:
        return {
            key: (b.available, b.locked)
            for key, b in self.embedded.ledger.balances.items()
            if b.available or b.locked
        }


@dataclass
class Rig:
    store: MemorySettlementStore
    wallet: FakeWallet
    clock: FakeClock
    sleep: FakeSleep
    desk: Desk
    service: SettlementService
    breaker: CircuitBreaker | None
    transitions: list[tuple[BreakerState, int]]  # (new state, "down" calls so far)

    def commit(self, events: list[Event]) -> list[int]:
        """What the engine does with a batch: store its settlements, then publish."""
        ids = [self.store.add(planned).settlement_id for planned in self.desk.planned(events)]
        self.service.publish(events)
        return ids

    def settlement(self, settlement_id: int) -> StoredSettlement:
        return self.store.settlements[settlement_id]

    def down_calls(self) -> int:
        return sum(1 for _, outcome in self.wallet.calls if outcome == FaultKind.DOWN.value)


def run(
    scenario: Callable[[Rig], Awaitable[None]],
    *,
    policy: RetryPolicy = POLICY,
    limits: SettlementLimits | None = None,
    breaker: tuple[int, int] | None = None,  # (failure_threshold, reset_after_ms)
    start: bool = True,
    with_specs: bool = False,  # the service plans published batches itself
) -> None:
    async def main() -> None:
        clock = FakeClock()
        wallet = FakeWallet(clock)
        transitions: list[tuple[BreakerState, int]] = []
        guard, port = None, wallet
        if breaker is not None:
            guard = CircuitBreaker(
                *breaker,
                clock=clock,
                on_change=lambda state: transitions.append((state, rig.down_calls())),
            )
            port = GuardedWallet(wallet, guard)  # type: ignore[assignment]
        store, sleep = MemorySettlementStore(), FakeSleep()
        desk = Desk(wallet)
        service = SettlementService(
            store,
            port,
            policy=policy,
            limits=limits or SettlementLimits(workers=10),
            clock=clock,
            rng=random.Random(20240607),
            sleep=sleep,
            specs=(lambda symbol: desk.ex.market(symbol).spec) if with_specs else None,
        )
        rig = Rig(store, wallet, clock, sleep, desk, service, guard, transitions)
        if start:
            await service.start()
        try:
            await asyncio.wait_for(scenario(rig), timeout=10)  # a hang fails, not blocks
        finally:
            await service.stop()

    asyncio.run(main())


def of_type(events: Iterable[Event], kind: type[Event]) -> list[Event]:
    return [e for e in events if isinstance(e, kind)]


def only_trade(events: list[Event]) -> TradeExecuted:
    [trade] = of_type(events, TradeExecuted)
    assert isinstance(trade, TradeExecuted)
    return trade


def trade_keys(trade_id: int, generation: int = 0) -> list[str]:
    return [f"trade:{trade_id}:{leg}:g{generation}" for leg in TRADE_LEGS]


def settlement_keys(wallet: FakeWallet) -> list[str]:
    """The keys the wallet applied for settlements (not the deposits and holds of set-up)."""
    return [k for k in wallet.applied if not k.startswith(("deposit:", "hold:"))]


def state_of(breaker: CircuitBreaker) -> BreakerState:
    return breaker.state  # read afresh (not narrowed by an earlier assert)


def leg_states(settlement: StoredSettlement) -> list[tuple[str, LegState, int]]:
    return [(leg.name, leg.state, leg.generation) for leg in settlement.legs]


# -- the happy path ------------------------------------------------------------------------


def test_a_trade_applies_its_legs_in_order_and_the_wallet_ends_as_an_embedded_ledger() -> None:
    async def scenario(rig: Rig) -> None:
        events = rig.desk.trade(seller=1, buyer=2)
        trade = only_trade(events)
        assert [p.kind for p in rig.desk.planned(events)] == [SettlementKind.TRADE]
        rig.clock.now += 250
        [settlement_id] = rig.commit(events)
        await rig.service.wait_idle()

        assert settlement_keys(rig.wallet) == trade_keys(trade.trade_id)
        settled = rig.settlement(settlement_id)
        assert settled.status is SETTLED
        assert settled.settled_at_ms == rig.clock.now
        assert settled.attempts == 0 and settled.reason is None
        assert {leg.state for leg in settled.legs} == {LegState.APPLIED}
        assert rig.store.trade_status[trade.trade_id] is SETTLED
        assert rig.wallet.all_balances() == rig.desk.embedded_balances()
        assert rig.wallet.in_transit() == {}
        assert rig.service.stats.settled == 1

    run(scenario)


# -- transient failures ----------------------------------------------------------------------


def test_transient_failures_are_retried_with_the_same_key_after_bounded_backoff() -> None:
    policy = RetryPolicy(max_attempts=4, initial_backoff_ms=100, max_backoff_ms=250)

    async def scenario(rig: Rig) -> None:
        events = rig.desk.trade(seller=1, buyer=2)
        trade = only_trade(events)
        rig.wallet.fail(FaultKind.DOWN, "buyer_pays", times=3)
        [settlement_id] = rig.commit(events)
        await rig.service.wait_idle()

        key = f"trade:{trade.trade_id}:buyer_pays:g0"
        assert [k for k, _ in rig.wallet.calls if "buyer_pays" in k] == [key] * 4
        assert rig.wallet.outcomes(key) == ["down", "down", "down", "applied"]
        waits = rig.sleep.waits_ms
        assert len(waits) == 3
        for attempt, wait in enumerate(waits, start=1):
            cap = policy.cap_ms(attempt)  # 100, 200, then 250 (the max)
            assert cap / 2 <= wait <= cap, (attempt, wait, cap)
        settled = rig.settlement(settlement_id)
        assert settled.attempts == 3
        assert settled.status is SETTLED
        assert rig.wallet.all_balances() == rig.desk.embedded_balances()

    run(scenario, policy=policy)


def test_a_leg_applied_but_its_answer_lost_is_replayed_not_applied_again() -> None:
    async def scenario(rig: Rig) -> None:
        events = rig.desk.trade(seller=1, buyer=2)
        trade = only_trade(events)
        rig.wallet.fail(FaultKind.LOST_REPLY, "seller_delivers", times=1)
        [settlement_id] = rig.commit(events)
        await rig.service.wait_idle()

        key = f"trade:{trade.trade_id}:seller_delivers:g0"
        assert rig.wallet.outcomes(key) == ["lost", "replayed"]
        assert rig.wallet.applied.count(key) == 1
        assert rig.settlement(settlement_id).status is SETTLED
        assert rig.settlement(settlement_id).attempts == 1
        assert rig.wallet.all_balances() == rig.desk.embedded_balances()
        assert rig.wallet.in_transit() == {}

    run(scenario)


def test_exhausted_retries_dead_letter_uncompensated_and_a_replay_resumes_with_the_same_keys() -> (
    None
):
    async def scenario(rig: Rig) -> None:
        events = rig.desk.trade(seller=1, buyer=2)
        trade = only_trade(events)
        rig.wallet.fail(FaultKind.DOWN, "seller_receives", times=None)
        [settlement_id] = rig.commit(events)
        await rig.service.wait_idle()

        failed = rig.settlement(settlement_id)
        assert failed.status is FAILED
        assert failed.reason is not None
        assert failed.reason.startswith("seller_receives: wallet unavailable after 3 attempts")
        assert "not compensated" in failed.reason
        assert failed.attempts == POLICY.max_attempts
        assert [s for _, s, _ in leg_states(failed)] == [LegState.APPLIED] * 3 + [
            LegState.PENDING
        ] * 2
        key = f"trade:{trade.trade_id}:seller_receives:g0"
        assert rig.wallet.outcomes(key) == ["down"] * POLICY.max_attempts
        assert not any(k.endswith(":undo") for k, _ in rig.wallet.calls)
        assert settlement_keys(rig.wallet) == trade_keys(trade.trade_id)[:3]  # stay applied
        assert rig.wallet.in_transit() != {}
        assert rig.service.stats.dead_letter_size == 1
        assert rig.store.trade_status[trade.trade_id] is FAILED

        rig.wallet.clear_faults()
        requeued = await rig.service.replay(settlement_id)
        assert requeued.status is PENDING
        assert leg_states(requeued) == leg_states(failed)  # no generation moved on
        await rig.service.wait_idle()

        assert rig.settlement(settlement_id).status is SETTLED
        assert rig.wallet.applied_twice() == []
        assert settlement_keys(rig.wallet) == trade_keys(trade.trade_id)
        assert rig.wallet.all_balances() == rig.desk.embedded_balances()
        assert rig.wallet.in_transit() == {}
        assert rig.service.stats.dead_letter_size == 0

    run(scenario)


# -- permanent refusals and compensation ------------------------------------------------------


def test_a_refused_leg_compensates_the_applied_ones_in_reverse_and_replay_uses_new_keys() -> None:
    async def scenario(rig: Rig) -> None:
        events = rig.desk.trade(seller=1, buyer=2)
        trade = only_trade(events)
        before = rig.wallet.all_balances()
        rig.wallet.fail(FaultKind.REFUSE, "buyer_receives", times=None, code="ACCOUNT_FROZEN")
        [settlement_id] = rig.commit(events)
        await rig.service.wait_idle()

        t = trade.trade_id
        assert settlement_keys(rig.wallet) == [
            f"trade:{t}:buyer_pays:g0",
            f"trade:{t}:seller_delivers:g0",
            f"trade:{t}:seller_delivers:g0:undo",
            f"trade:{t}:buyer_pays:g0:undo",
        ]
        failed = rig.settlement(settlement_id)
        assert failed.status is FAILED
        assert failed.reason is not None
        assert failed.reason.startswith("buyer_receives refused by the wallet: ACCOUNT_FROZEN")
        assert "compensated: seller_delivers, buyer_pays" in failed.reason
        assert "NOT compensated" not in failed.reason
        assert leg_states(failed) == [
            ("buyer_pays", LegState.REVERSED, 0),
            ("seller_delivers", LegState.REVERSED, 0),
            ("buyer_receives", LegState.PENDING, 0),
            ("seller_receives", LegState.PENDING, 0),
            ("fee", LegState.PENDING, 0),
        ]
        assert rig.wallet.all_balances() == before
        assert rig.wallet.in_transit() == {}
        assert rig.wallet.conserved()

        rig.wallet.clear_faults()
        requeued = await rig.service.replay(settlement_id)
        assert [(n, g) for n, _, g in leg_states(requeued)] == [
            ("buyer_pays", 1),
            ("seller_delivers", 1),
            ("buyer_receives", 0),
            ("seller_receives", 0),
            ("fee", 0),
        ]
        await rig.service.wait_idle()

        assert rig.settlement(settlement_id).status is SETTLED
        assert settlement_keys(rig.wallet)[4:] == [
            f"trade:{t}:buyer_pays:g1",
            f"trade:{t}:seller_delivers:g1",
            f"trade:{t}:buyer_receives:g0",
            f"trade:{t}:seller_receives:g0",
            f"trade:{t}:fee:g0",
        ]
        assert rig.wallet.applied_twice() == []
        assert rig.wallet.all_balances() == rig.desk.embedded_balances()
        assert rig.wallet.in_transit() == {}

    run(scenario)


def test_a_refused_undo_leaves_its_leg_applied_and_the_reason_says_not_compensated() -> None:
    async def scenario(rig: Rig) -> None:
        events = rig.desk.trade(seller=1, buyer=2)
        trade = only_trade(events)
        rig.wallet.fail(FaultKind.REFUSE, "buyer_receives", times=None, code="ACCOUNT_FROZEN")
        rig.wallet.fail(FaultKind.REFUSE, "seller_delivers:g0:undo", times=None, code="NO")
        [settlement_id] = rig.commit(events)
        await rig.service.wait_idle()

        failed = rig.settlement(settlement_id)
        assert failed.status is FAILED
        assert failed.reason is not None
        assert "NOT compensated: seller_delivers (undo refused: NO)" in failed.reason
        assert "compensated: buyer_pays" in failed.reason
        assert leg_states(failed)[:2] == [
            ("buyer_pays", LegState.REVERSED, 0),
            ("seller_delivers", LegState.APPLIED, 0),
        ]
        assert f"trade:{trade.trade_id}:seller_delivers:g0:undo" not in rig.wallet.applied
        assert rig.wallet.in_transit() == {"BTC": 100_000}  # the seller's base, stuck

    run(scenario)


# -- the circuit breaker -------------------------------------------------------------------------


def test_an_open_circuit_makes_workers_wait_without_spending_attempts() -> None:
    threshold, reset_after_ms, circuit_wait_ms = 3, 1_000, 500
    policy = RetryPolicy(max_attempts=5, initial_backoff_ms=100, max_backoff_ms=400)
    limits = SettlementLimits(workers=10, circuit_wait_ms=circuit_wait_ms)

    async def scenario(rig: Rig) -> None:
        breaker = rig.breaker
        assert breaker is not None
        events = rig.desk.trade(1, 2) + rig.desk.trade(3, 4) + rig.desk.trade(5, 6)
        rig.wallet.fail(FaultKind.DOWN, times=None)
        ids = rig.commit(events)
        assert len(ids) == 3
        await rig.sleep.until(lambda: circuit_wait_ms in rig.sleep.waits_ms)

        assert state_of(breaker) is BreakerState.OPEN
        assert rig.transitions == [(BreakerState.OPEN, threshold)]
        rig.wallet.clear_faults()  # the wallet is back
        rig.clock.now += reset_after_ms
        await rig.service.wait_idle()

        assert state_of(breaker) is BreakerState.CLOSED
        assert [s for s, _ in rig.transitions] == [
            BreakerState.OPEN,
            BreakerState.HALF_OPEN,
            BreakerState.CLOSED,
        ]
        for settlement_id in ids:
            settled = rig.settlement(settlement_id)
            assert settled.status is SETTLED
            keys = [settled.base_key(leg) + ":g0" for leg in settled.legs]
            downs = sum(rig.wallet.outcomes(k).count("down") for k in keys)
            assert settled.attempts == downs  # the circuit's waits spent nothing
            for key in keys:
                assert len(rig.wallet.outcomes(key)) <= policy.max_attempts
                assert rig.wallet.outcomes(key)[-1] == "applied"
        circuit_waits = rig.sleep.waits_ms.count(circuit_wait_ms)
        assert circuit_waits >= 1
        assert len(rig.sleep.waits_ms) - circuit_waits == rig.down_calls()  # one backoff each
        assert rig.wallet.all_balances() == rig.desk.embedded_balances()

    run(scenario, policy=policy, limits=limits, breaker=(threshold, reset_after_ms))


# -- concurrency, restart, duplicates ------------------------------------------------------------


def test_ten_workers_settle_trades_releases_and_voids_at_once_each_key_applied_once() -> None:
    async def scenario(rig: Rig) -> None:
        desk = rig.desk
        for n in range(10):
            desk.trade(2 * n + 1, 2 * n + 2, bid=10_000 + 100 * (n % 3))  # some release
        desk.void(21, "USDT", 5_000, applied=True)
        desk.void(22, "BTC", 70_000, applied=True)
        desk.void(23, "USDT", 1_000, applied=False)  # never reached the wallet
        planned = desk.planned()
        kinds = [p.kind for p in planned]
        assert kinds.count(SettlementKind.TRADE) == 10
        assert kinds.count(SettlementKind.RELEASE) >= 2
        assert kinds.count(SettlementKind.VOID) == 3
        ids = rig.commit(desk.events)
        await rig.service.wait_idle()

        assert {rig.settlement(i).status for i in ids} == {SETTLED}
        assert rig.wallet.max_in_flight > 1  # they did run at once
        assert rig.wallet.applied_twice() == []
        keys = [k for p in planned for k in (f"{b}:g0" for b in p.base_keys)]
        assert sorted(settlement_keys(rig.wallet)) == sorted(keys)
        assert all(rig.wallet.outcomes(k) == ["applied"] for k in keys)
        assert rig.wallet.conserved()
        assert rig.wallet.in_transit() == {}
        assert rig.wallet.all_balances() == desk.embedded_balances()
        assert rig.service.stats.settled == len(ids)
        # outcomes that finish together are recorded together: fewer writes than settlements
        assert sum(rig.store.record_batches) == len(ids)
        assert len(rig.store.record_batches) < len(ids)

    run(scenario)


def test_with_the_specs_a_published_batch_is_settled_without_reading_the_store() -> None:
    async def scenario(rig: Rig) -> None:
        rig.desk.trade(1, 2, bid=10_100)  # a trade and a release
        rig.desk.void(5, "USDT", 1_000, applied=True)
        ids = rig.commit(rig.desk.events)
        await rig.service.wait_idle()
        assert {rig.settlement(i).status for i in ids} == {SETTLED}
        assert rig.store.reads == 0  # planned from the events, as the engine planned them
        assert rig.wallet.applied_twice() == []
        assert rig.wallet.all_balances() == rig.desk.embedded_balances()

    run(scenario, with_specs=True)


def test_start_finds_the_settlements_left_pending_in_the_store() -> None:
    async def scenario(rig: Rig) -> None:
        rig.desk.trade(1, 2, bid=10_100)
        rig.desk.trade(3, 4)
        rig.desk.void(5, "USDT", 1_000, applied=True)
        ids = [rig.store.add(p).settlement_id for p in rig.desk.planned()]  # never published
        assert len(ids) == 4

        await rig.service.start()
        await rig.service.wait_idle()

        assert {rig.settlement(i).status for i in ids} == {SETTLED}
        assert rig.wallet.all_balances() == rig.desk.embedded_balances()

    run(scenario, start=False)


def test_a_settlement_published_twice_is_settled_once() -> None:
    async def scenario(rig: Rig) -> None:
        events = rig.desk.trade(1, 2, bid=10_100)
        assert of_type(events, HoldReleased)
        ids = rig.commit(events)
        rig.service.publish(events)  # again, while queued
        await rig.service.wait_idle()
        rig.service.publish(events)  # and again, once settled
        await rig.service.wait_idle()

        assert [rig.store.settled_count(i) for i in ids] == [1] * len(ids)
        assert rig.service.stats.settled == len(ids)
        assert all(outcome == "applied" for _, outcome in rig.wallet.calls)
        assert rig.wallet.applied_twice() == []
        assert rig.wallet.all_balances() == rig.desk.embedded_balances()

    run(scenario)


# -- the dead-letter queue and the queue's bound ---------------------------------------------------


def test_replay_refuses_a_settlement_that_is_not_failed_or_not_known() -> None:
    async def scenario(rig: Rig) -> None:
        events = rig.desk.void(1, "USDT", 1_000, applied=True)
        assert of_type(events, HoldVoided)
        [settlement_id] = rig.commit(events)
        with pytest.raises(SettlementNotFailedError):
            await rig.service.replay(settlement_id)  # PENDING
        await rig.service.wait_idle()
        assert rig.settlement(settlement_id).status is SETTLED
        with pytest.raises(SettlementNotFailedError):
            await rig.service.replay(settlement_id)  # SETTLED
        with pytest.raises(SettlementNotFoundError):
            await rig.service.replay(settlement_id + 1_000)
        assert rig.service.stats.replayed == 0

    run(scenario)


def test_a_full_queue_drops_ids_that_the_rescan_finds_again() -> None:
    limits = SettlementLimits(workers=2, queue_capacity=2, rescan_ms=20)

    async def scenario(rig: Rig) -> None:
        for n in range(10):
            rig.desk.trade(2 * n + 1, 2 * n + 2, bid=10_001)  # a trade and a release each
        ids = rig.commit(rig.desk.events)
        assert len(ids) == 20
        await rig.service.wait_idle()

        assert {rig.settlement(i).status for i in ids} == {SETTLED}
        assert rig.wallet.applied_twice() == []
        assert rig.wallet.all_balances() == rig.desk.embedded_balances()

    run(scenario, limits=limits)
