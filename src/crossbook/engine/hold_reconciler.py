"""Remote-wallet mode: no wallet hold outlives the order-entry attempt that made it.

Order entry asks the wallet for a hold before the engine sees the order
(`wallet_funding`); if this process dies in between, or cannot tell whether the
engine took the order, the wallet keeps the hold and nothing on the exchange
names it. The rule that decides a hold's fate:

A hold the wallet has applied is **orphaned** when
1. no committed command consumed it (`HoldConsumed`) or voided it (`HoldVoided`):
   the store's hold fates (`HoldFates`) do not know its key;
2. no order-entry attempt of this process owns it (`in_flight`: a key enters it
   before the wallet is asked and leaves once the command's fate is durable);
3. it was applied before this process started (its maker is gone) or at least
   `grace_ms` ago (longer than an attempt may take from the wallet's answer to
   its commit: the settings require more than the wallet timeout plus the commit
   deadline).

An orphaned hold is voided through the engine (`VoidHold`): the commit records
its fate and puts a VOID settlement in the outbox, which the settlement workers
carry to the wallet with retries. The wallet's void is idempotent and a hold
already voided releases nothing.

A pass pages the wallet's applied holds with `applied_at_ms` in
(max(floor, watermark - overlap_ms), cutoff], cutoff = max(now - grace_ms,
started_at_ms), and voids (unless `void` is off: then it only reports) what is
orphaned. The in-flight keys are read before the store, so a command that commits
meanwhile is either still in flight or already decided. The watermark is saved
after the pass, at the cutoff, or just before the oldest orphan left unvoided or
the page where the pass stopped. Passes run one at a time (the start-up pass, then
every `interval_ms`; an operator's list and voids take the same lock) and only
while the engine takes work (it has recovered: the store is the truth).

Bounded: a pass reads at most `max_pages` pages of `page_limit` holds, keeps at
most `max_orphans` orphans and submits at most `MAX_CONCURRENT_VOIDS` voids at
once.

A void the exchange refuses (a hold of a user it does not know, or of the fee
account: no order of this exchange made it) is logged and counted
(`void_failures`), and not retried; the watermark moves past it.
Operators' lists and voids wait for a pass in progress (the same lock).

Known limits: the cutoff compares the exchange's clock with the wallet's
`applied_at_ms`, so the two clocks must agree to well within `grace_ms`
(`overlap_ms` covers a hold stamped before its commit at the wallet); holds the
wallet applied at or before the store's floor (the upgrade of a store that ran
before fates were recorded) are never reconciled.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass

import structlog

from crossbook.domain import DomainError, Hold, VoidHold
from crossbook.engine.clock import WALL_CLOCK
from crossbook.engine.engine import EngineOverloadedError, EngineUnavailableError
from crossbook.engine.guarded_wallet import WalletCircuitOpenError
from crossbook.engine.ports import (
    MAX_HOLD_LOOKUP_KEYS,
    Clock,
    HoldFates,
    StoreUnavailableError,
    Wallet,
    WalletRejectedError,
    WalletUnavailableError,
)
from crossbook.engine.submission import CommandSink, EngineState
from crossbook.wallet_protocol import HoldsCursor, HoldsRequest, WalletHold

log = structlog.get_logger(__name__)

MAX_CONCURRENT_VOIDS = 64
DEFAULT_GRACE_MS = 30_000
DEFAULT_INTERVAL_MS = 10_000
DEFAULT_OVERLAP_MS = 60_000


@dataclass(frozen=True, slots=True)
class ReconcileLimits:
    grace_ms: int = DEFAULT_GRACE_MS
    interval_ms: int = DEFAULT_INTERVAL_MS
    overlap_ms: int = DEFAULT_OVERLAP_MS
    page_limit: int = MAX_HOLD_LOOKUP_KEYS
    max_pages: int = 1_000
    max_orphans: int = 10_000

    def __post_init__(self) -> None:
        assert self.grace_ms > 0 and self.interval_ms > 0 and self.overlap_ms >= 0
        assert 1 <= self.page_limit <= MAX_HOLD_LOOKUP_KEYS
        assert self.max_pages >= 1 and self.max_orphans >= 1


@dataclass(frozen=True, slots=True)
class OrphanedHold:
    """A hold the wallet has applied that nothing on the exchange owns (see the rule)."""

    key: str
    user_id: int
    asset: str
    amount_units: int
    applied_at_ms: int
    age_ms: int

    @property
    def void(self) -> VoidHold:
        return VoidHold(self.user_id, Hold(self.key, self.asset, self.amount_units))


@dataclass(frozen=True, slots=True)
class Scan:
    """The orphans of one pass's window, oldest first; `complete`: the window was read
    to its end (not stopped by `max_pages` or `max_orphans`)."""

    orphans: tuple[OrphanedHold, ...]
    cutoff_ms: int
    complete: bool
    resume_ms: int  # the watermark this scan may advance to (before any void)


@dataclass(frozen=True, slots=True)
class PassReport:
    found: int
    voided: int
    complete: bool


@dataclass(slots=True)
class ReconcileStats:
    """What operators and metrics read (cumulative since start-up, but `orphaned`)."""

    passes: int = 0
    holds_found: int = 0  # orphans found by passes (a hold left unvoided counts again)
    holds_voided: int = 0  # voids committed, by passes and operators
    void_failures: int = 0
    orphaned: int = 0  # orphans the last pass or scan left unvoided
    startup_pass_done: bool = False
    last_pass_at_ms: int | None = None
    last_pass_duration_ms: int | None = None
    last_pass_complete: bool = False


class HoldReconciler:
    """Finds and voids orphaned holds (module docstring): at start-up, periodically, and
    when an operator asks."""

    def __init__(
        self,
        wallet: Wallet,
        fates: HoldFates,
        engine: CommandSink,
        engine_state: EngineState,
        in_flight: Container[str],
        *,
        limits: ReconcileLimits = ReconcileLimits(),
        void: bool = True,
        clock: Clock = WALL_CLOCK,
    ) -> None:
        self._wallet = wallet  # behind the circuit breaker
        self._fates = fates
        self._engine = engine
        self._engine_state = engine_state
        self._in_flight = in_flight
        self.limits = limits
        self._void = void
        self._clock = clock
        self.started_at_ms = clock.now_ms()
        self.stats = ReconcileStats()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    # -- operators --------------------------------------------------------------------

    async def orphaned(self) -> Scan:
        """The orphaned holds now, oldest first (nothing is voided)."""
        async with self._lock:
            scan = await self._scan()
            self.stats.orphaned = len(scan.orphans)
            return scan

    async def void_one(self, key: str) -> OrphanedHold | None:
        """Void the orphaned hold `key`; None if no hold with that key is orphaned."""
        async with self._lock:
            scan = await self._scan()
            orphan = next((o for o in scan.orphans if o.key == key), None)
            self.stats.orphaned = len(scan.orphans)
            if orphan is None:
                return None
            try:
                await self._engine.submit(orphan.void)
            except Exception:
                self.stats.void_failures += 1
                raise
            self.stats.holds_voided += 1
            self.stats.orphaned -= 1
            return orphan

    async def reconcile(self, *, void: bool | None = None) -> PassReport:
        """One pass (see the module docstring); `void` overrides the setting."""
        async with self._lock:
            return await self._pass(self._void if void is None else void)

    # -- the periodic pass ----------------------------------------------------------

    def start(self) -> None:
        assert self._task is None, "started twice"
        self._task = asyncio.create_task(self._run(), name="hold-reconciler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            if self._engine_state.available:
                try:
                    await self.reconcile()
                    self.stats.startup_pass_done = True
                except (
                    WalletUnavailableError,
                    WalletRejectedError,
                    WalletCircuitOpenError,
                    StoreUnavailableError,
                    EngineUnavailableError,
                    EngineOverloadedError,
                ) as error:
                    log.warning("hold reconciliation pass failed", error=repr(error))
                except Exception:
                    log.exception("hold reconciliation pass crashed")  # a bug: next pass
            await asyncio.sleep(self.limits.interval_ms / 1000)

    async def _pass(self, void: bool) -> PassReport:
        started = time.perf_counter()
        scan = await self._scan()
        voided_before = self.stats.holds_voided
        resume_ms = scan.resume_ms
        if scan.orphans:
            oldest_left = await self._void_all(scan.orphans) if void else scan.orphans[0]
            if oldest_left is not None:  # the next pass finds it again
                resume_ms = min(resume_ms, oldest_left.applied_at_ms - 1)
        voided = self.stats.holds_voided - voided_before
        await self._fates.save_watermark(max(0, resume_ms))
        stats = self.stats
        stats.passes += 1
        stats.holds_found += len(scan.orphans)
        stats.orphaned = len(scan.orphans) - voided
        stats.last_pass_at_ms = self._clock.now_ms()
        stats.last_pass_duration_ms = round((time.perf_counter() - started) * 1000)
        stats.last_pass_complete = scan.complete
        if scan.orphans:
            log.warning(
                "orphaned wallet holds", found=len(scan.orphans), voided=voided, left=stats.orphaned
            )
        return PassReport(len(scan.orphans), voided, scan.complete)

    # -- finding and voiding ----------------------------------------------------------

    async def _scan(self) -> Scan:
        limits = self.limits
        now_ms = self._clock.now_ms()
        cutoff_ms = max(now_ms - limits.grace_ms, self.started_at_ms)
        progress = await self._fates.progress()
        after_ms = max(progress.floor_ms, progress.watermark_ms - limits.overlap_ms)
        orphans: list[OrphanedHold] = []
        cursor: HoldsCursor | None = None
        if after_ms >= cutoff_ms:
            return Scan((), cutoff_ms, True, max(progress.watermark_ms, cutoff_ms))
        for _ in range(limits.max_pages):
            page = await self._wallet.holds(
                HoldsRequest(cutoff_ms, after_ms, after=cursor, limit=limits.page_limit)
            )
            orphans.extend(await self._unowned(page.holds, now_ms))
            if page.next is None:
                return Scan(tuple(orphans), cutoff_ms, True, cutoff_ms)
            cursor = page.next
            if len(orphans) >= limits.max_orphans:
                break
        assert cursor is not None
        # stopped early: resume from the last page read (the overlap reads it again)
        return Scan(tuple(orphans), cutoff_ms, False, cursor.applied_at_ms - 1)

    async def _unowned(self, holds: Iterable[WalletHold], now_ms: int) -> list[OrphanedHold]:
        # in flight first, the store second: a command that commits in between is seen
        candidates = [h for h in holds if h.key not in self._in_flight]
        decided = await self._fates.decided([h.key for h in candidates])
        return [
            OrphanedHold(
                h.key, h.user_id, h.asset, h.amount_units, h.applied_at_ms, now_ms - h.applied_at_ms
            )
            for h in candidates
            if h.key not in decided
        ]

    async def _void_all(self, orphans: Sequence[OrphanedHold]) -> OrphanedHold | None:
        """Submit their voids, `MAX_CONCURRENT_VOIDS` at a time: the oldest orphan whose
        void the engine did not take (it stops after that chunk), or None.

        A void the exchange refuses (`DomainError`: a user it does not know) is logged
        and counted, and not retried: it would be refused again."""
        for start in range(0, len(orphans), MAX_CONCURRENT_VOIDS):
            chunk = orphans[start : start + MAX_CONCURRENT_VOIDS]
            results = await asyncio.gather(
                *(self._engine.submit(orphan.void) for orphan in chunk), return_exceptions=True
            )
            not_taken: OrphanedHold | None = None
            for orphan, result in zip(chunk, results, strict=True):
                if not isinstance(result, BaseException):
                    self.stats.holds_voided += 1
                    continue
                if not isinstance(result, Exception):
                    raise result
                self.stats.void_failures += 1
                log.error(
                    "could not void an orphaned hold", hold_key=orphan.key, error=repr(result)
                )
                if not isinstance(result, DomainError) and not_taken is None:
                    not_taken = orphan
            if not_taken is not None:
                return not_taken
        return None
