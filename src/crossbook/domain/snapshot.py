"""Restore an `Exchange` exactly from its canonical state (`Exchange.state()`).

This is how an engine recovers: the store keeps what `state()` describes (assets,
market rules and status, balances, open orders with their fills, fees and
reservations, counters), and `restore` rebuilds books and stop books in exact
time priority. The round trip is exact: `restore(ex.state()).state_digest() ==
ex.state_digest()`, and both exchanges answer every later command identically.

The state is plain data (JSON-compatible after enum values become strings), so
`restore` accepts either the dict `state()` returns or its JSON round trip.
"""

from __future__ import annotations

from typing import Any

from crossbook.domain.exchange import Exchange, ExchangeLimits, Funding, Market
from crossbook.domain.ledger import Balance
from crossbook.domain.markets import Asset, MarketSpec, MarketStatus
from crossbook.domain.orders import order_from_record


def restore(
    state: dict[str, Any],
    limits: ExchangeLimits | None = None,
    funding: Funding = Funding.EMBEDDED,
) -> Exchange:
    ex = Exchange(limits, funding)
    for code, decimals in state["assets"]:
        ex.assets[code] = Asset.create(code, decimals)
    for market_state in state["markets"]:
        market = _restore_market(ex, market_state)
        ex.markets[market.spec.symbol] = market
    for user_id, asset, available, locked in state["balances"]:
        balance = ex.ledger.balances[(user_id, asset)] = Balance()
        balance.available, balance.locked = available, locked
    ex.ledger.net_deposits.update(dict(state["net_deposits"]))
    orders = sorted(map(order_from_record, state["orders"]), key=lambda o: o.priority)
    for order in orders:
        market = ex.markets[order.symbol]
        if order.triggered:
            market.book.side(order.side).add(order)
        else:
            market.stops.add(order)
        ex._register(order)  # the exchange's own bookkeeping: ids, client ids, expiries
    counters = state["counters"]
    ex.now_ms, ex.seq = counters["now_ms"], counters["seq"]
    ex.next_order_id, ex.next_trade_id = counters["next_order_id"], counters["next_trade_id"]
    ex.next_priority = counters["next_priority"]
    return ex


def _restore_market(ex: Exchange, data: dict[str, Any]) -> Market:
    rules = data["rules"]
    base, quote = ex.assets[rules["base"]], ex.assets[rules["quote"]]
    spec = MarketSpec.create(
        base,
        quote,
        tick_size=rules["tick_size"],
        lot_size=rules["lot_size"],
        min_quantity=rules["min_quantity"],
        max_quantity=rules["max_quantity"],
        min_notional=rules["min_notional"],
        max_price=rules["max_price"],
        maker_fee_rate=rules["maker_fee_rate"],
        taker_fee_rate=rules["taker_fee_rate"],
    )
    market = Market(spec)
    market.status = MarketStatus(data["status"])
    market.last_price_ticks = data["last_price_ticks"]
    market.market_seq = data["market_seq"]
    return market
