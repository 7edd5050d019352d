"""The order-entry service (`crossbook.engine.order_entry`) on fakes of its ports.

A real `Engine` on the in-memory store, embedded or wallet-funded; a fake wallet
(`settlement_fakes.FakeWallet`) behind a real circuit breaker; the store's own
records as the committed reads. Checked: each outcome is the order exactly as
the store then holds it (so a gateway answering from it shows what a read
would), each outcome is reported once under its action, and in remote-wallet
mode every hold that funds nothing is voided: through the engine when the hold's
outcome is unknown, directly in the background when the engine cannot take a
command; and a hold stays in flight (so the hold reconciler leaves it alone)
until its command's fate is durable, or, if that outcome is unknown, for
`undecided_hold_ms`, without being voided (the command may have consumed it).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import pytest
from engine_fakes import FakeClock, MemoryStore, limit
from settlement_fakes import FakeWallet, FaultKind

from crossbook.domain import (
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
    Funding,
    Hold,
    HoldVoided,
    MarketSpec,
    OrderStatus,
    OrderType,
    PlaceOrder,
    Side,
    StpMode,
    VoidHold,
)
from crossbook.domain.exchange import BalanceState
from crossbook.domain.funding import market_buy_cost
from crossbook.engine.breaker import CircuitBreaker
from crossbook.engine.engine import Engine, EngineOverloadedError, EngineUnavailableError
from crossbook.engine.guarded_wallet import GuardedWallet
from crossbook.engine.order_entry import (
    EmbeddedFunding,
    OrderEntry,
    OrderFunding,
    OrderOutcome,
    WalletOutageError,
)
from crossbook.engine.order_view import OrderView
from crossbook.engine.read_model.open_orders import OpenOrderIndex
from crossbook.engine.read_model.records import StoredOrder
from crossbook.engine.retry import RetryPolicy
from crossbook.engine.submission import CommandSubmitter
from crossbook.engine.wallet_funding import WalletFunding
from crossbook.wallet_protocol import WalletOp, WalletOpKind

SYMBOL = "BTC/USDT"
MARKET = [
    CreateAsset("BTC", 8),
    CreateAsset("USDT", 8),
    CreateMarket("BTC", "USDT", "0.01", "0.00001", "0.00001", "1000"),
]
SELLER, BUYER = 1, 2
FUNDS = ((SELLER, "BTC", 10 * 10**8), (BUYER, "USDT", 1_000_000 * 10**8))
UNDECIDED_HOLD_MS = 50
FAST_VOIDS = RetryPolicy(max_attempts=3, initial_backoff_ms=1, max_backoff_ms=2)
C = TypeVar("C")


class Publishers:
    """The engine's publisher: the open-order index, and a record of what was published."""

    def __init__(self, index: OpenOrderIndex) -> None:
        self.index = index
        self.events: list[Event] = []

    def publish(self, events: Sequence[Event], balances: Sequence[BalanceState]) -> None:
        self.events.extend(events)
        self.index.apply(events)


class StoreReads:
    """The committed reads order entry uses, on the in-memory store's records."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.reads = 0

    async def get_order(self, user_id: int, order_id: int) -> StoredOrder | None:
        self.reads += 1
        record = self.store.orders.get(order_id)
        if record is None or record["user_id"] != user_id:
            return None
        return StoredOrder.from_row(record)

    def order(self, order_id: int) -> StoredOrder:
        return StoredOrder.from_row(self.store.orders[order_id])


@dataclass(frozen=True, slots=True)
class Level:
    price_ticks: int
    quantity_lots: int


@dataclass(frozen=True, slots=True)
class Book:
    asks: tuple[Level, ...]


@dataclass(slots=True)
class Books:
    """A committed book that says what it was asked for."""

    asks: tuple[Level, ...] = ()
    asked: list[tuple[str, int]] = field(default_factory=list)

    def book(self, symbol: str, depth: int) -> Book:
        self.asked.append((symbol, depth))
        return Book(self.asks)


class GatedEngine:
    """An engine port that refuses what `refuse` matches, else forwards to the engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.refuse: Callable[[Command], Exception | None] = lambda _: None
        self.submitted: list[Command] = []

    async def submit(self, command: Command) -> list[Event]:
        self.submitted.append(command)
        refusal = self.refuse(command)
        if refusal is not None:
            raise refusal
        return await self.engine.submit(command)


@dataclass(slots=True)
class Rig:
    engine: Engine
    gate: GatedEngine
    store: MemoryStore
    reads: StoreReads
    index: OpenOrderIndex
    outcomes: list[tuple[str, str]]  # (action, result) as the listener heard them
    wallet: FakeWallet | None = None
    funding: WalletFunding | None = None
    books: Books = field(default_factory=Books)
    own_asks: dict[int, int] = field(default_factory=dict)  # what the resting-asks port says
    own_asks_reads: int = 0
    entry: OrderEntry = field(init=False)

    @property
    def spec(self) -> MarketSpec:
        return self.engine.exchange.markets[SYMBOL].spec

    async def place(self, command: PlaceOrder) -> OrderOutcome:
        return await self.entry.place(command, self.spec)

    async def amend(self, command: AmendOrder) -> OrderOutcome:
        current = self.reads.order(command.order_id)
        return await self.entry.amend(command, self.spec, current)

    def stored_view(self, order_id: int) -> OrderView:
        return OrderView.from_stored(self.reads.order(order_id))

    def submitted(self, kind: type[C]) -> list[C]:
        return [c for c in self.gate.submitted if isinstance(c, kind)]

    async def resting_asks(self, user_id: int, symbol: str) -> dict[int, int]:
        self.own_asks_reads += 1
        return self.own_asks

    async def background_voids_done(self) -> None:
        assert self.funding is not None
        async with asyncio.timeout(5):
            while self.funding.background_voids:
                await asyncio.sleep(0.001)

    async def place_held_and_refused(self, refuse: Callable[[], Exception]) -> Hold:
        """Place a held buy the engine refuses with `refuse()` (raised here, as expected),
        wait for the background voids, and return the hold of the one command submitted."""
        before = len(self.submitted(PlaceOrder))
        self.gate.refuse = lambda _: refuse()
        with pytest.raises(type(refuse())):
            await self.place(limit(BUYER, Side.BUY, PRICE, LOTS))
        await self.background_voids_done()
        submitted = self.submitted(PlaceOrder)
        assert len(submitted) == before + 1
        hold = submitted[-1].hold
        assert hold is not None
        return hold


def _result(refusal: Exception | None) -> str:
    if refusal is None:
        return "ok"
    return str(getattr(refusal, "code", type(refusal).__name__))


def _wallet_funding(rig: Rig) -> WalletFunding:
    rig.wallet = FakeWallet()
    for user, asset, units in FUNDS:
        rig.wallet.setup(WalletOp(f"dep:{user}", WalletOpKind.DEPOSIT, user, asset, units))
    breaker = CircuitBreaker(failure_threshold=3, reset_after_ms=60_000)
    rig.funding = WalletFunding(
        GuardedWallet(rig.wallet, breaker),
        rig.gate,
        rig.books,
        rig.resting_asks,
        max_levels=50,
        market_buy_margin_bps=500,
        void_policy=FAST_VOIDS,
        undecided_hold_ms=UNDECIDED_HOLD_MS,
        rng=random.Random(7),
    )
    return rig.funding


def run(scenario: Callable[[Rig], Awaitable[None]], *, wallet_funded: bool = False) -> None:
    async def main() -> None:
        store = MemoryStore()
        index = OpenOrderIndex()
        mode = Funding.WALLET if wallet_funded else Funding.EMBEDDED
        engine = Engine(store, Publishers(index), FakeClock(), funding=mode)
        await engine.start()
        rig = Rig(engine, GatedEngine(engine), store, StoreReads(store), index, [])
        funding: OrderFunding = _wallet_funding(rig) if wallet_funded else EmbeddedFunding()
        submitter = CommandSubmitter(rig.gate, lambda a, r: rig.outcomes.append((a, _result(r))))
        rig.entry = OrderEntry(submitter, funding, index, rig.reads)
        try:
            for command in MARKET:
                await engine.submit(command)
            if not wallet_funded:
                for user, asset, units in FUNDS:
                    await engine.submit(Deposit(user, asset, units))
            await scenario(rig)
            assert len(index) == len(engine.exchange.orders)  # the open orders, no more
        finally:
            if rig.funding is not None:
                await rig.funding.close()
            await engine.stop()

    asyncio.run(main())


PRICE, LOTS = 5_000_000, 100_000


# -- embedded ---------------------------------------------------------------------------


def test_embedded_place_answers_the_committed_order_and_its_trades() -> None:
    async def scenario(rig: Rig) -> None:
        resting = await rig.place(limit(SELLER, Side.SELL, PRICE, LOTS))
        assert resting.order == rig.stored_view(resting.order.order_id)
        taker = await rig.place(limit(BUYER, Side.BUY, PRICE, LOTS // 4, client_order_id="b1"))
        assert taker.order == rig.stored_view(taker.order.order_id)
        assert taker.order.status.value == "filled"
        assert [t.quantity_lots for t in taker.trades] == [LOTS // 4]
        assert taker.trades_settled
        assert rig.outcomes == [("place", "ok"), ("place", "ok")]
        assert rig.reads.reads == 0

    run(scenario)


def test_embedded_amend_answers_from_its_events() -> None:
    async def scenario(rig: Rig) -> None:
        buy = await rig.place(limit(BUYER, Side.BUY, PRICE - 10, LOTS))
        await rig.place(limit(SELLER, Side.SELL, PRICE, LOTS // 2))
        order_id = buy.order.order_id
        smaller = await rig.amend(AmendOrder(BUYER, order_id, quantity_lots=LOTS // 2))
        assert smaller.order == rig.stored_view(order_id)
        assert smaller.trades == []
        crossing = await rig.amend(AmendOrder(BUYER, order_id, price_ticks=PRICE))
        assert crossing.order == rig.stored_view(order_id)
        assert crossing.order.status.value == "filled"
        assert [t.buyer_order_id for t in crossing.trades] == [order_id]
        with pytest.raises(DomainError) as refused:
            await rig.amend(AmendOrder(BUYER, order_id, price_ticks=PRICE - 20))
        assert refused.value.code is ErrorCode.ORDER_NOT_FOUND
        assert rig.outcomes[-3:] == [("amend", "ok"), ("amend", "ok"), ("amend", "ORDER_NOT_FOUND")]

    run(scenario)


def test_embedded_cancel_by_id_and_by_client_id_answers_without_a_read() -> None:
    async def scenario(rig: Rig) -> None:
        by_id = await rig.place(limit(SELLER, Side.SELL, PRICE, LOTS))
        by_client = await rig.place(limit(SELLER, Side.SELL, PRICE + 1, LOTS, client_order_id="c1"))
        first = await rig.entry.cancel(CancelOrder(SELLER, order_id=by_id.order.order_id))
        assert first.order == rig.stored_view(by_id.order.order_id)
        second = await rig.entry.cancel(CancelOrder(SELLER, client_order_id="c1"))
        assert second.order == rig.stored_view(by_client.order.order_id)
        assert second.order is not None and second.order.status.value == "cancelled"
        assert rig.reads.reads == 0
        assert rig.outcomes[-2:] == [("cancel", "ok"), ("cancel", "ok")]

    run(scenario)


def test_cancelling_an_order_that_is_not_open_gives_no_order() -> None:
    async def scenario(rig: Rig) -> None:
        placed = await rig.place(limit(SELLER, Side.SELL, PRICE, LOTS))
        order_id = placed.order.order_id
        await rig.entry.cancel(CancelOrder(SELLER, order_id=order_id))
        again = await rig.entry.cancel(CancelOrder(SELLER, order_id=order_id))
        other_users = await rig.entry.cancel(CancelOrder(BUYER, order_id=order_id))
        unknown = await rig.entry.cancel(CancelOrder(SELLER, client_order_id="none"))
        assert again.order is other_users.order is unknown.order is None
        assert rig.outcomes[-3:] == [("cancel", "ORDER_NOT_FOUND")] * 3

    run(scenario)


def test_a_cancel_of_an_order_the_index_does_not_hold_is_answered_from_the_store() -> None:
    async def scenario(rig: Rig) -> None:
        placed = await rig.place(limit(SELLER, Side.SELL, PRICE, LOTS, client_order_id="x"))
        rig.entry = OrderEntry(  # an index that has not seen the acceptance yet
            CommandSubmitter(rig.gate), EmbeddedFunding(), OpenOrderIndex(), rig.reads
        )
        cancelled = await rig.entry.cancel(CancelOrder(SELLER, client_order_id="x"))
        assert cancelled.order == rig.stored_view(placed.order.order_id)
        assert rig.reads.reads == 1

    run(scenario)


def test_the_index_rebuilt_from_a_restored_exchange_answers_cancels_too() -> None:
    async def scenario(rig: Rig) -> None:
        placed = await rig.place(
            limit(SELLER, Side.SELL, PRICE, LOTS, client_order_id="r", stp_mode=StpMode.NONE)
        )
        order_id = placed.order.order_id
        await rig.amend(AmendOrder(SELLER, order_id, price_ticks=PRICE + 5))
        assert len(rig.index) == 1
        seeded = OpenOrderIndex.from_orders(rig.engine.exchange.orders.values())
        rig.entry = OrderEntry(CommandSubmitter(rig.gate), EmbeddedFunding(), seeded, rig.reads)
        cancelled = await rig.entry.cancel(CancelOrder(SELLER, client_order_id="r"))
        assert cancelled.order == rig.stored_view(order_id)
        assert rig.reads.reads == 0
        assert len(rig.index) == 0  # the published cancel closed it in the live index

    run(scenario)


def test_engine_refusals_are_reported_and_raised_unchanged() -> None:
    async def scenario(rig: Rig) -> None:
        rig.gate.refuse = lambda _: EngineOverloadedError("full")
        with pytest.raises(EngineOverloadedError):
            await rig.place(limit(BUYER, Side.BUY, PRICE, LOTS))
        rig.gate.refuse = lambda _: EngineUnavailableError("down", committed=None)
        with pytest.raises(EngineUnavailableError):
            await rig.entry.cancel(CancelOrder(BUYER, order_id=1))
        rig.gate.refuse = lambda _: None
        with pytest.raises(DomainError):
            await rig.place(limit(SELLER, Side.SELL, PRICE, 2 * 10**6))  # 20 BTC of 10
        assert rig.outcomes == [
            ("place", "EngineOverloadedError"),
            ("cancel", "EngineUnavailableError"),
            ("place", "INSUFFICIENT_BALANCE"),
        ]

    run(scenario)


# -- wallet-funded ----------------------------------------------------------------------


def test_wallet_funded_place_holds_first_and_submits_the_hold() -> None:
    async def scenario(rig: Rig) -> None:
        assert rig.wallet is not None
        placed = await rig.place(limit(BUYER, Side.BUY, PRICE, LOTS))
        held = rig.submitted(PlaceOrder)[-1]
        assert held.hold is not None and held.hold.key.startswith("hold:")
        assert held.hold.asset == "USDT"
        assert rig.wallet.outcomes(held.hold.key) == ["applied"]
        assert rig.wallet.balance(BUYER, "USDT")[1] == held.hold.amount_units
        assert placed.order == rig.stored_view(placed.order.order_id)
        assert not placed.trades_settled
        assert rig.outcomes == [("place", "ok")]

    run(scenario, wallet_funded=True)


def test_wallet_funded_amend_holds_only_what_the_new_reservation_may_exceed() -> None:
    async def scenario(rig: Rig) -> None:
        assert rig.wallet is not None
        placed = await rig.place(limit(BUYER, Side.BUY, PRICE, LOTS))
        order_id = placed.order.order_id
        smaller = await rig.amend(AmendOrder(BUYER, order_id, quantity_lots=LOTS // 2))
        assert rig.submitted(AmendOrder)[-1].hold is None
        assert smaller.order == rig.stored_view(order_id)
        larger = await rig.amend(AmendOrder(BUYER, order_id, quantity_lots=2 * LOTS))
        held = rig.submitted(AmendOrder)[-1]
        assert held.hold is not None and rig.wallet.outcomes(held.hold.key) == ["applied"]
        assert larger.order == rig.stored_view(order_id)
        assert rig.outcomes == [("place", "ok"), ("amend", "ok"), ("amend", "ok")]

    run(scenario, wallet_funded=True)


def test_wallet_funded_cancel_needs_no_hold() -> None:
    async def scenario(rig: Rig) -> None:
        assert rig.wallet is not None
        placed = await rig.place(limit(SELLER, Side.SELL, PRICE, LOTS, client_order_id="s"))
        calls = len(rig.wallet.calls)
        cancelled = await rig.entry.cancel(CancelOrder(SELLER, client_order_id="s"))
        assert cancelled.order == rig.stored_view(placed.order.order_id)
        assert len(rig.wallet.calls) == calls

    run(scenario, wallet_funded=True)


def test_a_hold_the_wallet_refuses_for_lack_of_funds_is_insufficient_balance() -> None:
    async def scenario(rig: Rig) -> None:
        with pytest.raises(DomainError) as refused:
            await rig.place(limit(SELLER, Side.SELL, PRICE, 1_100_000))  # 11 BTC of 10
        error = refused.value
        assert error.code is ErrorCode.INSUFFICIENT_BALANCE
        assert (error.details["asset"], error.details["required"]) == ("BTC", 11 * 10**8)
        assert not rig.submitted(PlaceOrder)
        assert rig.outcomes == [("place", "INSUFFICIENT_BALANCE")]

    run(scenario, wallet_funded=True)


def test_an_open_circuit_refuses_without_calling_the_wallet() -> None:
    async def scenario(rig: Rig) -> None:
        assert rig.wallet is not None
        rig.wallet.fail(FaultKind.DOWN, "hold:", times=None)
        for _ in range(3):  # the wallet is down: each hold's outcome is unknown
            with pytest.raises(WalletOutageError):
                await rig.place(limit(BUYER, Side.BUY, PRICE, LOTS))
        calls = len(rig.wallet.calls)
        with pytest.raises(WalletOutageError) as refused:
            await rig.place(limit(BUYER, Side.BUY, PRICE, LOTS))
        assert refused.value.reason == "circuit open"
        assert len(rig.wallet.calls) == calls
        assert rig.outcomes == [("place", "WalletOutageError")] * 4

    run(scenario, wallet_funded=True)


def test_a_hold_of_unknown_outcome_is_voided_through_the_engine() -> None:
    async def scenario(rig: Rig) -> None:
        assert rig.wallet is not None
        rig.wallet.fail(FaultKind.LOST_REPLY, "hold:")  # applied, but the answer is lost
        with pytest.raises(WalletOutageError):
            await rig.place(limit(BUYER, Side.BUY, PRICE, LOTS))
        (void,) = rig.submitted(VoidHold)
        assert rig.wallet.outcomes(void.hold.key) == ["lost"]
        voided = [e for e in rig.store.events if isinstance(e, HoldVoided)]
        assert [e.hold_key for e in voided] == [void.hold.key]  # committed to the outbox
        assert not rig.submitted(PlaceOrder)
        assert rig.outcomes == [("place", "WalletOutageError")]  # the void is no outcome

    run(scenario, wallet_funded=True)


def test_an_unknown_hold_the_engine_cannot_take_is_voided_directly() -> None:
    async def scenario(rig: Rig) -> None:
        assert rig.wallet is not None
        rig.wallet.fail(FaultKind.LOST_REPLY, "hold:")
        rig.gate.refuse = lambda _: EngineOverloadedError("full")
        with pytest.raises(WalletOutageError):
            await rig.place(limit(BUYER, Side.BUY, PRICE, LOTS))
        await rig.background_voids_done()
        (void,) = rig.submitted(VoidHold)
        assert rig.wallet.outcomes(f"void:{void.hold.key}") == ["applied"]
        assert rig.wallet.balance(BUYER, "USDT") == (1_000_000 * 10**8, 0)

    run(scenario, wallet_funded=True)


def test_a_held_command_the_engine_refuses_unexecuted_is_voided_directly() -> None:
    async def scenario(rig: Rig) -> None:
        assert rig.wallet is not None
        hold = await rig.place_held_and_refused(lambda: EngineUnavailableError("recovering"))
        assert rig.wallet.outcomes(f"void:{hold.key}") == ["applied"]
        assert rig.wallet.balance(BUYER, "USDT") == (1_000_000 * 10**8, 0)
        assert rig.outcomes == [("place", "EngineUnavailableError")]

    run(scenario, wallet_funded=True)


def test_a_hold_the_engine_refuses_is_voided_by_the_engine_itself() -> None:
    async def scenario(rig: Rig) -> None:
        assert rig.wallet is not None
        await rig.place(limit(BUYER, Side.BUY, PRICE, LOTS, client_order_id="d"))
        with pytest.raises(DomainError) as refused:
            await rig.place(limit(BUYER, Side.BUY, PRICE, LOTS, client_order_id="d"))
        assert refused.value.code is ErrorCode.DUPLICATE_CLIENT_ORDER_ID
        refused_hold = rig.submitted(PlaceOrder)[-1].hold
        assert refused_hold is not None
        voided = [e.hold_key for e in rig.store.events if isinstance(e, HoldVoided)]
        assert voided == [refused_hold.key]
        assert rig.funding is not None and rig.funding.background_voids == 0

    run(scenario, wallet_funded=True)


def test_a_hold_is_in_flight_from_before_the_wallet_call_until_its_command_commits() -> None:
    async def scenario(rig: Rig) -> None:
        assert rig.wallet is not None and rig.funding is not None
        in_flight = rig.funding.holds_in_flight
        seen: list[bool] = []

        def watch(command: Command) -> None:
            if isinstance(command, PlaceOrder) and command.hold is not None:
                seen.append(command.hold.key in in_flight)

        rig.gate.refuse = watch
        outcome = await rig.place(limit(BUYER, Side.BUY, PRICE, LOTS))
        (placed,) = rig.submitted(PlaceOrder)
        assert placed.hold is not None and seen == [True]
        assert placed.hold.key not in in_flight  # committed: the store knows its fate
        assert outcome.order.status.value == "open"
        with pytest.raises(DomainError):  # refused, and voided in the same commit
            await rig.place(limit(BUYER, Side.BUY, PRICE, 10**9))
        refused = rig.submitted(PlaceOrder)[-1].hold
        assert refused is not None and refused.key not in in_flight

    run(scenario, wallet_funded=True)


def test_a_command_of_unknown_outcome_keeps_its_hold_in_flight_then_leaves_it() -> None:
    """It may have committed and consumed the hold: nothing voids it here; after
    `undecided_hold_ms` the key leaves the in-flight set, and the store decides."""

    async def scenario(rig: Rig) -> None:
        assert rig.wallet is not None and rig.funding is not None
        in_flight = rig.funding.holds_in_flight
        rig.gate.refuse = lambda c: (
            EngineUnavailableError("stalled", committed=None) if isinstance(c, PlaceOrder) else None
        )
        with pytest.raises(EngineUnavailableError):
            await rig.place(limit(BUYER, Side.BUY, PRICE, LOTS))
        (placed,) = rig.submitted(PlaceOrder)
        assert placed.hold is not None
        assert placed.hold.key in in_flight
        assert rig.funding.background_voids == 0 and not rig.submitted(VoidHold)
        assert rig.wallet.outcomes(f"void:{placed.hold.key}") == []
        assert rig.wallet.balance(BUYER, "USDT")[1] == placed.hold.amount_units  # still held
        async with asyncio.timeout(5):
            while placed.hold.key in in_flight:
                await asyncio.sleep(0.005)

    run(scenario, wallet_funded=True)


def test_a_command_the_engine_did_not_take_keeps_its_hold_in_flight_until_voided() -> None:
    async def scenario(rig: Rig) -> None:
        assert rig.wallet is not None and rig.funding is not None
        hold = await rig.place_held_and_refused(lambda: EngineOverloadedError("full"))
        assert rig.wallet.outcomes(f"void:{hold.key}") == ["applied"]
        assert hold.key not in rig.funding.holds_in_flight

    run(scenario, wallet_funded=True)


def test_background_voids_retry_with_the_policy_then_give_up() -> None:
    async def scenario(rig: Rig) -> None:
        assert rig.wallet is not None and rig.funding is not None
        rig.wallet.fail(FaultKind.DOWN, "void:", times=2)
        hold = await rig.place_held_and_refused(lambda: EngineOverloadedError("full"))
        assert rig.wallet.outcomes(f"void:{hold.key}") == ["down", "down", "applied"]
        rig.wallet.fail(FaultKind.DOWN, "void:", times=None)
        hold = await rig.place_held_and_refused(lambda: EngineOverloadedError("full"))
        assert rig.wallet.outcomes(f"void:{hold.key}") == ["down"] * FAST_VOIDS.max_attempts

    run(scenario, wallet_funded=True)


def test_a_market_buy_by_quantity_is_held_at_the_committed_book_plus_margin() -> None:
    async def scenario(rig: Rig) -> None:
        assert rig.wallet is not None
        await rig.place(limit(SELLER, Side.SELL, PRICE, LOTS))
        rig.books.asks = (Level(PRICE, LOTS),)
        rig.own_asks = {PRICE: 1}
        market = PlaceOrder(BUYER, SYMBOL, Side.BUY, OrderType.MARKET, quantity_lots=LOTS // 2)
        bought = await rig.place(market)
        held = rig.submitted(PlaceOrder)[-1].hold
        assert held is not None
        assert rig.books.asked == [(SYMBOL, 50)]
        assert rig.own_asks_reads == 1  # the default STP mode walks around the own asks
        cost = bought.trades[0].notional_units + bought.trades[0].buyer_fee_units
        assert held.amount_units >= cost * 10_500 // 10_000
        no_stp = PlaceOrder(
            BUYER, SYMBOL, Side.BUY, OrderType.MARKET, quantity_lots=10, stp_mode=StpMode.NONE
        )
        await rig.place(no_stp)
        assert rig.own_asks_reads == 1

    run(scenario, wallet_funded=True)


def test_a_market_buy_stp_stops_at_no_cost_goes_without_a_hold_or_a_wallet_call() -> None:
    """A cancel_taker market buy whose walk meets only the buyer's own ask costs nothing:
    it reaches the engine with no hold, even while the wallet is down (no call is made),
    and self-trade prevention cancels it, trading nothing and locking nothing."""

    async def scenario(rig: Rig) -> None:
        assert rig.wallet is not None
        own = await rig.place(limit(SELLER, Side.SELL, PRICE, LOTS))
        rig.books.asks = (Level(PRICE, LOTS),)
        rig.own_asks = {PRICE: LOTS}
        rig.wallet.fail(FaultKind.DOWN, "hold:", times=None)
        calls = len(rig.wallet.calls)
        market = PlaceOrder(
            SELLER,
            SYMBOL,
            Side.BUY,
            OrderType.MARKET,
            quantity_lots=LOTS // 2,
            stp_mode=StpMode.CANCEL_TAKER,
        )
        bought = await rig.place(market)
        assert rig.submitted(PlaceOrder)[-1].hold is None
        assert len(rig.wallet.calls) == calls
        assert bought.order.status is OrderStatus.CANCELLED
        assert bought.order.close_reason is CloseReason.SELF_TRADE_PREVENTION
        assert bought.trades == []
        assert bought.order == rig.stored_view(bought.order.order_id)
        assert rig.stored_view(own.order.order_id).status is OrderStatus.OPEN
        assert rig.engine.exchange.ledger.locked(SELLER, "USDT") == 0
        assert rig.outcomes[-1] == ("place", "ok")

    run(scenario, wallet_funded=True)


def test_a_market_buy_stp_stops_at_its_own_ask_is_held_for_the_other_asks_at_its_price() -> None:
    """The known limit of `domain.funding`: the committed levels do not say where the own
    ask sits in its level's queue, so the other lots there are held as if ahead of it. A
    buyer who cannot cover them is refused, though the engine might cancel it at no cost."""

    async def scenario(rig: Rig) -> None:
        await rig.place(limit(SELLER, Side.SELL, PRICE, LOTS))
        rig.books.asks = (Level(PRICE, 2 * LOTS),)  # another user's LOTS rest there too
        rig.own_asks = {PRICE: LOTS}
        market = PlaceOrder(
            SELLER,
            SYMBOL,
            Side.BUY,
            OrderType.MARKET,
            quantity_lots=LOTS // 2,
            stp_mode=StpMode.CANCEL_TAKER,
        )
        with pytest.raises(DomainError) as refused:
            await rig.place(market)
        assert refused.value.code is ErrorCode.INSUFFICIENT_BALANCE
        bound = market_buy_cost(rig.spec, LOTS // 2, [(PRICE, LOTS)])
        assert refused.value.details["required"] == bound + -(-bound * 500 // 10_000)
        assert [c.side for c in rig.submitted(PlaceOrder)] == [Side.SELL]

    run(scenario, wallet_funded=True)
