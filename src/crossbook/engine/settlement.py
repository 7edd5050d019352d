"""Settlement workers: the outbox of remote-wallet mode, carried to the wallet.

The engine commits each trade PENDING together with its settlement (the wallet
operations it owes, `settlement_plan`); only after that COMMIT does this
service hear of it (it is one of the engine's publishers), so nothing reaches
the wallet before it is durable (DESIGN rule 4). The engine loop never waits
for it.

Per settlement, a worker applies the legs that are not applied yet, in order,
each with its idempotency key:
- a transient failure (`WalletUnavailableError`: timeout, connection lost, 5xx —
  the leg may or may not have been applied) is retried with the SAME key after
  an exponential backoff with jitter (`RetryPolicy`), never compensated. After
  `max_attempts` the settlement goes to the dead-letter queue as it stands; a
  replay carries on with the same keys, so nothing is applied twice;
- while the circuit is open (`WalletCircuitOpenError`) the worker waits for
  the breaker's probe without spending attempts: the wallet is down, the
  settlement is not at fault;
- a permanent failure (`WalletRejectedError`: the wallet refused the leg) makes
  the worker compensate the legs already applied, in reverse order (a debit by
  a credit, a credit by a debit, each with its own `:undo` key and the same
  retries), then marks the settlement SETTLEMENT_FAILED with the reason: it is
  in the dead-letter queue. A compensated leg is applied afresh, under its next
  generation's key, when the settlement is replayed.
A settlement whose legs are all applied becomes SETTLED, and so does its trade.

Outcomes are recorded in groups: the settlements that finish while one write
is in progress are recorded together in the next (one transaction, one commit),
and each worker moves on only once its outcome is committed.

Limits (DESIGN rule 7): `workers` settlements at once; at most
`queue_capacity` queued ids (beyond that, ids are dropped from memory and found
again by the next scan of the store, which also runs at start-up and every
`rescan_ms`); every retry loop is bounded by `max_attempts`, except waiting for
an open circuit, which only waits.

Known limits: a leg whose compensation is itself refused stays applied (the
reason says so; an operator must look); settlements of one user run
concurrently, which is safe because every leg takes from funds reserved for it
(locked), or gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

import structlog

from crossbook.domain import Event, HoldReleased, HoldVoided, MarketSpec, TradeExecuted
from crossbook.domain.exchange import BalanceState
from crossbook.engine.guarded_wallet import WalletCircuitOpenError
from crossbook.engine.ports import (
    Clock,
    SettlementStore,
    Wallet,
    WalletRejectedError,
    WalletUnavailableError,
)
from crossbook.engine.retry import RetryPolicy
from crossbook.engine.settlement_plan import (
    Leg,
    LegState,
    PlannedSettlement,
    SettlementStatus,
    StoredSettlement,
    plan_settlements,
)
from crossbook.wallet_protocol import WalletOp, WalletReceipt

log = structlog.get_logger(__name__)

_SETTLING_EVENTS = (TradeExecuted, HoldReleased, HoldVoided)
SCAN_PAGE = 500
MAX_REASON_CHARS = 1_000


@dataclass(frozen=True, slots=True)
class SettlementLimits:
    workers: int = 10
    queue_capacity: int = 10_000
    rescan_ms: int = 5_000
    circuit_wait_ms: int = 1_000  # how long a worker waits before trying an open circuit again

    def __post_init__(self) -> None:
        assert self.workers > 0 and self.queue_capacity > 0, self
        assert self.rescan_ms > 0 and self.circuit_wait_ms > 0, self


@dataclass(slots=True)
class SettlementStats:
    """Counters since start (read by metrics when scraped)."""

    settled: int = 0
    dead_lettered: int = 0
    retries: int = 0
    replayed: int = 0
    dead_letter_size: int = 0  # SETTLEMENT_FAILED in the store


class SettlementNotFoundError(Exception):
    pass


class SettlementNotFailedError(Exception):
    """Only a settlement in the dead-letter queue can be replayed."""


@dataclass(slots=True)
class _Run:
    """One worker's pass over a settlement: its legs as they stand, and its attempt count."""

    legs: list[Leg]
    attempts: int


class _LegRefusedError(Exception):
    def __init__(self, leg: Leg, error: WalletRejectedError) -> None:
        super().__init__(str(error))
        self.leg = leg
        self.error = error


class _LegUnavailableError(Exception):
    def __init__(self, leg: Leg, error: WalletUnavailableError, attempts: int) -> None:
        super().__init__(str(error))
        self.leg = leg
        self.error = error
        self.attempts = attempts  # of this call


class _SpecLookup(Mapping[str, MarketSpec]):
    """The markets' specs, looked up by symbol on demand (what `plan_settlements` reads)."""

    def __init__(self, spec_of: Callable[[str], MarketSpec]) -> None:
        self._spec_of = spec_of

    def __getitem__(self, symbol: str) -> MarketSpec:
        return self._spec_of(symbol)

    def __iter__(self) -> Iterator[str]:
        raise NotImplementedError("specs are looked up by symbol only")

    def __len__(self) -> int:
        raise NotImplementedError("specs are looked up by symbol only")


def pending_settlement(planned: PlannedSettlement) -> StoredSettlement:
    """A settlement as the engine's commit stored it: PENDING, nothing tried yet."""
    return StoredSettlement(
        settlement_id=planned.settlement_id,
        kind=planned.kind,
        trade_id=planned.trade_id,
        status=SettlementStatus.PENDING,
        attempts=0,
        reason=None,
        created_at_ms=planned.created_at_ms,
        updated_at_ms=planned.created_at_ms,
        settled_at_ms=None,
        failed_at_ms=None,
        legs=planned.legs,
    )


class SettlementService:
    def __init__(
        self,
        store: SettlementStore,
        wallet: Wallet,
        *,
        policy: RetryPolicy | None = None,
        limits: SettlementLimits | None = None,
        clock: Clock,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_settled: Callable[[int], None] | None = None,
        specs: Callable[[str], MarketSpec] | None = None,
    ) -> None:
        self._store = store
        # with the markets' specs, a published batch's settlements are planned here as the
        # engine planned them, sparing the worker a read of what was just committed
        self._specs = specs
        self._planned: dict[int, StoredSettlement] = {}  # published, not yet taken
        self._on_settled = on_settled  # metrics: each settlement's latency in ms
        self._wallet = wallet
        self.policy = policy or RetryPolicy()
        self.limits = limits or SettlementLimits()
        self._clock = clock
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._queue: asyncio.Queue[int] = asyncio.Queue(self.limits.queue_capacity)
        self._known: set[int] = set()  # queued or being settled
        self._scan_needed = True  # ids may be in the store that are not queued
        self._wake_scan = asyncio.Event()
        self._has_room = asyncio.Event()
        self._idle = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # finished settlements waiting to be recorded: at most one per worker
        self._outcomes: asyncio.Queue[tuple[StoredSettlement, asyncio.Future[None]]] = (
            asyncio.Queue(self.limits.workers)
        )
        self.stats = SettlementStats()

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        assert not self._tasks, "already started"
        self.stats.dead_letter_size = await self._store.count_settlements(
            SettlementStatus.SETTLEMENT_FAILED
        )
        self._scan_needed = True
        self._tasks.append(asyncio.create_task(self._scan_loop(), name="settlement-scan"))
        self._tasks.append(asyncio.create_task(self._record_loop(), name="settlement-record"))
        for n in range(self.limits.workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"settlement-{n}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    @property
    def pending(self) -> int:
        """Settlements queued or in progress in this process."""
        return len(self._known)

    async def wait_idle(self) -> None:
        """Until nothing is queued, in progress, or waiting to be found by a scan."""
        while self._known or self._scan_needed:
            self._idle.clear()
            await self._idle.wait()

    # -- the engine's side (a Publisher) ----------------------------------------------

    def publish(self, events: Sequence[Event], balances: Sequence[BalanceState] = ()) -> None:
        """Queue the settlements a committed batch created (never blocks). The balances
        are the exchange's, which in remote-wallet mode only mirror the holds."""
        if self._specs is None:
            for event in events:
                if isinstance(event, _SETTLING_EVENTS):
                    self._offer(event.seq)
            return
        specs = _SpecLookup(self._specs)
        for planned in plan_settlements(events, specs):
            if self._offer(planned.settlement_id):
                self._planned[planned.settlement_id] = pending_settlement(planned)

    def _offer(self, settlement_id: int) -> bool:
        """Queue `settlement_id` unless it is known already; False if it was not queued."""
        if settlement_id in self._known:
            return False
        try:
            self._queue.put_nowait(settlement_id)
        except asyncio.QueueFull:
            self._scan_needed = True  # it is in the store: the next scan finds it
            self._wake_scan.set()
            return False
        self._known.add(settlement_id)
        return True

    # -- the dead-letter queue ------------------------------------------------------

    async def get(self, settlement_id: int) -> StoredSettlement | None:
        return await self._store.get_settlement(settlement_id)

    async def list_settlements(
        self, status: SettlementStatus, *, after_id: int = 0, limit: int = 100
    ) -> list[StoredSettlement]:
        return await self._store.list_settlements(status, after_id=after_id, limit=limit)

    async def replay(self, settlement_id: int) -> StoredSettlement:
        """Put a failed settlement back to PENDING (compensated legs get fresh keys)."""
        settlement = await self._store.get_settlement(settlement_id)
        if settlement is None:
            raise SettlementNotFoundError(settlement_id)
        if settlement.status is not SettlementStatus.SETTLEMENT_FAILED:
            raise SettlementNotFailedError(settlement_id)
        legs = tuple(
            replace(leg, state=LegState.PENDING, generation=leg.generation + 1)
            if leg.state is LegState.REVERSED
            else leg
            for leg in settlement.legs
        )
        now = self._clock.now_ms()
        requeued = replace(
            settlement, status=SettlementStatus.PENDING, legs=legs, updated_at_ms=now
        )
        await self._store.record_settlements([requeued])
        self.stats.replayed += 1
        self.stats.dead_letter_size = max(0, self.stats.dead_letter_size - 1)
        self._offer(settlement_id)
        return requeued

    async def replay_all(self, *, limit: int = 1_000) -> list[int]:
        """Replay up to `limit` dead-lettered settlements, oldest first."""
        failed = await self._store.list_settlements(SettlementStatus.SETTLEMENT_FAILED, limit=limit)
        replayed = []
        for settlement in failed:
            with contextlib.suppress(SettlementNotFailedError, SettlementNotFoundError):
                await self.replay(settlement.settlement_id)
                replayed.append(settlement.settlement_id)
        return replayed

    # -- recording outcomes (group commit) -------------------------------------------

    async def _record(self, settlement: StoredSettlement) -> None:
        """Record a settlement's outcome; returns once it is committed.

        Outcomes finished together are written in one transaction (`_record_loop`): one
        commit for many settlements rather than one each.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outcomes.put_nowait((settlement, future))  # at most one per worker
        await future

    async def _record_loop(self) -> None:
        while True:
            batch = [await self._outcomes.get()]
            while not self._outcomes.empty():
                batch.append(self._outcomes.get_nowait())
            try:
                await self._store.record_settlements([s for s, _ in batch])
            except Exception as error:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    # -- scanning and working ---------------------------------------------------------

    async def _scan_loop(self) -> None:
        rescan_s = self.limits.rescan_ms / 1000
        while True:
            if not self._scan_needed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake_scan.wait(), rescan_s)
            self._wake_scan.clear()
            self._scan_needed = False
            try:
                complete = await self._scan()
            except Exception:
                log.exception("settlement scan failed; retrying")
                self._scan_needed = True
                await self._sleep(rescan_s)
                continue
            if not complete:  # the queue filled up: scan again once the workers made room
                self._scan_needed = True
                while self._queue.full():
                    self._has_room.clear()
                    await self._has_room.wait()
            self._signal_idle()

    async def _scan(self) -> bool:
        """Queue the PENDING settlements of the store; False if the queue filled up first."""
        after = 0
        while True:
            if self._queue.full():
                return False
            ids = await self._store.pending_settlement_ids(after_id=after, limit=SCAN_PAGE)
            for settlement_id in ids:
                self._offer(settlement_id)
            if len(ids) < SCAN_PAGE:
                return not self._queue.full() or not ids
            after = ids[-1]

    async def _work(self) -> None:
        while True:
            settlement_id = await self._queue.get()
            self._has_room.set()
            try:
                await self._settle(settlement_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                # the store failed (the wallet's failures are handled inside): the
                # settlement stays PENDING in the store and the next scan retries it
                log.exception("settlement failed to record", settlement_id=settlement_id)
                self._scan_needed = True
                self._wake_scan.set()
            finally:
                self._known.discard(settlement_id)
                self._signal_idle()

    def _signal_idle(self) -> None:
        if not self._known and not self._scan_needed:
            self._idle.set()

    async def _settle(self, settlement_id: int) -> None:
        settlement = self._planned.pop(settlement_id, None)
        if settlement is None:
            settlement = await self._store.get_settlement(settlement_id)
        if settlement is None or settlement.status is not SettlementStatus.PENDING:
            return
        run = _Run(list(settlement.legs), settlement.attempts)
        try:
            await self._apply_legs(settlement, run)
        except _LegUnavailableError as gave_up:
            reason = (
                f"{gave_up.leg.name}: wallet unavailable after {gave_up.attempts} attempts"
                f" ({gave_up.error}); not compensated, replay resumes with the same keys"
            )
            await self._fail(settlement, run, reason)
            return
        except _LegRefusedError as rejected:
            error = rejected.error
            reason = f"{rejected.leg.name} refused by the wallet: {error.code} {error.message}"
            note = await self._compensate(settlement, run)
            await self._fail(settlement, run, f"{reason}; {note}")
            return
        now = self._clock.now_ms()
        await self._record(
            replace(
                settlement,
                status=SettlementStatus.SETTLED,
                attempts=run.attempts,
                legs=tuple(run.legs),
                updated_at_ms=now,
                settled_at_ms=now,
            )
        )
        self.stats.settled += 1
        if self._on_settled is not None:
            self._on_settled(max(0, now - settlement.created_at_ms))

    async def _apply_legs(self, settlement: StoredSettlement, run: _Run) -> None:
        """Apply every leg not applied yet, in order."""
        legs = run.legs
        for i in range(len(legs)):
            base = settlement.base_key(legs[i])
            if legs[i].state is LegState.UNDO_UNKNOWN:  # finish an interrupted compensation
                await self._call(run, legs[i], legs[i].undo(base))
                legs[i] = replace(
                    legs[i], state=LegState.PENDING, generation=legs[i].generation + 1
                )
            if legs[i].state is LegState.PENDING:
                await self._call(run, legs[i], legs[i].op(base))
                legs[i] = replace(legs[i], state=LegState.APPLIED)

    async def _compensate(self, settlement: StoredSettlement, run: _Run) -> str:
        """Reverse the applied legs, last first; says what was and was not reversed."""
        legs = run.legs
        reversed_names, stuck = [], []
        for i in reversed(range(len(legs))):
            leg = legs[i]
            if leg.state is not LegState.APPLIED:
                continue
            try:
                await self._call(run, leg, leg.undo(settlement.base_key(leg)))
            except _LegUnavailableError as gave_up:
                legs[i] = replace(leg, state=LegState.UNDO_UNKNOWN)
                stuck.append(f"{leg.name} (undo outcome unknown: {gave_up.error})")
                continue
            except _LegRefusedError as rejected:
                stuck.append(f"{leg.name} (undo refused: {rejected.error.code})")
                continue
            legs[i] = replace(leg, state=LegState.REVERSED)
            reversed_names.append(leg.name)
        note = f"compensated: {', '.join(reversed_names) or 'nothing was applied'}"
        if stuck:
            note += f"; NOT compensated: {', '.join(stuck)}"
        return note

    async def _call(self, run: _Run, leg: Leg, op: WalletOp) -> None:
        """Apply `op`, retrying transient failures (each counted in `run.attempts`)."""
        failures = 0
        while True:
            try:
                receipt: WalletReceipt = await self._wallet.apply(op)
            except WalletCircuitOpenError:
                await self._sleep(self.limits.circuit_wait_ms / 1000)
                continue  # the wallet is down: wait for the breaker's probe, spend nothing
            except WalletUnavailableError as error:
                failures += 1
                run.attempts += 1
                self.stats.retries += 1
                if failures >= self.policy.max_attempts:
                    raise _LegUnavailableError(leg, error, failures) from error
                await self._sleep(self.policy.backoff_ms(failures, self._rng) / 1000)
                continue
            except WalletRejectedError as error:
                raise _LegRefusedError(leg, error) from error
            log.debug("wallet leg applied", key=op.key, replayed=receipt.replayed)
            return

    async def _fail(self, settlement: StoredSettlement, run: _Run, reason: str) -> None:
        now = self._clock.now_ms()
        log.error(
            "settlement failed; dead-lettered",
            settlement_id=settlement.settlement_id,
            trade_id=settlement.trade_id,
            reason=reason,
            attempts=run.attempts,
        )
        await self._record(
            replace(
                settlement,
                status=SettlementStatus.SETTLEMENT_FAILED,
                attempts=run.attempts,
                reason=reason[:MAX_REASON_CHARS],
                legs=tuple(run.legs),
                updated_at_ms=now,
                failed_at_ms=now,
            )
        )
        self.stats.dead_lettered += 1
        self.stats.dead_letter_size += 1
