"""`FakeWallet.holds` (tests/engine/settlement_fakes.py) pages applied holds as the wallet
service does: holds only, none a void released, bounds after-exclusive and
before-inclusive, the user filter, (applied_at_ms, key) order, `next` only when more
follow. Tests of the exchange's use of the `Wallet` port lean on it."""

from __future__ import annotations

import asyncio
from typing import Any

from settlement_fakes import FakeClock, FakeWallet

from crossbook import wallet_protocol
from crossbook.engine.ports import Wallet
from crossbook.wallet_protocol import HoldsCursor, HoldsPage, WalletHold, WalletOp, WalletOpKind

HOLD, VOID, DEPOSIT = WalletOpKind.HOLD, WalletOpKind.VOID, WalletOpKind.DEPOSIT


def test_the_fake_pages_applied_holds_like_the_service() -> None:
    clock = FakeClock(1_000)
    fake = FakeWallet(clock)
    wallet: Wallet = fake
    for user_id in (1, 2):
        fake.setup(WalletOp(f"deposit:{user_id}", DEPOSIT, user_id, "USDT", 1_000))
    for at_ms, key, user_id in ((10, "h:b", 1), (10, "h:a", 2), (20, "h:c", 1), (30, "h:d", 1)):
        clock.now = at_ms
        fake.setup(WalletOp(key, HOLD, user_id, "USDT", 5))
    fake.setup(WalletOp("void:c", VOID, 1, "USDT", target_key="h:c"))
    fake.setup(WalletOp("void:ghost", VOID, 1, "USDT", target_key="h:ghost"))
    a, b, d = (
        WalletHold("h:a", 2, "USDT", 5, 10),
        WalletHold("h:b", 1, "USDT", 5, 10),
        WalletHold("h:d", 1, "USDT", 5, 30),
    )

    async def listed(before_ms: int, **bounds: Any) -> HoldsPage:
        return await wallet.holds(wallet_protocol.HoldsRequest(before_ms, **bounds))

    async def main() -> None:
        assert await listed(100) == HoldsPage((a, b, d), None)
        assert await listed(100, limit=2) == HoldsPage((a, b), HoldsCursor(10, "h:b"))
        assert await listed(100, after=HoldsCursor(10, "h:b"), limit=1) == HoldsPage((d,), None)
        assert await listed(29) == HoldsPage((a, b), None)
        assert await listed(30, applied_after_ms=10) == HoldsPage((d,), None)
        assert await listed(100, user_id=1) == HoldsPage((b, d), None)

    asyncio.run(main())
