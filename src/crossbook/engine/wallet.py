"""The wallet port: what the engine needs from an external wallet service.

In remote-wallet mode balances live in a separate service. The engine talks to
it through `Wallet`, one idempotent operation at a time:

- `hold` moves funds from available to locked (an order's worst-case cost);
- `release` moves them back;
- `debit` takes from available or locked; `credit` adds to available or locked;
- `deposit` / `withdraw` are the administrators' money in and out;
- `void` cancels the hold whose key is `target_key`: if it was applied it is
  released (its whole amount), and either way a later hold with that key is
  refused. It makes an ambiguous hold (a timeout: applied or not?) safe.

Every operation carries a caller-chosen `key`. Applying the same key twice
applies it once and returns the first receipt (`replayed=True`); the same key
with different parameters is a `WalletRejectedError` (IDEMPOTENCY_KEY_REUSED).

Failures come in two kinds, and callers must treat them differently:
- `WalletUnavailableError`: transient or ambiguous (timeout, connection lost,
  5xx, circuit open). The operation may or may not have been applied: retry it
  with the same key, never compensate it;
- `WalletRejectedError`: the wallet answered and refused (4xx). Nothing was
  applied; retrying the same request gives the same refusal.

Amounts are integer minor units of the asset (DESIGN rule 5).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from crossbook.engine.views import StoredBalance

MAX_KEY_CHARS = 200


class WalletOpKind(enum.StrEnum):
    HOLD = "hold"
    RELEASE = "release"
    DEBIT = "debit"
    CREDIT = "credit"
    DEPOSIT = "deposit"
    WITHDRAW = "withdraw"
    VOID = "void"


class WalletAccount(enum.StrEnum):
    """Which part of a balance a debit takes from or a credit adds to."""

    AVAILABLE = "available"
    LOCKED = "locked"


@dataclass(frozen=True, slots=True)
class WalletOp:
    key: str
    kind: WalletOpKind
    user_id: int
    asset: str
    amount_units: int = 0  # 0 only for VOID
    account: WalletAccount = WalletAccount.AVAILABLE
    target_key: str | None = None  # VOID only

    def __post_init__(self) -> None:
        assert 0 < len(self.key) <= MAX_KEY_CHARS, self.key
        if self.kind is WalletOpKind.VOID:
            assert self.target_key and self.amount_units == 0, self
        else:
            assert self.amount_units > 0 and self.target_key is None, self


@dataclass(frozen=True, slots=True)
class WalletReceipt:
    """What the wallet did for one key (the first time it saw it)."""

    key: str
    amount_units: int  # for VOID: the amount released (0 if the hold was never applied)
    applied_at_ms: int
    replayed: bool


class WalletUnavailableError(Exception):
    """Transient or ambiguous: the operation may have been applied. Retry with the same key."""


class WalletRejectedError(Exception):
    """The wallet refused the operation; nothing was applied."""

    def __init__(self, code: str, message: str, details: dict[str, object] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details: dict[str, object] = details or {}


class Wallet(Protocol):
    async def apply(self, op: WalletOp) -> WalletReceipt: ...

    async def balances(self, user_id: int) -> list[StoredBalance]:
        """The user's balances, by asset code."""
        ...
