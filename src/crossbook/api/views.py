"""What the API shows: domain and store records turned into JSON-ready dicts.

Every amount leaves as a decimal string on its market's or asset's grid
(DESIGN rule 5); ids leave as strings (64-bit ids do not survive JavaScript
numbers); times as ISO 8601 UTC with milliseconds.

Orders are shown from `OrderView` (`engine.order_view`), the one shape of an
order, built from the store or from a command's committed events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from crossbook.api.envelope import iso_ms
from crossbook.domain import Asset, MarketSpec, Side, TradeExecuted
from crossbook.engine.order_view import STOP_TYPES as _STOP_TYPES
from crossbook.engine.order_view import OrderView
from crossbook.engine.read_model.books import BookSnapshot, Level
from crossbook.engine.read_model.market_data import MarketInfo, Ticker
from crossbook.engine.read_model.records import Candle, StoredBalance, StoredTrade

# -- JSON shapes -----------------------------------------------------------------------


def order_json(spec: MarketSpec, o: OrderView) -> dict[str, Any]:
    is_stop = o.order_type in _STOP_TYPES
    by_budget = o.quote_budget_units > 0
    return {
        "id": str(o.order_id),
        "client_order_id": o.client_order_id,
        "user_id": str(o.user_id),
        "symbol": o.symbol,
        "side": o.side.value,
        "type": o.order_type.value,
        "time_in_force": o.time_in_force.value,
        "post_only": o.post_only,
        "stp_mode": o.stp_mode.value,
        "price": spec.format_price(o.price_ticks) if o.price_ticks else None,
        "stop_price": spec.format_price(o.stop_price_ticks) if is_stop else None,
        "quantity": None if by_budget else spec.format_quantity(o.quantity_lots),
        "quote_quantity": spec.format_quote(o.quote_budget_units) if by_budget else None,
        "filled_quantity": spec.format_quantity(o.filled_lots),
        "filled_quote_quantity": spec.format_quote(o.filled_notional_units),
        "fee": spec.format_quote(o.fee_paid_units),
        "fee_asset": spec.quote.code,
        "status": o.status.value,
        "close_reason": None if o.close_reason is None else o.close_reason.value,
        "triggered": o.triggered,
        "expire_at": None if o.expire_at_ms is None else iso_ms(o.expire_at_ms),
        "created_at": iso_ms(o.created_at_ms),
        "updated_at": iso_ms(o.updated_at_ms),
    }


def trade_json(
    spec: MarketSpec,
    t: StoredTrade | TradeExecuted,
    user_id: int | None = None,
    *,
    settled: bool = True,
    side: Side | None = None,
) -> dict[str, Any]:
    """A trade; with `user_id`, also that user's side, liquidity, order, fee and settlement.

    `side` says which side of a self-trade (the user on both sides) to show; by
    default the taker's. A stored trade carries its settlement status; a
    just-committed one is SETTLED (embedded: settled in its own commit) unless
    `settled` is False (remote wallet: PENDING until the wallet has applied its legs).
    """
    executed_at_ms = t.executed_at_ms if isinstance(t, StoredTrade) else t.ts_ms
    out: dict[str, Any] = {
        "id": str(t.trade_id),
        "symbol": t.symbol,
        "price": spec.format_price(t.price_ticks),
        "quantity": spec.format_quantity(t.quantity_lots),
        "quote_quantity": spec.format_quote(t.notional_units),
        "taker_side": t.taker_side.value,
        "executed_at": iso_ms(executed_at_ms),
    }
    if user_id is None:
        return out
    if side is None:
        self_trade = t.buyer_user_id == t.seller_user_id
        side = t.taker_side if self_trade else Side.BUY if t.buyer_user_id == user_id else Side.SELL
    is_buyer = side is Side.BUY
    maker_side = Side.SELL if t.taker_side is Side.BUY else Side.BUY
    out.update(
        {
            "order_id": str(t.buyer_order_id if is_buyer else t.seller_order_id),
            "side": side.value,
            "liquidity": "maker" if side is maker_side else "taker",
            "fee": spec.format_quote(t.buyer_fee_units if is_buyer else t.seller_fee_units),
            "buyer_fee": spec.format_quote(t.buyer_fee_units),
            "seller_fee": spec.format_quote(t.seller_fee_units),
            "fee_asset": spec.quote.code,
            "settlement_status": (
                t.settlement_status
                if isinstance(t, StoredTrade)
                else ("SETTLED" if settled else "PENDING")
            ),
        }
    )
    return out


def fills_json(
    spec: MarketSpec, t: StoredTrade | TradeExecuted, user_id: int, *, settled: bool = True
) -> list[dict[str, Any]]:
    """A user's fills in a trade: one, or two for a self-trade (its buy and its sell)."""
    owners = ((Side.BUY, t.buyer_user_id), (Side.SELL, t.seller_user_id))
    return [
        trade_json(spec, t, user_id, settled=settled, side=side)
        for side, owner in owners
        if owner == user_id
    ]


def level_json(spec: MarketSpec, level: Level) -> dict[str, Any]:
    return {
        "price": spec.format_price(level.price_ticks),
        "quantity": spec.format_quantity(level.quantity_lots),
        "num_orders": level.order_count,
    }


def levels_json(spec: MarketSpec, levels: Sequence[Level]) -> list[dict[str, Any]]:
    return [level_json(spec, level) for level in levels]


def spread_json(spec: MarketSpec, book: BookSnapshot) -> str | None:
    """Best ask minus best bid, or None when a side is empty."""
    if not (book.bids and book.asks):
        return None
    return spec.format_price(book.asks[0].price_ticks - book.bids[0].price_ticks)


def ticker_json(spec: MarketSpec, t: Ticker, now_ms: int) -> dict[str, Any]:
    def price(ticks: int) -> str | None:
        return spec.format_price(ticks) if ticks else None

    def best(level: Level | None) -> tuple[str | None, str | None]:
        if level is None:
            return None, None
        return spec.format_price(level.price_ticks), spec.format_quantity(level.quantity_lots)

    bid_price, bid_quantity = best(t.best_bid)
    ask_price, ask_quantity = best(t.best_ask)
    change = t.last_price_ticks - t.open_ticks if t.open_ticks and t.last_price_ticks else None
    return {
        "symbol": t.symbol,
        "last_price": price(t.last_price_ticks),
        "open_24h": price(t.open_ticks),
        "high_24h": price(t.high_ticks),
        "low_24h": price(t.low_ticks),
        "price_change_24h": None if change is None else _signed_price(spec, change),
        "volume_24h": spec.format_quantity(t.volume_lots),
        "quote_volume_24h": spec.format_quote(t.quote_volume_units),
        "trade_count_24h": t.trade_count,
        "best_bid": bid_price,
        "best_bid_quantity": bid_quantity,
        "best_ask": ask_price,
        "best_ask_quantity": ask_quantity,
        "window_start": iso_ms(t.window_start_ms),
        "timestamp": iso_ms(now_ms),
    }


def _signed_price(spec: MarketSpec, ticks: int) -> str:
    text = spec.format_price(abs(ticks))
    return f"-{text}" if ticks < 0 else text


def market_json(info: MarketInfo) -> dict[str, Any]:
    spec = info.spec
    rules = spec.rules()
    return {
        "symbol": spec.symbol,
        "base_asset": spec.base.code,
        "quote_asset": spec.quote.code,
        "base_decimals": spec.base.decimals,
        "quote_decimals": spec.quote.decimals,
        "status": info.status.value,
        "tick_size": rules["tick_size"],
        "step_size": rules["lot_size"],
        "min_quantity": rules["min_quantity"],
        "max_quantity": rules["max_quantity"],
        "min_notional": rules["min_notional"],
        "max_price": rules["max_price"],
        "maker_fee_rate": _plain(rules["maker_fee_rate"]),
        "taker_fee_rate": _plain(rules["taker_fee_rate"]),
        "sequence": info.market_seq,
    }


def _plain(decimal_text: str) -> str:
    """A rate without trailing zeros: "0.000500" -> "0.0005", "0.000000" -> "0"."""
    return decimal_text.rstrip("0").rstrip(".") if "." in decimal_text else decimal_text


def candle_json(spec: MarketSpec, interval: str, c: Candle) -> dict[str, Any]:
    return {
        "open_time": iso_ms(c.open_time_ms),
        "interval": interval,
        "open": spec.format_price(c.open_ticks),
        "high": spec.format_price(c.high_ticks),
        "low": spec.format_price(c.low_ticks),
        "close": spec.format_price(c.close_ticks),
        "volume": spec.format_quantity(c.volume_lots),
        "quote_volume": spec.format_quote(c.quote_volume_units),
        "trade_count": c.trade_count,
    }


def balance_json(asset: Asset, b: StoredBalance) -> dict[str, Any]:
    return {
        "asset": b.asset,
        "available": asset.format_amount(b.available),
        "locked": asset.format_amount(b.locked),
        "total": asset.format_amount(b.available + b.locked),
    }


def amount_json(assets: Mapping[str, Asset], asset: str, units: int) -> str:
    """Units of `asset` as a decimal string on its grid; an asset the exchange does not
    know (the wallet may hold one) as its integer minor units."""
    known = assets.get(asset)
    return str(units) if known is None else known.format_amount(units)
