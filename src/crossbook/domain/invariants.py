"""The invariants of DESIGN rule 6, one checking function each.

`check_all` runs every check (tests call it after every command); `check_cheap`
is the constant-time subset meant to run after every batch in production. A
violation raises `InvariantViolationError`: it is a bug, and the program must stop.

`check_fills_match_trades` needs the trade history, which the exchange does not
keep (it keeps only open orders); callers that have the trades (tests, stores)
pass them in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from crossbook.domain._compile_hints import mypyc_attr
from crossbook.domain.book import BookSide
from crossbook.domain.events import TradeExecuted
from crossbook.domain.exchange import Exchange, Funding, Market
from crossbook.domain.fees import fee_total
from crossbook.domain.orders import OrderStatus, Side


# A plain Python class when compiled: mypyc's native classes cannot inherit from
# AssertionError. (No effect on Python; see `_compile_hints`.)
@mypyc_attr(native_class=False)
class InvariantViolationError(AssertionError):
    """A broken invariant: a bug, never an expected condition."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvariantViolationError(message)


def check_not_crossed(market: Market) -> None:
    bid, ask = market.book.best_bid_ticks(), market.book.best_ask_ticks()
    _require(
        bid is None or ask is None or bid < ask,
        f"{market.spec.symbol}: book crossed (bid {bid} >= ask {ask})",
    )


def check_book(market: Market) -> None:
    """Not crossed; levels sorted, non-empty, totals equal to their orders, FIFO by priority."""
    check_not_crossed(market)
    for book_side in (market.book.bids, market.book.asks):
        _check_side(market.spec.symbol, book_side)


def _check_side(symbol: str, book_side: BookSide) -> None:
    _require(book_side.keys == sorted(book_side.levels), f"{symbol}: level keys out of order")
    for key, level in book_side.levels.items():
        _require(key == book_side.sign * level.price_ticks, f"{symbol}: level keyed wrongly")
        orders = list(level.orders())
        _require(len(orders) == level.order_count > 0, f"{symbol}@{key}: bad order count")
        _require(
            level.total_lots == sum(o.remaining_lots for o in orders),
            f"{symbol}@{key}: level total differs from its orders",
        )
        priorities = [o.priority for o in orders]
        _require(priorities == sorted(priorities), f"{symbol}@{key}: not in time priority")
        for order in orders:
            _require(
                order.side is book_side.side
                and order.price_ticks == level.price_ticks
                and order.level is level
                and order.remaining_lots > 0,
                f"{symbol}: misplaced order {order.order_id}",
            )


def check_balances(exchange: Exchange) -> None:
    """No negative balance; per asset, all accounts (fee account included) sum to net deposits.

    Wallet-funded, nothing is available between commands (it went back to the wallet)
    and nothing was deposited: the accounts hold exactly the open orders' reservations.
    """
    totals: dict[str, int] = {}
    wallet_funded = exchange.funding is Funding.WALLET
    for (user_id, asset), balance in exchange.ledger.balances.items():
        _require(
            balance.available >= 0 and balance.locked >= 0,
            f"negative balance {user_id}/{asset}: {balance.available}/{balance.locked}",
        )
        _require(
            not (wallet_funded and balance.available),
            f"wallet-funded, {user_id}/{asset} has {balance.available} available",
        )
        totals[asset] = totals.get(asset, 0) + balance.total
    for asset, net in exchange.ledger.net_deposits.items():
        _require(
            totals.get(asset, 0) == net,
            f"{asset}: accounts hold {totals.get(asset, 0)}, deposits minus withdrawals {net}",
        )


def check_reservations(exchange: Exchange) -> None:
    """Locked funds equal the sum of the open orders' reservations, per user and asset."""
    reserved: dict[tuple[int, str], int] = {}
    for order in exchange.orders.values():
        spec = exchange.markets[order.symbol].spec
        asset = spec.quote.code if order.side is Side.BUY else spec.base.code
        key = (order.user_id, asset)
        reserved[key] = reserved.get(key, 0) + order.reserved_units
    for (user_id, asset), balance in exchange.ledger.balances.items():
        _require(
            balance.locked == reserved.pop((user_id, asset), 0),
            f"{user_id}/{asset}: locked {balance.locked} != open-order reservations",
        )
    _require(all(v == 0 for v in reserved.values()), f"reservations without balance: {reserved}")


def check_orders(exchange: Exchange) -> None:
    """Each open order is where it should be, and its fills and fees add up."""
    booked = 0
    for market in exchange.markets.values():
        booked += sum(
            level.order_count
            for side in (market.book.bids, market.book.asks)
            for level in side.levels.values()
        )
        booked += len(market.stops)
    _require(booked == len(exchange.orders), "open-order registry differs from books and stops")
    for order_id, order in exchange.orders.items():
        oid = f"order {order_id}"
        _require(order_id == order.order_id, f"registry key {order_id} != {oid}")
        _require(
            order.status in (OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED),
            f"closed order still open: {oid}",
        )
        if order.quote_budget_units:  # only a waiting stop-market buy rests with a budget
            _require(order.filled_lots == 0 and not order.triggered, f"bad budget: {oid}")
        else:
            _require(0 <= order.filled_lots < order.quantity_lots, f"bad fill: {oid}")
        _require(
            (order.filled_lots > 0) == (order.status is OrderStatus.PARTIALLY_FILLED),
            f"status disagrees with fills: {oid}",
        )
        _require(order.fee_paid_units == fee_total(order.fee_accrued), f"bad fee: {oid}")
        _require((order.level is not None) == order.triggered, f"misplaced order: {oid}")


def check_fills_match_trades(
    filled_lots_by_order: Mapping[int, int], trades: Iterable[TradeExecuted]
) -> None:
    """Every order's filled quantity equals the sum of its trades' quantities."""
    traded: dict[int, int] = {}
    for trade in trades:
        for order_id in (trade.buyer_order_id, trade.seller_order_id):
            traded[order_id] = traded.get(order_id, 0) + trade.quantity_lots
    for order_id, filled in filled_lots_by_order.items():
        _require(
            traded.get(order_id, 0) == filled,
            f"order {order_id}: filled {filled} != traded {traded.get(order_id, 0)}",
        )


def check_cheap(exchange: Exchange, symbols: Iterable[str]) -> None:
    """The per-batch subset: the touched books are not crossed."""
    for symbol in symbols:
        check_not_crossed(exchange.markets[symbol])


def check_all(exchange: Exchange) -> None:
    for market in exchange.markets.values():
        check_book(market)
    check_balances(exchange)
    check_reservations(exchange)
    check_orders(exchange)
