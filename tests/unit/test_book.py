"""The order book: best price, FIFO levels, O(1) removal, depth and L3 views."""

from crossbook.domain import Order, OrderType, Side, StpMode, TimeInForce
from crossbook.domain.book import OrderBook


def order(order_id: int, side: Side, price: int, lots: int) -> Order:
    return Order(
        order_id,
        1,
        "X/Y",
        side,
        OrderType.LIMIT,
        TimeInForce.GTC,
        price,
        lots,
        0,
        0,
        None,
        StpMode.NONE,
        False,
        None,
        order_id,
        0,
    )


def test_best_prices_and_spread() -> None:
    book = OrderBook("X/Y")
    assert book.best_bid_ticks() is None and book.spread_ticks() is None
    for i, (side, price) in enumerate(
        [
            (Side.BUY, 99),
            (Side.BUY, 100),
            (Side.BUY, 97),
            (Side.SELL, 103),
            (Side.SELL, 101),
            (Side.SELL, 105),
        ]
    ):
        book.side(side).add(order(i + 1, side, price, 1))
    assert (book.best_bid_ticks(), book.best_ask_ticks(), book.spread_ticks()) == (100, 101, 1)
    assert [p for p, _, _ in book.bids.depth(10)] == [100, 99, 97]
    assert [p for p, _, _ in book.asks.depth(2)] == [101, 103]


def test_level_is_fifo_and_totals_follow_orders() -> None:
    book = OrderBook("X/Y")
    orders = [order(i, Side.BUY, 100, i) for i in (1, 2, 3)]
    for o in orders:
        book.bids.add(o)
    level = book.bids.best()
    assert level is not None
    assert [o.order_id for o in level.orders()] == [1, 2, 3]
    assert (level.total_lots, level.order_count) == (6, 3)
    book.bids.remove(orders[1])
    assert [o.order_id for o in level.orders()] == [1, 3]
    assert (level.total_lots, level.order_count) == (4, 2)
    assert book.bids.depth(1) == [(100, 4, 2)]


def test_removing_the_last_order_drops_the_level_anywhere_in_the_book() -> None:
    book = OrderBook("X/Y")
    asks = [order(i, Side.SELL, p, 1) for i, p in enumerate([101, 102, 103, 104], start=1)]
    for o in asks:
        book.asks.add(o)
    book.asks.remove(asks[2])  # middle level
    book.asks.remove(asks[0])  # best level
    assert [p for p, _, _ in book.asks.depth(10)] == [102, 104]
    assert sorted(book.asks.levels) == book.asks.keys
    assert asks[0].level is None and asks[0].prev is None and asks[0].next is None


def test_l3_view_lists_orders_in_time_priority() -> None:
    book = OrderBook("X/Y")
    book.asks.add(order(1, Side.SELL, 101, 5))
    book.asks.add(order(2, Side.SELL, 101, 3))
    book.bids.add(order(3, Side.BUY, 99, 2))
    assert book.l3() == {Side.BUY: [(99, [(3, 2)])], Side.SELL: [(101, [(1, 5), (2, 3)])]}
