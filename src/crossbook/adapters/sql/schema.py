"""The durable store's schema, defined once (SQLAlchemy Core) for SQLite and PostgreSQL.

The Alembic revisions in `migrations/versions` create exactly these tables (a
test compares an autogenerate diff against this metadata and wants it empty).

What the tables hold:
- `assets`, `markets`: reference data; a market's trading rules are the decimal
  strings of `MarketSpec.rules()`, exactly, plus its runtime state (status, last
  price, market sequence);
- `balances`, `asset_totals`: the final available/locked balance of every
  (user, asset) and, per asset, deposits minus withdrawals;
- `orders`: every order ever accepted, one column per `RECORD_FIELDS` entry,
  updated in place while it is open and kept once it is terminal;
- `trades`: every `TradeExecuted`, settled in the same transaction that records it;
- `candles`: the rollup of `trades` into OHLCV candles, one row per (market,
  width of `CANDLE_INTERVALS_MS`, open time) with trades, written in the same
  transaction as the trades it sums (see `candle_rows`);
- `ledger_entries`: the double-entry journal, one row per leg (see below);
- `events`: the append-only event log, `seq` gap-free from 1;
- `engine_state`: the exchange counters (`Exchange.counters()`), exactly one row;
- `users`: accounts (filled by the accounts feature; nothing references it yet);
- `settlements`, `settlement_legs`: remote-wallet mode's outbox. One settlement
  per event that owes the wallet something (a trade, a release, a void; keyed by
  the event's seq), written with the batch that made it, then updated by the
  settlement workers: status PENDING → SETTLED, or SETTLEMENT_FAILED (the
  dead-letter queue) with the reason, attempts and timestamps; per leg, its
  wallet operation and its state (see `engine.settlement_plan`).

Invariants:
- amounts, prices and quantities are integer BIGINT columns (minor units, ticks,
  lots); no column is a float. Two are wider than 64 bits, `WideInteger`
  (NUMERIC(40,0) on PostgreSQL, decimal TEXT on SQLite, both exact):
  `orders.fee_accrued` (notional × fee ppm, up to about 9.2e24),
  `asset_totals.net_deposits` (a sum over all accounts, which the domain does not
  bound: each deposit keeps one balance within 64 bits, not the sum of many) and
  the candle volumes (sums over many trades);
- a candle row equals the aggregate of the trades of its market whose
  `executed_at_ms // interval_ms * interval_ms` is its open time: open and close
  are the prices of its first and last trade by id (`first_trade_id`,
  `last_trade_id`), high/low the extremes, volumes and count the sums;
- enums are stored as their string values;
- ledger legs: per trade, the five legs (`LEG_KINDS`) sum to zero per asset, fees
  included (a zero fee still has its fee leg, so every trade has exactly five);
  a deposit or withdrawal is one leg on the user's account, and per asset the sum
  of those legs equals `asset_totals.net_deposits`. Reservations (moves between a
  user's own available and locked funds) have no journal rows: what an open order
  holds is `orders.reserved_units`, and `balances.locked` is their sum per user.

Known limits:
- balances and ledger amounts are BIGINT: the domain keeps each asset's total
  supply (deposits minus withdrawals) within 2**63 - 1, so no balance can pass
  it; were one ever to, the database would refuse the commit and the engine
  would halt rather than store a wrong number;
- no foreign keys on the hot tables (each would cost a lookup per written row):
  the engine is the only writer and the domain keeps the references sound;
- the event log has no per-market index (a market's diff stream is read by seq).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
)

from crossbook.domain.markets import ASSET_CODE_CHARS
from crossbook.sql_support.naming import NAMING_CONVENTION
from crossbook.sql_support.wide_integer import WideInteger

SYMBOL_CHARS = 2 * ASSET_CODE_CHARS + 1
CLIENT_ORDER_ID_CHARS = 64
ENUM_CHARS = 32  # enum string values (side, status, close reason, event kind, …)

SETTLED = "SETTLED"  # trades.settlement_status: embedded, settlement commits with the trade
PENDING = "PENDING"  # remote-wallet mode: awaits its settlement (settled_at_ms 0 until then)
WALLET_KEY_CHARS = 200

# ledger_entries.kind
LEG_DEPOSIT = "deposit"
LEG_WITHDRAWAL = "withdrawal"
LEG_BUYER_PAYS = "buyer_pays"  # buyer, quote, −(notional + buyer fee), from locked
LEG_BUYER_RECEIVES = "buyer_receives"  # buyer, base, +base units
LEG_SELLER_DELIVERS = "seller_delivers"  # seller, base, −base units, from locked
LEG_SELLER_RECEIVES = "seller_receives"  # seller, quote, +(notional − seller fee)
LEG_FEE = "fee"  # fee account, quote, +(buyer fee + seller fee)
LEG_KINDS = (LEG_BUYER_PAYS, LEG_BUYER_RECEIVES, LEG_SELLER_DELIVERS, LEG_SELLER_RECEIVES, LEG_FEE)

ENGINE_STATE_ID = 1

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# A BIGINT primary key that is SQLite's rowid (only a column typed exactly INTEGER
# is): no separate key index to maintain, lookups and appends go to the table itself.
BigKey = BigInteger().with_variant(Integer(), "sqlite")


def _bigint(name: str, *, nullable: bool = False) -> Column[int]:
    return Column(name, BigInteger, nullable=nullable, autoincrement=False)


def _key(name: str) -> Column[int]:
    """A single-column BIGINT primary key the application assigns."""
    return Column(name, BigKey, primary_key=True, autoincrement=False)


def _enum(name: str, *, nullable: bool = False) -> Column[str]:
    return Column(name, String(ENUM_CHARS), nullable=nullable)


def _rule(name: str) -> Column[str]:
    return Column(name, Text, nullable=False)


assets = Table(
    "assets",
    metadata,
    Column("code", String(ASSET_CODE_CHARS), primary_key=True),
    Column("decimals", SmallInteger, nullable=False),
)

markets = Table(
    "markets",
    metadata,
    Column("symbol", String(SYMBOL_CHARS), primary_key=True),
    Column("base", String(ASSET_CODE_CHARS), ForeignKey("assets.code"), nullable=False),
    Column("quote", String(ASSET_CODE_CHARS), ForeignKey("assets.code"), nullable=False),
    _rule("tick_size"),
    _rule("lot_size"),
    _rule("min_quantity"),
    _rule("max_quantity"),
    _rule("min_notional"),
    _rule("max_price"),
    _rule("maker_fee_rate"),
    _rule("taker_fee_rate"),
    _enum("status"),
    _bigint("last_price_ticks"),
    _bigint("market_seq"),
)

users = Table(
    "users",
    metadata,
    _key("user_id"),
    Column("name", Text, nullable=True),
    _bigint("created_at_ms"),
)

balances = Table(
    "balances",
    metadata,
    Column("user_id", BigInteger, primary_key=True, autoincrement=False),
    Column("asset", String(ASSET_CODE_CHARS), primary_key=True),
    _bigint("available"),
    _bigint("locked"),
    CheckConstraint("available >= 0 AND locked >= 0", name="not_negative"),
)

asset_totals = Table(
    "asset_totals",
    metadata,
    Column("asset", String(ASSET_CODE_CHARS), primary_key=True),
    Column("net_deposits", WideInteger, nullable=False),  # a sum over accounts: unbounded
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", BigKey, primary_key=True, autoincrement=True),
    _bigint("seq"),  # the seq of the event that caused the leg (trade, deposit, withdrawal)
    _bigint("user_id"),
    Column("asset", String(ASSET_CODE_CHARS), nullable=False),
    _bigint("amount"),  # signed: positive enters the account, negative leaves it
    _enum("kind"),
    _bigint("trade_id", nullable=True),
    _bigint("order_id", nullable=True),
    Index(None, "user_id", "asset", "seq"),
)

orders = Table(
    "orders",
    metadata,
    _key("order_id"),
    _bigint("user_id"),
    Column("symbol", String(SYMBOL_CHARS), nullable=False),
    _enum("side"),
    _enum("order_type"),
    _enum("time_in_force"),
    _bigint("price_ticks"),
    _bigint("quantity_lots"),
    _bigint("quote_budget_units"),
    _bigint("stop_price_ticks"),
    Column("client_order_id", String(CLIENT_ORDER_ID_CHARS), nullable=True),
    _enum("stp_mode"),
    Column("post_only", Boolean, nullable=False),
    _bigint("expire_at_ms", nullable=True),
    _bigint("priority"),
    _bigint("created_at_ms"),
    _bigint("updated_at_ms"),
    _enum("status"),
    _bigint("filled_lots"),
    _bigint("filled_notional_units"),
    Column("fee_accrued", WideInteger, nullable=False),
    _bigint("fee_paid_units"),
    _bigint("reserved_units"),
    Column("triggered", Boolean, nullable=False),
    _enum("close_reason", nullable=True),
    Index(None, "user_id", "status"),
    Index(None, "user_id", "created_at_ms"),
    # recovery reads the open orders by status: O(open orders), not O(every order ever)
    Index(None, "status", "order_id"),
    Index(None, "user_id", "client_order_id"),
)

trades = Table(
    "trades",
    metadata,
    _key("trade_id"),
    _bigint("seq"),
    _bigint("market_seq"),
    Column("symbol", String(SYMBOL_CHARS), nullable=False),
    _bigint("price_ticks"),
    _bigint("quantity_lots"),
    _bigint("notional_units"),
    _enum("taker_side"),
    _bigint("maker_order_id"),
    _bigint("buyer_order_id"),
    _bigint("seller_order_id"),
    _bigint("buyer_user_id"),
    _bigint("seller_user_id"),
    _bigint("buyer_fee_units"),
    _bigint("seller_fee_units"),
    _bigint("executed_at_ms"),
    _enum("settlement_status"),
    _bigint("settled_at_ms"),
    Index(None, "symbol", "trade_id"),
    Index(None, "buyer_user_id", "trade_id"),
    Index(None, "seller_user_id", "trade_id"),
)

candles = Table(
    "candles",
    metadata,
    Column("symbol", String(SYMBOL_CHARS), primary_key=True),
    Column("interval_ms", BigInteger, primary_key=True, autoincrement=False),
    Column("open_time_ms", BigInteger, primary_key=True, autoincrement=False),
    _bigint("first_trade_id"),
    _bigint("last_trade_id"),
    _bigint("open_ticks"),
    _bigint("high_ticks"),
    _bigint("low_ticks"),
    _bigint("close_ticks"),
    Column("volume_lots", WideInteger, nullable=False),
    Column("quote_volume_units", WideInteger, nullable=False),
    _bigint("trade_count"),
    sqlite_with_rowid=False,  # rows live in the key's b-tree: reads and upserts are by key
)

events = Table(
    "events",
    metadata,
    _key("seq"),
    _bigint("market_seq"),  # 0 for events that concern no market's public state
    _enum("kind"),
    Column("symbol", String(SYMBOL_CHARS), nullable=True),
    _bigint("ts_ms"),
    Column("payload", Text, nullable=False),  # JSON of `event.to_dict()`
)

engine_state = Table(
    "engine_state",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False),
    _bigint("now_ms"),
    _bigint("seq"),
    _bigint("next_order_id"),
    _bigint("next_trade_id"),
    _bigint("next_priority"),
    CheckConstraint(f"id = {ENGINE_STATE_ID}", name="single_row"),
)

COUNTER_COLUMNS = ("now_ms", "seq", "next_order_id", "next_trade_id", "next_priority")
RULE_COLUMNS = (
    "base",
    "quote",
    "tick_size",
    "lot_size",
    "min_quantity",
    "max_quantity",
    "min_notional",
    "max_price",
    "maker_fee_rate",
    "taker_fee_rate",
)

settlements = Table(
    "settlements",
    metadata,
    _key("settlement_id"),  # the seq of the event it settles
    _enum("kind"),
    _bigint("trade_id", nullable=True),
    _enum("status"),
    Column("attempts", Integer, nullable=False),
    Column("reason", Text, nullable=True),
    _bigint("created_at_ms"),
    _bigint("updated_at_ms"),
    _bigint("settled_at_ms", nullable=True),
    _bigint("failed_at_ms", nullable=True),
    Index(None, "status", "settlement_id"),
)

settlement_legs = Table(
    "settlement_legs",
    metadata,
    Column("settlement_id", BigInteger, primary_key=True, autoincrement=False),
    Column("leg_no", SmallInteger, primary_key=True, autoincrement=False),
    _enum("name"),
    _enum("op"),
    _bigint("user_id"),
    Column("asset", String(ASSET_CODE_CHARS), nullable=False),
    _bigint("amount_units"),
    _enum("account"),
    Column("target_key", String(WALLET_KEY_CHARS), nullable=True),
    _enum("state"),
    Column("generation", Integer, nullable=False),
)

# Remote-wallet mode: the fate of every wallet hold a committed command named, by key
# (`HoldConsumed` → consumed, `HoldVoided` → voided). A hold the wallet applied that
# has no row here funds nothing: the hold reconciler voids it.
HOLD_CONSUMED = "consumed"
HOLD_VOIDED = "voided"
HOLD_FATES = (HOLD_CONSUMED, HOLD_VOIDED)

holds = Table(
    "holds",
    metadata,
    Column("hold_key", String(WALLET_KEY_CHARS), primary_key=True),
    _enum("fate"),
    _bigint("user_id"),
    Column("asset", String(ASSET_CODE_CHARS), nullable=False),
    _bigint("amount_units"),
    _bigint("order_id", nullable=True),  # the order a consumed hold funds
    _bigint("seq"),  # of the event that decided it
    sqlite_with_rowid=False,  # rows live in the key's b-tree: looked up by key only
)

HOLD_RECONCILIATION_ID = 1

# The hold reconciler's progress, in the wallet's applied_at_ms: it never looks at
# holds applied at or before `floor_ms` (made before this store recorded fates: the
# upgrade to 0004 of a store with history), and its last full pass ended at
# `watermark_ms`. Its one row is inserted by the migration 0004.
hold_reconciliation = Table(
    "hold_reconciliation",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False),
    _bigint("floor_ms"),
    _bigint("watermark_ms"),
    CheckConstraint(f"id = {HOLD_RECONCILIATION_ID}", name="single_row"),
)
