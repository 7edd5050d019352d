"""Initial schema of the wallet service: balances, asset totals, operations.

Revision ID: w0001
Revises:
Create Date: 2026-11-25

Frozen copy of `crossbook.wallet_service.schema` as of this revision (a migration
never imports the live schema, which moves on).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "w0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ASSET = sa.String(16)
KEY = sa.String(200)
ENUM = sa.String(16)
WIDE_INTEGER = sa.Numeric(precision=40, scale=0).with_variant(sa.Text(), "sqlite")


def _bigint(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), autoincrement=False, nullable=False)


def upgrade() -> None:
    op.create_table(
        "wallet_balances",
        _bigint("user_id"),
        sa.Column("asset", ASSET, nullable=False),
        _bigint("available"),
        _bigint("locked"),
        sa.CheckConstraint(
            "available >= 0 AND locked >= 0", name=op.f("ck_wallet_balances_not_negative")
        ),
        sa.PrimaryKeyConstraint("user_id", "asset", name=op.f("pk_wallet_balances")),
    )
    op.create_table(
        "wallet_assets",
        sa.Column("asset", ASSET, nullable=False),
        sa.Column("net_deposits", WIDE_INTEGER, nullable=False),
        sa.Column("in_transit", WIDE_INTEGER, nullable=False),
        sa.PrimaryKeyConstraint("asset", name=op.f("pk_wallet_assets")),
    )
    op.create_table(
        "wallet_operations",
        sa.Column("key", KEY, nullable=False),
        sa.Column("op", ENUM, nullable=False),
        _bigint("user_id"),
        sa.Column("asset", ASSET, nullable=False),
        _bigint("amount_units"),
        sa.Column("account", ENUM, nullable=False),
        sa.Column("target_key", KEY, nullable=True),
        _bigint("result_units"),
        _bigint("applied_at_ms"),
        sa.Column("status", ENUM, nullable=False),
        sa.Column("voided_by", KEY, nullable=True),
        sa.CheckConstraint(
            "amount_units >= 0 AND result_units >= 0",
            name=op.f("ck_wallet_operations_not_negative"),
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_wallet_operations")),
    )


def downgrade() -> None:
    for table in ("wallet_operations", "wallet_assets", "wallet_balances"):
        op.drop_table(table)
