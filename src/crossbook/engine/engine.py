"""The engine loop: the single writer of trading state (DESIGN rules 1 and 4).

One asyncio task owns the `Exchange`. Callers `submit` a command and await its
result; the task drains up to `batch_max_commands` queued commands, advances
time once (`Tick`), executes them in order, and hands every change to the store
in ONE transaction. Only after that commit does it resolve the callers and
publish the events. So nothing leaves the engine before it is durable.

Failure: if a commit fails, or has not ended `commit_deadline_ms` after it
started (a stalled or unreachable database), the batch counts as failed: the
engine stops taking work (`available` is False, so `/ready` says not ready),
throws its in-memory state away and recovers from the store, which holds the
committed truth, then resumes on its own once the store can take commits again
(recovery retries every `recovery_retry_ms`). The batch's callers hear within
`outcome_wait_ms` of the failure (or of the deadline):
- `EngineUnavailableError(committed=False)` when nothing of theirs happened:
  the store said so (`StoreUnavailableError(committed=False)`: it failed before
  COMMIT), or its truth shows it (the sequence does not reach the batch's last
  event); retrying with the same client order id is safe;
- their outcomes, when the attempt ended well after all or the truth shows the
  batch committed (a commit can succeed and only its reply be lost);
- `EngineUnavailableError(committed=None)` when neither is known yet (the
  database is down or stalled): the outcome is unknown.
The truth is read only after the attempt has ended (its COMMIT may still land);
a batch found committed has its events published before any new work, even if
its callers were already told "unknown". Never "nothing was done" unless the
store says so.

Time: every batch starts with `Tick(now)`, which expires GTD orders that are
due. So that an idle engine expires them on time too, one timer (re-armed after
every batch and after recovery) queues a batch that only ticks when
`Exchange.next_expiry_ms()` comes; the domain only says when, the loop keeps
the clock.

Remote-wallet mode (`Funding.WALLET`): a command that arrives with a wallet
hold and is refused still owes the wallet a void of that hold, so the engine
executes `VoidHold` right after the refusal, in the same batch: the void
commits (into the settlement outbox) before the caller hears of the refusal.

Invariants and limits:
- only the loop task touches the exchange; `submit` never does;
- at most one commit is in flight (a failed one is waited for, never raced);
- the queue holds at most `queue_capacity` commands: beyond that `submit`
  refuses at once with `EngineOverloadedError` (memory never grows unbounded);
- after every batch the cheap invariants run; after recovery all of them do.
  A broken invariant stops the engine: it is a bug, not a condition to survive;
- known limits: an attempt that never ends (a store without a deadline of its
  own) keeps the engine unavailable, since the truth cannot be read before it
  ends; a step of the wall clock moves the expiry timer at the next batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from crossbook.domain import (
    AmendOrder,
    Command,
    DomainError,
    Event,
    Exchange,
    ExchangeLimits,
    Funding,
    PlaceOrder,
    Tick,
    VoidHold,
)
from crossbook.domain.invariants import check_all, check_cheap
from crossbook.domain.snapshot import restore
from crossbook.engine.batch import BatchBuilder, CommitBatch
from crossbook.engine.clock import SystemClock
from crossbook.engine.ports import Clock, Publisher, Store, StoreUnavailableError

log = structlog.get_logger(__name__)


EXPIRY_TIMER_MIN_DELAY_MS = 1  # an expiry already due still waits this long: no busy loop


class EngineUnavailableError(Exception):
    """The engine did not do the command, or cannot tell yet whether it did.

    `committed` is False when nothing of the command happened (the engine was not
    taking work, or its batch is known not to have committed): retrying with the same
    client order id is safe. It is None when the outcome is unknown (the commit failed
    or stalled and the store's truth could not be read in time): the command may have
    taken effect, so look it up (by client order id) before retrying.
    """

    def __init__(self, message: str, *, committed: bool | None = False) -> None:
        super().__init__(message)
        self.committed = committed

    @property
    def outcome_unknown(self) -> bool:
        return self.committed is None


class EngineOverloadedError(Exception):
    """The command queue is full; retry after a short wait."""


class _Unread:
    """The committed state has not been read yet: `start` reads it from the store."""


UNREAD = _Unread()


@dataclass(frozen=True, slots=True)
class EngineLimits:
    queue_capacity: int = 20_000
    batch_max_commands: int = 2_000
    recovery_retry_ms: int = 500
    commit_deadline_ms: int = 1_000  # a commit not done by then fails its batch
    outcome_wait_ms: int = 1_000  # then callers wait this long at most for the outcome


@dataclass(slots=True)
class BatchStats:
    """What the last batch did; read by metrics and benchmarks."""

    commands: int = 0
    events: int = 0
    commit_ms: float = 0.0


_Pending = tuple[Command, "asyncio.Future[list[Event]]"]
_WAKE = None  # queued by the expiry timer: a batch that only advances time
_HOLDING = (PlaceOrder, AmendOrder)  # the commands that may arrive with a wallet hold


class Engine:
    def __init__(
        self,
        store: Store,
        publisher: Publisher,
        clock: Clock | None = None,
        limits: EngineLimits | None = None,
        exchange_limits: ExchangeLimits | None = None,
        on_batch: Callable[[BatchStats], None] | None = None,
        funding: Funding = Funding.EMBEDDED,
    ) -> None:
        self._store = store
        self.funding = funding
        self._publisher = publisher
        self._clock = clock or SystemClock()
        self.limits = limits or EngineLimits()
        self._exchange_limits = exchange_limits
        self._exchange = Exchange(exchange_limits, funding)
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue(self.limits.queue_capacity)
        self._available = False
        self._task: asyncio.Task[None] | None = None
        self._expiry_timer: asyncio.TimerHandle | None = None  # one at a time
        self._expiry_due_ms: int | None = None  # what the timer is armed for
        self._commit_started_s: float | None = None  # monotonic, while a commit runs
        self._unknown_timer: asyncio.TimerHandle | None = None  # a failed batch's answer bound
        self._outcome_pending = False  # a batch is in its commit and its callers unanswered
        self.last_batch = BatchStats()
        self._committed_counters: dict[str, int] = {}
        self._on_batch = on_batch  # metrics: called after every committed batch
        self.recoveries = 0

    # -- lifecycle --------------------------------------------------------------

    async def start(self, committed: dict[str, Any] | _Unread | None = UNREAD) -> None:
        """Recover from the store and start taking work. A caller that has just read the
        store's `load_state()` (the composition root, for the read model) hands it in as
        `committed`, so start-up reads the committed state once."""
        assert self._task is None, "engine already started"
        await self._recover_once(committed)
        self._available = True
        self._task = asyncio.create_task(self._run(), name="crossbook-engine")
        self._arm_expiry_timer()

    async def stop(self) -> None:
        """Stop taking work, finish nothing new, fail whatever is still queued (a commit
        in flight is cancelled: its callers hear that its outcome is unknown)."""
        self._available = False
        self._disarm_expiry_timer()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._fail_queued()

    @property
    def available(self) -> bool:
        """Takes work: False while recovering or stopped, and from the moment a commit
        overruns `commit_deadline_ms` until the store can take commits again."""
        return self._available

    @property
    def commit_running_ms(self) -> float:
        """How long the commit in flight has been running (0 when none is)."""
        started = self._commit_started_s
        return 0.0 if started is None else (time.monotonic() - started) * 1000

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def exchange(self) -> Exchange:
        """The live exchange, for read-only use from the loop's own thread."""
        return self._exchange

    # -- the callers' side ----------------------------------------------------

    async def submit(self, command: Command) -> list[Event]:
        """Execute `command` durably; returns its events or raises its `DomainError`."""
        if not self._available:
            raise EngineUnavailableError("engine is not available")
        future: asyncio.Future[list[Event]] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((command, future))
        except asyncio.QueueFull:
            raise EngineOverloadedError("engine queue is full") from None
        return await future

    # -- the loop ---------------------------------------------------------------

    async def _run(self) -> None:
        batch: list[_Pending] = []
        try:
            while True:
                first = await self._queue.get()
                batch = [] if first is _WAKE else [first]
                while len(batch) < self.limits.batch_max_commands and not self._queue.empty():
                    pending = self._queue.get_nowait()
                    if pending is not _WAKE:
                        batch.append(pending)
                await self._process(batch)
                self._arm_expiry_timer()
        except BaseException:
            # cancelled, or a broken invariant: take no more work and leave no caller waiting
            self._available = False
            committed = None if self._outcome_pending else False
            for _, future in batch:
                if not future.done():
                    future.set_exception(
                        EngineUnavailableError("engine stopped", committed=committed)
                    )
            self._fail_queued()
            raise

    async def _process(self, batch: list[_Pending]) -> None:
        exchange = self._exchange
        builder = BatchBuilder()
        builder.add(exchange, exchange.execute(Tick(self._clock.now_ms())))
        outcomes: list[list[Event] | DomainError] = []
        wallet_funded = self.funding is Funding.WALLET
        for command, _ in batch:
            try:
                events = exchange.execute(command)
            except DomainError as error:
                outcomes.append(error)
                if wallet_funded and isinstance(command, _HOLDING) and command.hold is not None:
                    void = VoidHold(command.user_id, command.hold)
                    builder.add(exchange, exchange.execute(void))
                continue
            builder.add(exchange, events)
            outcomes.append(events)
        check_cheap(exchange, {getattr(e, "symbol", "") for e in builder.events} - {""})
        commit = builder.build(exchange)
        started = time.perf_counter()
        # a batch of refusals still moves the clock: commit whenever anything changed
        changed = not commit.is_empty or commit.counters != self._committed_counters
        if changed and not await self._commit(batch, outcomes, commit):
            return
        self.last_batch = BatchStats(
            len(batch), len(commit.events), (time.perf_counter() - started) * 1000
        )
        if self._on_batch is not None:
            self._on_batch(self.last_batch)
        self._answer(batch, outcomes)
        if commit.events:
            self._publisher.publish(commit.events, commit.balances)
        self._available = True  # again, if the commit failed and had committed after all

    async def _commit(
        self, batch: list[_Pending], outcomes: list[list[Event] | DomainError], commit: CommitBatch
    ) -> bool:
        """Commit `commit`: True if it committed (the caller answers and publishes).
        Otherwise its callers were refused and the engine recovered from the store.

        Should the commit not end by `commit_deadline_ms`, a timer fails the batch
        meanwhile (`_begin_failure`); the loop still waits for the commit to end, since
        only then can the store's truth about it be read.
        """
        loop = asyncio.get_running_loop()
        self._outcome_pending = True
        self._commit_started_s = time.monotonic()
        overdue = loop.call_later(
            self.limits.commit_deadline_ms / 1000, self._commit_overdue, batch, outcomes, commit
        )
        try:
            await self._store.commit(commit)
        except Exception as error:
            overdue.cancel()
            self._commit_started_s = None
            committed = await self._settle_failed_commit(batch, outcomes, commit, error)
        else:
            overdue.cancel()
            if self._unknown_timer is not None:
                log.warning("the overdue commit landed; answering its callers")
            self._committed_counters = commit.counters
            committed = True
        finally:
            self._commit_started_s = None
            if self._unknown_timer is not None:
                self._unknown_timer.cancel()
                self._unknown_timer = None
        self._outcome_pending = False
        return committed

    def _commit_overdue(
        self, batch: list[_Pending], outcomes: list[list[Event] | DomainError], commit: CommitBatch
    ) -> None:
        log.error(
            "commit overran its deadline; taking no work until it ends and the store recovers",
            deadline_ms=self.limits.commit_deadline_ms,
            commands=len(batch),
        )
        self._begin_failure(batch, outcomes, commit)

    def _begin_failure(
        self, batch: list[_Pending], outcomes: list[list[Event] | DomainError], commit: CommitBatch
    ) -> None:
        """The batch failed (or overran): take no more work, and make sure its callers
        hear within `outcome_wait_ms`, as "outcome unknown" if nothing better is known."""
        if self._unknown_timer is not None:  # already begun, at the deadline
            return
        self._available = False
        self._fail_queued()
        if not commit.events:  # only the clock moved: the outcomes stand either way
            self._answer(batch, outcomes)
        self._unknown_timer = asyncio.get_running_loop().call_later(
            self.limits.outcome_wait_ms / 1000, self._refuse, batch, None
        )

    async def _settle_failed_commit(
        self,
        batch: list[_Pending],
        outcomes: list[list[Event] | DomainError],
        commit: CommitBatch,
        error: Exception,
    ) -> bool:
        """The commit raised: recover, and say whether it had committed all the same.

        Known at once when the store says nothing was written
        (`StoreUnavailableError(committed=False)`); otherwise from the store's truth once
        recovery has read it. Callers still waiting when `outcome_wait_ms` runs out are
        told the outcome is unknown; a batch found committed is published all the same,
        before any new work.
        """
        self._begin_failure(batch, outcomes, commit)
        log.error("commit failed; recovering from the store", exc_info=error)
        known_uncommitted = isinstance(error, StoreUnavailableError) and error.committed is False
        if known_uncommitted:
            self._refuse(batch, False)  # the store knows nothing was written
        await self._recover()
        if commit.events and self._committed_counters["seq"] < commit.events[-1].seq:
            self._refuse(batch, False)
            self._available = True
            return False
        # the commit happened and only its reply was lost: the store says so, so the
        # outcomes stand (for callers still waiting) and the events go out
        if known_uncommitted:
            log.error("the store said the batch did not commit, but its truth has it")
        log.warning("the failed commit had committed; answering its callers")
        return True

    @staticmethod
    def _refuse(batch: list[_Pending], committed: bool | None) -> None:
        """Fail the batch's callers that are still waiting, saying what is known."""
        message = (
            "the commit failed; nothing was done, retry"
            if committed is False
            else "the commit's outcome is unknown: look the order up before retrying"
        )
        for _, future in batch:
            if not future.done():
                future.set_exception(EngineUnavailableError(message, committed=committed))

    @staticmethod
    def _answer(batch: list[_Pending], outcomes: list[list[Event] | DomainError]) -> None:
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # the caller went away, or was already told
                continue
            if isinstance(outcome, DomainError):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    # -- recovery ---------------------------------------------------------------

    async def _recover(self) -> None:
        """Rebuild from the store, retrying until it answers (taking no work meanwhile)."""
        self._fail_queued()
        while True:
            try:
                await self._recover_once()
                return
            except Exception:
                log.exception("recovery failed; retrying")
                await asyncio.sleep(self.limits.recovery_retry_ms / 1000)

    async def _recover_once(self, committed: dict[str, Any] | _Unread | None = UNREAD) -> None:
        state = await self._store.load_state() if isinstance(committed, _Unread) else committed
        exchange = (
            Exchange(self._exchange_limits, self.funding)
            if state is None
            else restore(state, self._exchange_limits, self.funding)
        )
        check_all(exchange)
        self._exchange = exchange
        self._committed_counters = exchange.counters()
        self.recoveries += 1
        log.info("engine ready", open_orders=len(exchange.orders), seq=exchange.seq)

    def _fail_queued(self) -> None:
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if pending is not _WAKE and not pending[1].done():
                pending[1].set_exception(EngineUnavailableError("engine is recovering; retry"))

    # -- time: GTD expiries on an idle engine ----------------------------------------

    def _arm_expiry_timer(self) -> None:
        """Wake the loop when the next GTD order is due, even if no command arrives.

        One timer at a time, re-armed after every batch and after recovery: it queues a
        batch that only ticks (`Tick(now)` starts every batch), which expires the order.
        """
        due_ms = self._exchange.next_expiry_ms()
        if due_ms == self._expiry_due_ms and self._expiry_timer is not None:
            return
        self._disarm_expiry_timer()
        if due_ms is None:
            return
        delay_ms = max(due_ms - self._clock.now_ms(), EXPIRY_TIMER_MIN_DELAY_MS)
        self._expiry_due_ms = due_ms
        self._expiry_timer = asyncio.get_running_loop().call_later(
            delay_ms / 1000, self._wake_for_expiry
        )

    def _disarm_expiry_timer(self) -> None:
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
        self._expiry_timer = self._expiry_due_ms = None

    def _wake_for_expiry(self) -> None:
        self._expiry_timer = self._expiry_due_ms = None
        if self._available:  # a recovery re-arms the timer when it ends
            with contextlib.suppress(asyncio.QueueFull):  # a full queue ticks soon anyway
                self._queue.put_nowait(_WAKE)
