"""A `Wallet` behind a circuit breaker: fail fast while the wallet service is down.

Every call asks the breaker first. Refused, it raises `WalletCircuitOpenError`
(a `WalletUnavailableError`, so callers treat it as transient and retry with the
same key later) without touching the wallet. Admitted, the outcome is recorded:
- `WalletUnavailableError` (timeout, connection lost, 5xx): a failure;
- a receipt, balances, a page of holds, or `WalletRejectedError`: a success, since the wallet
  answered (a refusal is about the request, not the wallet's health);
- anything else (cancellation, a bug): no verdict; if the call was the
  half-open probe its slot is released so that the next call may probe.

Invariant: a call refused by the breaker never reaches the inner wallet.
Limits: see `crossbook.engine.breaker` (outcomes are not tied to their call).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from crossbook.engine.breaker import BreakerState, CircuitBreaker
from crossbook.engine.ports import Wallet, WalletRejectedError, WalletUnavailableError
from crossbook.engine.read_model.records import StoredBalance
from crossbook.wallet_protocol import HoldsPage, HoldsRequest, WalletOp, WalletReceipt

T = TypeVar("T")


class WalletCircuitOpenError(WalletUnavailableError):
    """The breaker is open: the wallet was not called. Retry later with the same key."""


class GuardedWallet:
    __slots__ = ("_breaker", "_wallet")

    def __init__(self, wallet: Wallet, breaker: CircuitBreaker) -> None:
        self._wallet = wallet
        self._breaker = breaker

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    async def apply(self, op: WalletOp) -> WalletReceipt:
        return await self._guarded(lambda: self._wallet.apply(op))

    async def balances(self, user_id: int) -> list[StoredBalance]:
        return await self._guarded(lambda: self._wallet.balances(user_id))

    async def holds(self, request: HoldsRequest) -> HoldsPage:
        return await self._guarded(lambda: self._wallet.holds(request))

    async def _guarded(self, call: Callable[[], Awaitable[T]]) -> T:
        breaker = self._breaker
        if not breaker.allow():
            raise WalletCircuitOpenError(f"wallet circuit is {breaker.state}: not called")
        probing = breaker.state is BreakerState.HALF_OPEN
        try:
            result = await call()
        except WalletUnavailableError:
            breaker.record_failure()
            raise
        except WalletRejectedError:
            breaker.record_success()
            raise
        except BaseException:
            if probing:
                breaker.release_probe()
            raise
        breaker.record_success()
        return result
