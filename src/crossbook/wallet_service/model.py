"""The wallet service's records and refusals.

`OperationRecord` is one row of `wallet_operations`: the request that created it
(key, op, user, asset, amount, account, target key), what it did
(`result_units`, `applied_at_ms`) and its status. `Receipt` is what a caller
gets back: the record and whether this call replayed it. `HoldsQuery` is one
page's worth of the listing of applied holds (`WalletService.holds`).

`WalletError` is an expected refusal with a stable `WalletCode` (the protocol's,
see `crossbook.wallet_protocol`); `STATUS` maps each code to its HTTP status in
ONE place. A refusal means nothing was applied and nothing recorded: the same
key may be sent again later.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from crossbook.domain.units import INT64_MAX
from crossbook.wallet_protocol import (
    DEFAULT_HOLDS_LIMIT,
    MAX_HOLDS_LIMIT,
    HoldsCursor,
    WalletAccount,
    WalletCode,
    WalletOp,
    WalletOpKind,
)
from crossbook.wallet_service.schema import STATUS_APPLIED, STATUS_TOMBSTONE, STATUS_VOIDED

MAX_ACCOUNT_UNITS = INT64_MAX  # available + locked of one (user, asset), see `schema`


class OperationStatus(enum.StrEnum):
    APPLIED = STATUS_APPLIED
    VOIDED = STATUS_VOIDED  # a hold, released by the void named in `voided_by`
    TOMBSTONE = STATUS_TOMBSTONE  # a hold key voided before the hold: the hold is refused


@dataclass(frozen=True, slots=True)
class OperationRecord:
    key: str
    kind: WalletOpKind
    user_id: int
    asset: str
    amount_units: int  # as requested (0 for a void and a tombstone)
    account: WalletAccount
    target_key: str | None
    result_units: int  # what moved: the amount, or for a void the amount it released
    applied_at_ms: int
    status: OperationStatus = OperationStatus.APPLIED
    voided_by: str | None = None

    @classmethod
    def of(cls, op: WalletOp, result_units: int, applied_at_ms: int) -> OperationRecord:
        return cls(
            op.key,
            op.kind,
            op.user_id,
            op.asset,
            op.amount_units,
            op.account,
            op.target_key,
            result_units,
            applied_at_ms,
        )

    @classmethod
    def tombstone(cls, void: WalletOp, applied_at_ms: int) -> OperationRecord:
        """The row that reserves a hold key `void` targeted before any hold used it."""
        assert void.kind is WalletOpKind.VOID and void.target_key, void
        return cls(
            void.target_key,
            WalletOpKind.HOLD,
            void.user_id,
            void.asset,
            0,
            WalletAccount.AVAILABLE,
            None,
            0,
            applied_at_ms,
            OperationStatus.TOMBSTONE,
            void.key,
        )

    def same_request(self, op: WalletOp) -> bool:
        return (
            self.kind is op.kind
            and self.user_id == op.user_id
            and self.asset == op.asset
            and self.amount_units == op.amount_units
            and self.account is op.account
            and self.target_key == op.target_key
        )


@dataclass(frozen=True, slots=True)
class Receipt:
    record: OperationRecord
    replayed: bool


@dataclass(frozen=True, slots=True)
class HoldsQuery:
    """Applied holds with applied_after_ms < applied_at_ms <= applied_before_ms (None:
    the service's clock now; no lower bound), of `user_id` if given, after `after`,
    ascending by (applied_at_ms, key), at most `limit` of them."""

    applied_before_ms: int | None = None
    applied_after_ms: int | None = None
    user_id: int | None = None
    after: HoldsCursor | None = None
    limit: int = DEFAULT_HOLDS_LIMIT

    def __post_init__(self) -> None:
        assert 1 <= self.limit <= MAX_HOLDS_LIMIT, self


STATUS: Mapping[WalletCode, int] = {
    WalletCode.INVALID_REQUEST: 400,
    WalletCode.UNAUTHORIZED: 401,
    WalletCode.NOT_FOUND: 404,
    WalletCode.METHOD_NOT_ALLOWED: 405,
    WalletCode.IDEMPOTENCY_KEY_REUSED: 409,
    WalletCode.HOLD_VOIDED: 409,
    WalletCode.VOID_TARGET_NOT_HOLD: 409,
    WalletCode.VOID_TARGET_MISMATCH: 409,
    WalletCode.INSUFFICIENT_BALANCE: 422,
    WalletCode.BALANCE_LIMIT_EXCEEDED: 422,
    WalletCode.INJECTED_REJECTION: 422,
    WalletCode.WALLET_FAULT: 500,
    WalletCode.WALLET_UNAVAILABLE: 503,
    WalletCode.WALLET_HALTED: 503,
    WalletCode.INTERNAL_ERROR: 500,
}


class WalletError(Exception):
    """An expected refusal: nothing was applied, nothing recorded."""

    def __init__(self, code: WalletCode, message: str, **details: object) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details: dict[str, object] = details

    @property
    def status(self) -> int:
        return STATUS[self.code]


class InvariantBrokenError(AssertionError):
    """A wallet invariant does not hold: a bug. The service halts; nothing more is applied."""
