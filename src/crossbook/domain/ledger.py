"""Balances per (user, asset): `available` and `locked`, in integer minor units.

Money enters only by `deposit` and leaves only by `withdraw`; every other move
is between accounts or between a user's own available and locked funds, so per
asset the sum over all accounts (fee account included) always equals
`net_deposits[asset]`. Remote-wallet mode is the exception: `fund` lends the
engine money the wallet holds, outside `net_deposits`, and `sweep` hands it back.

Invariants:
- no balance is ever negative: `withdraw` and `reserve` refuse with
  INSUFFICIENT_BALANCE before changing anything; `release` and `settle_fill`
  take from locked funds that the caller proved are there (assertions);
- a trade is settled from the buyer's and seller's locked funds only, so it
  cannot fail for lack of funds (DESIGN rule 3).

Every mutated balance is remembered in `touched` (first-touch order) until the
caller drains it, which is how commands report balance changes.
"""

from __future__ import annotations

from typing import Final

from crossbook.domain._compile_hints import mypyc_attr
from crossbook.domain.errors import DomainError, ErrorCode
from crossbook.domain.settlement import TradeLegs

FEE_ACCOUNT_ID: Final = 0
BalanceKey = tuple[int, str]


class Balance:
    __slots__ = ("available", "locked")

    def __init__(self) -> None:
        self.available = 0
        self.locked = 0

    @property
    def total(self) -> int:
        return self.available + self.locked


# Compiled, it still admits Python subclasses (the wallet service's `WalletLedger`);
# mypyc's native classes refuse them otherwise. (No effect on Python; see `_compile_hints`.)
@mypyc_attr(allow_interpreted_subclasses=True)
class Ledger:
    __slots__ = ("balances", "net_deposits", "touched")

    def __init__(self) -> None:
        self.balances: dict[BalanceKey, Balance] = {}
        self.net_deposits: dict[str, int] = {}
        self.touched: dict[BalanceKey, Balance] = {}

    def _get(self, user_id: int, asset: str) -> Balance:
        key = (user_id, asset)
        balance = self.balances.get(key)
        if balance is None:
            balance = self.balances[key] = Balance()
        self.touched[key] = balance
        return balance

    def available(self, user_id: int, asset: str) -> int:
        balance = self.balances.get((user_id, asset))
        return 0 if balance is None else balance.available

    def locked(self, user_id: int, asset: str) -> int:
        balance = self.balances.get((user_id, asset))
        return 0 if balance is None else balance.locked

    def deposit(self, user_id: int, asset: str, amount: int) -> Balance:
        """Add `amount` to the available balance; that balance."""
        assert amount > 0, amount
        balance = self._get(user_id, asset)
        balance.available += amount
        self.net_deposits[asset] = self.net_deposits.get(asset, 0) + amount
        return balance

    def withdraw(self, user_id: int, asset: str, amount: int) -> Balance:
        """Take `amount` from the available balance (or refuse); that balance."""
        assert amount > 0, amount
        self.require_available(user_id, asset, amount)
        balance = self._get(user_id, asset)
        balance.available -= amount
        self.net_deposits[asset] -= amount
        return balance

    def require_available(self, user_id: int, asset: str, amount: int) -> None:
        """Refuse (changing nothing) unless `amount` is available."""
        have = self.available(user_id, asset)
        if have < amount:
            raise DomainError(
                ErrorCode.INSUFFICIENT_BALANCE,
                f"insufficient {asset} balance",
                asset=asset,
                required=amount,
                available=have,
            )

    def reserve(self, user_id: int, asset: str, amount: int) -> None:
        """Move `amount` from available to locked, or refuse changing nothing."""
        if amount == 0:
            return
        assert amount > 0, amount
        key = (user_id, asset)
        balance = self.balances.get(key)
        if balance is None or balance.available < amount:
            self.require_available(user_id, asset, amount)  # refuses
        # (one lookup where `require_available` and `_get` take three calls: 3 % of a
        # placement in `crossbook bench engine`)
        assert balance is not None
        self.touched[key] = balance
        balance.available -= amount
        balance.locked += amount

    def release(self, user_id: int, asset: str, amount: int) -> None:
        """Move `amount` from locked back to available."""
        if amount == 0:
            return
        balance = self._get(user_id, asset)
        assert 0 < amount <= balance.locked, (user_id, asset, amount, balance.locked)
        balance.locked -= amount
        balance.available += amount

    def settle_fill(
        self, buyer_id: int, seller_id: int, base: str, quote: str, legs: TradeLegs
    ) -> None:
        """Settle one trade's legs (`settlement`) from the buyer's and seller's locked funds."""
        buyer_pays = legs.buyer_pays_units
        base_units = legs.base_units
        # The legs' balances are looked up here rather than through `_get`, in the same
        # order (it is the order of `touched`): once per trade, 5 % of a fill in
        # `crossbook bench engine`.
        balances, touched = self.balances, self.touched
        key = (buyer_id, quote)
        buyer_quote = touched[key] = balances[key]  # holds the buyer's locked funds
        key = (seller_id, base)
        seller_base = touched[key] = balances[key]  # holds the seller's locked funds
        assert buyer_quote.locked >= buyer_pays, (buyer_id, buyer_quote.locked, buyer_pays)
        assert seller_base.locked >= base_units, (seller_id, seller_base.locked, base_units)
        assert 0 <= legs.seller_fee_units <= legs.notional_units, (
            legs.seller_fee_units,
            legs.notional_units,
        )
        buyer_quote.locked -= buyer_pays
        seller_base.locked -= base_units
        key = (buyer_id, base)
        balance = balances.get(key)
        if balance is None:
            balance = balances[key] = Balance()
        touched[key] = balance
        balance.available += base_units
        key = (seller_id, quote)
        balance = balances.get(key)
        if balance is None:
            balance = balances[key] = Balance()
        touched[key] = balance
        balance.available += legs.seller_receives_units
        fees = legs.fee_units
        if fees:
            self._get(FEE_ACCOUNT_ID, quote).available += fees

    def fund(self, user_id: int, asset: str, amount: int) -> None:
        """Add `amount` that an external wallet holds for the user (remote-wallet mode).

        Unlike `deposit` it does not count in `net_deposits`: the money is the wallet's,
        lent to the engine until `sweep` hands it back.
        """
        assert amount > 0, amount
        self._get(user_id, asset).available += amount

    def sweep(self) -> list[tuple[BalanceKey, int]]:
        """Empty the available part of every touched balance; return what was taken.

        In remote-wallet mode whatever becomes available (trade proceeds, released
        reservations) belongs back in the wallet: the settlement outbox carries it there.
        """
        swept: list[tuple[BalanceKey, int]] = []
        for key, balance in self.touched.items():
            if balance.available:
                swept.append((key, balance.available))
                balance.available = 0
        return swept

    def drain_touched(self) -> list[tuple[BalanceKey, Balance]]:
        touched = list(self.touched.items())
        self.touched.clear()
        return touched
