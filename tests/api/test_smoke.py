from api_support import Api, LiveServer, fresh_market, new_trader, place


def test_a_trade_through_the_api_settles_with_the_seed_fees(server: LiveServer) -> None:
    symbol = fresh_market(server)
    base = symbol.split("/")[0]
    seller = new_trader(server, {base: "1"})
    buyer = new_trader(server, {"USDT": "60000"})
    place(seller, symbol, side="sell", type="limit", quantity="1", price="50000")
    placed = place(buyer, symbol, side="buy", type="market", quantity="1")
    assert placed["order"]["status"] == "filled"
    balances = {b["asset"]: b for b in buyer.api.ok("GET", "/balances")}
    assert balances["USDT"]["available"] == "9950.000000"
    assert Api(server).ok("GET", "/markets")
