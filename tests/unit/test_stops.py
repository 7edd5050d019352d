"""Stop-limit and stop-market orders: reserved while waiting, triggered by the last trade."""

from crossbook.domain import CancelOrder, CloseReason, ErrorCode, OrderStatus, OrderType

from unit_support import Harness, accepted_id, funded, last_update, trades


def trade_at(h: Harness, price: str, quantity: str = "0.1") -> None:
    h.submit(1, "sell", quantity, price)
    h.submit(2, "buy", quantity, price)


def test_stop_limit_waits_with_funds_reserved_and_outside_the_book() -> None:
    h = funded()
    order_id = accepted_id(
        h.submit(3, "buy", "1", "51000", stop="50500", order_type=OrderType.STOP_LIMIT)
    )
    assert h.book() == {"bids": [], "asks": []}
    assert h.balance(3, "USDT") == ("948949.00000000", "51051.00000000")
    assert not h.ex.orders[order_id].triggered


def test_buy_stop_triggers_when_last_price_reaches_it() -> None:
    h = funded()
    trade_at(h, "50000")
    order_id = accepted_id(
        h.submit(3, "buy", "1", "51000", stop="50500", order_type=OrderType.STOP_LIMIT)
    )
    h.submit(4, "sell", "5", "51000")
    trade_at(h, "50400")  # below the stop: nothing
    assert not h.ex.orders[order_id].triggered
    h.submit(1, "sell", "0.1", "50500")
    events = h.submit(2, "buy", "0.1", "50500")  # last = 50,500: triggers, buys at 51,000
    fills = [t for t in trades(events) if order_id in (t.buyer_order_id, t.seller_order_id)]
    assert [h.spec().format_price(t.price_ticks) for t in fills] == ["51000.00"]
    assert last_update(events, order_id).status is OrderStatus.FILLED


def test_sell_stop_market_triggers_on_a_fall_and_sells_at_market() -> None:
    h = funded()
    trade_at(h, "50000")
    order_id = accepted_id(h.submit(3, "sell", "1", stop="49000", order_type=OrderType.STOP_MARKET))
    assert h.balance(3, "BTC") == ("9.00000000", "1.00000000")
    h.submit(4, "buy", "2", "48500")
    events = []
    h.submit(1, "sell", "0.1", "49000")
    events = h.submit(2, "buy", "0.1", "49000")
    fill = [t for t in trades(events) if t.seller_order_id == order_id]
    assert [h.spec().format_price(t.price_ticks) for t in fill] == ["48500.00"]
    assert last_update(events, order_id).status is OrderStatus.FILLED


def test_stop_market_buy_is_sized_by_quote_budget() -> None:
    h = funded()
    h.reject(
        h.place(3, "buy", "1", stop="51000", order_type=OrderType.STOP_MARKET),
        ErrorCode.INVALID_ORDER,
    )
    order_id = accepted_id(
        h.submit(3, "buy", quote="5000", stop="51000", order_type=OrderType.STOP_MARKET)
    )
    assert h.balance(3, "USDT") == ("995000.00000000", "5000.00000000")
    h.run(CancelOrder(3, order_id))
    assert h.balance(3, "USDT") == ("1000000.00000000", "0.00000000")


def test_stop_that_would_trigger_at_once_is_refused() -> None:
    h = funded()
    trade_at(h, "50000")
    h.reject(
        h.place(3, "buy", "1", "51000", stop="50000", order_type=OrderType.STOP_LIMIT),
        ErrorCode.STOP_WOULD_TRIGGER,
    )
    h.reject(
        h.place(3, "sell", "1", "49000", stop="50000", order_type=OrderType.STOP_LIMIT),
        ErrorCode.STOP_WOULD_TRIGGER,
    )


def test_stops_trigger_in_placement_order_and_cascade() -> None:
    h = funded()
    trade_at(h, "50000")
    # two sell stops; the first placed has the lower stop, so it is reached second by price,
    # but both trigger on one fall and run in placement order
    first = accepted_id(h.submit(3, "sell", "0.1", stop="49000", order_type=OrderType.STOP_MARKET))
    second = accepted_id(h.submit(4, "sell", "0.1", stop="49500", order_type=OrderType.STOP_MARKET))
    # a third stop only reachable through the trades of the first two (cascade)
    third = accepted_id(h.submit(4, "sell", "0.1", stop="48000", order_type=OrderType.STOP_MARKET))
    h.submit(2, "buy", "0.1", "48000")
    h.submit(2, "buy", "0.1", "47000")
    h.submit(2, "buy", "0.1", "46000")
    h.submit(1, "sell", "0.1", "48500")
    events = h.submit(2, "buy", "0.1", "48500")  # last 48,500 triggers first and second
    sellers = [t.seller_order_id for t in trades(events)]
    assert sellers[1:] == [first, second, third]
    assert [h.spec().format_price(t.price_ticks) for t in trades(events)][1:] == [
        "48000.00",
        "47000.00",
        "46000.00",
    ]


def test_triggered_post_only_stop_that_would_take_is_rejected() -> None:
    h = funded()
    trade_at(h, "50000")
    order_id = accepted_id(
        h.submit(
            3, "buy", "1", "52000", stop="50500", post_only=True, order_type=OrderType.STOP_LIMIT
        )
    )
    h.submit(4, "sell", "1", "51000")
    h.submit(1, "sell", "0.1", "50500")
    events = h.submit(2, "buy", "0.1", "50500")
    update = last_update(events, order_id)
    assert (update.status, update.reason) == (
        OrderStatus.REJECTED,
        CloseReason.POST_ONLY_WOULD_TAKE,
    )
    assert h.ex.ledger.locked(3, "USDT") == 0


def test_cancelling_a_waiting_stop_releases_it_and_it_never_triggers() -> None:
    h = funded()
    trade_at(h, "50000")
    order_id = accepted_id(h.submit(3, "sell", "1", stop="49000", order_type=OrderType.STOP_MARKET))
    h.run(CancelOrder(3, order_id))
    assert h.balance(3, "BTC") == ("10.00000000", "0.00000000")
    h.submit(4, "buy", "1", "48000")
    h.submit(1, "sell", "0.1", "48900")
    events = h.submit(2, "buy", "0.1", "48900")
    assert all(order_id not in (t.seller_order_id, t.buyer_order_id) for t in trades(events))
