"""The guarded wallet: the breaker decides, the wallet's answers feed the breaker."""

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from crossbook.engine.breaker import BreakerState, CircuitBreaker
from crossbook.engine.guarded_wallet import GuardedWallet, WalletCircuitOpenError
from crossbook.engine.ports import Wallet, WalletRejectedError, WalletUnavailableError
from crossbook.engine.read_model.records import StoredBalance
from crossbook.wallet_protocol import (
    HoldsCursor,
    HoldsPage,
    HoldsRequest,
    WalletHold,
    WalletOp,
    WalletOpKind,
    WalletReceipt,
)

T = TypeVar("T")
OP = WalletOp("hold-1", WalletOpKind.HOLD, 7, "USDT", 1_500)
RECEIPT = WalletReceipt("hold-1", 1_500, 123, replayed=False)
BALANCES = [StoredBalance(7, "USDT", 100, 5)]
PAGE = HoldsPage((WalletHold("hold-1", 7, "USDT", 1_500, 123),), HoldsCursor(123, "hold-1"))


class FakeClock:
    def __init__(self) -> None:
        self.now_ms = 0

    def __call__(self) -> int:
        return self.now_ms


class FakeWallet:
    """Answers from a script: each call takes the next outcome (an exception is raised).

    With `gate` set, every call sets `entered` and then waits for the gate (a call in flight).
    """

    def __init__(self, *outcomes: object) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[object] = []
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def apply(self, op: WalletOp) -> WalletReceipt:
        outcome = await self._answer(op)
        assert isinstance(outcome, WalletReceipt)
        return outcome

    async def balances(self, user_id: int) -> list[StoredBalance]:
        outcome = await self._answer(user_id)
        assert isinstance(outcome, list)
        return outcome

    async def holds(self, request: HoldsRequest) -> HoldsPage:
        outcome = await self._answer(request)
        assert isinstance(outcome, HoldsPage)
        return outcome

    async def _answer(self, call: object) -> object:
        self.calls.append(call)
        if self.gate is not None:
            self.entered.set()
            await self.gate.wait()
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def guarded(
    wallet: FakeWallet, threshold: int = 2, reset_after_ms: int = 1_000
) -> tuple[GuardedWallet, CircuitBreaker, FakeClock]:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold, reset_after_ms, clock)
    return GuardedWallet(wallet, breaker), breaker, clock


def unavailable() -> WalletUnavailableError:
    return WalletUnavailableError("timed out")


def test_it_is_a_wallet() -> None:
    wallet: Wallet = guarded(FakeWallet())[0]
    assert isinstance(wallet, GuardedWallet)


def test_answers_pass_through_and_count_as_successes() -> None:
    inner = FakeWallet(unavailable(), RECEIPT, BALANCES)
    wallet, breaker, _ = guarded(inner)
    with pytest.raises(WalletUnavailableError):
        run(wallet.apply(OP))
    assert breaker.consecutive_failures == 1
    assert run(wallet.apply(OP)) == RECEIPT
    assert breaker.consecutive_failures == 0
    assert run(wallet.balances(7)) == BALANCES
    assert inner.calls == [OP, OP, 7]


def test_holds_pass_through_with_every_argument_and_feed_the_breaker() -> None:
    cursor = HoldsCursor(100, "hold-0")
    inner = FakeWallet(unavailable(), PAGE, PAGE)
    wallet, breaker, _ = guarded(inner, threshold=2)
    requests = (
        HoldsRequest(applied_before_ms=500),
        HoldsRequest(applied_before_ms=500, applied_after_ms=5, user_id=7, after=cursor),
        HoldsRequest(applied_before_ms=9, limit=1),
    )
    with pytest.raises(WalletUnavailableError):
        run(wallet.holds(requests[0]))
    assert breaker.consecutive_failures == 1
    assert run(wallet.holds(requests[1])) is PAGE
    assert breaker.consecutive_failures == 0
    assert run(wallet.holds(requests[2])) is PAGE
    assert len(inner.calls) == len(requests)
    assert all(call is request for call, request in zip(inner.calls, requests, strict=True))


def test_a_rejection_is_re_raised_and_counts_as_a_success() -> None:
    refusal = WalletRejectedError("INSUFFICIENT_BALANCE", "not enough", {"asset": "USDT"})
    inner = FakeWallet(unavailable(), refusal)
    wallet, breaker, _ = guarded(inner)
    with pytest.raises(WalletUnavailableError):
        run(wallet.apply(OP))
    with pytest.raises(WalletRejectedError) as raised:
        run(wallet.apply(OP))
    assert raised.value is refusal
    assert breaker.consecutive_failures == 0
    assert breaker.state is BreakerState.CLOSED


def test_it_opens_after_the_threshold_and_then_fails_fast_without_calling() -> None:
    inner = FakeWallet(unavailable(), unavailable())
    wallet, breaker, _ = guarded(inner, threshold=2)
    for _ in range(2):
        with pytest.raises(WalletUnavailableError):
            run(wallet.apply(OP))
    assert breaker.state is BreakerState.OPEN
    for call in (wallet.apply(OP), wallet.balances(7), wallet.holds(HoldsRequest(1))):
        with pytest.raises(WalletCircuitOpenError):
            run(call)
    assert len(inner.calls) == 2


def test_circuit_open_is_a_transient_error() -> None:
    assert issubclass(WalletCircuitOpenError, WalletUnavailableError)


def test_a_successful_probe_closes_and_a_failed_one_reopens() -> None:
    inner = FakeWallet(unavailable(), unavailable(), RECEIPT)
    wallet, breaker, clock = guarded(inner, threshold=1, reset_after_ms=1_000)
    with pytest.raises(WalletUnavailableError):
        run(wallet.apply(OP))
    clock.now_ms += 1_000
    with pytest.raises(WalletUnavailableError) as raised:
        run(wallet.apply(OP))  # the probe reaches the wallet and fails
    assert not isinstance(raised.value, WalletCircuitOpenError)
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(WalletCircuitOpenError):
        run(wallet.apply(OP))
    clock.now_ms += 1_000
    assert run(wallet.apply(OP)) == RECEIPT
    assert breaker.state is BreakerState.CLOSED
    assert len(inner.calls) == 3


def test_only_one_probe_at_a_time() -> None:
    async def main() -> None:
        inner = FakeWallet(unavailable(), RECEIPT)
        wallet, breaker, clock = guarded(inner, threshold=1)
        with pytest.raises(WalletUnavailableError):
            await wallet.apply(OP)
        clock.now_ms += 1_000
        inner.gate = asyncio.Event()
        probe = asyncio.create_task(wallet.apply(OP))
        await inner.entered.wait()  # the probe is in flight
        assert breaker.state is BreakerState.HALF_OPEN
        with pytest.raises(WalletCircuitOpenError):
            await wallet.balances(7)
        inner.gate.set()
        assert await probe == RECEIPT
        assert breaker.state is BreakerState.CLOSED
        assert inner.calls == [OP, OP]

    run(main())


def test_a_cancelled_probe_releases_its_slot() -> None:
    async def main() -> None:
        inner = FakeWallet(unavailable(), BALANCES)
        wallet, breaker, clock = guarded(inner, threshold=1)
        with pytest.raises(WalletUnavailableError):
            await wallet.apply(OP)
        clock.now_ms += 1_000
        inner.gate = asyncio.Event()
        probe = asyncio.create_task(wallet.apply(OP))
        await inner.entered.wait()
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
        assert breaker.state is BreakerState.HALF_OPEN
        inner.gate.set()
        assert await wallet.balances(7) == BALANCES  # the next call may probe
        assert breaker.state is BreakerState.CLOSED

    run(main())


def test_a_cancelled_call_while_closed_is_not_a_failure() -> None:
    async def main() -> None:
        inner = FakeWallet()
        inner.gate = asyncio.Event()
        wallet, breaker, _ = guarded(inner, threshold=1)
        call = asyncio.create_task(wallet.apply(OP))
        await inner.entered.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert breaker.state is BreakerState.CLOSED
        assert breaker.consecutive_failures == 0

    run(main())


def test_an_unexpected_error_in_a_probe_releases_its_slot_and_propagates() -> None:
    inner = FakeWallet(unavailable(), KeyError("bug"), RECEIPT)
    wallet, breaker, clock = guarded(inner, threshold=1)
    with pytest.raises(WalletUnavailableError):
        run(wallet.apply(OP))
    clock.now_ms += 1_000
    with pytest.raises(KeyError):
        run(wallet.apply(OP))
    assert breaker.state is BreakerState.HALF_OPEN
    assert run(wallet.apply(OP)) == RECEIPT
    assert breaker.state is BreakerState.CLOSED
