"""`WalletService`: balances in a domain `Ledger` in memory, every operation committed first.

    service = await WalletService.open(store)       # loads every balance and total
    receipt = await service.apply(op)               # a `WalletOp` of the engine's port
    service.balances(user_id); service.totals(); await service.operation(key)

One operation at a time (one `asyncio.Lock`), each in three steps:
1. its key is looked up: a key already recorded with the same request answers
   the stored receipt (`replayed=True`) and applies nothing; with a different
   request it is refused (IDEMPOTENCY_KEY_REUSED); a hold key that a void
   reserved or released is refused (HOLD_VOIDED);
2. it is applied to the in-memory ledger; a refusal (`WalletError`, e.g.
   INSUFFICIENT_BALANCE) changes nothing and records nothing, so the same key
   can succeed later;
3. the touched balance, its asset's totals and the operation's row are written
   in ONE transaction, and only after COMMIT does `apply` return. If the commit
   fails the ledger is reloaded from the database (the committed truth: the
   operation may or may not be in it) and the caller gets WALLET_UNAVAILABLE;
   a retry with the same key then either replays or applies it.

The whole of steps 1-3 is shielded from the caller's cancellation: once an
operation has started it runs to its end.

Operations (amounts in integer minor units): hold = available → locked;
release = locked → available; debit takes from available or locked into
"in transit", credit puts from transit into available or locked (the two legs
of a transfer); deposit / withdraw move money in and out (net deposits). A void
names a hold by `target_key`: an applied hold is released whole and marked
voided; a hold never seen is reserved as a tombstone so that it is refused when
it arrives; a hold already voided releases nothing (amount 0).

Invariants (checked after every operation for its asset; a broken one halts
the service: that operation is not committed, every later one is refused with
WALLET_HALTED, and `on_fatal` is called so the process stops):
- per asset: sum(available + locked over all accounts) + in_transit == net_deposits;
- no balance is negative, and no account's available + locked exceeds
  `MAX_ACCOUNT_UNITS` (deposits and credits that would pass it are refused
  with BALANCE_LIMIT_EXCEEDED), so every balance fits a BIGINT column.

Known limits: one operation per transaction (no group commit); one process per
database; the per-asset sums are kept incrementally and recomputed in full only
at start and by `totals()`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

import structlog

from crossbook.domain.errors import DomainError, ErrorCode
from crossbook.domain.ledger import Balance, Ledger
from crossbook.engine.views import StoredBalance
from crossbook.engine.wallet import WalletAccount, WalletOp, WalletOpKind
from crossbook.wallet_service.model import (
    MAX_ACCOUNT_UNITS,
    InvariantBrokenError,
    OperationRecord,
    OperationStatus,
    Receipt,
    WalletCode,
    WalletError,
)
from crossbook.wallet_service.store import AssetTotals, Change, WalletState, WalletStore

log = structlog.get_logger(__name__)


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class AssetSummary:
    asset: str
    total_units: int  # sum of available + locked over all accounts
    net_deposits_units: int
    in_transit_units: int


class _Memory:
    """The ledger, the per-asset sums and which assets each user holds."""

    def __init__(self, state: WalletState) -> None:
        self.ledger = Ledger()
        self.assets_of: dict[int, set[str]] = {}
        for stored in state.balances:
            balance = self.ledger.balances[(stored.user_id, stored.asset)] = Balance()
            balance.available, balance.locked = stored.available, stored.locked
            self.assets_of.setdefault(stored.user_id, set()).add(stored.asset)
        for totals in state.assets:
            self.ledger.net_deposits[totals.asset] = totals.net_deposits
            self.ledger.in_transit[totals.asset] = totals.in_transit
        self.sums = full_sums(self.ledger)


def full_sums(ledger: Ledger) -> dict[str, int]:
    sums: dict[str, int] = {}
    for (_user_id, asset), balance in ledger.balances.items():
        sums[asset] = sums.get(asset, 0) + balance.total
    return sums


class WalletService:
    def __init__(
        self,
        store: WalletStore,
        state: WalletState,
        *,
        now_ms: Callable[[], int] = wall_clock_ms,
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._store = store
        self._now_ms = now_ms
        self._on_fatal = on_fatal
        self._lock = asyncio.Lock()
        self._memory = _Memory(state)
        self._stale = False  # a commit failed and the reload too: reload before the next op
        self.halted: InvariantBrokenError | None = None
        self._check_all()

    @classmethod
    async def open(
        cls,
        store: WalletStore,
        *,
        now_ms: Callable[[], int] = wall_clock_ms,
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> WalletService:
        """The service over the committed state of `store`; refuses a state whose totals
        do not add up (`InvariantBrokenError`)."""
        return cls(store, await store.load(), now_ms=now_ms, on_fatal=on_fatal)

    # -- reads ---------------------------------------------------------------------------------

    async def balances(self, user_id: int) -> list[StoredBalance]:
        """The user's non-zero balances, by asset code."""
        await self._fresh()
        ledger = self._memory.ledger
        out = []
        for asset in sorted(self._memory.assets_of.get(user_id, ())):
            balance = ledger.balances[(user_id, asset)]
            if balance.total:
                out.append(StoredBalance(user_id, asset, balance.available, balance.locked))
        return out

    async def totals(self) -> list[AssetSummary]:
        """Per asset, recomputed in full from every balance (and checked)."""
        await self._fresh()
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
        return await self._read(key)

    async def _fresh(self) -> None:
        """Reads answer from committed state only: after a failed commit whose reload
        failed too, they reload first (or answer WALLET_UNAVAILABLE)."""
        if self.halted is not None or self._stale:
            async with self._lock:
                await self._ensure_running()

    # -- operations ----------------------------------------------------------------------------

    async def apply(self, op: WalletOp) -> Receipt:
        """Apply `op` once (see the module docstring); a `WalletError` if it is refused."""
        task = asyncio.ensure_future(self._apply_serialised(op))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_retrieve)  # it runs to its end; nobody awaits it now
            raise

    async def _apply_serialised(self, op: WalletOp) -> Receipt:
        async with self._lock:
            await self._ensure_running()
            existing = await self._read(op.key)
            if existing is not None:
                return _replay(existing, op)
            target = None
            if op.kind is WalletOpKind.VOID:
                assert op.target_key is not None
                if op.target_key == op.key:
                    raise WalletError(WalletCode.INVALID_REQUEST, "a void cannot target itself")
                target = await self._read(op.target_key)
            self._memory.ledger.drain_touched()
            try:
                change = self._change(op, target, self._now_ms())
            except WalletError:
                raise  # a refusal changed nothing
            except Exception:
                self._stale = True  # a bug may have left the ledger half-changed: reload
                raise
            await self._commit(change)
        log.info(
            "wallet operation applied",
            key=op.key,
            op=op.kind.value,
            user_id=op.user_id,
            asset=op.asset,
            amount_units=change.record.result_units,
        )
        return Receipt(change.record, replayed=False)

    async def _ensure_running(self) -> None:
        if self.halted is not None:
            raise WalletError(WalletCode.WALLET_HALTED, "the wallet halted on a broken invariant")
        if self._stale:
            try:
                await self._reload()
            except Exception as error:
                raise _unavailable("the wallet's database is unreachable") from error

    async def _read(self, key: str) -> OperationRecord | None:
        try:
            return await self._store.operation(key)
        except Exception as error:
            log.warning("wallet operation lookup failed", key=key, error=repr(error))
            raise _unavailable("the wallet's database is unreachable") from error

    async def _commit(self, change: Change) -> None:
        try:
            await self._store.commit(change)
        except Exception as error:
            log.error("wallet commit failed", key=change.record.key, error=repr(error))
            self._stale = True
            try:
                await self._reload()
            except Exception as reload_error:
                log.error("wallet reload failed", error=repr(reload_error))
            raise _unavailable("the operation may not have been committed") from error

    async def _reload(self) -> None:
        self._memory = _Memory(await self._store.load())
        self._stale = False
        self._check_all()
        log.info("wallet reloaded from the database")

    # -- the ledger ----------------------------------------------------------------------------

    def _change(self, op: WalletOp, target: OperationRecord | None, now_ms: int) -> Change:
        """Apply `op` to the ledger; what to commit. A `WalletError` changes nothing."""
        if op.kind is WalletOpKind.VOID:
            return self._void(op, target, now_ms)
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
        return self._settle(OperationRecord.of(op, amount, now_ms), before)

    def _void(self, op: WalletOp, target: OperationRecord | None, now_ms: int) -> Change:
        if target is None:
            return Change(OperationRecord.of(op, 0, now_ms), tombstone=_tombstone(op, now_ms))
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
            return Change(OperationRecord.of(op, 0, now_ms))  # voided already
        ledger = self._memory.ledger
        before = _total(ledger, op.user_id, op.asset)
        try:
            ledger.require_locked(op.user_id, op.asset, target.amount_units)
        except DomainError as error:
            raise _refusal(error) from error
        ledger.release(op.user_id, op.asset, target.amount_units)
        record = OperationRecord.of(op, target.amount_units, now_ms)
        change = self._settle(record, before)
        return Change(record, change.balances, change.assets, voided_key=target.key)

    def _settle(self, record: OperationRecord, total_before: int) -> Change:
        """Check what the ledger did for `record` and say what to commit."""
        ledger, key = self._memory.ledger, (record.user_id, record.asset)
        touched = ledger.drain_touched()
        if [k for k, _ in touched] != [key]:
            self._halt(f"operation {record.key!r} touched {[k for k, _ in touched]}")
        balance = touched[0][1]
        asset = record.asset
        self._memory.assets_of.setdefault(record.user_id, set()).add(asset)
        self._memory.sums[asset] = self._memory.sums.get(asset, 0) + balance.total - total_before
        if balance.available < 0 or balance.locked < 0 or balance.total > MAX_ACCOUNT_UNITS:
            self._halt(f"balance {key} out of range: {balance.available}, {balance.locked}")
        self._check_asset(asset)
        totals = AssetTotals(
            asset, ledger.net_deposits.get(asset, 0), ledger.in_transit.get(asset, 0)
        )
        stored = StoredBalance(record.user_id, asset, balance.available, balance.locked)
        return Change(record, (stored,), (totals,))

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


def _total(ledger: Ledger, user_id: int, asset: str) -> int:
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


def _retrieve(task: asyncio.Task[Receipt]) -> None:
    if not task.cancelled():
        task.exception()
