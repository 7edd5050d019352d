"""Settlement and fees: who pays what, rounding, and what reservations release."""

from crossbook.domain import FEE_ACCOUNT_ID, OrderStatus, Side

from unit_support import Harness, accepted_id, last_update, trades


def test_seed_fee_example_maker_sells_one_btc_taker_buys_at_market() -> None:
    h = Harness()
    h.fund(1, "BTC", "1")
    h.fund(2, "USDT", "60000")
    h.submit(1, "sell", "1", "50000")
    events = h.submit(2, "buy", "1")
    [trade] = trades(events)
    spec = h.spec()
    assert spec.format_price(trade.price_ticks) == "50000.00"
    assert spec.format_quote(trade.buyer_fee_units) == "50.00000000"  # taker 0.10 %
    assert spec.format_quote(trade.seller_fee_units) == "25.00000000"  # maker 0.05 %
    assert trade.taker_side is Side.BUY
    assert h.balance(2, "USDT") == ("9950.00000000", "0.00000000")  # -50,050
    assert h.balance(2, "BTC") == ("1.00000000", "0.00000000")
    assert h.balance(1, "USDT") == ("49975.00000000", "0.00000000")  # +49,975
    assert h.balance(1, "BTC") == ("0.00000000", "0.00000000")
    assert h.balance(FEE_ACCOUNT_ID, "USDT") == ("75.00000000", "0.00000000")


def test_seller_as_taker_pays_the_taker_rate_from_proceeds() -> None:
    h = Harness()
    h.fund(1, "USDT", "1000")
    h.fund(2, "BTC", "1")
    h.submit(1, "buy", "0.01", "50000")  # maker buy: 500 USDT + worst-case fee locked
    assert h.balance(1, "USDT") == ("499.50000000", "500.50000000")
    [trade] = trades(h.submit(2, "sell", "0.01", "49000"))
    assert trade.price_ticks == h.spec().parse_price("50000")  # maker's price
    assert h.balance(2, "USDT") == ("499.50000000", "0.00000000")  # 500 - 0.5 taker fee
    # maker paid 500 + 0.25: the unused 0.25 of its taker-rate reservation came back
    assert h.balance(1, "USDT") == ("499.75000000", "0.00000000")
    assert h.balance(FEE_ACCOUNT_ID, "USDT") == ("0.75000000", "0.00000000")


def test_fees_round_up_once_per_order_not_once_per_fill() -> None:
    # notional of one lot at 0.01 is 1 minor unit: a taker fee of 0.1 % rounds up to 1
    h = Harness(tick_size="0.00000001", lot_size="1", min_quantity="1")
    h.fund(1, "BTC", "100")
    h.fund(2, "USDT", "1")
    for _ in range(10):
        h.submit(1, "sell", "1", "0.00000100")  # ten makers, 100 minor units each
    events = h.submit(2, "buy", "10", "0.00000100")
    fills = trades(events)
    assert len(fills) == 10
    # each fill accrues 0.1 minor unit of fee: the total is ceil(1.0) = 1, not 10
    assert sum(t.buyer_fee_units for t in fills) == 1
    assert [t.buyer_fee_units for t in fills] == [1] + [0] * 9
    buyer = last_update(events, accepted_id(events))
    assert buyer.fee_paid_units == 1 and buyer.status is OrderStatus.FILLED


def test_buy_limit_reserves_price_times_quantity_plus_taker_fee() -> None:
    h = Harness()
    h.fund(1, "USDT", "10000")
    h.submit(1, "buy", "0.1", "50000")
    assert h.balance(1, "USDT") == ("4995.00000000", "5005.00000000")


def test_price_improvement_is_released_to_the_buyer() -> None:
    h = Harness()
    h.fund(1, "BTC", "1")
    h.fund(2, "USDT", "10000")
    h.submit(1, "sell", "0.1", "40000")
    events = h.submit(2, "buy", "0.1", "50000")  # reserves 5,005, pays 4,000 + 4
    assert trades(events)[0].price_ticks == h.spec().parse_price("40000")
    assert h.balance(2, "USDT") == ("5996.00000000", "0.00000000")


def test_partial_fill_keeps_exactly_the_remainders_reservation() -> None:
    h = Harness()
    h.fund(1, "BTC", "1")
    h.fund(2, "USDT", "10000")
    h.submit(1, "sell", "0.04", "40000")
    h.submit(2, "buy", "0.1", "50000")
    # paid 1,600 + 1.6 fee; keeps 0.06 * 50,000 * 1.001 = 3,003 for the resting remainder
    assert h.balance(2, "USDT") == ("5395.40000000", "3003.00000000")
    assert h.book()["bids"] == [("50000.00", "0.06000", 1)]


def test_maker_fee_is_charged_when_the_rest_fills_later() -> None:
    h = Harness()
    h.fund(1, "USDT", "10000")
    h.fund(2, "BTC", "1")
    h.submit(1, "buy", "0.1", "50000")
    h.submit(2, "sell", "0.1")  # market sell hits the resting buy
    # the buyer was maker: 5,000 + 2.5 fee; 2.5 of the 5 reserved for fees returned
    assert h.balance(1, "USDT") == ("4997.50000000", "0.00000000")
    assert h.balance(1, "BTC") == ("0.10000000", "0.00000000")
