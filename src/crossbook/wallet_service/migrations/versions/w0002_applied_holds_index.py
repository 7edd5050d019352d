"""The applied holds, by (applied_at_ms, key): a partial index for `GET /v1/holds`.

Revision ID: w0002
Revises: w0001
Create Date: 2026-11-27

Frozen copy of the index of `crossbook.wallet_service.schema` as of this revision:
only rows of holds still applied enter it; the listing repeats the predicate
with the same literal constants, so that PostgreSQL's generic plans use it too.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "w0002"
down_revision: str | Sequence[str] | None = "w0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_wallet_operations_applied_at_ms_key"
APPLIED_HOLD = "op = 'hold' AND status = 'applied'"


def upgrade() -> None:
    op.create_index(
        INDEX,
        "wallet_operations",
        ["applied_at_ms", "key"],
        sqlite_where=sa.text(APPLIED_HOLD),
        postgresql_where=sa.text(APPLIED_HOLD),
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="wallet_operations")
