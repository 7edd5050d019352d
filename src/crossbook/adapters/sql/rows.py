"""A `CommitBatch` as rows, table by table, in each table's column order (no I/O).

Both writers (PostgreSQL, SQLite) write exactly these tuples, so what is stored
does not depend on the backend. The functions here are the store's hot path:
plain loops over the batch, no per-row objects beyond the tuples themselves.

Invariants:
- event rows carry `payload` = the JSON of `event.to_dict()` (enums as their
  values, compact separators); the dict is read from each event class's
  `field_names`, in `Event.to_dict` order (one cached getter per class), unless
  the class defines its own `to_dict`;
- every trade yields exactly five ledger legs (`schema.LEG_KINDS`) whose amounts
  sum to zero per asset, fees included: the domain's `trade_legs` of the event,
  signed (a debit negative); a deposit or withdrawal yields one leg;
- order rows follow `RECORD_FIELDS` (the `orders` table has those columns in
  that order);
- the wide columns (`fee_accrued`, asset totals) are Python ints, or for SQLite
  their decimal text when beyond 64 bits (see `wide_value`); asset totals are
  written as absolute values computed here (SQLite cannot add beyond 64 bits).
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from crossbook.adapters.sql.schema import (
    HOLD_CONSUMED,
    HOLD_VOIDED,
    LEG_BUYER_PAYS,
    LEG_BUYER_RECEIVES,
    LEG_DEPOSIT,
    LEG_FEE,
    LEG_SELLER_DELIVERS,
    LEG_SELLER_RECEIVES,
    LEG_WITHDRAWAL,
    PENDING,
    RULE_COLUMNS,
    SETTLED,
)
from crossbook.domain import (
    FEE_ACCOUNT_ID,
    Asset,
    Deposited,
    Event,
    MarketSpec,
    TradeExecuted,
    Withdrawn,
)
from crossbook.domain.orders import RECORD_FIELDS
from crossbook.domain.settlement import trade_legs
from crossbook.domain.units import INT64_MAX
from crossbook.engine.batch import CommitBatch, HoldFate
from crossbook.engine.settlement_plan import PlannedSettlement, SettlementStatus
from crossbook.sql_support.wide_integer import wide_value

EventRow = tuple[int, int, str, str | None, int, str]
LedgerRow = tuple[int, int, str, int, str, int | None, int | None]
TradeRow = tuple[Any, ...]
OrderRow = tuple[Any, ...]
BalanceRow = tuple[int, str, int, int]
MarketRow = tuple[Any, ...]  # symbol, RULE_COLUMNS…, status, last_price_ticks, market_seq
MarketUpdateRow = tuple[str, str, int, int]  # symbol, status, last_price_ticks, market_seq
SettlementRow = tuple[Any, ...]
SettlementLegRow = tuple[Any, ...]
HoldRow = tuple[str, str, int, str, int, int | None, int]

EVENT_COLUMNS = ("seq", "market_seq", "kind", "symbol", "ts_ms", "payload")
LEDGER_COLUMNS = ("seq", "user_id", "asset", "amount", "kind", "trade_id", "order_id")
TRADE_COLUMNS = (
    "trade_id",
    "seq",
    "market_seq",
    "symbol",
    "price_ticks",
    "quantity_lots",
    "notional_units",
    "taker_side",
    "maker_order_id",
    "buyer_order_id",
    "seller_order_id",
    "buyer_user_id",
    "seller_user_id",
    "buyer_fee_units",
    "seller_fee_units",
    "executed_at_ms",
    "settlement_status",
    "settled_at_ms",
)
ORDER_COLUMNS = RECORD_FIELDS
SETTLEMENT_COLUMNS = (
    "settlement_id",
    "kind",
    "trade_id",
    "status",
    "attempts",
    "reason",
    "created_at_ms",
    "updated_at_ms",
    "settled_at_ms",
    "failed_at_ms",
)
SETTLEMENT_LEG_COLUMNS = (
    "settlement_id",
    "leg_no",
    "name",
    "op",
    "user_id",
    "asset",
    "amount_units",
    "account",
    "target_key",
    "state",
    "generation",
)
HOLD_COLUMNS = ("hold_key", "fate", "user_id", "asset", "amount_units", "order_id", "seq")
MARKET_COLUMNS = ("symbol", *RULE_COLUMNS, "status", "last_price_ticks", "market_seq")
_FEE_ACCRUED_INDEX = RECORD_FIELDS.index("fee_accrued")


@dataclass(frozen=True, slots=True)
class MarketAssets:
    """What a trade's ledger legs need to know about its market."""

    base: str
    quote: str
    spec: MarketSpec

    @classmethod
    def from_rules(cls, rules: Mapping[str, str], decimals: Mapping[str, int]) -> MarketAssets:
        base, quote = rules["base"], rules["quote"]
        spec = MarketSpec.create(
            Asset(base, decimals[base]),
            Asset(quote, decimals[quote]),
            **{name: rules[name] for name in RULE_COLUMNS[2:]},
        )
        return cls(base, quote, spec)


@dataclass(frozen=True, slots=True)
class Committed:
    """What the store knows of the committed state, as far as a batch's rows depend on it."""

    seq: int  # the last committed event
    counters: Mapping[str, int] | None  # `Exchange.counters()` committed; None: nothing yet
    decimals: Mapping[str, int]  # asset -> decimals
    markets: Mapping[str, MarketAssets]
    net_deposits: Mapping[str, int]  # asset -> deposits minus withdrawals

    def after(self, batch: CommitBatch) -> Committed:
        """The knowledge once `batch` has committed."""
        decimals = {**self.decimals, **dict(batch.assets)} if batch.assets else self.decimals
        created = {
            m["symbol"]: MarketAssets.from_rules(m["rules"], decimals)
            for m in batch.markets
            if "rules" in m
        }
        changes = batch.net_deposit_changes
        return Committed(
            seq=batch.counters["seq"],
            counters=batch.counters,
            decimals=decimals,
            markets={**self.markets, **created} if created else self.markets,
            net_deposits={
                **self.net_deposits,
                **{a: self.net_deposits.get(a, 0) + d for a, d in changes.items()},
            }
            if changes
            else self.net_deposits,
        )


@dataclass(slots=True)
class BatchRows:
    events: list[EventRow]
    trades: list[TradeRow]
    ledger: list[LedgerRow]
    orders: list[OrderRow]
    balances: list[BalanceRow]
    asset_totals: list[tuple[str, int | str]]  # (asset, net deposits after the batch)
    assets: list[tuple[str, int]]
    new_markets: list[MarketRow]
    market_updates: list[MarketUpdateRow]  # markets that existed before the batch
    counters: dict[str, int]
    settlements: list[SettlementRow]
    settlement_legs: list[SettlementLegRow]
    holds: list[HoldRow]


def batch_rows(batch: CommitBatch, after: Committed, *, wide_as_text: bool) -> BatchRows:
    """The rows of `batch`; `after` is the store's knowledge once it has committed."""
    return BatchRows(
        events=event_rows(batch.events),
        trades=trade_rows(batch.trades, settled=batch.trades_settled),
        ledger=ledger_rows(batch.events, after.markets),
        orders=order_rows(batch.orders, wide_as_text=wide_as_text),
        balances=batch.balances,
        asset_totals=[
            (asset, wide_value(after.net_deposits[asset], as_text=wide_as_text))
            for asset in sorted(batch.net_deposit_changes)
        ],
        assets=batch.assets,
        new_markets=[_market_row(m) for m in batch.markets if "rules" in m],
        market_updates=[
            (m["symbol"], str(m["status"]), m["last_price_ticks"], m["market_seq"])
            for m in batch.markets
            if "rules" not in m
        ],
        counters=batch.counters,
        settlements=[settlement_row(s) for s in batch.settlements],
        settlement_legs=[row for s in batch.settlements for row in settlement_leg_rows(s)],
        holds=[hold_row(fate) for fate in batch.holds],
    )


# -- events ------------------------------------------------------------------------

_STDLIB_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _dumps(data: dict[str, Any]) -> str:
    """Compact JSON (orjson; the standard library for integers beyond 64 bits)."""
    try:
        return orjson.dumps(data).decode()
    except orjson.JSONEncodeError:
        return _STDLIB_ENCODE(data)


@dataclass(frozen=True, slots=True)
class _EventShape:
    """How to read one event class: `to_dict`'s keys and a getter for their values."""

    names: tuple[str, ...]  # "kind", then `Event.field_names`: the keys of `Event.to_dict`
    values: Callable[[Event], tuple[Any, ...]] | None  # None: the class has its own to_dict
    symbol_at: int | None  # index of "symbol" in `names`


_SHAPES: dict[type[Event], _EventShape] = {}


def _shape(cls: type[Event]) -> _EventShape:
    shape = _SHAPES.get(cls)
    if shape is None:
        if cls.to_dict is not Event.to_dict:
            shape = _EventShape((), None, None)
        else:
            names = ("kind", *cls.field_names)
            symbol_at = names.index("symbol") if "symbol" in names else None
            shape = _EventShape(names, operator.attrgetter(*names), symbol_at)
        _SHAPES[cls] = shape
    return shape


def event_rows(events: list[Event]) -> list[EventRow]:
    rows: list[EventRow] = []
    append = rows.append
    for event in events:
        shape = _SHAPES.get(type(event)) or _shape(type(event))
        if shape.values is None:
            data = event.to_dict()
            symbol = data.get("symbol")
        else:
            values = shape.values(event)
            data = dict(zip(shape.names, values, strict=True))
            symbol = None if shape.symbol_at is None else values[shape.symbol_at]
        append((event.seq, event.market_seq, event.kind, symbol, event.ts_ms, _dumps(data)))
    return rows


# -- trades and the journal ------------------------------------------------------------


def trade_rows(trades: list[TradeExecuted], *, settled: bool = True) -> list[TradeRow]:
    """Settled with the trade (embedded), or PENDING with `settled_at_ms` 0 (remote wallet)."""
    status = SETTLED if settled else PENDING
    return [
        (
            t.trade_id,
            t.seq,
            t.market_seq,
            t.symbol,
            t.price_ticks,
            t.quantity_lots,
            t.notional_units,
            t.taker_side,
            t.maker_order_id,
            t.buyer_order_id,
            t.seller_order_id,
            t.buyer_user_id,
            t.seller_user_id,
            t.buyer_fee_units,
            t.seller_fee_units,
            t.ts_ms,
            status,
            t.ts_ms if settled else 0,
        )
        for t in trades
    ]


def hold_row(fate: HoldFate) -> HoldRow:
    return (
        fate.hold_key,
        HOLD_CONSUMED if fate.consumed else HOLD_VOIDED,
        fate.user_id,
        fate.asset,
        fate.amount_units,
        fate.order_id,
        fate.seq,
    )


def settlement_row(settlement: PlannedSettlement) -> SettlementRow:
    created = settlement.created_at_ms
    return (
        settlement.settlement_id,
        str(settlement.kind),
        settlement.trade_id,
        str(SettlementStatus.PENDING),
        0,
        None,
        created,
        created,
        None,
        None,
    )


def settlement_leg_rows(settlement: PlannedSettlement) -> list[SettlementLegRow]:
    return [
        (
            settlement.settlement_id,
            leg_no,
            leg.name,
            str(leg.kind),
            leg.user_id,
            leg.asset,
            leg.amount_units,
            str(leg.account),
            leg.target_key,
            str(leg.state),
            leg.generation,
        )
        for leg_no, leg in enumerate(settlement.legs)
    ]


def ledger_rows(events: list[Event], markets: Mapping[str, MarketAssets]) -> list[LedgerRow]:
    rows: list[LedgerRow] = []
    extend = rows.extend
    for event in events:
        cls = type(event)
        if cls is TradeExecuted:
            assert isinstance(event, TradeExecuted)
            extend(trade_ledger_rows(event, markets[event.symbol]))
        elif cls is Deposited or cls is Withdrawn:
            assert isinstance(event, Deposited | Withdrawn)
            withdrawn = cls is Withdrawn
            amount = -event.amount_units if withdrawn else event.amount_units
            kind = LEG_WITHDRAWAL if withdrawn else LEG_DEPOSIT
            rows.append((event.seq, event.user_id, event.asset, amount, kind, None, None))
    return rows


def trade_ledger_rows(trade: TradeExecuted, market: MarketAssets) -> list[LedgerRow]:
    """The five legs of one trade (the domain's `trade_legs`), signed: a debit is negative."""
    seq, trade_id = trade.seq, trade.trade_id
    base, quote = market.base, market.quote
    legs = trade_legs(
        market.spec,
        trade.quantity_lots,
        trade.notional_units,
        trade.buyer_fee_units,
        trade.seller_fee_units,
    )
    base_units = legs.base_units
    buyer, seller = trade.buyer_user_id, trade.seller_user_id
    buy_order, sell_order = trade.buyer_order_id, trade.seller_order_id
    return [
        (seq, buyer, quote, -legs.buyer_pays_units, LEG_BUYER_PAYS, trade_id, buy_order),
        (seq, buyer, base, base_units, LEG_BUYER_RECEIVES, trade_id, buy_order),
        (seq, seller, base, -base_units, LEG_SELLER_DELIVERS, trade_id, sell_order),
        (seq, seller, quote, legs.seller_receives_units, LEG_SELLER_RECEIVES, trade_id, sell_order),
        (seq, FEE_ACCOUNT_ID, quote, legs.fee_units, LEG_FEE, trade_id, None),
    ]


# -- orders and markets ------------------------------------------------------------------

_RECORD_VALUES = operator.itemgetter(*RECORD_FIELDS)


def order_rows(records: list[dict[str, Any]], *, wide_as_text: bool) -> list[OrderRow]:
    rows: list[OrderRow] = [_RECORD_VALUES(record) for record in records]
    if wide_as_text:
        i = _FEE_ACCRUED_INDEX
        for n, row in enumerate(rows):
            if row[i] > INT64_MAX:
                rows[n] = (*row[:i], str(row[i]), *row[i + 1 :])
    return rows


def _market_row(market: dict[str, Any]) -> MarketRow:
    rules = market["rules"]
    return (
        market["symbol"],
        *(rules[name] for name in RULE_COLUMNS),
        str(market["status"]),
        market["last_price_ticks"],
        market["market_seq"],
    )
