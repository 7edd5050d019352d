"""The engine loop: the single writer of trading state (DESIGN rules 1 and 4).

One asyncio task owns the `Exchange`. Callers `submit` a command and await its
result; the task drains up to `batch_max_commands` queued commands, advances
time once (`Tick`), executes them in order, and hands every change to the store
in ONE transaction. Only after that commit does it resolve the callers and
publish the events. So nothing leaves the engine before it is durable.

Failure: if a commit fails, the engine stops taking work, throws its in-memory
state away and recovers from the store, which holds the committed truth, then
resumes. Whether the failed batch committed is read from that truth (a commit
can succeed and only its reply be lost, e.g. the connection dying during
COMMIT): if the store's sequence does not reach the batch's last event, the
batch's callers get `EngineUnavailableError` (nothing of theirs happened;
retrying with the same client order id is safe); if it does, they get their
outcomes and the events are published, as for any committed batch.

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
- the queue holds at most `queue_capacity` commands: beyond that `submit`
  refuses at once with `EngineOverloadedError` (memory never grows unbounded);
- after every batch the cheap invariants run; after recovery all of them do.
  A broken invariant stops the engine: it is a bug, not a condition to survive.
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
from crossbook.engine.batch import BatchBuilder
from crossbook.engine.ports import Clock, Publisher, Store

log = structlog.get_logger(__name__)


EXPIRY_TIMER_MIN_DELAY_MS = 1  # an expiry already due still waits this long: no busy loop


class EngineUnavailableError(Exception):
    """The engine cannot take work now (recovering, stopped); retry later."""


class EngineOverloadedError(Exception):
    """The command queue is full; retry after a short wait."""


@dataclass(frozen=True, slots=True)
class EngineLimits:
    queue_capacity: int = 20_000
    batch_max_commands: int = 2_000
    recovery_retry_ms: int = 500


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


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
        self.last_batch = BatchStats()
        self._committed_counters: dict[str, int] = {}
        self._on_batch = on_batch  # metrics: called after every committed batch
        self.recoveries = 0

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        assert self._task is None, "engine already started"
        await self._recover_once()
        self._task = asyncio.create_task(self._run(), name="crossbook-engine")
        self._arm_expiry_timer()

    async def stop(self) -> None:
        """Stop taking work, finish nothing new, fail whatever is still queued."""
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
        return self._available

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
            for _, future in batch:
                if not future.done():
                    future.set_exception(EngineUnavailableError("engine stopped"))
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
        try:
            # a batch of refusals still moves the clock: commit whenever anything changed
            if not commit.is_empty or commit.counters != self._committed_counters:
                await self._store.commit(commit)
                self._committed_counters = commit.counters
        except Exception:
            log.exception("commit failed; recovering from the store", commands=len(batch))
            self._available = False
            await self._recover()
            if commit.events and self._committed_counters["seq"] < commit.events[-1].seq:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(EngineUnavailableError("commit failed; retry"))
                return
            # the commit happened and only its reply was lost (or the batch held no
            # change): the store says so, so the outcomes stand and the events go out
            log.warning("the failed commit had committed; answering its callers")
        self.last_batch = BatchStats(
            len(batch), len(commit.events), (time.perf_counter() - started) * 1000
        )
        if self._on_batch is not None:
            self._on_batch(self.last_batch)
        self._answer(batch, outcomes)
        if commit.events:
            self._publisher.publish(commit.events)

    @staticmethod
    def _answer(batch: list[_Pending], outcomes: list[list[Event] | DomainError]) -> None:
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # the caller went away
                continue
            if isinstance(outcome, DomainError):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    # -- recovery ---------------------------------------------------------------

    async def _recover(self) -> None:
        """Rebuild from the store, retrying until it answers; then resume taking work."""
        self._fail_queued()
        while True:
            try:
                await self._recover_once()
                return
            except Exception:
                log.exception("recovery failed; retrying")
                await asyncio.sleep(self.limits.recovery_retry_ms / 1000)

    async def _recover_once(self) -> None:
        state: dict[str, Any] | None = await self._store.load_state()
        exchange = (
            Exchange(self._exchange_limits, self.funding)
            if state is None
            else restore(state, self._exchange_limits, self.funding)
        )
        check_all(exchange)
        self._exchange = exchange
        self._committed_counters = exchange.counters()
        self.recoveries += 1
        self._available = True
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
