"""In-memory fakes of the engine's ports.

`MemoryStore` applies each `CommitBatch` to plain dicts the way a database
store applies it to tables, and rebuilds `Exchange.state()` from them: it is
the executable statement of what a store must keep.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Collection, Sequence
from typing import Any

from crossbook.domain import (
    CreateAsset,
    CreateMarket,
    Deposit,
    Event,
    OrderStatus,
    OrderType,
    PlaceOrder,
    Side,
)
from crossbook.domain.exchange import BalanceState
from crossbook.engine.batch import CommitBatch, HoldFate
from crossbook.engine.ports import MAX_HOLD_LOOKUP_KEYS, ReconcileProgress, StoreUnavailableError

OPEN = {OrderStatus.OPEN.value, OrderStatus.PARTIALLY_FILLED.value}

SETUP = [
    CreateAsset("BTC", 8),
    CreateAsset("USDT", 8),
    CreateMarket("BTC", "USDT", "0.01", "0.00001", "0.00001", "1000"),
    Deposit(1, "BTC", 10 * 10**8),
    Deposit(2, "USDT", 1_000_000 * 10**8),
]


def limit(user_id: int, side: Side, price: int, lots: int, **extra: Any) -> PlaceOrder:
    return PlaceOrder(
        user_id, "BTC/USDT", side, OrderType.LIMIT, quantity_lots=lots, price_ticks=price, **extra
    )


class MemoryStore:
    def __init__(self) -> None:
        self.assets: dict[str, int] = {}
        self.markets: dict[str, dict[str, Any]] = {}
        self.balances: dict[tuple[int, str], tuple[int, int]] = {}
        self.net_deposits: dict[str, int] = {}
        self.orders: dict[int, dict[str, Any]] = {}
        self.trades: list[Any] = []
        self.events: list[Event] = []
        self.holds: dict[str, HoldFate] = {}  # remote-wallet mode: the first fate of each key
        self.counters: dict[str, int] | None = None
        self.commits = 0
        self.fail_next_commits = 0  # raise, outcome unknown to the engine (nothing written)
        self.refuse_next_commits = 0  # raise StoreUnavailableError(committed=False)
        self.lose_next_replies = 0  # commit, then raise as if the reply was lost
        self.gate: asyncio.Event | None = None  # when set up, commits wait for it
        self.load_gate: asyncio.Event | None = None  # when set up, load_state waits for it
        self.commit_entered = asyncio.Event()
        self.loads = 0

    async def load_state(self) -> dict[str, Any] | None:
        self.loads += 1
        if self.load_gate is not None:
            await self.load_gate.wait()
        if self.counters is None:
            return None
        return copy.deepcopy(
            {
                "counters": self.counters,
                "assets": sorted(self.assets.items()),
                "markets": [self.markets[s] for s in sorted(self.markets)],
                "balances": sorted((u, a, av, lo) for (u, a), (av, lo) in self.balances.items()),
                "net_deposits": sorted(self.net_deposits.items()),
                "orders": [o for _, o in sorted(self.orders.items()) if o["status"] in OPEN],
            }
        )

    async def commit(self, batch: CommitBatch) -> None:
        self.commit_entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next_commits:
            self.fail_next_commits -= 1
            raise ConnectionError("database went away")
        if self.refuse_next_commits:
            self.refuse_next_commits -= 1
            raise StoreUnavailableError("the write lock stayed taken", committed=False)
        self.assets.update(batch.assets)
        for row in batch.markets:
            self.markets[row["symbol"]] = self.markets.get(row["symbol"], {}) | dict(row)
        for user_id, asset, available, locked in batch.balances:
            self.balances[(user_id, asset)] = (available, locked)
        for asset, delta in batch.net_deposit_changes.items():
            self.net_deposits[asset] = self.net_deposits.get(asset, 0) + delta
        for record in batch.orders:
            self.orders[record["order_id"]] = dict(record)
        self.trades.extend(batch.trades)
        self.events.extend(batch.events)
        for fate in batch.holds:
            self.holds.setdefault(fate.hold_key, fate)
        self.counters = dict(batch.counters)
        self.commits += 1
        if self.lose_next_replies:
            self.lose_next_replies -= 1
            raise ConnectionError("connection lost during COMMIT")

    @property
    def committed_seq(self) -> int:
        return self.events[-1].seq if self.events else 0


class MemoryHoldFates:
    """The `HoldFates` port over a `MemoryStore`'s committed hold fates."""

    def __init__(self, store: MemoryStore, floor_ms: int = 0) -> None:
        self.store = store
        self.floor_ms = floor_ms
        self.watermark_ms = floor_ms
        self.lookups: list[int] = []  # keys asked per call

    async def decided(self, keys: Collection[str]) -> set[str]:
        assert len(keys) <= MAX_HOLD_LOOKUP_KEYS
        self.lookups.append(len(keys))
        return {key for key in keys if key in self.store.holds}

    async def progress(self) -> ReconcileProgress:
        return ReconcileProgress(self.floor_ms, self.watermark_ms)

    async def save_watermark(self, watermark_ms: int) -> None:
        self.watermark_ms = watermark_ms


class RecordingPublisher:
    """Records what was published, and checks it was committed first."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.events: list[Event] = []
        self._published = asyncio.Event()

    def publish(self, events: Sequence[Event], balances: Sequence[BalanceState]) -> None:
        assert events[-1].seq <= self.store.committed_seq, "published before commit"
        self.events.extend(events)
        self._published.set()

    async def until(self, condition: Callable[[list[Event]], bool], timeout_s: float) -> None:
        """Wait (at most `timeout_s`) until `condition(events published so far)` holds."""
        async with asyncio.timeout(timeout_s):
            while not condition(self.events):
                self._published.clear()
                await self._published.wait()


class FakeClock:
    def __init__(self, now_ms: int = 1_000) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now
