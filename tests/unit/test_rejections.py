"""Every rejection code: a clear refusal that changes nothing (state digest unchanged)."""

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from crossbook.domain import (
    AmendOrder,
    CreateAsset,
    CreateMarket,
    Deposit,
    ErrorCode,
    ExchangeLimits,
    MarketStatus,
    OrderType,
    PlaceOrder,
    SetMarketStatus,
    Side,
    Withdraw,
)
from crossbook.domain.units import INT64_MAX

from unit_support import BTC, DOMAIN_COMPILED, Harness, accepted_id, funded


def funded_for_rejections(limits: ExchangeLimits | None = None) -> Harness:
    return funded((1, 2), {"BTC": "10", "USDT": "100000"}, limits, min_notional="10")


def limit(h: Harness, **changes: Any) -> PlaceOrder:
    return replace(h.place(1, "buy", "1", "50000"), **changes)


CASES: list[tuple[str, ErrorCode, Callable[[Harness], Any]]] = [
    ("zero price", ErrorCode.INVALID_PRICE, lambda h: limit(h, price_ticks=0)),
    ("negative price", ErrorCode.INVALID_PRICE, lambda h: limit(h, price_ticks=-5)),
    (
        "price above max",
        ErrorCode.INVALID_PRICE,
        lambda h: limit(h, price_ticks=h.spec().max_price_ticks + 1),
    ),
    ("zero quantity", ErrorCode.INVALID_QUANTITY, lambda h: limit(h, quantity_lots=0)),
    ("negative quantity", ErrorCode.INVALID_QUANTITY, lambda h: limit(h, quantity_lots=-1)),
    (
        "quantity above max",
        ErrorCode.INVALID_QUANTITY,
        lambda h: limit(h, quantity_lots=h.spec().max_quantity_lots + 1),
    ),
    (
        "budget out of range",
        ErrorCode.INVALID_QUANTITY,
        lambda h: limit(
            h,
            order_type=OrderType.MARKET,
            price_ticks=0,
            quantity_lots=0,
            quote_budget_units=INT64_MAX + 1,
        ),
    ),
    (
        "below min notional",
        ErrorCode.MIN_NOTIONAL,
        lambda h: limit(h, quantity_lots=1, price_ticks=100),
    ),
    (
        "zero stop price",
        ErrorCode.INVALID_STOP_PRICE,
        lambda h: limit(h, order_type=OrderType.STOP_LIMIT, stop_price_ticks=0),
    ),
    ("expiry without GTD", ErrorCode.INVALID_EXPIRY, lambda h: limit(h, expire_at_ms=10)),
    ("market with price", ErrorCode.INVALID_ORDER, lambda h: limit(h, order_type=OrderType.MARKET)),
    ("limit with budget", ErrorCode.INVALID_ORDER, lambda h: limit(h, quote_budget_units=5)),
    ("stop price on a limit", ErrorCode.INVALID_ORDER, lambda h: limit(h, stop_price_ticks=5)),
    (
        "market sell by budget",
        ErrorCode.INVALID_ORDER,
        lambda h: limit(
            h,
            side=Side.SELL,
            order_type=OrderType.MARKET,
            price_ticks=0,
            quantity_lots=0,
            quote_budget_units=10**9,
        ),
    ),
    ("string side", ErrorCode.INVALID_ORDER, lambda h: limit(h, side="buy ")),
    ("unknown market", ErrorCode.MARKET_NOT_FOUND, lambda h: limit(h, symbol="DOGE/USDT")),
    ("fee account trading", ErrorCode.INVALID_USER, lambda h: limit(h, user_id=0)),
    ("negative user", ErrorCode.INVALID_USER, lambda h: Deposit(-1, "BTC", 1)),
    (
        "insufficient for limit",
        ErrorCode.INSUFFICIENT_BALANCE,
        lambda h: limit(h, quantity_lots=h.spec().parse_quantity("3")),
    ),
    (
        "insufficient to sell",
        ErrorCode.INSUFFICIENT_BALANCE,
        lambda h: limit(h, side=Side.SELL, quantity_lots=h.spec().parse_quantity("11")),
    ),
    ("withdraw too much", ErrorCode.INSUFFICIENT_BALANCE, lambda h: Withdraw(1, "BTC", 11 * 10**8)),
    ("zero deposit", ErrorCode.INVALID_AMOUNT, lambda h: Deposit(1, "BTC", 0)),
    ("deposit beyond int64", ErrorCode.INVALID_AMOUNT, lambda h: Deposit(1, "BTC", INT64_MAX)),
    ("float deposit", ErrorCode.INVALID_AMOUNT, lambda h: Deposit(1, "BTC", 1.5)),
    ("unknown asset", ErrorCode.ASSET_NOT_FOUND, lambda h: Deposit(1, "DOGE", 1)),
    ("asset exists", ErrorCode.ASSET_EXISTS, lambda h: CreateAsset("BTC", 8)),
    ("bad asset", ErrorCode.INVALID_ASSET, lambda h: CreateAsset("doge", 8)),
    (
        "market exists",
        ErrorCode.MARKET_EXISTS,
        lambda h: CreateMarket("BTC", "USDT", "0.01", "0.00001", "0.00001", "10"),
    ),
    (
        "bad market spec",
        ErrorCode.INVALID_MARKET_SPEC,
        lambda h: CreateMarket("ETH", "BTC", "0.0000001", "0.0000001", "0.0000001", "10"),
    ),
    ("unknown order", ErrorCode.ORDER_NOT_FOUND, lambda h: AmendOrder(1, 999, quantity_lots=5)),
]
ILL_TYPED = {"string side", "float deposit"}  # compiled, the command cannot even be built


@pytest.mark.parametrize(("name", "code", "make"), CASES, ids=[c[0] for c in CASES])
def test_refused_with_code_and_nothing_changes(
    name: str, code: ErrorCode, make: Callable[[Harness], Any]
) -> None:
    h = funded_for_rejections()
    if DOMAIN_COMPILED and name in ILL_TYPED:
        with pytest.raises(TypeError):
            make(h)
        return
    error = h.reject(make(h), code)
    assert error.message


def test_stateful_refusals_change_nothing() -> None:
    h = funded_for_rejections(ExchangeLimits(max_open_orders_per_user=2))
    h.submit(2, "sell", "0.1", "41000")
    h.reject(h.place(1, "buy", "0.1", "41000", post_only=True), ErrorCode.POST_ONLY_WOULD_TAKE)
    h.submit(1, "buy", "0.1", "41000")  # trade at 41,000
    h.submit(1, "buy", "0.1", "40000", client_order_id="a")
    h.reject(
        h.place(1, "buy", "0.1", "40000", client_order_id="a"), ErrorCode.DUPLICATE_CLIENT_ORDER_ID
    )
    h.submit(1, "buy", "0.1", "40000")
    h.reject(h.place(1, "buy", "0.1", "40000"), ErrorCode.TOO_MANY_OPEN_ORDERS)
    h.reject(
        h.place(2, "buy", "0.1", "42000", stop="41000", order_type=OrderType.STOP_LIMIT),
        ErrorCode.STOP_WOULD_TRIGGER,
    )
    stop = accepted_id(
        h.submit(2, "buy", "0.1", "42000", stop="41500", order_type=OrderType.STOP_LIMIT)
    )
    h.reject(AmendOrder(2, stop, quantity_lots=1), ErrorCode.ORDER_NOT_AMENDABLE)
    h.run(SetMarketStatus(BTC, MarketStatus.HALTED))
    h.reject(h.place(2, "sell", "0.1", "41000"), ErrorCode.MARKET_HALTED)


def test_every_error_code_is_exercised() -> None:
    """Guards this file: a new code needs a case here."""
    stateful = {
        ErrorCode.DUPLICATE_CLIENT_ORDER_ID,
        ErrorCode.TOO_MANY_OPEN_ORDERS,
        ErrorCode.POST_ONLY_WOULD_TAKE,
        ErrorCode.STOP_WOULD_TRIGGER,
        ErrorCode.ORDER_NOT_AMENDABLE,
        ErrorCode.MARKET_HALTED,
        ErrorCode.FUNDS_HELD_BY_WALLET,  # remote-wallet mode: test_wallet_funding.py
    }
    assert {code for _, code, _ in CASES} | stateful == set(ErrorCode)


def test_an_assets_total_supply_stays_within_64_bits() -> None:
    """No balance can then overflow, however trades move the supply between accounts."""
    h = funded((), {})
    h.run(Deposit(1, "USDT", INT64_MAX - 10))
    h.reject(Deposit(2, "USDT", 11), ErrorCode.INVALID_AMOUNT)
    h.run(Deposit(2, "USDT", 10))
    h.reject(Deposit(1, "USDT", 1), ErrorCode.INVALID_AMOUNT)
    h.run(Withdraw(1, "USDT", 5))
    h.run(Deposit(3, "USDT", 5))
