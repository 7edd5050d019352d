"""Open orders by status: the index recovery reads them through.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

`load_state` reads the open orders (`status IN ('open', 'partially_filled')`). The
index on (symbol, status) could not serve that (its first column is the symbol),
so every recovery scanned the whole `orders` table, every order ever placed. It is
replaced by (status, order_id), which no other query needed either: the same
number of indexes to keep per order written.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index(op.f("ix_orders_symbol_status"), table_name="orders")
    op.create_index(op.f("ix_orders_status_order_id"), "orders", ["status", "order_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_orders_status_order_id"), table_name="orders")
    op.create_index(op.f("ix_orders_symbol_status"), "orders", ["symbol", "status"])
