"""Restoring an exchange from its canonical state is exact, now and for every later command."""

import contextlib
import json

from test_events import random_session

from crossbook.domain import DomainError, Exchange
from crossbook.domain.invariants import check_all
from crossbook.domain.snapshot import restore

from unit_support import funded


def outcome(ex: Exchange, command: object) -> str:
    try:
        events = ex.execute(command)  # type: ignore[arg-type]
    except DomainError as error:
        return f"refused {error.code}"
    return json.dumps([e.to_dict() for e in events], default=str, sort_keys=True)


def test_restore_reproduces_the_state_and_all_later_behaviour() -> None:
    commands = random_session(seed=23, steps=600)
    h = funded(balances={"BTC": "5", "ETH": "5", "USDT": "500000"})
    for command in commands[:300]:
        with contextlib.suppress(DomainError):
            h.run(command)
    assert h.ex.orders, "the scenario should leave open orders to restore"
    state = json.loads(json.dumps(h.ex.state(), default=str))  # through plain JSON
    copy = restore(state)
    check_all(copy)
    assert copy.state_digest() == h.ex.state_digest()
    for command in commands[300:]:
        assert outcome(copy, command) == outcome(h.ex, command)
    assert copy.state_digest() == h.ex.state_digest()


def test_restore_of_an_empty_exchange() -> None:
    ex = Exchange()
    assert restore(ex.state()).state_digest() == ex.state_digest()
