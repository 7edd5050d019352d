"""The wallet service's tables (SQLAlchemy Core), for SQLite and PostgreSQL.

The Alembic revisions in `migrations/versions` create exactly these tables (a
test compares an autogenerate diff against this metadata and wants it empty);
their revision is kept in `wallet_alembic_version`, apart from the engine's, so
both could even share one database.

What the tables hold:
- `wallet_balances`: available and locked minor units per (user, asset);
- `wallet_assets`: per asset, deposits minus withdrawals (`net_deposits`) and
  what debits took out that credits have not yet put back (`in_transit`, may
  be negative while credits run ahead of their debits);
- `wallet_operations`: one row per idempotency key ever applied, with what it
  did (`result_units`: the amount moved; for a void, the amount it released),
  and its `status`: `applied`; `voided` (a hold a void released later, named
  by `voided_by`); `tombstone` (a hold key voided before any hold with it
  arrived: the row reserves the key so that hold is refused).

Index: `ix_wallet_operations_applied_at_ms_key`, partial (`APPLIED_HOLD`: holds
whose status is `applied`), on (applied_at_ms, key): the keyset-paged listing of
applied holds reads a range of it. Only hold rows enter it, so other operations
cost no index write; a void takes its hold out. The listing's predicate is this
same expression with its constants as literal SQL, never bound parameters: a
generic PostgreSQL plan (what a prepared statement settles on after a few runs)
cannot prove a partial index usable from a parameter.

Invariants:
- money is integer minor units; no float column. Balances and single amounts
  are BIGINT (the service keeps every account's total within 2**63 - 1); the
  per-asset sums are `WideInteger` (exact, wider than 64 bits), as in the
  engine's schema;
- per asset: sum(available + locked) + in_transit == net_deposits;
- a row of `wallet_operations` is never deleted; only a hold's `status` and
  `voided_by` change, once, when it is voided.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ColumnElement,
    Index,
    MetaData,
    String,
    Table,
    and_,
    literal_column,
)

from crossbook.domain.markets import ASSET_CODE_CHARS
from crossbook.sql_support.naming import NAMING_CONVENTION
from crossbook.sql_support.wide_integer import WideInteger
from crossbook.wallet_protocol import MAX_KEY_CHARS, WalletOpKind

ENUM_CHARS = 16  # op kind, account, status
VERSION_TABLE = "wallet_alembic_version"

# wallet_operations.status
STATUS_APPLIED = "applied"
STATUS_VOIDED = "voided"
STATUS_TOMBSTONE = "tombstone"

metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _bigint(name: str) -> Column[int]:
    return Column(name, BigInteger, nullable=False, autoincrement=False)


def _key(name: str, *, primary_key: bool = False) -> Column[str]:
    """An idempotency key; NULL allowed unless it is the primary key."""
    return Column(name, String(MAX_KEY_CHARS), primary_key=primary_key, nullable=not primary_key)


wallet_balances = Table(
    "wallet_balances",
    metadata,
    Column("user_id", BigInteger, primary_key=True, autoincrement=False),
    Column("asset", String(ASSET_CODE_CHARS), primary_key=True),
    _bigint("available"),
    _bigint("locked"),
    CheckConstraint("available >= 0 AND locked >= 0", name="not_negative"),
)

wallet_assets = Table(
    "wallet_assets",
    metadata,
    Column("asset", String(ASSET_CODE_CHARS), primary_key=True),
    Column("net_deposits", WideInteger, nullable=False),
    Column("in_transit", WideInteger, nullable=False),
)

wallet_operations = Table(
    "wallet_operations",
    metadata,
    _key("key", primary_key=True),
    Column("op", String(ENUM_CHARS), nullable=False),
    _bigint("user_id"),
    Column("asset", String(ASSET_CODE_CHARS), nullable=False),
    _bigint("amount_units"),
    Column("account", String(ENUM_CHARS), nullable=False),
    _key("target_key"),
    _bigint("result_units"),
    _bigint("applied_at_ms"),
    Column("status", String(ENUM_CHARS), nullable=False),
    _key("voided_by"),
    CheckConstraint("amount_units >= 0 AND result_units >= 0", name="not_negative"),
)


def _sql_string(value: str) -> ColumnElement[str]:
    assert "'" not in value, value
    return literal_column(f"'{value}'")


APPLIED_HOLD: ColumnElement[bool] = and_(
    wallet_operations.c.op == _sql_string(WalletOpKind.HOLD.value),
    wallet_operations.c.status == _sql_string(STATUS_APPLIED),
)

Index(
    "ix_wallet_operations_applied_at_ms_key",
    wallet_operations.c.applied_at_ms,
    wallet_operations.c.key,
    sqlite_where=APPLIED_HOLD,
    postgresql_where=APPLIED_HOLD,
)
