"""The wallet protocol: the vocabulary the exchange and the wallet service share.

The wallet service is a separate application; the exchange reaches it over
HTTP (`adapters.wallet_client`). Both sides import this module, and nothing else
of each other: an operation's kind, the part of a balance it touches, the
operation itself, its receipt, a balance as the wallet reports it, the codes of
its refusals and the rules of the service token.

Every operation carries a caller-chosen `key`. Applying the same key twice
applies it once and returns the first receipt (`replayed=True`); the same key
with different parameters is refused (IDEMPOTENCY_KEY_REUSED).

- `hold` moves funds from available to locked (an order's worst-case cost);
- `release` moves them back;
- `debit` takes from available or locked; `credit` adds to available or locked;
- `deposit` / `withdraw` are the administrators' money in and out;
- `void` cancels the hold whose key is `target_key`: if it was applied it is
  released (its whole amount), and either way a later hold with that key is
  refused. It makes an ambiguous hold (a timeout: applied or not?) safe.

Every request carries `Authorization: Bearer <service token>`, one token both
sides are configured with. Outside development it must be at least
`MIN_SERVICE_TOKEN_CHARS` long and not `DEVELOPMENT_SERVICE_TOKEN` (which anyone
can read here): the settings of both sides refuse any other.

A refusal answers one of the stable `WalletCode`s (the service maps each to an
HTTP status); the exchange matches on them, e.g. INSUFFICIENT_BALANCE.

The holds still applied (`WalletHold`: a hold no void released, whatever
releases and debits later took from it, since those are operations of their
own) can be listed in pages (`HoldsPage`, each asked for by a `HoldsRequest`),
ascending by (applied_at_ms, key), resumed after a `HoldsCursor`: the exchange
finds there the holds it made but never committed an order for (its process died
in between) and voids them.

Amounts are integer minor units of the asset (DESIGN rule 5). Standard library only.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

MAX_KEY_CHARS = 200
DEVELOPMENT_SERVICE_TOKEN = "crossbook-wallet-development-token-not-for-production"
MIN_SERVICE_TOKEN_CHARS = 32
MAX_HOLDS_LIMIT = 1_000  # holds per page, at most
DEFAULT_HOLDS_LIMIT = 100
KEY_PATTERN = re.compile(rf"[A-Za-z0-9:._-]{{1,{MAX_KEY_CHARS}}}")  # an operation's key, whole


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


class WalletCode(enum.StrEnum):
    """Stable refusal codes of the wallet's API. Never rename one: clients match on them."""

    INVALID_REQUEST = "INVALID_REQUEST"
    UNAUTHORIZED = "UNAUTHORIZED"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    HOLD_VOIDED = "HOLD_VOIDED"
    VOID_TARGET_NOT_HOLD = "VOID_TARGET_NOT_HOLD"
    VOID_TARGET_MISMATCH = "VOID_TARGET_MISMATCH"
    INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE"
    BALANCE_LIMIT_EXCEEDED = "BALANCE_LIMIT_EXCEEDED"
    INJECTED_REJECTION = "INJECTED_REJECTION"
    WALLET_FAULT = "WALLET_FAULT"  # an injected 500
    WALLET_UNAVAILABLE = "WALLET_UNAVAILABLE"  # database failed or queue full: retry, same key
    WALLET_HALTED = "WALLET_HALTED"  # an invariant broke: the service stops
    INTERNAL_ERROR = "INTERNAL_ERROR"  # a bug


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


@dataclass(frozen=True, slots=True)
class WalletBalance:
    """One asset of a user's balance, as the wallet holds it."""

    user_id: int
    asset: str
    available: int
    locked: int


@dataclass(frozen=True, slots=True)
class WalletHold:
    """A hold the wallet still has applied: no void released it (releases and debits that
    took from it are operations of their own and do not change it)."""

    key: str
    user_id: int
    asset: str
    amount_units: int  # as held, > 0
    applied_at_ms: int  # the wallet's clock when it applied the hold


@dataclass(frozen=True, slots=True)
class HoldsCursor:
    """Where a page of holds ended: the next page starts after (applied_at_ms, key)."""

    applied_at_ms: int
    key: str


@dataclass(frozen=True, slots=True)
class HoldsRequest:
    """One page of the holds still applied: applied_after_ms < applied_at_ms <=
    applied_before_ms, of `user_id` if given, ascending by (applied_at_ms, key) after the
    cursor `after`, at most `limit` (1 to `MAX_HOLDS_LIMIT`). A request that cannot be
    sent (a bad limit, a negative bound or user id, a malformed cursor) raises
    `ValueError`: it is a bug of the caller."""

    applied_before_ms: int
    applied_after_ms: int | None = None
    user_id: int | None = None
    after: HoldsCursor | None = None
    limit: int = DEFAULT_HOLDS_LIMIT

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_HOLDS_LIMIT:
            raise ValueError(f"limit {self.limit} is not from 1 to {MAX_HOLDS_LIMIT}")
        numbers = (self.applied_before_ms, self.applied_after_ms, self.user_id)
        if any(n is not None and n < 0 for n in numbers):
            raise ValueError(f"negative bound or user id: {self}")
        if self.after is not None and (
            self.after.applied_at_ms < 0 or not KEY_PATTERN.fullmatch(self.after.key)
        ):
            raise ValueError(f"invalid cursor {self.after}")


@dataclass(frozen=True, slots=True)
class HoldsPage:
    """Applied holds ascending by (applied_at_ms, key); `next` is None on the last page."""

    holds: tuple[WalletHold, ...]
    next: HoldsCursor | None
