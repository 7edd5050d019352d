"""Test helpers for the SQL store: a seeded driver that runs a real `Exchange` the
way the engine will, and builds one `CommitBatch` per batch of commands.

`Driver` executes commands, calls `BatchBuilder.add` after every successful
`execute` (rejections are expected and skipped), and `take_batch` builds the
batch from the exchange, exactly as an engine would. `random_command` draws from
every kind of command: limit orders (GTC/IOC/FOK/GTD, post-only, client ids),
market orders by quantity and by quote budget, stop-limit and stop-market
orders, cancels (by id and client id, sometimes of another user's order), amends,
deposits, withdrawals, time ticks (which expire GTD orders) and market halts.

Markets: BTC/USDT with fees, and ETH/BTC with zero fees and an 18-decimal base
(so lots are 10**15 minor units). Prices stay within a few ticks of a mid so
orders cross, partially fill and trigger stops often.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from random import Random
from typing import Any

from sqlalchemy import Connection, text

from crossbook.domain import (
    AmendOrder,
    CancelOrder,
    Command,
    CreateAsset,
    CreateMarket,
    Deposit,
    DomainError,
    Event,
    Exchange,
    MarketStatus,
    OrderType,
    PlaceOrder,
    SetMarketStatus,
    Side,
    StpMode,
    Tick,
    TimeInForce,
    TradeExecuted,
    Withdraw,
)
from crossbook.domain.exchange import BalanceState
from crossbook.domain.orders import order_record
from crossbook.engine.batch import BatchBuilder, CommitBatch
from crossbook.sql_support.migrate import run_with_connection

USERS = (1, 2, 3, 4, 5)
BTC_USDT = "BTC/USDT"
ETH_BTC = "ETH/BTC"
# symbol -> (mid price ticks, max lots per order)
MARKET_SHAPES = {BTC_USDT: (3_000_000, 50), ETH_BTC: (5_000, 40)}
SETUP: list[Command] = [
    CreateAsset("BTC", 8),
    CreateAsset("USDT", 6),
    CreateAsset("ETH", 18),
    CreateMarket("BTC", "USDT", "0.01", "0.0001", "0.0001", "1000"),
    CreateMarket(
        "ETH",
        "BTC",
        "0.00001",
        "0.001",
        "0.001",
        "100",
        maker_fee_rate="0",
        taker_fee_rate="0",
    ),
    *(Deposit(user, "BTC", 10_000_000_000) for user in USERS),  # 100 BTC
    *(Deposit(user, "USDT", 10_000_000_000_000) for user in USERS),  # 10,000,000 USDT
    # 1.5 ETH each: at 18 decimals an asset's whole supply must stay below 2**63 wei (~9.2 ETH)
    *(Deposit(user, "ETH", 15 * 10**17) for user in USERS),
]
TABLES = (
    "assets",
    "markets",
    "users",
    "balances",
    "asset_totals",
    "ledger_entries",
    "orders",
    "trades",
    "candles",
    "events",
    "engine_state",
)


def expected_state(exchange: Exchange) -> dict[str, Any]:
    """`exchange.state()` without books and stop books (what `load_state` returns)."""
    state = exchange.state()
    for market in state["markets"]:
        del market["book"], market["stops"]
    return state


class Driver:
    """A real exchange driven by seeded random commands, batched as an engine would."""

    def __init__(self, seed: int, exchange: Exchange | None = None) -> None:
        self.rng = Random(seed)
        self.exchange = exchange or Exchange()
        self.builder = BatchBuilder()
        self.events: list[Event] = []  # every event of every successful command
        self.records: dict[int, dict[str, Any]] = {}  # latest record of every order
        self.client_ids = 0

    # -- running commands --------------------------------------------------------

    def execute(self, command: Command) -> list[Event]:
        """Execute one command; [] if the exchange refused it."""
        try:
            events = self.exchange.execute(command)
        except DomainError:
            return []
        self.builder.add(self.exchange, events)
        self.events.extend(events)
        for order in self.exchange.touched_orders.values():
            self.records[order.order_id] = order_record(order)
        return events

    def setup(self) -> None:
        for command in SETUP:
            assert self.execute(command), command

    def run(self, commands: int) -> None:
        for _ in range(commands):
            self.execute(self.random_command())

    def take_batch(self) -> CommitBatch:
        batch = self.builder.build(self.exchange)
        self.builder = BatchBuilder()
        return batch

    @property
    def trades(self) -> list[TradeExecuted]:
        return [e for e in self.events if isinstance(e, TradeExecuted)]

    # -- random commands ----------------------------------------------------------------

    def random_command(self) -> Command:
        for symbol, market in self.exchange.markets.items():
            if market.status is MarketStatus.HALTED and self.rng.random() < 0.3:
                return SetMarketStatus(symbol, MarketStatus.ACTIVE)
        draw = self.rng.random()
        if draw < 0.40:
            return self.limit_order()
        if draw < 0.50:
            return self.market_order()
        if draw < 0.58:
            return self.stop_order()
        if draw < 0.72:
            return self.cancel()
        if draw < 0.82:
            return self.amend()
        if draw < 0.87:
            return self.money_move()
        if draw < 0.99:
            return Tick(self.exchange.now_ms + self.rng.randrange(0, 3_000))
        return SetMarketStatus(self.rng.choice(list(MARKET_SHAPES)), MarketStatus.HALTED)

    def _order_basics(self) -> tuple[int, str, Side, int, int]:
        symbol = self.rng.choice(list(MARKET_SHAPES))
        mid, max_lots = MARKET_SHAPES[symbol]
        return (
            self.rng.choice(USERS),
            symbol,
            self.rng.choice((Side.BUY, Side.SELL)),
            mid + self.rng.randint(-12, 12),
            self.rng.randint(1, max_lots),
        )

    def _client_id(self) -> str | None:
        if self.rng.random() < 0.3:
            self.client_ids += 1
            return f"c-{self.client_ids % 50}"  # reused, so some collide with open orders
        return None

    def limit_order(self) -> PlaceOrder:
        user, symbol, side, price, lots = self._order_basics()
        tif = self.rng.choice((TimeInForce.GTC,) * 5 + (TimeInForce.IOC, TimeInForce.FOK))
        expire = None
        if self.rng.random() < 0.15:
            tif, expire = TimeInForce.GTD, self.exchange.now_ms + self.rng.randrange(1, 5_000)
        return PlaceOrder(
            user,
            symbol,
            side,
            OrderType.LIMIT,
            quantity_lots=lots,
            price_ticks=price,
            time_in_force=tif,
            post_only=tif is TimeInForce.GTC and self.rng.random() < 0.15,
            client_order_id=self._client_id(),
            stp_mode=self.rng.choice(tuple(StpMode)),
            expire_at_ms=expire,
        )

    def market_order(self) -> PlaceOrder:
        user, symbol, side, price, lots = self._order_basics()
        if side is Side.BUY and self.rng.random() < 0.5:
            budget = self.exchange.markets[symbol].spec.notional(price, lots)
            return PlaceOrder(user, symbol, side, OrderType.MARKET, quote_budget_units=budget)
        return PlaceOrder(user, symbol, side, OrderType.MARKET, quantity_lots=lots)

    def stop_order(self) -> PlaceOrder:
        user, symbol, side, price, lots = self._order_basics()
        last = self.exchange.markets[symbol].last_price_ticks or MARKET_SHAPES[symbol][0]
        away = self.rng.randint(1, 4)
        stop = last + away if side is Side.BUY else max(1, last - away)
        if self.rng.random() < 0.5:
            return PlaceOrder(
                user,
                symbol,
                side,
                OrderType.STOP_LIMIT,
                quantity_lots=lots,
                price_ticks=price,
                stop_price_ticks=stop,
                client_order_id=self._client_id(),
            )
        if side is Side.BUY:
            budget = self.exchange.markets[symbol].spec.notional(stop, lots)
            return PlaceOrder(
                user,
                symbol,
                side,
                OrderType.STOP_MARKET,
                quote_budget_units=budget,
                stop_price_ticks=stop,
            )
        return PlaceOrder(
            user, symbol, side, OrderType.STOP_MARKET, quantity_lots=lots, stop_price_ticks=stop
        )

    def _open_order(self) -> tuple[int, int, str | None] | None:
        orders = list(self.exchange.orders.values())
        if not orders:
            return None
        order = self.rng.choice(orders)
        return order.user_id, order.order_id, order.client_order_id

    def cancel(self) -> Command:
        picked = self._open_order()
        if picked is None:
            return Tick(self.exchange.now_ms + 1)
        user, order_id, client_id = picked
        if self.rng.random() < 0.1:
            user = user % len(USERS) + 1  # another user's order: refused as not found
        if client_id is not None and self.rng.random() < 0.5:
            return CancelOrder(user, client_order_id=client_id)
        return CancelOrder(user, order_id=order_id)

    def amend(self) -> Command:
        picked = self._open_order()
        if picked is None:
            return Tick(self.exchange.now_ms + 1)
        user, order_id, _ = picked
        order = self.exchange.orders[order_id]
        if self.rng.random() < 0.5:
            return AmendOrder(
                user, order_id, price_ticks=order.price_ticks + self.rng.randint(-2, 2)
            )
        return AmendOrder(
            user, order_id, quantity_lots=order.quantity_lots + self.rng.randint(-3, 5)
        )

    def money_move(self) -> Command:
        user = self.rng.choice((0, *USERS))  # the fee account may withdraw its fees
        asset = self.rng.choice(("BTC", "USDT", "ETH"))
        units = self.rng.randint(1, 10**6) * (10**10 if asset == "ETH" else 1)
        if self.rng.random() < 0.5 and user != 0:
            return Deposit(user, asset, units)
        return Withdraw(user, asset, units)


# -- looking into the database -------------------------------------------------------------


async def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of one SQL query, read on a fresh connection (off the event loop)."""

    def read(connection: Connection) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in connection.execute(text(sql))]

    return await asyncio.to_thread(run_with_connection, url, read)


async def row_counts(url: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for table in TABLES:
        ((count,),) = await query(url, f"SELECT count(*) FROM {table}")
        counts[table] = count
    return counts


# -- fakes of the engine's other ports, beside a real store ---------------------------


class FixedClock:
    def now_ms(self) -> int:
        return 1_000


class Collector:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def publish(self, events: Sequence[Event], balances: Sequence[BalanceState]) -> None:
        self.events.extend(events)
