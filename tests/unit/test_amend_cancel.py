"""Amend (priority rules, reservations) and cancel (ownership, idempotence at the edge)."""

from crossbook.domain import (
    AmendOrder,
    CancelOrder,
    CloseReason,
    ErrorCode,
    MarketStatus,
    OrderStatus,
    OrderType,
    SetMarketStatus,
    TimeInForce,
)

from unit_support import BTC, accepted_id, funded, last_update, trades


def test_reducing_quantity_keeps_time_priority_and_releases_funds() -> None:
    h = funded((1, 2, 3))
    first = accepted_id(h.submit(1, "buy", "2", "50000"))
    second = accepted_id(h.submit(2, "buy", "1", "50000"))
    h.run(AmendOrder(1, first, quantity_lots=h.spec().parse_quantity("1")))
    assert h.balance(1, "USDT") == ("949950.00000000", "50050.00000000")
    [trade] = trades(h.submit(3, "sell", "1", "50000"))
    assert trade.maker_order_id == first
    assert second in h.ex.orders


def test_increasing_quantity_loses_priority_and_reserves_more() -> None:
    h = funded((1, 2, 3))
    first = accepted_id(h.submit(1, "buy", "1", "50000"))
    second = accepted_id(h.submit(2, "buy", "1", "50000"))
    h.run(AmendOrder(1, first, quantity_lots=h.spec().parse_quantity("2")))
    assert h.balance(1, "USDT") == ("899900.00000000", "100100.00000000")
    [trade] = trades(h.submit(3, "sell", "1", "50000"))
    assert trade.maker_order_id == second


def test_changing_price_loses_priority_and_can_trade_at_once() -> None:
    h = funded((1, 2, 3))
    h.submit(2, "sell", "1", "50100")
    order_id = accepted_id(h.submit(1, "buy", "1", "50000"))
    events = h.run(AmendOrder(1, order_id, price_ticks=h.spec().parse_price("50100")))
    [trade] = trades(events)
    assert trade.buyer_order_id == order_id
    assert last_update(events, order_id).status is OrderStatus.FILLED
    assert h.ex.ledger.locked(1, "USDT") == 0


def test_amend_keeps_partial_fills_and_refuses_quantity_at_or_below_filled() -> None:
    h = funded((1, 2, 3))
    order_id = accepted_id(h.submit(1, "buy", "2", "50000"))
    h.submit(2, "sell", "1", "50000")
    h.reject(
        AmendOrder(1, order_id, quantity_lots=h.spec().parse_quantity("1")),
        ErrorCode.INVALID_QUANTITY,
    )
    h.run(AmendOrder(1, order_id, quantity_lots=h.spec().parse_quantity("1.5")))
    assert h.book()["bids"] == [("50000.00", "0.50000", 1)]


def test_amend_that_needs_more_funds_than_available_changes_nothing() -> None:
    h = funded((1, 2, 3))
    h.fund(9, "USDT", "60000")
    order_id = accepted_id(h.submit(9, "buy", "1", "50000"))
    h.reject(
        AmendOrder(9, order_id, quantity_lots=h.spec().parse_quantity("2")),
        ErrorCode.INSUFFICIENT_BALANCE,
    )


def test_amend_refusals() -> None:
    h = funded((1, 2, 3))
    resting = accepted_id(h.submit(1, "buy", "1", "50000", post_only=True))
    spec = h.spec()
    h.submit(2, "sell", "1", "50100")
    h.reject(AmendOrder(2, resting, quantity_lots=1), ErrorCode.ORDER_NOT_FOUND)
    h.reject(AmendOrder(1, resting), ErrorCode.INVALID_ORDER)
    h.reject(
        AmendOrder(1, resting, price_ticks=spec.parse_price("50100")),
        ErrorCode.POST_ONLY_WOULD_TAKE,
    )
    h.reject(AmendOrder(1, resting, price_ticks=0), ErrorCode.INVALID_PRICE)
    h.reject(
        AmendOrder(1, resting, quantity_lots=spec.max_quantity_lots + 1), ErrorCode.INVALID_QUANTITY
    )
    h.run(SetMarketStatus(BTC, MarketStatus.HALTED))
    h.reject(AmendOrder(1, resting, quantity_lots=1), ErrorCode.MARKET_HALTED)


def test_waiting_stop_is_not_amendable() -> None:
    h = funded((1, 2, 3))
    stop = accepted_id(
        h.submit(1, "buy", "1", "51000", stop="50500", order_type=OrderType.STOP_LIMIT)
    )
    h.reject(AmendOrder(1, stop, quantity_lots=1), ErrorCode.ORDER_NOT_AMENDABLE)


def test_cancel_releases_funds_and_closes_the_order() -> None:
    h = funded((1, 2, 3))
    order_id = accepted_id(h.submit(1, "sell", "1", "50000"))
    events = h.run(CancelOrder(1, order_id))
    update = last_update(events, order_id)
    assert (update.status, update.reason) == (OrderStatus.CANCELLED, CloseReason.CANCELLED_BY_USER)
    assert h.balance(1, "BTC") == ("10.00000000", "0.00000000")
    assert h.book()["asks"] == []
    h.reject(CancelOrder(1, order_id), ErrorCode.ORDER_NOT_FOUND)  # closed: the API looks it up


def test_cancel_by_client_order_id_and_only_by_the_owner() -> None:
    h = funded((1, 2, 3))
    order_id = accepted_id(h.submit(1, "buy", "1", "50000", client_order_id="my-1"))
    h.reject(CancelOrder(2, order_id), ErrorCode.ORDER_NOT_FOUND)
    h.reject(CancelOrder(2, client_order_id="my-1"), ErrorCode.ORDER_NOT_FOUND)
    h.reject(CancelOrder(1), ErrorCode.INVALID_ORDER)
    h.run(CancelOrder(1, client_order_id="my-1"))
    assert order_id not in h.ex.orders


def test_cancel_is_allowed_while_the_market_is_halted() -> None:
    h = funded((1, 2, 3))
    order_id = accepted_id(h.submit(1, "buy", "1", "50000", tif=TimeInForce.GTC))
    h.run(SetMarketStatus(BTC, MarketStatus.HALTED))
    h.reject(h.place(2, "sell", "1", "50000"), ErrorCode.MARKET_HALTED)
    h.run(CancelOrder(1, order_id))
    h.run(SetMarketStatus(BTC, MarketStatus.ACTIVE))
    h.submit(2, "sell", "1", "50000")


def test_client_order_id_is_unique_among_open_orders_only() -> None:
    h = funded((1, 2, 3))
    h.submit(1, "buy", "1", "50000", client_order_id="abc")
    h.reject(
        h.place(1, "buy", "1", "49000", client_order_id="abc"), ErrorCode.DUPLICATE_CLIENT_ORDER_ID
    )
    h.submit(2, "buy", "1", "49000", client_order_id="abc")  # another user may use it
    h.run(CancelOrder(1, client_order_id="abc"))
    h.submit(1, "buy", "1", "49000", client_order_id="abc")  # free again once closed
    h.reject(h.place(1, "buy", "1", "49000", client_order_id="bad id!"), ErrorCode.INVALID_ORDER)
