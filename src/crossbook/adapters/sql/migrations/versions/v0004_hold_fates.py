"""Hold fates of remote-wallet mode and the hold reconciler's watermark.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

Frozen copy of the `holds` and `hold_reconciliation` tables of
`crossbook.adapters.sql.schema` as of this revision. A store that already has
history (it may have run in remote-wallet mode, whose consumed holds were not
recorded) gets a reconciliation floor at the time of the upgrade: holds applied
before it are never reconciled, so no hold that funds an open order is voided; a
hold left orphaned by a crash before the upgrade stays for an operator (the wallet
lists it, `GET /v1/holds`). A new, empty store gets floor 0. The one row of
`hold_reconciliation` is inserted here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ASSET = sa.String(16)
ENUM = sa.String(32)
WALLET_KEY = sa.String(200)


def _bigint(name: str, *, nullable: bool = False) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), autoincrement=False, nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "holds",
        sa.Column("hold_key", WALLET_KEY, nullable=False),
        sa.Column("fate", ENUM, nullable=False),
        _bigint("user_id"),
        sa.Column("asset", ASSET, nullable=False),
        _bigint("amount_units"),
        _bigint("order_id", nullable=True),
        _bigint("seq"),
        sa.PrimaryKeyConstraint("hold_key", name=op.f("pk_holds")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "hold_reconciliation",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        _bigint("floor_ms"),
        _bigint("watermark_ms"),
        sa.CheckConstraint("id = 1", name=op.f("ck_hold_reconciliation_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hold_reconciliation")),
    )
    connection = op.get_bind()
    has_history = connection.execute(sa.text("SELECT 1 FROM events LIMIT 1")).first()
    floor_ms = 0 if has_history is None else int(time.time() * 1000)
    progress = sa.table(
        "hold_reconciliation",
        sa.column("id", sa.SmallInteger()),
        sa.column("floor_ms", sa.BigInteger()),
        sa.column("watermark_ms", sa.BigInteger()),
    )
    op.bulk_insert(progress, [{"id": 1, "floor_ms": floor_ms, "watermark_ms": floor_ms}])


def downgrade() -> None:
    op.drop_table("hold_reconciliation")
    op.drop_table("holds")
