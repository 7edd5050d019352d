"""A process that trades under load until it is killed (driven by test_kill_recovery).

Usage: python kill_worker.py DATABASE_URL SEED

It opens the store (recovering whatever was committed), sets up two markets and
funded users on a fresh database, then runs concurrent clients that place,
amend and cancel orders through the engine. Every answer the engine gives is
printed as one JSON line on stdout right away: the parent reads these as the
acknowledgements a client saw, so after a SIGKILL it knows exactly what must
have survived.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import Sequence

import structlog

from crossbook.adapters.sql.store import SqlStore
from crossbook.domain import (
    CancelOrder,
    CreateAsset,
    CreateMarket,
    Deposit,
    DomainError,
    Event,
    OrderAccepted,
    OrderType,
    PlaceOrder,
    Side,
    TimeInForce,
    TradeExecuted,
)
from crossbook.domain.exchange import BalanceState
from crossbook.engine.engine import Engine, EngineLimits

USERS = range(1, 9)
SYMBOLS = ("BTC/USDT", "ETH/USDT")
SETUP = [
    CreateAsset("BTC", 8),
    CreateAsset("ETH", 8),
    CreateAsset("USDT", 8),
    CreateMarket("BTC", "USDT", "0.01", "0.00001", "0.00001", "1000"),
    CreateMarket("ETH", "USDT", "0.01", "0.0001", "0.0001", "10000"),
    *[Deposit(user, asset, 10**16) for user in USERS for asset in ("BTC", "ETH", "USDT")],
]


class NullPublisher:
    def publish(self, events: Sequence[Event], balances: Sequence[BalanceState]) -> None:
        pass


def ack(kind: str, events: list[Event] | None = None, code: str | None = None) -> None:
    line: dict[str, object] = {"kind": kind}
    if events is not None:
        line["seq"] = events[-1].seq if events else None
        line["orders"] = [[e.order_id, e.user_id] for e in events if isinstance(e, OrderAccepted)]
        line["trades"] = [e.trade_id for e in events if isinstance(e, TradeExecuted)]
    if code is not None:
        line["code"] = code
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


async def client(engine: Engine, rng: random.Random, open_ids: list[int]) -> None:
    while True:
        user = rng.choice(USERS)
        symbol = rng.choice(SYMBOLS)
        roll = rng.random()
        if roll < 0.25 and open_ids:
            command: object = CancelOrder(user, open_ids.pop(rng.randrange(len(open_ids))))
        elif roll < 0.35:
            command = PlaceOrder(
                user,
                symbol,
                rng.choice(list(Side)),
                OrderType.MARKET,
                quantity_lots=rng.randint(1, 50),
            )
        else:
            side = rng.choice(list(Side))
            price = 5_000_000 + rng.randint(-50, 50) * (1 if side is Side.BUY else -1)
            command = PlaceOrder(
                user,
                symbol,
                side,
                OrderType.LIMIT,
                quantity_lots=rng.randint(1, 50),
                price_ticks=price,
                time_in_force=rng.choice((TimeInForce.GTC, TimeInForce.IOC)),
            )
        try:
            events = await engine.submit(command)  # type: ignore[arg-type]
        except DomainError as error:
            ack("rejected", code=error.code)
            continue
        open_ids.extend(e.order_id for e in events if isinstance(e, OrderAccepted))
        ack("done", events)


async def main(url: str, seed: int) -> None:
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout: acks
    store = await SqlStore.open(url)
    engine = Engine(store, NullPublisher(), limits=EngineLimits(batch_max_commands=500))
    await engine.start()
    if not engine.exchange.markets:
        for command in SETUP:
            await engine.submit(command)
    ack("ready", [])
    rng = random.Random(seed)
    open_ids = sorted(engine.exchange.orders)
    await asyncio.gather(
        *(client(engine, random.Random(rng.random()), open_ids) for _ in range(32))
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
