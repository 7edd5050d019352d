"""The hold reconciler (`crossbook.engine.hold_reconciler`) on fakes of its ports.

A real wallet-funded `Engine` on the in-memory store (whose commits record the
hold fates), the fake wallet's applied holds, one clock for the wallet's
`applied_at_ms` and the reconciler. Checked: exactly the holds the rule calls
orphaned are voided (through the engine, so their fate is committed); a hold an
order consumed, one in flight, one younger than the grace time and made after
start-up, and one at or before the floor are left alone; the watermark never
passes an orphan left unvoided; paging and the limits on a pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from engine_fakes import FakeClock as EngineClock
from engine_fakes import MemoryHoldFates, MemoryStore, RecordingPublisher, limit
from settlement_fakes import FakeClock, FakeWallet

from crossbook.domain import (
    Command,
    CreateAsset,
    CreateMarket,
    Event,
    Funding,
    Hold,
    HoldVoided,
    Side,
    VoidHold,
)
from crossbook.engine.engine import Engine, EngineOverloadedError
from crossbook.engine.hold_reconciler import HoldReconciler, ReconcileLimits
from crossbook.wallet_protocol import WalletOp, WalletOpKind

GRACE_MS = 10_000
START_MS = 2_000_000
BUYER = 2
PRICE, LOTS = 10_000, 10
COST = 1_001_000  # what a limit buy of LOTS at PRICE reserves (fee included)
MARKET = [
    CreateAsset("BTC", 8),
    CreateAsset("USDT", 8),
    CreateMarket("BTC", "USDT", "0.01", "0.00001", "0.00001", "1000"),
]


class Gate:
    """The engine as the reconciler sees it; refuses while `refusal` is set."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.refusal: Exception | None = None
        self.voids: list[VoidHold] = []

    async def submit(self, command: Command) -> list[Event]:
        if isinstance(command, VoidHold):
            self.voids.append(command)
        if self.refusal is not None:
            raise self.refusal
        return await self.engine.submit(command)

    @property
    def available(self) -> bool:
        return self.engine.available

    @property
    def queue_depth(self) -> int:
        return self.engine.queue_depth


class Rig:
    def __init__(self, engine: Engine, store: MemoryStore, limits: ReconcileLimits) -> None:
        self.clock = FakeClock(START_MS - 1_000_000)
        self.wallet = FakeWallet(self.clock)
        self.wallet.setup(WalletOp("dep", WalletOpKind.DEPOSIT, BUYER, "USDT", 10**12))
        self.engine = engine
        self.gate = Gate(engine)
        self.store = store
        self.fates = MemoryHoldFates(store)
        self.in_flight: set[str] = set()
        self.limits = limits
        self.reconciler: HoldReconciler | None = None

    def hold(self, key: str, at_ms: int, units: int = COST) -> Hold:
        self.clock.now = at_ms
        self.wallet.setup(WalletOp(key, WalletOpKind.HOLD, BUYER, "USDT", units))
        return Hold(key, "USDT", units)

    async def consume(self, key: str, at_ms: int) -> None:
        """An order placed with the hold `key`, committed."""
        await self.engine.submit(limit(BUYER, Side.BUY, PRICE, LOTS, hold=self.hold(key, at_ms)))

    def start(self, *, void: bool = True) -> HoldReconciler:
        self.clock.now = START_MS
        self.reconciler = HoldReconciler(
            self.wallet,
            self.fates,
            self.gate,
            self.gate,
            self.in_flight,
            limits=self.limits,
            void=void,
            clock=self.clock,
        )
        return self.reconciler

    def voided(self) -> list[str]:
        return [e.hold_key for e in self.store.events if isinstance(e, HoldVoided)]


def run(scenario: Callable[[Rig], Awaitable[None]], **limits: int) -> None:
    async def main() -> None:
        store = MemoryStore()
        engine = Engine(store, RecordingPublisher(store), EngineClock(), funding=Funding.WALLET)
        await engine.start()
        try:
            for command in MARKET:
                await engine.submit(command)
            rig = Rig(engine, store, ReconcileLimits(grace_ms=GRACE_MS, **limits))
            await scenario(rig)
        finally:
            await engine.stop()

    asyncio.run(main())


def test_only_the_holds_nothing_owns_are_voided_through_the_engine() -> None:
    async def scenario(rig: Rig) -> None:
        await rig.consume("hold:consumed", START_MS - 5_000)
        rig.hold("hold:orphan", START_MS - 4_000)  # its maker died before the commit
        reconciler = rig.start()
        rig.hold("hold:young", START_MS + 1_000)  # made after start-up, within the grace
        rig.hold("hold:flying", START_MS - 3_000)
        rig.in_flight.add("hold:flying")  # an attempt of this process still owns it
        rig.clock.now = START_MS + 2_000

        report = await reconciler.reconcile()

        assert (report.found, report.voided, report.complete) == (1, 1, True)
        assert rig.voided() == ["hold:orphan"]
        fate = rig.store.holds["hold:orphan"]
        assert (fate.user_id, fate.asset, fate.amount_units, fate.consumed) == (
            BUYER,
            "USDT",
            COST,
            False,
        )
        assert rig.store.holds["hold:consumed"].consumed
        assert rig.fates.watermark_ms == START_MS  # the cutoff: the start, grace not yet past
        stats = reconciler.stats
        assert (stats.passes, stats.holds_found, stats.holds_voided, stats.orphaned) == (1, 1, 1, 0)

        # the void is in the outbox (the wallet still has the hold): never voided twice
        assert (await reconciler.reconcile()).found == 0

        rig.clock.now = START_MS + 1_000 + GRACE_MS  # the young hold has now aged past grace
        rig.in_flight.discard("hold:flying")  # its attempt ended without deciding it
        report = await reconciler.reconcile()
        assert (report.found, report.voided) == (2, 2)
        assert sorted(rig.voided()) == ["hold:flying", "hold:orphan", "hold:young"]
        assert rig.fates.watermark_ms == START_MS + 1_000
        assert len(rig.gate.voids) == 3

    run(scenario)


def test_report_only_lists_orphans_and_keeps_the_watermark_before_them() -> None:
    async def scenario(rig: Rig) -> None:
        await rig.consume("hold:consumed", START_MS - 9_000)
        rig.hold("hold:b", START_MS - 5_000)
        rig.hold("hold:a", START_MS - 6_000)
        reconciler = rig.start(void=False)

        report = await reconciler.reconcile()
        assert (report.found, report.voided) == (2, 0)
        assert rig.voided() == [] and rig.gate.voids == []
        assert rig.fates.watermark_ms == START_MS - 6_000 - 1  # found again next pass
        scan = await reconciler.orphaned()
        assert [(o.key, o.amount_units, o.age_ms) for o in scan.orphans] == [
            ("hold:a", COST, 6_000),
            ("hold:b", COST, 5_000),
        ]
        assert reconciler.stats.orphaned == 2

        assert (await reconciler.void_one("hold:consumed")) is None  # it funds an order
        assert (await reconciler.void_one("hold:unknown")) is None
        voided = await reconciler.void_one("hold:b")
        assert voided is not None and voided.key == "hold:b"
        assert rig.voided() == ["hold:b"]

        report = await reconciler.reconcile(void=True)  # an operator's "void all"
        assert (report.found, report.voided) == (1, 1)
        assert rig.voided() == ["hold:b", "hold:a"]
        assert rig.fates.watermark_ms == START_MS

    run(scenario)


def test_a_void_the_engine_does_not_take_holds_the_watermark_back() -> None:
    async def scenario(rig: Rig) -> None:
        rig.hold("hold:a", START_MS - 6_000)
        reconciler = rig.start()
        rig.gate.refusal = EngineOverloadedError("full")
        report = await reconciler.reconcile()
        assert (report.found, report.voided) == (1, 0)
        assert reconciler.stats.void_failures == 1 and reconciler.stats.orphaned == 1
        assert rig.fates.watermark_ms == START_MS - 6_000 - 1

        rig.gate.refusal = None
        assert (await reconciler.reconcile()).voided == 1
        assert rig.voided() == ["hold:a"]

    run(scenario)


def test_a_pass_pages_through_the_window_and_stops_at_its_limits() -> None:
    async def scenario(rig: Rig) -> None:
        keys = [f"hold:{n:02}" for n in range(7)]
        for n, key in enumerate(keys):
            rig.hold(key, START_MS - 10_000 + n)
        await rig.consume("hold:consumed", START_MS - 5_000)
        reconciler = rig.start()

        report = await reconciler.reconcile(void=False)
        assert (report.found, report.complete) == (3, False)  # one page of 3, then max_orphans
        assert rig.fates.watermark_ms == START_MS - 10_000 - 1  # before the oldest left

        found = []
        for _ in range(4):  # each pass voids what it found, then resumes after them
            report = await reconciler.reconcile()
            found.append(report.found)
            if report.complete:
                break
        assert found == [3, 3, 1] and report.complete
        assert sorted(rig.voided()) == keys
        assert max(rig.fates.lookups) <= 3  # one page of keys per store lookup
        assert rig.fates.watermark_ms == START_MS

    run(scenario, page_limit=3, max_pages=3, max_orphans=3)


def test_holds_at_or_before_the_floor_are_never_reconciled() -> None:
    async def scenario(rig: Rig) -> None:
        rig.hold("hold:before-upgrade", START_MS - 8_000)
        rig.hold("hold:after-upgrade", START_MS - 4_000)
        rig.fates.floor_ms = rig.fates.watermark_ms = START_MS - 8_000
        reconciler = rig.start()
        assert (await reconciler.reconcile()).found == 1
        assert rig.voided() == ["hold:after-upgrade"]

    run(scenario)


def test_the_periodic_task_runs_the_start_up_pass_at_once() -> None:
    async def scenario(rig: Rig) -> None:
        rig.hold("hold:orphan", START_MS - 4_000)
        reconciler = rig.start()
        reconciler.start()
        try:
            async with asyncio.timeout(5):
                while not reconciler.stats.startup_pass_done:
                    await asyncio.sleep(0.001)
        finally:
            await reconciler.stop()
        assert rig.voided() == ["hold:orphan"]
        with pytest.raises(AssertionError):
            ReconcileLimits(grace_ms=0)

    run(scenario, interval_ms=60_000)
