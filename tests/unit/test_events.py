"""Events: gap-free sequences, balance reports, and byte-for-byte deterministic replay."""

import contextlib
import json
import random
from typing import Any

import pytest

from crossbook.domain import (
    AmendOrder,
    CancelOrder,
    Deposited,
    DomainError,
    Event,
    Exchange,
    MarketCreated,
    OrderType,
    Tick,
    TimeInForce,
    Withdrawn,
)

from unit_support import BTC, ETH, Harness, funded


def random_session(seed: int, steps: int = 400) -> list[Any]:
    """A seeded command stream of every kind (some will be refused)."""
    rng = random.Random(seed)
    h = Harness()  # used only to build commands with the right units
    commands: list[Any] = []
    now = 0
    for _ in range(steps):
        user = rng.randint(1, 4)
        symbol = rng.choice([BTC, ETH])
        roll = rng.random()
        price = f"{rng.randint(49_990, 50_010)}"
        quantity = f"0.{rng.randint(1, 30):02d}"
        side = rng.choice(["buy", "sell"])
        if roll < 0.5:
            commands.append(
                h.place(
                    user,
                    side,
                    quantity,
                    price,
                    symbol=symbol,
                    tif=rng.choice(list(TimeInForce)[:3]),
                )
            )
        elif roll < 0.6:
            commands.append(h.place(user, side, quantity, symbol=symbol))
        elif roll < 0.65:
            stop = f"{rng.randint(49_990, 50_010)}"
            commands.append(
                h.place(
                    user,
                    side,
                    quantity,
                    price,
                    symbol=symbol,
                    stop=stop,
                    order_type=OrderType.STOP_LIMIT,
                )
            )
        elif roll < 0.85:
            commands.append(CancelOrder(user, rng.randint(1, 200)))
        elif roll < 0.95:
            commands.append(
                AmendOrder(user, rng.randint(1, 200), quantity_lots=rng.randint(1, 3000))
            )
        else:
            now += rng.randint(1, 1000)
            commands.append(Tick(now))
    return commands


def replay(commands: list[Any]) -> tuple[list[Event], str]:
    h = funded(balances={"BTC": "5", "ETH": "5", "USDT": "500000"})
    for command in commands:
        with contextlib.suppress(DomainError):
            h.run(command)
    return h.events, h.ex.state_digest()


def canonical(events: list[Event]) -> bytes:
    return json.dumps([e.to_dict() for e in events], default=str, sort_keys=True).encode()


def test_same_commands_give_the_same_events_byte_for_byte() -> None:
    commands = random_session(seed=7)
    first_events, first_digest = replay(commands)
    second_events, second_digest = replay(commands)
    assert any(e.kind == "trade_executed" for e in first_events)
    assert canonical(first_events) == canonical(second_events)
    assert first_digest == second_digest


def test_different_commands_give_a_different_state() -> None:
    assert replay(random_session(seed=1))[1] != replay(random_session(seed=2))[1]


def test_global_and_per_market_sequences_are_gap_free() -> None:
    events, _ = replay(random_session(seed=11))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    for symbol in (BTC, ETH):
        market_events = [
            e
            for e in events
            if e.market_seq
            and (
                getattr(e, "symbol", None) == symbol
                or (isinstance(e, MarketCreated) and e.spec.symbol == symbol)
            )
        ]
        assert [e.market_seq for e in market_events] == list(range(1, len(market_events) + 1))
        assert isinstance(market_events[0], MarketCreated)


def test_balance_changes_are_taken_once_each_with_final_values() -> None:
    """Balances are state: no command reports them; `take_balance_changes` gives each
    balance changed since the last take once, with its value now, first touch first."""
    h = Harness()
    h.fund(1, "BTC", "1")
    h.fund(2, "USDT", "100000")
    h.ex.take_balance_changes()
    h.submit(1, "sell", "0.5", "50000")
    events = h.submit(2, "buy", "0.5", "50000")
    assert not [e for e in events if e.kind.startswith("balance")]
    changes = h.ex.take_balance_changes()
    keys = [(user, asset) for user, asset, _, _ in changes]
    assert len(keys) == len(set(keys))
    assert keys[0] == (1, "BTC")  # the sell's reservation touched it first
    assert set(keys) >= {(1, "BTC"), (1, "USDT"), (2, "BTC"), (2, "USDT")}
    for user, asset, available, locked in changes:
        assert available == h.ex.ledger.available(user, asset)
        assert locked == h.ex.ledger.locked(user, asset)
    assert h.ex.take_balance_changes() == []


def test_a_fresh_exchange_has_no_state() -> None:
    ex = Exchange()
    assert ex.execute(Tick(0)) == []
    assert ex.state()["orders"] == [] and ex.seq == 0


def test_deposited_and_withdrawn_are_two_events_of_the_same_shape() -> None:
    deposited = Deposited(1, 5, 7, "USDT", 100, 100, 0)
    withdrawn = Withdrawn(2, 6, 7, "USDT", 40, 60, 0)
    assert not isinstance(withdrawn, Deposited)
    assert not isinstance(deposited, Withdrawn)
    assert json.dumps(deposited.to_dict()) == (
        '{"kind": "deposited", "market_seq": 0, "seq": 1, "ts_ms": 5,'
        ' "amount_units": 100, "asset": "USDT", "available_units": 100, "locked_units": 0,'
        ' "user_id": 7}'
    )
    assert json.dumps(withdrawn.to_dict()) == (
        '{"kind": "withdrawn", "market_seq": 0, "seq": 2, "ts_ms": 6,'
        ' "amount_units": 40, "asset": "USDT", "available_units": 60, "locked_units": 0,'
        ' "user_id": 7}'
    )


def event_classes() -> list[type[Event]]:
    found: list[type[Event]] = []
    todo: list[type[Event]] = [Event]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return sorted(found, key=lambda cls: cls.__name__)


@pytest.mark.parametrize("cls", event_classes(), ids=lambda cls: cls.__name__)
def test_field_names_are_the_slots_base_class_first(cls: type[Event]) -> None:
    """`to_dict`'s keys (and the store's event payloads): every attribute once, in order."""
    compiled_attributes = getattr(cls, "__mypyc_attrs__", None)
    if compiled_attributes is not None:  # compiled: no `__slots__`, but mypyc lists them
        assert sorted(cls.field_names) == sorted(compiled_attributes)
        return
    slots = tuple(name for c in reversed(cls.__mro__) for name in c.__dict__.get("__slots__", ()))
    assert cls.field_names == slots
