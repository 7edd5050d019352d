"""Initial schema: reference data, balances, orders, trades, ledger, event log, counters.

Revision ID: 0001
Revises:
Create Date: 2026-11-24

Frozen copy of `crossbook.adapters.sql.schema` as of this revision (a migration
never imports the live schema, which moves on).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ASSET = sa.String(16)
SYMBOL = sa.String(33)
ENUM = sa.String(32)
WIDE_INTEGER = sa.Numeric(precision=40, scale=0).with_variant(sa.Text(), "sqlite")
KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: the rowid itself


def _bigint(name: str, *, nullable: bool = False) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), autoincrement=False, nullable=nullable)


def _key(name: str) -> sa.Column[int]:
    return sa.Column(name, KEY, autoincrement=False, nullable=False)


def _text(name: str) -> sa.Column[str]:
    return sa.Column(name, sa.Text(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "assets",
        sa.Column("code", ASSET, nullable=False),
        sa.Column("decimals", sa.SmallInteger(), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_assets")),
    )
    op.create_table(
        "markets",
        sa.Column("symbol", SYMBOL, nullable=False),
        sa.Column("base", ASSET, nullable=False),
        sa.Column("quote", ASSET, nullable=False),
        _text("tick_size"),
        _text("lot_size"),
        _text("min_quantity"),
        _text("max_quantity"),
        _text("min_notional"),
        _text("max_price"),
        _text("maker_fee_rate"),
        _text("taker_fee_rate"),
        sa.Column("status", ENUM, nullable=False),
        _bigint("last_price_ticks"),
        _bigint("market_seq"),
        sa.ForeignKeyConstraint(["base"], ["assets.code"], name=op.f("fk_markets_base_assets")),
        sa.ForeignKeyConstraint(["quote"], ["assets.code"], name=op.f("fk_markets_quote_assets")),
        sa.PrimaryKeyConstraint("symbol", name=op.f("pk_markets")),
    )
    op.create_table(
        "users",
        _key("user_id"),
        sa.Column("name", sa.Text(), nullable=True),
        _bigint("created_at_ms"),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_users")),
    )
    op.create_table(
        "balances",
        _bigint("user_id"),
        sa.Column("asset", ASSET, nullable=False),
        _bigint("available"),
        _bigint("locked"),
        sa.CheckConstraint("available >= 0 AND locked >= 0", name=op.f("ck_balances_not_negative")),
        sa.PrimaryKeyConstraint("user_id", "asset", name=op.f("pk_balances")),
    )
    op.create_table(
        "asset_totals",
        sa.Column("asset", ASSET, nullable=False),
        sa.Column("net_deposits", WIDE_INTEGER, nullable=False),
        sa.PrimaryKeyConstraint("asset", name=op.f("pk_asset_totals")),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("id", KEY, autoincrement=True, nullable=False),
        _bigint("seq"),
        _bigint("user_id"),
        sa.Column("asset", ASSET, nullable=False),
        _bigint("amount"),
        sa.Column("kind", ENUM, nullable=False),
        _bigint("trade_id", nullable=True),
        _bigint("order_id", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entries")),
    )
    op.create_index(
        op.f("ix_ledger_entries_user_id_asset_seq"), "ledger_entries", ["user_id", "asset", "seq"]
    )
    op.create_table(
        "orders",
        _key("order_id"),
        _bigint("user_id"),
        sa.Column("symbol", SYMBOL, nullable=False),
        sa.Column("side", ENUM, nullable=False),
        sa.Column("order_type", ENUM, nullable=False),
        sa.Column("time_in_force", ENUM, nullable=False),
        _bigint("price_ticks"),
        _bigint("quantity_lots"),
        _bigint("quote_budget_units"),
        _bigint("stop_price_ticks"),
        sa.Column("client_order_id", sa.String(64), nullable=True),
        sa.Column("stp_mode", ENUM, nullable=False),
        sa.Column("post_only", sa.Boolean(), nullable=False),
        _bigint("expire_at_ms", nullable=True),
        _bigint("priority"),
        _bigint("created_at_ms"),
        _bigint("updated_at_ms"),
        sa.Column("status", ENUM, nullable=False),
        _bigint("filled_lots"),
        _bigint("filled_notional_units"),
        sa.Column(
            "fee_accrued",
            WIDE_INTEGER,
            nullable=False,
        ),
        _bigint("fee_paid_units"),
        _bigint("reserved_units"),
        sa.Column("triggered", sa.Boolean(), nullable=False),
        sa.Column("close_reason", ENUM, nullable=True),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_orders")),
    )
    op.create_index(op.f("ix_orders_user_id_status"), "orders", ["user_id", "status"])
    op.create_index(op.f("ix_orders_user_id_created_at_ms"), "orders", ["user_id", "created_at_ms"])
    op.create_index(op.f("ix_orders_symbol_status"), "orders", ["symbol", "status"])
    op.create_index(
        op.f("ix_orders_user_id_client_order_id"), "orders", ["user_id", "client_order_id"]
    )
    op.create_table(
        "trades",
        _key("trade_id"),
        _bigint("seq"),
        _bigint("market_seq"),
        sa.Column("symbol", SYMBOL, nullable=False),
        _bigint("price_ticks"),
        _bigint("quantity_lots"),
        _bigint("notional_units"),
        sa.Column("taker_side", ENUM, nullable=False),
        _bigint("maker_order_id"),
        _bigint("buyer_order_id"),
        _bigint("seller_order_id"),
        _bigint("buyer_user_id"),
        _bigint("seller_user_id"),
        _bigint("buyer_fee_units"),
        _bigint("seller_fee_units"),
        _bigint("executed_at_ms"),
        sa.Column("settlement_status", ENUM, nullable=False),
        _bigint("settled_at_ms"),
        sa.PrimaryKeyConstraint("trade_id", name=op.f("pk_trades")),
    )
    op.create_index(op.f("ix_trades_symbol_trade_id"), "trades", ["symbol", "trade_id"])
    op.create_index(
        op.f("ix_trades_buyer_user_id_trade_id"), "trades", ["buyer_user_id", "trade_id"]
    )
    op.create_index(
        op.f("ix_trades_seller_user_id_trade_id"), "trades", ["seller_user_id", "trade_id"]
    )
    op.create_table(
        "events",
        _key("seq"),
        _bigint("market_seq"),
        sa.Column("kind", ENUM, nullable=False),
        sa.Column("symbol", SYMBOL, nullable=True),
        _bigint("ts_ms"),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_events")),
    )
    op.create_table(
        "engine_state",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        _bigint("now_ms"),
        _bigint("seq"),
        _bigint("next_order_id"),
        _bigint("next_trade_id"),
        _bigint("next_priority"),
        sa.CheckConstraint("id = 1", name=op.f("ck_engine_state_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_engine_state")),
    )


def downgrade() -> None:
    for table in (
        "engine_state",
        "events",
        "trades",
        "orders",
        "ledger_entries",
        "asset_totals",
        "balances",
        "users",
        "markets",
        "assets",
    ):
        op.drop_table(table)
