"""The engine's ports: what it needs from outside, as small Protocols.

Adapters implement them (the SQL store, the wallet client); tests use fakes.

`Store` is the engine's write side. `ReadStore` is what the API reads the
committed truth through (DESIGN rule 4: whatever it returns has committed);
every list it returns is bounded by its `limit` (1 to `MAX_READ_LIMIT`); it
never writes. `UserStore` creates and reads users, `SettlementStore` is the
settlement outbox of remote-wallet mode, `Wallet` the external wallet service,
`Publisher` receives committed events, `Clock` tells the time.

Outages: a store that cannot reach its database, or does not hear back in
time, raises `StoreUnavailableError` (one exception whatever the driver), from
the `ReadStore` methods as from `Store.commit`; every call returns or raises
within a bounded time of the adapter's.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from crossbook.domain import Event, OrderStatus
from crossbook.domain.exchange import BalanceState
from crossbook.engine.batch import CommitBatch
from crossbook.engine.read_model.records import (
    Candle,
    StoredBalance,
    StoredOrder,
    StoredTrade,
    StoredUser,
)
from crossbook.engine.settlement_plan import SettlementStatus, StoredSettlement
from crossbook.wallet_protocol import HoldsPage, HoldsRequest, WalletOp, WalletReceipt

MAX_READ_LIMIT = 1_000


class StoreUnavailableError(Exception):
    """The database did not answer (connection lost or refused, timed out, locked by
    another session past the deadline); nothing is wrong with the request: retry later.

    From `Store.commit`, `committed` tells what the store knows of the batch: False
    when it failed before the batch's COMMIT was sent, so none of it was written; None
    when it cannot know (the connection failed during COMMIT), which only the store's
    truth (`Store.load_state`) settles. Elsewhere it is None and means nothing.
    """

    def __init__(self, message: str, *, committed: bool | None = None) -> None:
        super().__init__(message)
        self.committed = committed


class Store(Protocol):
    """The durable truth. `commit` is one transaction: all of the batch or none of it."""

    async def load_state(self) -> dict[str, Any] | None:
        """The committed exchange in `Exchange.state()` form (open orders only), or None.

        After a failed commit it is also the store's recovery: it returns only once any
        earlier attempt has ended and the store can take commits again (else it raises).
        """
        ...

    async def commit(self, batch: CommitBatch) -> None:
        """Write all of `batch` or none of it; `StoreUnavailableError` when the database
        fails or stalls (see its `committed`). Any other exception leaves the outcome to
        be read from `load_state()`."""
        ...


class Publisher(Protocol):
    """Receives a batch's events, and the final value of every balance it changed, only
    after the transaction holding them committed."""

    def publish(self, events: Sequence[Event], balances: Sequence[BalanceState]) -> None: ...


class Clock(Protocol):
    def now_ms(self) -> int: ...


class ReadStore(Protocol):
    """Committed reads. Another user's order is None, exactly as an unknown one."""

    async def get_order(self, user_id: int, order_id: int) -> StoredOrder | None: ...

    async def get_order_by_client_id(
        self, user_id: int, client_order_id: str
    ) -> StoredOrder | None: ...

    async def list_orders(
        self,
        user_id: int,
        *,
        statuses: Collection[OrderStatus] | None = None,
        symbol: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        before_order_id: int | None = None,
        after_order_id: int | None = None,
        limit: int = 100,
    ) -> list[StoredOrder]:
        """Newest first."""
        ...

    async def list_market_trades(
        self,
        symbol: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        before_trade_id: int | None = None,
        after_trade_id: int | None = None,
        limit: int = 100,
    ) -> list[StoredTrade]:
        """Newest first."""
        ...

    async def list_user_trades(
        self,
        user_id: int,
        *,
        symbol: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        before_trade_id: int | None = None,
        after_trade_id: int | None = None,
        limit: int = 100,
    ) -> list[StoredTrade]:
        """Newest first."""
        ...

    async def list_balances(
        self, user_id: int, *, limit: int = MAX_READ_LIMIT
    ) -> list[StoredBalance]: ...

    async def candles(
        self,
        symbol: str,
        interval_ms: int,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 100,
    ) -> list[Candle]:
        """The newest `limit` intervals with trades in the range, returned oldest first."""
        ...

    async def ping(self) -> None:
        """Raise if the database cannot answer a trivial query."""
        ...


class UserStore(Protocol):
    """Users (accounts, not trading state): the one write outside the engine's batches."""

    async def create_user(self, name: str | None, created_at_ms: int) -> StoredUser: ...

    async def get_user(self, user_id: int) -> StoredUser | None: ...

    async def list_users(self, *, after_user_id: int = 0, limit: int = 100) -> list[StoredUser]:
        """By id, ascending."""
        ...

    async def last_user_id(self) -> int:
        """The highest user id (0 without users): users are 1..it, each new one the next."""
        ...


class SettlementStore(Protocol):
    """The settlement outbox (remote-wallet mode), written by the engine's commits."""

    async def pending_settlement_ids(self, *, after_id: int, limit: int) -> list[int]:
        """PENDING settlements with an id above `after_id`, ascending."""
        ...

    async def get_settlement(self, settlement_id: int) -> StoredSettlement | None: ...

    async def record_settlements(self, settlements: Sequence[StoredSettlement]) -> None:
        """Store their status, attempts, reason, timestamps and legs (and their trades'
        status), all in one transaction."""
        ...

    async def list_settlements(
        self, status: SettlementStatus, *, after_id: int = 0, limit: int = 100
    ) -> list[StoredSettlement]: ...

    async def count_settlements(self, status: SettlementStatus) -> int: ...


MAX_HOLD_LOOKUP_KEYS = 1_000  # keys `HoldFates.decided` takes at once (a page of holds)


@dataclass(frozen=True, slots=True)
class ReconcileProgress:
    """The hold reconciler's progress, in the wallet's `applied_at_ms`."""

    floor_ms: int  # holds applied at or before it are never reconciled (made before fates)
    watermark_ms: int  # where the last full pass ended


class HoldFates(Protocol):
    """The fate of the wallet holds committed commands named (remote-wallet mode): the
    engine's commits record them (`HoldConsumed`, `HoldVoided`); the hold reconciler
    reads them and keeps its progress here."""

    async def decided(self, keys: Collection[str]) -> set[str]:
        """Those of `keys` (at most `MAX_HOLD_LOOKUP_KEYS`) a committed command consumed
        or voided."""
        ...

    async def progress(self) -> ReconcileProgress: ...

    async def save_watermark(self, watermark_ms: int) -> None: ...


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
    """The external wallet service (`crossbook.wallet_protocol`), one idempotent operation
    at a time. Failures come in two kinds, and callers must treat them differently:
    `WalletUnavailableError` (transient or ambiguous: retry with the same key, never
    compensate) and `WalletRejectedError` (refused: nothing was applied)."""

    async def apply(self, op: WalletOp) -> WalletReceipt: ...

    async def balances(self, user_id: int) -> list[StoredBalance]:
        """The user's balances, by asset code."""
        ...

    async def holds(self, request: HoldsRequest) -> HoldsPage:
        """One page of the holds the wallet still has applied (no void released them), as
        `request` bounds it (see `HoldsRequest`). Page on by asking the same bounds with
        `after=page.next` until it is None."""
        ...
