"""Test helpers: an exchange with BTC/USDT and ETH/USDT, driven with decimal strings."""

from __future__ import annotations

from typing import Any

from crossbook._compiled import current_build
from crossbook.domain import (
    CreateAsset,
    CreateMarket,
    Deposit,
    DomainError,
    ErrorCode,
    Event,
    Exchange,
    ExchangeLimits,
    MarketSpec,
    OrderAccepted,
    OrderType,
    OrderUpdated,
    PlaceOrder,
    Side,
    StpMode,
    TimeInForce,
    TradeExecuted,
)
from crossbook.domain.invariants import check_all

BTC = "BTC/USDT"
ETH = "ETH/USDT"

# The compiled domain (mypyc) enforces its type annotations at run time: a value of the
# wrong type raises TypeError where it is passed (a command's field, a function's
# argument) instead of reaching the pure build's checks, which refuse it with a code.
DOMAIN_COMPILED = current_build().compiled


class Harness:
    """Wraps an `Exchange`: every command is followed by the full invariant check."""

    def __init__(self, limits: ExchangeLimits | None = None, **market_rules: str) -> None:
        self.ex = Exchange(limits)
        self.events: list[Event] = []
        for code in ("BTC", "ETH", "USDT"):
            self.run(CreateAsset(code, 8))
        rules = {
            "tick_size": "0.01",
            "lot_size": "0.00001",
            "min_quantity": "0.00001",
            "max_quantity": "1000",
        } | market_rules
        self.run(CreateMarket("BTC", "USDT", **rules))
        self.run(CreateMarket("ETH", "USDT", **rules))

    def run(self, command: Any) -> list[Event]:
        events = self.ex.execute(command)
        check_all(self.ex)
        self.events.extend(events)
        return events

    def reject(self, command: Any, code: ErrorCode) -> DomainError:
        """Assert `command` is refused with `code` and changes nothing."""
        before = self.ex.state_digest()
        try:
            self.ex.execute(command)
        except DomainError as error:
            assert error.code == code, (error.code, code, error.message)
            assert self.ex.state_digest() == before
            return error
        raise AssertionError(f"{command} was accepted, expected {code}")

    def spec(self, symbol: str = BTC) -> MarketSpec:
        return self.ex.market(symbol).spec

    def fund(self, user_id: int, asset: str, amount: str) -> None:
        units = self.ex.asset(asset).parse_amount(amount)
        self.run(Deposit(user_id, asset, units))

    def place(
        self,
        user_id: int,
        side: str,
        quantity: str | None = None,
        price: str | None = None,
        *,
        symbol: str = BTC,
        order_type: OrderType | None = None,
        quote: str | None = None,
        stop: str | None = None,
        tif: TimeInForce = TimeInForce.GTC,
        post_only: bool = False,
        client_order_id: str | None = None,
        stp: StpMode = StpMode.CANCEL_TAKER,
        expire_at_ms: int | None = None,
    ) -> PlaceOrder:
        spec = self.spec(symbol)
        if order_type is None:
            order_type = OrderType.LIMIT if price is not None else OrderType.MARKET
        return PlaceOrder(
            user_id=user_id,
            symbol=symbol,
            side=Side(side),
            order_type=order_type,
            quantity_lots=spec.parse_quantity(quantity) if quantity else 0,
            price_ticks=spec.parse_price(price) if price else 0,
            quote_budget_units=spec.parse_quote_quantity(quote) if quote else 0,
            stop_price_ticks=spec.parse_price(stop) if stop else 0,
            time_in_force=tif,
            post_only=post_only,
            client_order_id=client_order_id,
            stp_mode=stp,
            expire_at_ms=expire_at_ms,
        )

    def submit(
        self,
        user_id: int,
        side: str,
        quantity: str | None = None,
        price: str | None = None,
        **kwargs: Any,
    ) -> list[Event]:
        return self.run(self.place(user_id, side, quantity, price, **kwargs))

    def balance(self, user_id: int, asset: str) -> tuple[str, str]:
        """(available, locked) as decimal strings."""
        fmt = self.ex.asset(asset).format_amount
        return (
            fmt(self.ex.ledger.available(user_id, asset)),
            fmt(self.ex.ledger.locked(user_id, asset)),
        )

    def book(self, symbol: str = BTC) -> dict[str, list[tuple[str, str, int]]]:
        spec = self.spec(symbol)
        book = self.ex.market(symbol).book
        return {
            name: [(spec.format_price(p), spec.format_quantity(q), n) for p, q, n in side.depth(50)]
            for name, side in (("bids", book.bids), ("asks", book.asks))
        }


def funded(
    users: tuple[int, ...] = (1, 2, 3, 4),
    balances: dict[str, str] | None = None,
    limits: ExchangeLimits | None = None,
    **market_rules: str,
) -> Harness:
    """A harness whose users hold `balances` (default 10 BTC and 1,000,000 USDT each)."""
    h = Harness(limits, **market_rules)
    for user in users:
        for asset, amount in (balances or {"BTC": "10", "USDT": "1000000"}).items():
            h.fund(user, asset, amount)
    return h


def trades(events: list[Event]) -> list[TradeExecuted]:
    return [e for e in events if isinstance(e, TradeExecuted)]


def last_update(events: list[Event], order_id: int) -> OrderUpdated:
    updates = [e for e in events if isinstance(e, OrderUpdated) and e.order_id == order_id]
    assert updates, f"no update for order {order_id}"
    return updates[-1]


def accepted_id(events: list[Event]) -> int:
    accepted = [e for e in events if isinstance(e, OrderAccepted)]
    assert accepted, "no order accepted"
    return accepted[0].order_id
