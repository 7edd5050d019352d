"""Seeded command streams for the engine benchmark (generated before any timing).

Every stream trades one market, BTC/USDT (tick 0.01, lot 0.0001 BTC, default
fees), around a fixed mid price of 30,000.00. A stream has:

- `setup`: create the assets and the market, fund every user generously and,
  for some scenarios, pre-fill the book; executed before the clock starts;
- `segments`: the timed commands, in order. A segment has a label so the
  harness can report parts of a stream on their own (the sweeps of `sweep`).

Cancels need order ids. The exchange numbers accepted orders 1, 2, 3, … and a
rejected placement takes no id, so the generator predicts every id by counting
its placements; that holds only if every command is accepted, which the streams
are built for (funds far beyond any reservation, valid quantities, at most a few
hundred open orders per user) and which the harness verifies after every run.
Where takers consume makers (`mixed`), the generator replays each command on a
shadow `Exchange` to learn which makers were filled and so are no longer
cancellable; everywhere else the book is simple enough to follow directly.

Makers and takers are different users, so self-trade prevention is checked on
every match step but never fires.

Scenarios:
- `add-only`: GTC limit orders that never cross: bids below the mid, asks above,
  most within a few ticks of it (exponential distance), a few far out;
- `cancel-heavy`: limit adds and cancels of random live orders, the book held
  near 2,000 orders (pre-filled), so nearly every add is cancelled later;
- `mixed`: ~60 % limit adds near the mid, ~30 % cancels of live orders, ~10 %
  takers (half marketable limit IOC up to 10 ticks through the mid, half market
  orders by quantity); the book is pre-filled with 2,000 orders;
- `sweep`: cycles of 500 makers spread over 50 levels of one side, then 5 takers
  (alternately limit IOC at the far level and market by quantity) whose sizes
  split the side's total at random, so each fills ~100 makers and the cycle
  empties the side; sides alternate between cycles.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from crossbook.domain import (
    CancelOrder,
    Command,
    CreateAsset,
    CreateMarket,
    Deposit,
    Exchange,
    OrderAccepted,
    OrderStatus,
    OrderType,
    OrderUpdated,
    PlaceOrder,
    Side,
    TimeInForce,
)

SCENARIOS = ("add-only", "cancel-heavy", "mixed", "sweep")

BASE = "BTC"
QUOTE = "USDT"
SYMBOL = f"{BASE}/{QUOTE}"
MID_PRICE_TICKS = 3_000_000  # 30,000.00 USDT
BASE_DEPOSIT_UNITS = 10**14  # 1,000,000 BTC per user
QUOTE_DEPOSIT_UNITS = 10**16  # 100,000,000 USDT per user (supply stays within 64 bits)
MAX_MAKER_LOTS = 100  # 0.01 BTC

PREFILLED_ORDERS = 2_000
SWEEP_LEVELS = 50
SWEEP_MAKERS = 500
SWEEP_TAKERS = 5

_OPEN_ORDERS_PER_USER_CAP = 800  # below ExchangeLimits.max_open_orders_per_user (1,000)
_TERMINAL = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.EXPIRED, OrderStatus.REJECTED}
)


@dataclass(frozen=True, slots=True)
class Segment:
    label: str
    commands: list[Command]


@dataclass(frozen=True, slots=True)
class Stream:
    scenario: str
    setup: list[Command]
    segments: list[Segment]
    expected_orders: int  # accepted placements, setup included (the last order id)
    expected_trades: int  # trades in the timed segments

    @property
    def command_count(self) -> int:
        return sum(len(segment.commands) for segment in self.segments)


def build(scenario: str, commands: int, seed: int) -> Stream:
    """The stream of `scenario` with about `commands` timed commands (exactly, except `sweep`,
    which rounds to whole cycles)."""
    builders = {
        "add-only": _add_only,
        "cancel-heavy": _cancel_heavy,
        "mixed": _mixed,
        "sweep": _sweep,
    }
    if scenario not in builders:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    return builders[scenario](commands, seed)


# -- the scenarios -------------------------------------------------------------------


def _add_only(commands: int, seed: int) -> Stream:
    makers = max(16, -(-commands // _OPEN_ORDERS_PER_USER_CAP))
    gen = _Generator("add-only", seed, makers=makers, takers=0)
    timed: list[Command] = [
        gen.place_near_mid(gen.makers[i % makers], gen.random_side()) for i in range(commands)
    ]
    return gen.stream([Segment("stream", timed)], expected_trades=0)


def _cancel_heavy(commands: int, seed: int) -> Stream:
    gen = _Generator("cancel-heavy", seed, makers=32, takers=0)
    gen.prefill(PREFILLED_ORDERS)
    timed: list[Command] = []
    for _ in range(commands):
        add_probability = 0.6 if len(gen.live) < PREFILLED_ORDERS else 0.4
        if not gen.live or gen.rng.random() < add_probability:
            timed.append(gen.place_near_mid(gen.maker_with_room(), gen.random_side()))
        else:
            timed.append(gen.cancel_random())
    return gen.stream([Segment("stream", timed)], expected_trades=0)


def _mixed(commands: int, seed: int) -> Stream:
    gen = _Generator("mixed", seed, makers=200, takers=20)
    shadow = Exchange()
    gen.prefill(PREFILLED_ORDERS)
    for setup_command in gen.setup:
        shadow.execute(setup_command)
    trades_before = shadow.next_trade_id
    timed: list[Command] = []
    command: Command
    for _ in range(commands):
        draw = gen.rng.random()
        if draw < 0.6 or (draw < 0.9 and not gen.live):
            command = gen.place_near_mid(gen.maker_with_room(), gen.random_side())
        elif draw < 0.9:
            command = gen.cancel_random()
        else:
            command = gen.place_taker()
        timed.append(command)
        for event in shadow.execute(command):
            if isinstance(event, OrderAccepted):
                assert event.order_id == gen.next_order_id - 1, "order ids mispredicted"
            elif isinstance(event, OrderUpdated) and event.status in _TERMINAL:
                gen.live.discard(event.order_id)
    expected_trades = shadow.next_trade_id - trades_before
    return gen.stream([Segment("stream", timed)], expected_trades=expected_trades)


def _sweep(commands: int, seed: int) -> Stream:
    gen = _Generator("sweep", seed, makers=50, takers=4)
    cycles = max(1, round(commands / (SWEEP_MAKERS + SWEEP_TAKERS)))
    segments: list[Segment] = []
    expected_trades = 0
    for cycle in range(cycles):
        maker_side = Side.SELL if cycle % 2 == 0 else Side.BUY
        offsets = [1 + gen.rng.randrange(SWEEP_LEVELS) for _ in range(SWEEP_MAKERS)]
        lots = [gen.rng.randint(1, MAX_MAKER_LOTS) for _ in range(SWEEP_MAKERS)]
        makers: list[Command] = [
            gen.place(gen.rng.choice(gen.makers), maker_side, _price(maker_side, offset), size)
            for offset, size in zip(offsets, lots, strict=True)
        ]
        # the order the takers meet the makers in: best price first, then time priority
        queue = [lots[i] for i in sorted(range(SWEEP_MAKERS), key=lambda i: (offsets[i], i))]
        total = sum(queue)
        cuts = [0, *sorted(gen.rng.sample(range(1, total), SWEEP_TAKERS - 1)), total]
        sizes = [high - low for low, high in itertools.pairwise(cuts)]
        taker_side = Side.BUY if maker_side is Side.SELL else Side.SELL
        takers: list[Command] = [
            gen.place_sweeper(taker_side, size, market=(i % 2 == 1)) for i, size in enumerate(sizes)
        ]
        expected_trades += _count_fills(queue, sizes)
        segments += [Segment("build", makers), Segment("sweep", takers)]
    return gen.stream(segments, expected_trades=expected_trades)


def _count_fills(queue: list[int], sizes: list[int]) -> int:
    """Trades made when takers of `sizes` lots, in turn, consume makers of `queue` lots."""
    fills = 0
    position, left = 0, queue[0]
    for size in sizes:
        wanted = size
        while wanted:
            taken = min(wanted, left)
            fills += 1
            wanted -= taken
            left -= taken
            if not left:
                position += 1
                left = queue[position] if position < len(queue) else 0
    return fills


def _price(side: Side, offset_ticks: int) -> int:
    """A price `offset_ticks` away from the mid on the side where `side` rests."""
    return MID_PRICE_TICKS - offset_ticks if side is Side.BUY else MID_PRICE_TICKS + offset_ticks


# -- the generator's state ----------------------------------------------------------


class _LiveOrders:
    """Open orders the generator may cancel: O(1) add, discard and random pick."""

    def __init__(self) -> None:
        self._ids: list[int] = []
        self._index: dict[int, int] = {}
        self.owner: dict[int, int] = {}
        self.open_by_user: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, order_id: int, user_id: int) -> None:
        self._index[order_id] = len(self._ids)
        self._ids.append(order_id)
        self.owner[order_id] = user_id
        self.open_by_user[user_id] = self.open_by_user.get(user_id, 0) + 1

    def discard(self, order_id: int) -> None:
        index = self._index.pop(order_id, None)
        if index is None:
            return
        last = self._ids.pop()
        if last != order_id:
            self._ids[index] = last
            self._index[last] = index
        self.open_by_user[self.owner.pop(order_id)] -= 1

    def pick(self, rng: random.Random) -> int:
        return self._ids[rng.randrange(len(self._ids))]


class _Generator:
    def __init__(self, scenario: str, seed: int, *, makers: int, takers: int) -> None:
        self.scenario = scenario
        self.rng = random.Random(f"crossbook-bench:{scenario}:{seed}")
        self.makers = list(range(1, makers + 1))
        self.takers = list(range(makers + 1, makers + takers + 1))
        self.next_order_id = 1
        self.live = _LiveOrders()
        self.setup: list[Command] = [
            CreateAsset(BASE, 8),
            CreateAsset(QUOTE, 6),
            CreateMarket(
                BASE,
                QUOTE,
                tick_size="0.01",
                lot_size="0.0001",
                min_quantity="0.0001",
                max_quantity="1000",
                min_notional="1",
            ),
        ]
        for user_id in self.makers + self.takers:
            self.setup.append(Deposit(user_id, BASE, BASE_DEPOSIT_UNITS))
            self.setup.append(Deposit(user_id, QUOTE, QUOTE_DEPOSIT_UNITS))

    def stream(self, segments: list[Segment], *, expected_trades: int) -> Stream:
        return Stream(
            scenario=self.scenario,
            setup=self.setup,
            segments=segments,
            expected_orders=self.next_order_id - 1,
            expected_trades=expected_trades,
        )

    def random_side(self) -> Side:
        return Side.BUY if self.rng.random() < 0.5 else Side.SELL

    def maker_with_room(self) -> int:
        while True:
            user_id = self.rng.choice(self.makers)
            if self.live.open_by_user.get(user_id, 0) < _OPEN_ORDERS_PER_USER_CAP:
                return user_id

    def prefill(self, orders: int) -> None:
        for _ in range(orders):
            self.setup.append(self.place_near_mid(self.maker_with_room(), self.random_side()))

    def place(
        self,
        user_id: int,
        side: Side,
        price_ticks: int,
        lots: int,
        time_in_force: TimeInForce = TimeInForce.GTC,
    ) -> PlaceOrder:
        """A limit order; a GTC one is remembered as live (it never crosses in these streams)."""
        if time_in_force is TimeInForce.GTC:
            self.live.add(self.next_order_id, user_id)
        self.next_order_id += 1
        return PlaceOrder(
            user_id,
            SYMBOL,
            side,
            OrderType.LIMIT,
            quantity_lots=lots,
            price_ticks=price_ticks,
            time_in_force=time_in_force,
        )

    def place_near_mid(self, user_id: int, side: Side) -> PlaceOrder:
        """A resting limit order a few ticks from the mid (exponential, mean 10), never crossing."""
        offset = 1 + min(int(self.rng.expovariate(0.1)), 999)
        lots = self.rng.randint(1, MAX_MAKER_LOTS)
        return self.place(user_id, side, _price(side, offset), lots)

    def cancel_random(self) -> CancelOrder:
        order_id = self.live.pick(self.rng)
        user_id = self.live.owner[order_id]
        self.live.discard(order_id)
        return CancelOrder(user_id, order_id=order_id)

    def place_taker(self) -> PlaceOrder:
        """A marketable limit IOC (up to 10 ticks through the mid) or a market order."""
        side = self.random_side()
        user_id = self.rng.choice(self.takers)
        lots = self.rng.randint(1, 2 * MAX_MAKER_LOTS)
        if self.rng.random() < 0.5:
            # the opposite side rests at least one tick away from the mid
            limit = _price(side, -self.rng.randint(1, 10))
            return self.place(user_id, side, limit, lots, TimeInForce.IOC)
        self.next_order_id += 1
        return PlaceOrder(user_id, SYMBOL, side, OrderType.MARKET, quantity_lots=lots)

    def place_sweeper(self, side: Side, lots: int, *, market: bool) -> PlaceOrder:
        user_id = self.rng.choice(self.takers)
        if market:
            self.next_order_id += 1
            return PlaceOrder(user_id, SYMBOL, side, OrderType.MARKET, quantity_lots=lots)
        far = _price(side, -SWEEP_LEVELS)
        return self.place(user_id, side, far, lots, TimeInForce.IOC)
