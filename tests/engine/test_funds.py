"""Funds (`crossbook.engine.funds`): balances, deposits and withdrawals, embedded or in
a wallet, on fakes of their ports.

Embedded: a transfer is an engine command whose outcome is reported under
`admin`, answered with the balance its commit left. In a wallet: one operation
under `admin:<kind>:<key>` (the caller's key makes a retry apply once), answered
with the balance read afterwards; the wallet's refusals become the engine
layer's errors, never a gateway's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from engine_fakes import SETUP, FakeClock, MemoryStore, RecordingPublisher
from settlement_fakes import FakeWallet, FaultKind

from crossbook.domain import DomainError, ErrorCode
from crossbook.engine.engine import Engine
from crossbook.engine.funds import (
    EmbeddedFunds,
    InvalidIdempotencyKeyError,
    TransferRefusedError,
    WalletFunds,
)
from crossbook.engine.order_entry import WalletOutageError
from crossbook.engine.read_model.records import StoredBalance
from crossbook.engine.submission import CommandSubmitter
from crossbook.wallet_protocol import WalletOpKind


class StoreBalances:
    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    async def list_balances(self, user_id: int) -> list[StoredBalance]:
        return [
            StoredBalance(u, asset, available, locked)
            for (u, asset), (available, locked) in sorted(self.store.balances.items())
            if u == user_id
        ]


def embedded(scenario: Callable[[EmbeddedFunds, list[tuple[str, str]]], Awaitable[None]]) -> None:
    async def main() -> None:
        store = MemoryStore()
        engine = Engine(store, RecordingPublisher(store), FakeClock())
        await engine.start()
        try:
            for command in SETUP:
                await engine.submit(command)
            outcomes: list[tuple[str, str]] = []

            def listen(action: str, refusal: Exception | None) -> None:
                code = "ok" if refusal is None else str(getattr(refusal, "code", refusal))
                outcomes.append((action, code))

            funds = EmbeddedFunds(CommandSubmitter(engine, listen), StoreBalances(store))
            await scenario(funds, outcomes)
        finally:
            await engine.stop()

    asyncio.run(main())


def test_embedded_transfers_are_engine_commands_answered_with_the_committed_balance() -> None:
    async def scenario(funds: EmbeddedFunds, outcomes: list[tuple[str, str]]) -> None:
        after = await funds.deposit(3, "BTC", 500, idempotency_key="ignored here")
        assert after == StoredBalance(3, "BTC", 500, 0)
        assert await funds.withdraw(3, "BTC", 200) == StoredBalance(3, "BTC", 300, 0)
        with pytest.raises(DomainError) as refused:
            await funds.withdraw(3, "BTC", 301)
        assert refused.value.code is ErrorCode.INSUFFICIENT_BALANCE
        assert await funds.balances(3) == [StoredBalance(3, "BTC", 300, 0)]
        assert outcomes == [("admin", "ok"), ("admin", "ok"), ("admin", "INSUFFICIENT_BALANCE")]

    embedded(scenario)


def test_wallet_transfers_use_the_callers_key_and_answer_the_balance_after() -> None:
    async def scenario() -> None:
        wallet = FakeWallet()
        funds = WalletFunds(wallet)
        assert await funds.deposit(3, "BTC", 500, "dep-1") == StoredBalance(3, "BTC", 500, 0)
        assert await funds.deposit(3, "BTC", 500, "dep-1") == StoredBalance(3, "BTC", 500, 0)
        assert wallet.outcomes("admin:deposit:dep-1") == ["applied", "replayed"]
        await funds.withdraw(3, "BTC", 100)
        (random_key,) = [k for k, _ in wallet.calls if k.startswith("admin:withdraw:")]
        assert len(random_key) == len("admin:withdraw:") + 32
        assert await funds.balances(3) == [StoredBalance(3, "BTC", 400, 0)]

    asyncio.run(scenario())


def test_wallet_refusals_become_engine_layer_errors() -> None:
    async def scenario() -> None:
        wallet = FakeWallet()
        funds = WalletFunds(wallet)
        await funds.deposit(3, "BTC", 500, "dep-1")
        with pytest.raises(TransferRefusedError) as reused:
            await funds.deposit(3, "BTC", 501, "dep-1")
        assert reused.value.code == "IDEMPOTENCY_KEY_REUSED"
        with pytest.raises(DomainError) as short:
            await funds.withdraw(3, "BTC", 501)
        assert short.value.code is ErrorCode.INSUFFICIENT_BALANCE
        assert (short.value.details["asset"], short.value.details["required"]) == ("BTC", 501)
        with pytest.raises(InvalidIdempotencyKeyError):
            await funds.deposit(3, "BTC", 1, "no spaces")
        calls = len(wallet.calls)
        with pytest.raises(InvalidIdempotencyKeyError):
            await funds.deposit(3, "BTC", 1, "")
        assert len(wallet.calls) == calls  # refused before the wallet is asked
        wallet.fail(FaultKind.DOWN, "admin:", times=1)
        with pytest.raises(WalletOutageError):
            await funds.deposit(3, "BTC", 1, "dep-2")
        assert wallet.outcomes(f"admin:{WalletOpKind.DEPOSIT}:dep-2") == ["down"]

    asyncio.run(scenario())
