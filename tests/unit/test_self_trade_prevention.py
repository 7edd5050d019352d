"""Self-trade prevention: no trade has the same user on both sides unless the mode is none."""

import pytest

from crossbook.domain import CloseReason, OrderStatus, OrderType, PlaceOrder, Side, StpMode

from unit_support import Harness, accepted_id, last_update, trades


def setup_book() -> tuple[Harness, int, int]:
    """User 1 rests 1 BTC at 50,000 then user 2 rests 1 BTC at 50,000 behind it."""
    h = Harness()
    for user in (1, 2):
        h.fund(user, "BTC", "10")
        h.fund(user, "USDT", "1000000")
    own = accepted_id(h.submit(1, "sell", "1", "50000"))
    other = accepted_id(h.submit(2, "sell", "1", "50000"))
    return h, own, other


def test_default_mode_is_cancel_taker() -> None:
    h, _, _ = setup_book()
    spec = h.spec()
    command = PlaceOrder(
        1,
        "BTC/USDT",
        Side.BUY,
        OrderType.LIMIT,
        quantity_lots=spec.parse_quantity("1"),
        price_ticks=spec.parse_price("50000"),
    )
    assert command.stp_mode is StpMode.CANCEL_TAKER
    events = h.run(command)
    update = last_update(events, accepted_id(events))
    assert (update.status, update.reason) == (
        OrderStatus.CANCELLED,
        CloseReason.SELF_TRADE_PREVENTION,
    )
    assert not trades(events)


def test_cancel_taker_keeps_the_resting_order_and_releases_the_taker() -> None:
    h, own, _ = setup_book()
    events = h.submit(1, "buy", "2", "50000", stp=StpMode.CANCEL_TAKER)
    assert not trades(events)
    assert own in h.ex.orders
    assert h.ex.ledger.locked(1, "USDT") == 0


def test_cancel_maker_removes_own_orders_and_keeps_matching() -> None:
    h, own, other = setup_book()
    events = h.submit(1, "buy", "1", "50000", stp=StpMode.CANCEL_MAKER)
    assert [t.maker_order_id for t in trades(events)] == [other]
    maker_update = last_update(events, own)
    assert (maker_update.status, maker_update.reason) == (
        OrderStatus.CANCELLED,
        CloseReason.SELF_TRADE_PREVENTION,
    )
    # the cancelled maker's 1 BTC is unlocked, and the bought 1 BTC arrived
    assert h.balance(1, "BTC") == ("11.00000000", "0.00000000")
    assert last_update(events, accepted_id(events)).status is OrderStatus.FILLED


def test_cancel_both_cancels_the_maker_and_the_taker() -> None:
    h, own, other = setup_book()
    events = h.submit(1, "buy", "2", "50000", stp=StpMode.CANCEL_BOTH)
    assert not trades(events)
    assert last_update(events, own).status is OrderStatus.CANCELLED
    assert last_update(events, accepted_id(events)).status is OrderStatus.CANCELLED
    assert list(h.ex.orders) == [other]


def test_none_lets_a_user_trade_with_itself() -> None:
    h, own, _ = setup_book()
    [trade] = trades(h.submit(1, "buy", "1", "50000", stp=StpMode.NONE))
    assert trade.maker_order_id == own
    assert trade.buyer_user_id == trade.seller_user_id == 1


def test_stp_after_partial_fill_cancels_only_the_remainder() -> None:
    h = Harness()
    for user in (1, 2):
        h.fund(user, "BTC", "10")
        h.fund(user, "USDT", "1000000")
    h.submit(2, "sell", "1", "49000")
    h.submit(1, "sell", "1", "50000")
    events = h.submit(1, "buy", "2", "50000")
    update = last_update(events, accepted_id(events))
    assert len(trades(events)) == 1
    assert update.status is OrderStatus.CANCELLED
    assert h.spec().format_quantity(update.filled_lots) == "1.00000"


@pytest.mark.parametrize("mode", [StpMode.CANCEL_TAKER, StpMode.CANCEL_MAKER, StpMode.CANCEL_BOTH])
def test_market_buy_reservation_accounts_for_stp(mode: StpMode) -> None:
    h, _, _ = setup_book()
    h.submit(1, "buy", "1", stp=mode)
    assert h.ex.ledger.locked(1, "USDT") == 0
    for trade in trades(h.events):
        assert trade.buyer_user_id != trade.seller_user_id
