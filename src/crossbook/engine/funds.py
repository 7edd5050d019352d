"""Funds: a user's balances, deposits and withdrawals, wherever balances live.

`Funds` is one interface with two implementations, chosen once by the
composition root like the order funding:
- `EmbeddedFunds`: balances are the engine's ledger. Reads come from the store
  (committed, DESIGN rule 4); a transfer is one engine command (`Deposit`,
  `Withdraw`), answered with the balance its commit left, and reported under
  the action `admin`. An idempotency key is not used: the engine's answer says
  whether it was done (`EngineUnavailableError`);
- `WalletFunds` (remote-wallet mode): balances live in the wallet service
  (behind the circuit breaker). A transfer is one wallet operation under the
  key `admin:<deposit|withdraw>:<key>`: with the caller's key a retry after
  `WalletOutageError` (applied or not?) applies once; without one each call is a
  new transfer. Its answer is the balance the wallet reports afterwards.

Errors raised: `DomainError` (INSUFFICIENT_BALANCE …), `WalletOutageError`,
`TransferRefusedError` (the wallet refused the transfer for another reason, e.g.
IDEMPOTENCY_KEY_REUSED), `InvalidIdempotencyKeyError`, and the engine's
`EngineOverloadedError` / `EngineUnavailableError`.

Known limit: in remote-wallet mode the balance answered is read after the
transfer, so a concurrent change of the same balance may show in it.
"""

from __future__ import annotations

import re
import uuid
from typing import Protocol

from crossbook.domain import Deposit, Deposited, Withdraw, Withdrawn
from crossbook.engine.order_entry import WalletOutageError
from crossbook.engine.ports import ReadStore, Wallet, WalletRejectedError, WalletUnavailableError
from crossbook.engine.read_model.records import StoredBalance
from crossbook.engine.submission import CommandSubmitter
from crossbook.engine.wallet_funding import insufficient_balance
from crossbook.wallet_protocol import WalletCode, WalletOp, WalletOpKind

IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class TransferRefusedError(Exception):
    """The wallet refused a transfer (not for lack of funds); nothing was applied."""

    def __init__(self, code: str, message: str, details: dict[str, object]) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details


class InvalidIdempotencyKeyError(Exception):
    """An idempotency key that is not 1-64 of `A-Z a-z 0-9 . _ : -`."""


class Funds(Protocol):
    async def balances(self, user_id: int) -> list[StoredBalance]:
        """The user's balances, by asset."""
        ...

    async def deposit(
        self, user_id: int, asset: str, units: int, idempotency_key: str | None = None
    ) -> StoredBalance:
        """Credit the user's available balance; the balance after."""
        ...

    async def withdraw(
        self, user_id: int, asset: str, units: int, idempotency_key: str | None = None
    ) -> StoredBalance:
        """Debit the user's available balance; the balance after."""
        ...


class EmbeddedFunds:
    __slots__ = ("_store", "_submitter")

    def __init__(self, submitter: CommandSubmitter, store: ReadStore) -> None:
        self._submitter = submitter
        self._store = store

    async def balances(self, user_id: int) -> list[StoredBalance]:
        return await self._store.list_balances(user_id)

    async def deposit(
        self, user_id: int, asset: str, units: int, idempotency_key: str | None = None
    ) -> StoredBalance:
        return await self._transfer(Deposit(user_id, asset, units))

    async def withdraw(
        self, user_id: int, asset: str, units: int, idempotency_key: str | None = None
    ) -> StoredBalance:
        return await self._transfer(Withdraw(user_id, asset, units))

    async def _transfer(self, command: Deposit | Withdraw) -> StoredBalance:
        uid = command.user_id
        events = await self._submitter.submit(command, "admin")
        moved = next(e for e in events if isinstance(e, Deposited | Withdrawn))
        return StoredBalance(uid, command.asset, moved.available_units, moved.locked_units)


class WalletFunds:
    __slots__ = ("_wallet",)

    def __init__(self, wallet: Wallet) -> None:
        self._wallet = wallet  # behind the circuit breaker

    async def balances(self, user_id: int) -> list[StoredBalance]:
        try:
            return await self._wallet.balances(user_id)
        except WalletUnavailableError as error:
            raise WalletOutageError(str(error)) from None
        except WalletRejectedError as error:
            raise WalletOutageError(error.code) from None

    async def deposit(
        self, user_id: int, asset: str, units: int, idempotency_key: str | None = None
    ) -> StoredBalance:
        return await self._transfer(WalletOpKind.DEPOSIT, user_id, asset, units, idempotency_key)

    async def withdraw(
        self, user_id: int, asset: str, units: int, idempotency_key: str | None = None
    ) -> StoredBalance:
        return await self._transfer(WalletOpKind.WITHDRAW, user_id, asset, units, idempotency_key)

    async def _transfer(
        self, kind: WalletOpKind, user_id: int, asset: str, units: int, idempotency_key: str | None
    ) -> StoredBalance:
        if idempotency_key is not None and not IDEMPOTENCY_KEY.fullmatch(idempotency_key):
            raise InvalidIdempotencyKeyError(idempotency_key)
        key = f"admin:{kind}:{idempotency_key or uuid.uuid4().hex}"
        await self._apply(WalletOp(key, kind, user_id, asset, units))
        balances = await self.balances(user_id)
        return next((b for b in balances if b.asset == asset), StoredBalance(user_id, asset, 0, 0))

    async def _apply(self, op: WalletOp) -> None:
        try:
            await self._wallet.apply(op)
        except WalletRejectedError as error:
            if error.code == WalletCode.INSUFFICIENT_BALANCE:
                raise insufficient_balance(op.asset, op.amount_units, error) from None
            raise TransferRefusedError(error.code, error.message, error.details) from None
        except WalletUnavailableError as error:
            raise WalletOutageError(str(error)) from None
