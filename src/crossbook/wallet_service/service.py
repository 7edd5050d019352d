"""`WalletService`: balances in a `WalletLedger` in memory, every operation committed first.

    service = await WalletService.open(store)       # loads every balance and total
    receipt = await service.apply(op)               # a `WalletOp` of the wallet protocol
    service.balances(user_id); service.totals(); await service.operation(key)
    page = await service.holds(HoldsQuery(applied_before_ms=..., limit=100))

Group commit. `apply` puts the operation on a bounded queue and waits; ONE
writer task (started by `apply` when none runs, ending when the queue is empty)
takes up to `max_batch_operations` queued operations at a time and:
1. reads the stored rows of all their keys and void targets in one query;
2. applies them in queue order to the in-memory ledger, each exactly as if
   the ones before it had committed: a key already recorded (in the database
   or earlier in the batch) with the same request answers that receipt
   (`replayed=True`) and applies nothing; with a different request it is
   refused (IDEMPOTENCY_KEY_REUSED); a hold key that a void reserved or
   released is refused (HOLD_VOIDED). A refusal (`WalletError`, e.g.
   INSUFFICIENT_BALANCE) changes nothing and records nothing, so the same key
   can succeed later;
3. writes every change of the batch in ONE transaction (the touched balances
   and asset totals with their final values, the new operation rows, the holds
   voided), and only after COMMIT answers every caller of the batch. If the
   commit fails the ledger is reloaded from the database (the committed truth:
   the batch may or may not be in it) and every caller of the batch gets
   WALLET_UNAVAILABLE; a retry with the same key then either replays or applies.

Once queued an operation runs to its end even if its caller is cancelled. A
full queue (`queue_capacity`) refuses at once with WALLET_UNAVAILABLE: the
caller retries with the same key. A failed lookup fails the batch the same way,
before anything is applied. An unexpected exception while applying (a bug)
fails the batch uncommitted: its operation's caller gets the exception, the
others WALLET_UNAVAILABLE, and the ledger is reloaded before the next batch.
Reads (`balances`, `totals`) wait for the batch being committed, so they show
committed state only. `operation` and `holds` read the database (committed
state by definition) without waiting for the writer, and the writer never waits
for them: a listing of holds is one bounded read (`limit` + 1 rows of an index
range), and at most `hold_scans` of them run at once, so that a burst of
listings cannot take every pooled connection from the writer.

Operations (amounts in integer minor units): hold = available → locked;
release = locked → available; debit takes from available or locked into
"in transit", credit puts from transit into available or locked (the two legs
of a transfer); deposit / withdraw move money in and out (net deposits). A void
names a hold by `target_key`: an applied hold is released whole and marked
voided; a hold never seen is reserved as a tombstone so that it is refused when
it arrives; a hold already voided releases nothing (amount 0).

Invariants (balances checked after every operation, the per-asset sums after
every batch for each asset it touched; a broken one halts the service: that
batch is not committed and each of its callers gets the `InvariantBrokenError`,
every later operation is refused with WALLET_HALTED, and `on_fatal` is called so
the process stops):
- per asset: sum(available + locked over all accounts) + in_transit == net_deposits;
- no balance is negative, and no account's available + locked exceeds
  `MAX_ACCOUNT_UNITS` (deposits and credits that would pass it are refused
  with BALANCE_LIMIT_EXCEEDED), so every balance fits a BIGINT column.

Known limits: one process per database; the queue holds at most
`queue_capacity` operations and a batch at most `max_batch_operations`; the
per-asset sums are kept incrementally and recomputed in full only at start and
by `totals()`; operations of one batch share one `applied_at_ms`.
`applied_at_ms` is the wall clock when the batch was applied, before its
commit: a listing up to a time T can miss a hold stamped at or before T whose
batch commits after the listing read (or whose stamp went back with the
clock), so a caller lists up to a time well in the past (a grace time).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import NoReturn

import structlog

from crossbook.domain.errors import DomainError, ErrorCode
from crossbook.domain.ledger import Balance
from crossbook.wallet_protocol import (
    HoldsCursor,
    HoldsPage,
    WalletAccount,
    WalletBalance,
    WalletCode,
    WalletOp,
    WalletOpKind,
)
from crossbook.wallet_service.ledger import WalletLedger
from crossbook.wallet_service.model import (
    MAX_ACCOUNT_UNITS,
    HoldsQuery,
    InvariantBrokenError,
    OperationRecord,
    OperationStatus,
    Receipt,
    WalletError,
)
from crossbook.wallet_service.store import AssetTotals, Change, WalletState, WalletStore

log = structlog.get_logger(__name__)

QUEUE_CAPACITY = 10_000
MAX_BATCH_OPERATIONS = 500
HOLD_SCANS = 1


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class WalletLimits:
    queue_capacity: int = QUEUE_CAPACITY  # operations waiting; beyond, `apply` refuses at once
    max_batch_operations: int = MAX_BATCH_OPERATIONS  # operations per transaction
    hold_scans: int = HOLD_SCANS  # listings of holds reading at once; the others wait

    def __post_init__(self) -> None:
        if min(self.queue_capacity, self.max_batch_operations, self.hold_scans) < 1:
            raise ValueError(f"wallet limits must be positive: {self}")


@dataclass(frozen=True, slots=True)
class AssetSummary:
    asset: str
    total_units: int  # sum of available + locked over all accounts
    net_deposits_units: int
    in_transit_units: int


class _Memory:
    """The ledger, the per-asset sums and which assets each user holds."""

    def __init__(self, state: WalletState) -> None:
        self.ledger = WalletLedger()
        self.assets_of: dict[int, set[str]] = {}
        for stored in state.balances:
            balance = self.ledger.balances[(stored.user_id, stored.asset)] = Balance()
            balance.available, balance.locked = stored.available, stored.locked
            self.assets_of.setdefault(stored.user_id, set()).add(stored.asset)
        for totals in state.assets:
            self.ledger.net_deposits[totals.asset] = totals.net_deposits
            self.ledger.in_transit[totals.asset] = totals.in_transit
        self.sums = full_sums(self.ledger)


def full_sums(ledger: WalletLedger) -> dict[str, int]:
    sums: dict[str, int] = {}
    for (_user_id, asset), balance in ledger.balances.items():
        sums[asset] = sums.get(asset, 0) + balance.total
    return sums


class _Batch:
    """One batch's view of the operation rows (stored, then as the batch leaves them) and
    everything it changed, to be written in one transaction."""

    def __init__(self, stored: dict[str, OperationRecord]) -> None:
        self.records = stored  # key -> its row as of the operation being applied
        self.inserted: dict[str, OperationRecord] = {}  # new rows, in their final state
        self.voided: dict[str, str] = {}  # stored hold key -> the void that released it
        self.balances: set[tuple[int, str]] = set()
        self.assets: set[str] = set()
        self.applied: list[OperationRecord] = []  # the operations applied (not replayed)

    def insert(self, record: OperationRecord) -> None:
        self.records[record.key] = self.inserted[record.key] = record

    def void(self, hold: OperationRecord, void_key: str) -> None:
        voided = dataclasses.replace(hold, status=OperationStatus.VOIDED, voided_by=void_key)
        self.records[hold.key] = voided
        if hold.key in self.inserted:
            self.inserted[hold.key] = voided  # a hold of this batch: inserted voided
        else:
            self.voided[hold.key] = void_key

    def change(self, ledger: WalletLedger) -> Change:
        balances = []
        for user_id, asset in sorted(self.balances):
            balance = ledger.balances[(user_id, asset)]
            balances.append(WalletBalance(user_id, asset, balance.available, balance.locked))
        assets = [
            AssetTotals(asset, ledger.net_deposits.get(asset, 0), ledger.in_transit.get(asset, 0))
            for asset in sorted(self.assets)
        ]
        return Change(list(self.inserted.values()), balances, assets, self.voided)


_Pending = tuple[WalletOp, "asyncio.Future[Receipt]"]
_Outcome = Receipt | WalletError


class WalletService:
    def __init__(
        self,
        store: WalletStore,
        state: WalletState,
        *,
        now_ms: Callable[[], int] = wall_clock_ms,
        on_fatal: Callable[[BaseException], None] | None = None,
        limits: WalletLimits | None = None,
    ) -> None:
        self._store = store
        self._now_ms = now_ms
        self._on_fatal = on_fatal
        self.limits = limits or WalletLimits()
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(self.limits.queue_capacity)
        self._writer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # held by the writer for a whole batch, and by reads
        self._hold_scans = asyncio.Semaphore(self.limits.hold_scans)
        self._memory = _Memory(state)
        self._stale = False  # a commit failed and the reload too: reload before the next batch
        self.halted: InvariantBrokenError | None = None
        self._check_all()

    @classmethod
    async def open(
        cls,
        store: WalletStore,
        *,
        now_ms: Callable[[], int] = wall_clock_ms,
        on_fatal: Callable[[BaseException], None] | None = None,
        limits: WalletLimits | None = None,
    ) -> WalletService:
        """The service over the committed state of `store`; refuses a state whose totals
        do not add up (`InvariantBrokenError`)."""
        state = await store.load()
        return cls(store, state, now_ms=now_ms, on_fatal=on_fatal, limits=limits)

    # -- reads ---------------------------------------------------------------------------------

    async def balances(self, user_id: int) -> list[WalletBalance]:
        """The user's non-zero balances, by asset code."""
        async with self._committed():
            ledger = self._memory.ledger
            out = []
            for asset in sorted(self._memory.assets_of.get(user_id, ())):
                balance = ledger.balances[(user_id, asset)]
                if balance.total:
                    out.append(WalletBalance(user_id, asset, balance.available, balance.locked))
            return out

    async def totals(self) -> list[AssetSummary]:
        """Per asset, recomputed in full from every balance (and checked)."""
        async with self._committed():
            self._check_all()
            ledger = self._memory.ledger
            assets = sorted({*self._memory.sums, *ledger.net_deposits, *ledger.in_transit})
            return [
                AssetSummary(
                    asset,
                    self._memory.sums.get(asset, 0),
                    ledger.net_deposits.get(asset, 0),
                    ledger.in_transit.get(asset, 0),
                )
                for asset in assets
            ]

    async def operation(self, key: str) -> OperationRecord | None:
        try:
            return await self._store.operation(key)
        except Exception as error:
            log.warning("wallet operation lookup failed", key=key, error=repr(error))
            raise _unavailable("the wallet's database is unreachable") from error

    async def holds(self, query: HoldsQuery) -> HoldsPage:
        """One page of the holds still applied (see `HoldsQuery`), read from the database;
        `next` is where the next page starts, None if no applied hold follows this page."""
        before_ms = self._now_ms() if query.applied_before_ms is None else query.applied_before_ms
        try:
            async with self._hold_scans:
                holds = await self._store.applied_holds(
                    before_ms, query.applied_after_ms, query.user_id, query.after, query.limit + 1
                )
        except Exception as error:
            log.warning("wallet holds listing failed", error=repr(error))
            raise _unavailable("the wallet's database is unreachable") from error
        if len(holds) <= query.limit:
            return HoldsPage(tuple(holds), None)
        last = holds[query.limit - 1]
        return HoldsPage(tuple(holds[: query.limit]), HoldsCursor(last.applied_at_ms, last.key))

    @contextlib.asynccontextmanager
    async def _committed(self) -> AsyncIterator[None]:
        """Reads answer from committed state only: not while a batch is being committed,
        and after a failed commit whose reload failed too, only once reloaded (or
        WALLET_UNAVAILABLE)."""
        async with self._lock:
            await self._ensure_running()
            yield

    # -- operations ----------------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    async def apply(self, op: WalletOp) -> Receipt:
        """Apply `op` once (see the module docstring); a `WalletError` if it is refused."""
        if self.halted is not None:
            raise _halted()
        future: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((op, future))
        except asyncio.QueueFull:
            log.warning("wallet queue full: refusing", key=op.key, capacity=self._queue.maxsize)
            raise _unavailable("the wallet is overloaded: retry") from None
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="crossbook-wallet-writer")
        try:
            return await asyncio.shield(future)  # queued: it runs to its end regardless
        except asyncio.CancelledError:
            future.add_done_callback(_retrieve)  # nobody awaits it now
            raise

    async def _write(self) -> None:
        """The writer: batches from the queue, one after the other, until it is empty (the
        next `apply` starts a writer again)."""
        batch: list[_Pending] = []
        try:
            while not self._queue.empty():
                batch = [self._queue.get_nowait()]
                while len(batch) < self.limits.max_batch_operations and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                try:
                    async with self._lock:
                        await self._process(batch)
                except Exception as error:  # a bug: the ledger may be half-changed
                    log.exception("wallet batch failed", operations=len(batch))
                    self._stale = True
                    _fail(batch, lambda: _unavailable("the operation was not committed"), error)
        except BaseException:
            # cancelled (shutdown): the batch in hand may or may not have committed; leave no
            # caller waiting, and make a later writer reload first
            self._stale = True
            _fail(batch, lambda: _unavailable("the operation may not have been committed"))
            while not self._queue.empty():
                _fail([self._queue.get_nowait()], lambda: _unavailable("the wallet stopped"))
            raise

    async def _process(self, batch: list[_Pending]) -> None:
        try:
            await self._ensure_running()
        except WalletError as error:
            _fail(batch, partial(WalletError, error.code, error.message), error.__cause__)
            return
        keys = {op.key for op, _ in batch}
        keys.update(op.target_key for op, _ in batch if op.target_key is not None)
        try:
            stored = await self._store.operations(keys)
        except Exception as error:
            log.warning("wallet operation lookup failed", operations=len(batch), error=repr(error))
            _fail(batch, lambda: _unavailable("the wallet's database is unreachable"), error)
            return
        pending = _Batch(stored)
        outcomes = self._apply_all(batch, pending)
        if outcomes is None:
            return
        try:
            await self._store.commit(pending.change(self._memory.ledger))
        except Exception as error:
            log.error("wallet commit failed", operations=len(batch), error=repr(error))
            await self._reload_after_failure()
            _fail(batch, lambda: _unavailable("the operation may not have been committed"), error)
            return
        for record in pending.applied:
            log.info(
                "wallet operation applied",
                key=record.key,
                op=record.kind.value,
                user_id=record.user_id,
                asset=record.asset,
                amount_units=record.result_units,
            )
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, WalletError):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def _apply_all(self, batch: list[_Pending], pending: _Batch) -> list[_Outcome] | None:
        """Each operation of `batch` applied in order, then the sums of every asset touched
        checked; None if the batch cannot be committed (each caller has its error then)."""
        now_ms = self._now_ms()
        outcomes: list[_Outcome] = []
        try:
            for op, future in batch:
                try:
                    outcomes.append(self._apply_one(op, pending, now_ms))
                except InvariantBrokenError:
                    raise
                except Exception as bug:
                    log.exception("wallet operation failed", key=op.key)
                    self._stale = True  # the ledger may be half-changed: reload it
                    if not future.done():
                        future.set_exception(bug)
                    _fail(batch, partial(_unavailable, "the operation was not committed"), bug)
                    return None
            for asset in sorted(pending.assets):
                self._check_asset(asset)
        except InvariantBrokenError as broken:
            _fail(batch, partial(InvariantBrokenError, str(broken)), broken)
            return None
        return outcomes

    def _apply_one(self, op: WalletOp, batch: _Batch, now_ms: int) -> _Outcome:
        """`op` applied to the ledger and recorded in `batch`, or its refusal."""
        try:
            existing = batch.records.get(op.key)
            if existing is not None:
                return _replay(existing, op)
            target = None
            if op.kind is WalletOpKind.VOID:
                assert op.target_key is not None
                if op.target_key == op.key:
                    raise WalletError(WalletCode.INVALID_REQUEST, "a void cannot target itself")
                target = batch.records.get(op.target_key)
            self._memory.ledger.drain_touched()
            record = self._change(op, target, now_ms, batch)
        except WalletError as refusal:
            return refusal  # a refusal changed nothing
        batch.applied.append(record)
        return Receipt(record, replayed=False)

    async def _ensure_running(self) -> None:
        if self.halted is not None:
            raise _halted()
        if self._stale:
            try:
                await self._reload()
            except Exception as error:
                raise _unavailable("the wallet's database is unreachable") from error

    async def _reload_after_failure(self) -> None:
        self._stale = True
        try:
            await self._reload()
        except Exception as reload_error:
            log.error("wallet reload failed", error=repr(reload_error))

    async def _reload(self) -> None:
        self._memory = _Memory(await self._store.load())
        self._stale = False
        self._check_all()
        log.info("wallet reloaded from the database")

    # -- the ledger ----------------------------------------------------------------------------

    def _change(
        self, op: WalletOp, target: OperationRecord | None, now_ms: int, batch: _Batch
    ) -> OperationRecord:
        """Apply `op` to the ledger and record it in `batch`. A `WalletError` changes nothing."""
        if op.kind is WalletOpKind.VOID:
            return self._void(op, target, now_ms, batch)
        ledger = self._memory.ledger
        user_id, asset, amount = op.user_id, op.asset, op.amount_units
        before = _total(ledger, user_id, asset)
        to_locked = from_locked = op.account is WalletAccount.LOCKED
        try:
            match op.kind:
                case WalletOpKind.HOLD:
                    ledger.reserve(user_id, asset, amount)
                case WalletOpKind.RELEASE:
                    ledger.require_locked(user_id, asset, amount)
                    ledger.release(user_id, asset, amount)
                case WalletOpKind.DEBIT:
                    ledger.debit(user_id, asset, amount, from_locked=from_locked)
                case WalletOpKind.CREDIT:
                    _require_room(before, op)
                    ledger.credit(user_id, asset, amount, to_locked=to_locked)
                case WalletOpKind.DEPOSIT:
                    _require_room(before, op)
                    ledger.deposit(user_id, asset, amount)
                case WalletOpKind.WITHDRAW:
                    ledger.withdraw(user_id, asset, amount)
        except DomainError as error:
            raise _refusal(error) from error
        record = OperationRecord.of(op, amount, now_ms)
        self._settle(record, before, batch)
        return record

    def _void(
        self, op: WalletOp, target: OperationRecord | None, now_ms: int, batch: _Batch
    ) -> OperationRecord:
        record = OperationRecord.of(op, 0, now_ms)
        if target is None:
            batch.insert(_tombstone(op, now_ms))
            batch.insert(record)
            return record
        if target.kind is not WalletOpKind.HOLD:
            raise WalletError(
                WalletCode.VOID_TARGET_NOT_HOLD,
                f"operation {target.key!r} is a {target.kind.value}, not a hold",
                target_key=target.key,
                target_op=target.kind.value,
            )
        if (target.user_id, target.asset) != (op.user_id, op.asset):
            raise WalletError(
                WalletCode.VOID_TARGET_MISMATCH,
                f"hold {target.key!r} belongs to another user or asset",
                target_key=target.key,
                user_id=target.user_id,
                asset=target.asset,
            )
        if target.status is not OperationStatus.APPLIED:
            batch.insert(record)  # voided already
            return record
        ledger = self._memory.ledger
        before = _total(ledger, op.user_id, op.asset)
        try:
            ledger.require_locked(op.user_id, op.asset, target.amount_units)
        except DomainError as error:
            raise _refusal(error) from error
        ledger.release(op.user_id, op.asset, target.amount_units)
        record = OperationRecord.of(op, target.amount_units, now_ms)
        self._settle(record, before, batch)
        batch.void(target, op.key)
        return record

    def _settle(self, record: OperationRecord, total_before: int, batch: _Batch) -> None:
        """Check what the ledger did for `record` and record it in `batch`."""
        memory, key = self._memory, (record.user_id, record.asset)
        touched = memory.ledger.drain_touched()
        if [k for k, _ in touched] != [key]:
            self._halt(f"operation {record.key!r} touched {[k for k, _ in touched]}")
        balance = touched[0][1]
        asset = record.asset
        memory.assets_of.setdefault(record.user_id, set()).add(asset)
        memory.sums[asset] = memory.sums.get(asset, 0) + balance.total - total_before
        if balance.available < 0 or balance.locked < 0 or balance.total > MAX_ACCOUNT_UNITS:
            self._halt(f"balance {key} out of range: {balance.available}, {balance.locked}")
        batch.balances.add(key)
        batch.assets.add(asset)
        batch.insert(record)

    # -- invariants ----------------------------------------------------------------------------

    def _check_asset(self, asset: str) -> None:
        ledger, sums = self._memory.ledger, self._memory.sums
        total, in_transit = sums.get(asset, 0), ledger.in_transit.get(asset, 0)
        net = ledger.net_deposits.get(asset, 0)
        if total + in_transit != net:
            self._halt(f"{asset}: total {total} + in transit {in_transit} != net deposits {net}")

    def _check_all(self) -> None:
        ledger = self._memory.ledger
        sums = full_sums(ledger)
        if sums != self._memory.sums:
            self._halt(f"running sums {self._memory.sums} != recomputed sums {sums}")
        for (user_id, asset), balance in ledger.balances.items():
            if balance.available < 0 or balance.locked < 0 or balance.total > MAX_ACCOUNT_UNITS:
                self._halt(f"balance {(user_id, asset)} out of range")
        for asset in {*sums, *ledger.net_deposits, *ledger.in_transit}:
            self._check_asset(asset)

    def _halt(self, message: str) -> NoReturn:
        error = InvariantBrokenError(message)
        self.halted = error
        log.critical("wallet invariant broken: halting", error=message)
        if self._on_fatal is not None:
            self._on_fatal(error)
        raise error


def _total(ledger: WalletLedger, user_id: int, asset: str) -> int:
    balance = ledger.balances.get((user_id, asset))
    return 0 if balance is None else balance.total


def _require_room(total_before: int, op: WalletOp) -> None:
    if total_before + op.amount_units > MAX_ACCOUNT_UNITS:
        raise WalletError(
            WalletCode.BALANCE_LIMIT_EXCEEDED,
            f"the {op.asset} account would exceed {MAX_ACCOUNT_UNITS} units",
            asset=op.asset,
            required=str(op.amount_units),
            total=str(total_before),
        )


def _tombstone(void: WalletOp, now_ms: int) -> OperationRecord:
    return OperationRecord.tombstone(void, now_ms)


def _replay(existing: OperationRecord, op: WalletOp) -> Receipt:
    if existing.status is not OperationStatus.APPLIED and op.kind is WalletOpKind.HOLD:
        raise WalletError(
            WalletCode.HOLD_VOIDED,
            f"hold {op.key!r} was voided",
            key=op.key,
            voided_by=existing.voided_by,
        )
    if existing.status is OperationStatus.TOMBSTONE or not existing.same_request(op):
        raise WalletError(
            WalletCode.IDEMPOTENCY_KEY_REUSED,
            f"key {op.key!r} was used for a different operation",
            key=op.key,
        )
    log.info("wallet operation replayed", key=op.key, op=op.kind.value)
    return Receipt(existing, replayed=True)


def _refusal(error: DomainError) -> WalletError:
    assert error.code is ErrorCode.INSUFFICIENT_BALANCE, error  # the only refusal used here
    details = {k: v if isinstance(v, str) else str(v) for k, v in error.details.items()}
    return WalletError(WalletCode.INSUFFICIENT_BALANCE, error.message, **details)


def _unavailable(message: str) -> WalletError:
    return WalletError(WalletCode.WALLET_UNAVAILABLE, message)


def _halted() -> WalletError:
    return WalletError(WalletCode.WALLET_HALTED, "the wallet halted on a broken invariant")


def _fail(
    batch: list[_Pending], error: Callable[[], Exception], cause: BaseException | None = None
) -> None:
    """Every caller of `batch` still waiting gets an error of its own (made by `error`)."""
    for _, future in batch:
        if not future.done():
            exception = error()
            exception.__cause__ = cause
            future.set_exception(exception)


def _retrieve(future: asyncio.Future[Receipt]) -> None:
    if not future.cancelled():
        future.exception()
