"""The wallet service's ledger: the domain `Ledger`, plus transfers that arrive one leg at a time.

The exchange settles a trade in one step (`Ledger.settle_fill`); the wallet
receives its legs as separate operations: a `debit` takes the amount out of one
account (available or locked) into "in transit", a `credit` puts it from
transit into another. `in_transit[asset]` is what debits took out that credits
have not yet put back; it may be negative while credits run ahead of their
debits (the legs of one transfer arrive in any order).

Invariant, per asset: sum(available + locked over all accounts) + in_transit
== net_deposits. `WalletService` checks it after every batch for the assets the
batch touched, and in full when it loads the ledger and in `totals()`; a broken
one halts the service.

`require_locked` and `debit` refuse with INSUFFICIENT_BALANCE before changing
anything; `credit` never refuses here (the service bounds each account's total
before it credits).
"""

from __future__ import annotations

from crossbook.domain.errors import DomainError, ErrorCode
from crossbook.domain.ledger import Ledger


class WalletLedger(Ledger):
    __slots__ = ("in_transit",)

    def __init__(self) -> None:
        super().__init__()
        self.in_transit: dict[str, int] = {}

    def require_locked(self, user_id: int, asset: str, amount: int) -> None:
        """Refuse (changing nothing) unless `amount` is locked."""
        have = self.locked(user_id, asset)
        if have < amount:
            raise DomainError(
                ErrorCode.INSUFFICIENT_BALANCE,
                f"insufficient locked {asset} balance",
                asset=asset,
                required=amount,
                locked=have,
            )

    def debit(self, user_id: int, asset: str, amount: int, *, from_locked: bool) -> None:
        """Take `amount` out of the account (into transit), or refuse changing nothing."""
        assert amount > 0, amount
        if from_locked:
            self.require_locked(user_id, asset, amount)
            self._get(user_id, asset).locked -= amount
        else:
            self.require_available(user_id, asset, amount)
            self._get(user_id, asset).available -= amount
        self.in_transit[asset] = self.in_transit.get(asset, 0) + amount

    def credit(self, user_id: int, asset: str, amount: int, *, to_locked: bool) -> None:
        """Put `amount` into the account (out of transit)."""
        assert amount > 0, amount
        balance = self._get(user_id, asset)
        if to_locked:
            balance.locked += amount
        else:
            balance.available += amount
        self.in_transit[asset] = self.in_transit.get(asset, 0) - amount
