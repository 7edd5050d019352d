"""Settlement outbox of remote-wallet mode: settlements and their legs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

Frozen copy of the two tables of `crossbook.adapters.sql.schema` as of this
revision. `trades.settlement_status` and `settled_at_ms` exist since 0001; a
trade awaiting settlement is PENDING with `settled_at_ms` 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ASSET = sa.String(16)
ENUM = sa.String(32)
WALLET_KEY = sa.String(200)
KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: the rowid itself


def _bigint(name: str, *, nullable: bool = False) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), autoincrement=False, nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "settlements",
        sa.Column("settlement_id", KEY, autoincrement=False, nullable=False),
        sa.Column("kind", ENUM, nullable=False),
        _bigint("trade_id", nullable=True),
        sa.Column("status", ENUM, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        _bigint("created_at_ms"),
        _bigint("updated_at_ms"),
        _bigint("settled_at_ms", nullable=True),
        _bigint("failed_at_ms", nullable=True),
        sa.PrimaryKeyConstraint("settlement_id", name=op.f("pk_settlements")),
    )
    op.create_index(
        op.f("ix_settlements_status_settlement_id"), "settlements", ["status", "settlement_id"]
    )
    op.create_table(
        "settlement_legs",
        sa.Column("settlement_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("leg_no", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("name", ENUM, nullable=False),
        sa.Column("op", ENUM, nullable=False),
        _bigint("user_id"),
        sa.Column("asset", ASSET, nullable=False),
        _bigint("amount_units"),
        sa.Column("account", ENUM, nullable=False),
        sa.Column("target_key", WALLET_KEY, nullable=True),
        sa.Column("state", ENUM, nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("settlement_id", "leg_no", name=op.f("pk_settlement_legs")),
    )


def downgrade() -> None:
    op.drop_table("settlement_legs")
    op.drop_table("settlements")
