"""Public market data over real HTTP: markets, order book, ticker, candles, trades."""

from __future__ import annotations

import pytest

from api_support import Api, LiveServer, Trader, fresh_market, new_trader, place


def book_with_levels(server: LiveServer) -> tuple[str, Trader, Trader]:
    symbol = fresh_market(server)
    base = symbol.split("/")[0]
    maker = new_trader(server, {base: "100", "USDT": "1000000"})
    taker = new_trader(server, {base: "100", "USDT": "1000000"})
    for price, quantity in (("101", "1"), ("101", "2"), ("102", "0.5")):
        place(maker, symbol, side="sell", type="limit", quantity=quantity, price=price)
    for price, quantity in (("99", "1.5"), ("98", "1"), ("98", "1"), ("97", "3")):
        place(maker, symbol, side="buy", type="limit", quantity=quantity, price=price)
    return symbol, maker, taker


def test_markets_list_and_one_market_in_every_spelling(server: LiveServer) -> None:
    api = Api(server)
    symbols = [m["symbol"] for m in api.ok("GET", "/markets")]
    assert {"BTC/USDT", "ETH/USDT"} <= set(symbols)
    for spelling in ("BTC/USDT", "BTC-USDT", "btc_usdt"):
        market = api.ok("GET", f"/markets/{spelling}")
        assert market["symbol"] == "BTC/USDT"
        assert (market["tick_size"], market["step_size"]) == ("0.01", "0.0001")
        assert (market["maker_fee_rate"], market["taker_fee_rate"]) == ("0.0005", "0.001")
        assert market["status"] == "active"
    api.fails("GET", "/markets/DOGE-USDT", 404, "MARKET_NOT_FOUND")


def test_order_book_aggregates_levels_best_first(server: LiveServer) -> None:
    symbol, _, _ = book_with_levels(server)
    api = Api(server)
    for spelling in (symbol, symbol.replace("/", "-")):
        book = api.ok("GET", f"/orderbook/{spelling}", params={"depth": 10})
        assert book["symbol"] == symbol
        assert book["asks"] == [
            {"price": "101.00", "quantity": "3.0000", "num_orders": 2},
            {"price": "102.00", "quantity": "0.5000", "num_orders": 1},
        ]
        assert book["bids"] == [
            {"price": "99.00", "quantity": "1.5000", "num_orders": 1},
            {"price": "98.00", "quantity": "2.0000", "num_orders": 2},
            {"price": "97.00", "quantity": "3.0000", "num_orders": 1},
        ]
        assert book["spread"] == "2.00"
        assert book["sequence"] > 0
    top = api.ok("GET", f"/orderbook/{symbol}", params={"depth": 1})
    assert (len(top["bids"]), len(top["asks"])) == (1, 1)


def test_order_book_sequence_moves_with_each_change(server: LiveServer) -> None:
    symbol, maker, _ = book_with_levels(server)
    api = Api(server)
    before = api.ok("GET", f"/orderbook/{symbol}")["sequence"]
    place(maker, symbol, side="buy", type="limit", quantity="1", price="96")
    after = api.ok("GET", f"/orderbook/{symbol}")
    assert after["sequence"] == before + 1
    assert after["bids"][-1] == {"price": "96.00", "quantity": "1.0000", "num_orders": 1}


@pytest.mark.parametrize("depth", ["0", "1001", "-1", "lots"])
def test_bad_depth_is_400(server: LiveServer, depth: str) -> None:
    Api(server).fails("GET", "/orderbook/BTC-USDT", 400, "INVALID_REQUEST", params={"depth": depth})


def test_unknown_book_is_404(server: LiveServer) -> None:
    Api(server).fails("GET", "/orderbook/NOPE/USDT", 404, "MARKET_NOT_FOUND")


def test_ticker_after_trades(server: LiveServer) -> None:
    symbol, _, taker = book_with_levels(server)
    api = Api(server)
    empty = api.ok("GET", f"/markets/{symbol}/ticker")
    assert empty["last_price"] is None
    assert (empty["best_bid"], empty["best_ask"]) == ("99.00", "101.00")
    place(taker, symbol, side="buy", type="market", quantity="3.5")  # 3 @ 101, 0.5 @ 102
    place(taker, symbol, side="sell", type="market", quantity="1")  # 1 @ 99
    ticker = api.ok("GET", f"/markets/{symbol.replace('/', '-')}/ticker")
    assert ticker["last_price"] == "99.00"
    assert (ticker["open_24h"], ticker["high_24h"], ticker["low_24h"]) == (
        "101.00",
        "102.00",
        "99.00",
    )
    assert ticker["price_change_24h"] == "-2.00"
    assert ticker["volume_24h"] == "4.5000"
    assert ticker["quote_volume_24h"] == "453.000000"  # 303 + 51 + 99
    assert ticker["trade_count_24h"] == 4
    assert (ticker["best_bid"], ticker["best_bid_quantity"]) == ("99.00", "0.5000")
    assert ticker["best_ask"] is None


def test_candles_from_trades(server: LiveServer) -> None:
    symbol, _, taker = book_with_levels(server)
    place(taker, symbol, side="buy", type="market", quantity="3.5")
    api = Api(server)
    (candle,) = api.ok("GET", f"/markets/{symbol}/candles", params={"interval": "1m"})
    assert (candle["open"], candle["high"], candle["low"], candle["close"]) == (
        "101.00",
        "102.00",
        "101.00",
        "102.00",
    )
    assert (candle["volume"], candle["quote_volume"], candle["trade_count"]) == (
        "3.5000",
        "354.000000",
        3,
    )
    for interval in ("5m", "1h", "1d"):
        (bigger,) = api.ok("GET", f"/markets/{symbol}/candles", params={"interval": interval})
        assert bigger["volume"] == "3.5000"
    api.fails(
        "GET", f"/markets/{symbol}/candles", 400, "INVALID_REQUEST", params={"interval": "7m"}
    )
    assert api.ok("GET", f"/markets/{symbol}/candles", params={"end_time": "1"}) == []


def test_market_trades_and_my_trades(server: LiveServer) -> None:
    symbol, maker, taker = book_with_levels(server)
    place(taker, symbol, side="buy", type="market", quantity="3.5")
    api = Api(server)
    public = api.ok("GET", "/trades", params={"symbol": symbol})
    assert [(t["price"], t["quantity"]) for t in public] == [
        ("102.00", "0.5000"),
        ("101.00", "2.0000"),
        ("101.00", "1.0000"),
    ]
    assert "fee" not in public[0] and "order_id" not in public[0]
    mine = taker.api.ok("GET", "/trades", params={"mine": "true", "symbol": symbol})
    assert [t["id"] for t in mine] == [t["id"] for t in public]
    assert {(t["side"], t["liquidity"]) for t in mine} == {("buy", "taker")}
    maker_view = maker.api.ok("GET", "/trades", params={"mine": "true"})
    assert {(t["side"], t["liquidity"]) for t in maker_view} == {("sell", "maker")}
    assert maker_view[0]["fee"] == "0.025500"  # 0.05 % of 51
    page = api.ok(
        "GET", "/trades", params={"symbol": symbol, "limit": 1, "before": public[0]["id"]}
    )
    assert [t["id"] for t in page] == [public[1]["id"]]


def test_trades_refusals(server: LiveServer) -> None:
    api = Api(server)
    api.fails("GET", "/trades", 400, "INVALID_REQUEST")  # no symbol, not mine
    api.fails("GET", "/trades", 401, "UNAUTHORIZED", params={"mine": "true"})
    api.fails("GET", "/trades", 404, "MARKET_NOT_FOUND", params={"symbol": "X-Y"})
    api.fails("GET", "/trades", 400, "INVALID_REQUEST", params={"symbol": "BTC-USDT", "limit": 0})


def test_balances_need_a_trader_token(server: LiveServer) -> None:
    Api(server).fails("GET", "/balances", 401, "UNAUTHORIZED")
    trader = new_trader(server, {"USDT": "12.5"})
    (usdt,) = trader.api.ok("GET", "/balances")
    assert usdt == {
        "asset": "USDT",
        "available": "12.500000",
        "locked": "0.000000",
        "total": "12.500000",
    }
