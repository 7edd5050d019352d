"""In-memory fakes for the settlement workers (`crossbook.engine.settlement`).

- `MemorySettlementStore`: the `SettlementStore` protocol on a dict; `add` inserts
  a planned settlement PENDING, as the engine's commit does. It keeps every
  record written (`history`) so a test can see how often a settlement was settled.
- `FakeWallet`: the `Wallet` port on a `WalletLedger`, with the port's
  idempotency (same key and request: the first receipt, `replayed=True`, applied
  once; same key, another request: IDEMPOTENCY_KEY_REUSED) and void semantics,
  plus scripted faults (`Fault`): DOWN (unavailable, nothing applied), LOST_REPLY
  (applied, then unavailable) and REFUSE (rejected, nothing applied). Every call
  and its outcome is recorded in `calls`; every key applied, in `applied`.
  `holds` pages the holds still applied (not voided, no tombstone) as the
  service does, ascending by (applied_at_ms, key).
- `FakeClock` (`now_ms()`, and callable for a `CircuitBreaker`) and `FakeSleep`
  (records the waits it is asked for and returns at once, after yielding).
"""

from __future__ import annotations

import asyncio
import enum
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from crossbook.domain import DomainError
from crossbook.engine.ports import WalletRejectedError, WalletUnavailableError
from crossbook.engine.read_model.records import StoredBalance
from crossbook.engine.settlement import pending_settlement
from crossbook.engine.settlement_plan import PlannedSettlement, SettlementStatus, StoredSettlement
from crossbook.wallet_protocol import (
    HoldsCursor,
    HoldsPage,
    HoldsRequest,
    WalletAccount,
    WalletHold,
    WalletOp,
    WalletOpKind,
    WalletReceipt,
)
from crossbook.wallet_service.ledger import WalletLedger


class FakeClock:
    def __init__(self, now_ms: int = 1_000_000) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now

    def __call__(self) -> int:  # the shape a `CircuitBreaker` wants
        return self.now


class FakeSleep:
    """An injectable `sleep`: records each wait (in seconds) and only yields once."""

    def __init__(self) -> None:
        self.waits_s: list[float] = []
        self._slept = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.waits_s.append(seconds)
        self._slept.set()
        await asyncio.sleep(0)

    @property
    def waits_ms(self) -> list[int]:
        return [round(s * 1000) for s in self.waits_s]

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait (on sleep calls, not on time) until `condition()` holds."""
        while not condition():
            self._slept.clear()
            await self._slept.wait()


class MemorySettlementStore:
    def __init__(self) -> None:
        self.settlements: dict[int, StoredSettlement] = {}
        self.history: list[StoredSettlement] = []  # every settlement recorded, in order
        self.record_batches: list[int] = []  # how many settlements each write recorded
        self.reads = 0  # get_settlement calls
        self.trade_status: dict[int, SettlementStatus] = {}

    def add(self, planned: PlannedSettlement) -> StoredSettlement:
        """Insert `planned` PENDING (what the engine's commit does)."""
        assert planned.settlement_id not in self.settlements, planned.settlement_id
        stored = pending_settlement(planned)
        self.settlements[stored.settlement_id] = stored
        if stored.trade_id is not None:
            self.trade_status[stored.trade_id] = SettlementStatus.PENDING
        return stored

    def settled_count(self, settlement_id: int) -> int:
        """How many times the settlement was recorded SETTLED."""
        return sum(
            1
            for s in self.history
            if s.settlement_id == settlement_id and s.status is SettlementStatus.SETTLED
        )

    # -- the SettlementStore protocol ------------------------------------------------

    async def pending_settlement_ids(self, *, after_id: int, limit: int) -> list[int]:
        ids = sorted(
            i
            for i, s in self.settlements.items()
            if i > after_id and s.status is SettlementStatus.PENDING
        )
        return ids[:limit]

    async def get_settlement(self, settlement_id: int) -> StoredSettlement | None:
        self.reads += 1
        return self.settlements.get(settlement_id)

    async def record_settlements(self, settlements: Sequence[StoredSettlement]) -> None:
        self.record_batches.append(len(settlements))
        for settlement in settlements:
            assert settlement.settlement_id in self.settlements, settlement.settlement_id
            self.settlements[settlement.settlement_id] = settlement
            self.history.append(settlement)
            if settlement.trade_id is not None:
                self.trade_status[settlement.trade_id] = settlement.status

    async def list_settlements(
        self, status: SettlementStatus, *, after_id: int = 0, limit: int = 100
    ) -> list[StoredSettlement]:
        found = [
            s for i, s in sorted(self.settlements.items()) if i > after_id and s.status is status
        ]
        return found[:limit]

    async def count_settlements(self, status: SettlementStatus) -> int:
        return sum(1 for s in self.settlements.values() if s.status is status)


class FaultKind(enum.Enum):
    DOWN = "down"  # unavailable before applying: nothing happened
    LOST_REPLY = "lost"  # applied, then unavailable: the answer was lost
    REFUSE = "refused"  # rejected: nothing applied


@dataclass(slots=True)
class Fault:
    kind: FaultKind
    match: str = ""  # a substring of the key ("" matches every key)
    times: int | None = 1  # calls it hits; None: until cleared
    code: str = "BALANCE_LIMIT_EXCEEDED"  # REFUSE only


@dataclass(slots=True)
class _Record:
    op: WalletOp
    receipt: WalletReceipt
    voided: bool = False
    tombstone: bool = False  # a void reserved this hold key before the hold arrived


class FakeWallet:
    """The `Wallet` port on a `WalletLedger`, idempotent by key, with scripted faults."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.ledger = WalletLedger()
        self.clock = clock or FakeClock()
        self.faults: list[Fault] = []
        self.calls: list[tuple[str, str]] = []  # (key, outcome) of every apply
        self.applied: list[str] = []  # keys, in the order they were applied
        self.in_flight = 0
        self.max_in_flight = 0
        self._records: dict[str, _Record] = {}

    # -- scripting ---------------------------------------------------------------------

    def fail(
        self,
        kind: FaultKind,
        match: str = "",
        *,
        times: int | None = 1,
        code: str = "BALANCE_LIMIT_EXCEEDED",
    ) -> Fault:
        fault = Fault(kind, match, times, code)
        self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self.faults.clear()

    def setup(self, op: WalletOp) -> WalletReceipt:
        """Apply `op` at once, without faults (deposits and holds made before a test)."""
        return self._apply_now(op)

    # -- what a test reads ---------------------------------------------------------------

    def outcomes(self, key: str) -> list[str]:
        return [outcome for k, outcome in self.calls if k == key]

    def applied_twice(self) -> list[str]:
        return [key for key, n in Counter(self.applied).items() if n > 1]

    def balance(self, user_id: int, asset: str) -> tuple[int, int]:
        return (self.ledger.available(user_id, asset), self.ledger.locked(user_id, asset))

    def all_balances(self) -> dict[tuple[int, str], tuple[int, int]]:
        return {
            key: (b.available, b.locked)
            for key, b in self.ledger.balances.items()
            if b.available or b.locked
        }

    def in_transit(self) -> dict[str, int]:
        return {asset: n for asset, n in self.ledger.in_transit.items() if n}

    def conserved(self) -> bool:
        """Per asset: every account's total plus what is in transit equals net deposits."""
        ledger = self.ledger
        assets = {a for _, a in ledger.balances} | set(ledger.net_deposits)
        for asset in assets:
            held = sum(b.total for (_, a), b in ledger.balances.items() if a == asset)
            if held + ledger.in_transit.get(asset, 0) != ledger.net_deposits.get(asset, 0):
                return False
        return True

    # -- the Wallet port -------------------------------------------------------------------

    async def apply(self, op: WalletOp) -> WalletReceipt:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)  # a call in flight: other workers run meanwhile
            fault = self._next_fault(op.key)
            kind = None if fault is None else fault.kind
            if kind is FaultKind.DOWN:
                self.calls.append((op.key, FaultKind.DOWN.value))
                raise WalletUnavailableError(f"wallet down: {op.key}")
            if fault is not None and kind is FaultKind.REFUSE:
                self.calls.append((op.key, FaultKind.REFUSE.value))
                raise WalletRejectedError(fault.code, f"{op.key} refused (scripted)")
            try:
                receipt = self._apply_now(op)
            except WalletRejectedError:
                self.calls.append((op.key, FaultKind.REFUSE.value))
                raise
            if kind is FaultKind.LOST_REPLY:
                self.calls.append((op.key, FaultKind.LOST_REPLY.value))
                raise WalletUnavailableError(f"reply lost: {op.key}")
            self.calls.append((op.key, "replayed" if receipt.replayed else "applied"))
            return receipt
        finally:
            self.in_flight -= 1

    async def balances(self, user_id: int) -> list[StoredBalance]:
        return [
            StoredBalance(u, asset, b.available, b.locked)
            for (u, asset), b in sorted(self.ledger.balances.items())
            if u == user_id
        ]

    async def holds(self, request: HoldsRequest) -> HoldsPage:
        await asyncio.sleep(0)
        after_ms, after = request.applied_after_ms, request.after
        found = []
        for record in self._records.values():
            op, at = record.op, record.receipt.applied_at_ms
            if op.kind is not WalletOpKind.HOLD or record.voided or record.tombstone:
                continue
            if at > request.applied_before_ms or (after_ms is not None and at <= after_ms):
                continue
            if request.user_id is not None and op.user_id != request.user_id:
                continue
            if after is not None and (at, op.key) <= (after.applied_at_ms, after.key):
                continue
            found.append(WalletHold(op.key, op.user_id, op.asset, op.amount_units, at))
        found.sort(key=lambda hold: (hold.applied_at_ms, hold.key))
        page = tuple(found[: request.limit])
        more = len(found) > request.limit
        return HoldsPage(page, HoldsCursor(page[-1].applied_at_ms, page[-1].key) if more else None)

    # -- inside ------------------------------------------------------------------------------

    def _next_fault(self, key: str) -> Fault | None:
        """The scripted fault this call hits, if any (it spends one of its `times`)."""
        for fault in self.faults:
            if fault.match in key and (fault.times is None or fault.times > 0):
                if fault.times is not None:
                    fault.times -= 1
                return fault
        return None

    def _apply_now(self, op: WalletOp) -> WalletReceipt:
        existing = self._records.get(op.key)
        if existing is not None:
            return self._replay(existing, op)
        try:
            amount = self._change(op)
        except DomainError as error:
            raise WalletRejectedError(error.code.value, error.message) from error
        receipt = WalletReceipt(op.key, amount, self.clock.now_ms(), replayed=False)
        self._records[op.key] = _Record(op, receipt)
        self.applied.append(op.key)
        return receipt

    def _replay(self, existing: _Record, op: WalletOp) -> WalletReceipt:
        if (existing.tombstone or existing.voided) and op.kind is WalletOpKind.HOLD:
            raise WalletRejectedError("HOLD_VOIDED", f"hold {op.key!r} was voided")
        if existing.tombstone or existing.op != op:
            raise WalletRejectedError(
                "IDEMPOTENCY_KEY_REUSED", f"key {op.key!r} was used for a different operation"
            )
        return replace(existing.receipt, replayed=True)

    def _change(self, op: WalletOp) -> int:
        """Apply `op` to the ledger; the amount it moved. A `DomainError` changes nothing."""
        ledger, user_id, asset, amount = self.ledger, op.user_id, op.asset, op.amount_units
        locked = op.account is WalletAccount.LOCKED
        match op.kind:
            case WalletOpKind.HOLD:
                ledger.reserve(user_id, asset, amount)
            case WalletOpKind.RELEASE:
                ledger.require_locked(user_id, asset, amount)
                ledger.release(user_id, asset, amount)
            case WalletOpKind.DEBIT:
                ledger.debit(user_id, asset, amount, from_locked=locked)
            case WalletOpKind.CREDIT:
                ledger.credit(user_id, asset, amount, to_locked=locked)
            case WalletOpKind.DEPOSIT:
                ledger.deposit(user_id, asset, amount)
            case WalletOpKind.WITHDRAW:
                ledger.withdraw(user_id, asset, amount)
            case WalletOpKind.VOID:
                return self._void(op)
        return amount

    def _void(self, op: WalletOp) -> int:
        assert op.target_key is not None and op.target_key != op.key, op
        target = self._records.get(op.target_key)
        if target is None:  # never seen: a later hold with that key is refused
            tombstone = WalletReceipt(op.target_key, 0, self.clock.now_ms(), replayed=False)
            self._records[op.target_key] = _Record(op, tombstone, tombstone=True)
            return 0
        if target.op.kind is not WalletOpKind.HOLD:
            raise WalletRejectedError("VOID_TARGET_NOT_HOLD", f"{op.target_key!r} is not a hold")
        if (target.op.user_id, target.op.asset) != (op.user_id, op.asset):
            raise WalletRejectedError("VOID_TARGET_MISMATCH", f"{op.target_key!r} is not theirs")
        if target.voided or target.tombstone:
            return 0  # voided already
        self.ledger.require_locked(op.user_id, op.asset, target.op.amount_units)
        self.ledger.release(op.user_id, op.asset, target.op.amount_units)
        target.voided = True
        return target.op.amount_units
