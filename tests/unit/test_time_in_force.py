"""IOC, FOK, GTD and post-only."""

from crossbook.domain import (
    CancelOrder,
    CloseReason,
    ErrorCode,
    OrderStatus,
    OrderType,
    Tick,
    TimeInForce,
)

from unit_support import accepted_id, funded, last_update, trades


def test_ioc_fills_what_it_can_and_expires_the_rest() -> None:
    h = funded((1, 2, 3))
    h.submit(1, "sell", "1", "50000")
    events = h.submit(2, "buy", "3", "50000", tif=TimeInForce.IOC)
    update = last_update(events, accepted_id(events))
    assert (update.status, update.reason) == (OrderStatus.EXPIRED, CloseReason.UNFILLED_IOC)
    assert h.spec().format_quantity(update.filled_lots) == "1.00000"
    assert h.book() == {"bids": [], "asks": []}
    assert h.ex.ledger.locked(2, "USDT") == 0


def test_fok_that_cannot_fill_entirely_expires_with_no_trade() -> None:
    h = funded((1, 2, 3))
    h.submit(1, "sell", "1", "50000")
    before = h.balance(2, "USDT")
    events = h.submit(2, "buy", "1.5", "50000", tif=TimeInForce.FOK)
    assert not trades(events)
    update = last_update(events, accepted_id(events))
    assert (update.status, update.reason) == (OrderStatus.EXPIRED, CloseReason.UNFILLED_FOK)
    assert h.balance(2, "USDT") == before
    assert h.book()["asks"] == [("50000.00", "1.00000", 1)]


def test_fok_that_can_fill_entirely_fills_across_levels() -> None:
    h = funded((1, 2, 3))
    h.submit(1, "sell", "1", "50000")
    h.submit(1, "sell", "1", "50001")
    events = h.submit(2, "buy", "1.5", "50001", tif=TimeInForce.FOK)
    assert len(trades(events)) == 2
    assert last_update(events, accepted_id(events)).status is OrderStatus.FILLED


def test_fok_market_sell_by_quantity() -> None:
    h = funded((1, 2, 3))
    h.submit(1, "buy", "1", "50000")
    events = h.submit(2, "sell", "2", tif=TimeInForce.FOK)
    assert not trades(events)
    assert last_update(events, accepted_id(events)).reason is CloseReason.UNFILLED_FOK


def test_gtd_order_rests_until_its_expiry_then_releases_funds() -> None:
    h = funded((1, 2, 3))
    h.run(Tick(1_000))
    order_id = accepted_id(
        h.submit(1, "buy", "1", "49000", tif=TimeInForce.GTD, expire_at_ms=5_000)
    )
    assert h.run(Tick(4_999)) == []
    assert order_id in h.ex.orders
    events = h.run(Tick(5_000))
    update = last_update(events, order_id)
    assert (update.status, update.reason) == (OrderStatus.EXPIRED, CloseReason.GTD_EXPIRED)
    assert update.ts_ms == 5_000
    assert h.balance(1, "USDT") == ("1000000.00000000", "0.00000000")
    assert h.book()["bids"] == []


def test_gtd_needs_a_future_expiry_and_others_take_none() -> None:
    h = funded((1, 2, 3))
    h.run(Tick(1_000))
    h.reject(h.place(1, "buy", "1", "49000", tif=TimeInForce.GTD), ErrorCode.INVALID_EXPIRY)
    h.reject(
        h.place(1, "buy", "1", "49000", tif=TimeInForce.GTD, expire_at_ms=1_000),
        ErrorCode.INVALID_EXPIRY,
    )
    h.reject(h.place(1, "buy", "1", "49000", expire_at_ms=9_000), ErrorCode.INVALID_EXPIRY)
    h.reject(
        h.place(1, "buy", "1", tif=TimeInForce.GTD, expire_at_ms=9_000), ErrorCode.INVALID_ORDER
    )


def test_time_never_goes_backwards() -> None:
    h = funded((1, 2, 3))
    h.run(Tick(5_000))
    h.run(Tick(10))
    assert h.ex.now_ms == 5_000


def test_expiry_of_a_cancelled_gtd_order_is_ignored() -> None:
    h = funded((1, 2, 3))
    h.run(Tick(1))
    order_id = accepted_id(h.submit(1, "buy", "1", "49000", tif=TimeInForce.GTD, expire_at_ms=50))
    h.run(CancelOrder(1, order_id))
    assert h.run(Tick(100)) == []


def test_post_only_rests_as_maker_or_is_refused() -> None:
    h = funded((1, 2, 3))
    h.submit(1, "sell", "1", "50000")
    h.reject(h.place(2, "buy", "1", "50000", post_only=True), ErrorCode.POST_ONLY_WOULD_TAKE)
    events = h.submit(2, "buy", "1", "49999.99", post_only=True)
    assert not trades(events)
    assert h.book()["bids"] == [("49999.99", "1.00000", 1)]


def test_post_only_needs_a_resting_time_in_force() -> None:
    h = funded((1, 2, 3))
    for tif in (TimeInForce.IOC, TimeInForce.FOK):
        h.reject(h.place(1, "buy", "1", "49000", post_only=True, tif=tif), ErrorCode.INVALID_ORDER)
    h.reject(
        h.place(1, "buy", "1", post_only=True, order_type=OrderType.MARKET), ErrorCode.INVALID_ORDER
    )


def test_next_expiry_is_the_earliest_open_gtd_order_and_skips_closed_ones() -> None:
    h = funded((1, 2, 3))
    h.run(Tick(1_000))
    assert h.ex.next_expiry_ms() is None
    first = accepted_id(h.submit(1, "buy", "1", "49000", tif=TimeInForce.GTD, expire_at_ms=2_000))
    h.submit(1, "buy", "1", "49001", tif=TimeInForce.GTD, expire_at_ms=3_000)
    h.submit(1, "buy", "1", "49002")  # GTC: never expires
    assert h.ex.next_expiry_ms() == 2_000
    h.run(CancelOrder(1, first))
    assert h.ex.next_expiry_ms() == 3_000  # the cancelled order's entry is stale
    h.submit(2, "sell", "1", "49001")  # fills the GTD bid at 49001 (after 49002)
    h.submit(2, "sell", "1", "49001")
    assert h.ex.next_expiry_ms() is None  # filled, so nothing is left to expire
