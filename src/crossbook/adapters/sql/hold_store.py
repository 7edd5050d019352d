"""`SqlHoldFates`: the `HoldFates` port (remote-wallet mode's hold reconciliation).

The engine's commits write the `holds` table (`rows.hold_row`, one row per hold
a committed command consumed or voided); this reads which keys have a fate, and
keeps the reconciler's progress (`hold_reconciliation`, one row, inserted by the
migration 0004). Every call is one short statement of its own.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select, update

from crossbook.adapters.sql.connections import SqlConnections
from crossbook.adapters.sql.errors import StoreConflictError
from crossbook.adapters.sql.schema import HOLD_RECONCILIATION_ID, hold_reconciliation, holds
from crossbook.engine.ports import MAX_HOLD_LOOKUP_KEYS, ReconcileProgress


class SqlHoldFates:
    __slots__ = ("_db",)

    def __init__(self, db: SqlConnections) -> None:
        self._db = db

    async def decided(self, keys: Collection[str]) -> set[str]:
        if len(keys) > MAX_HOLD_LOOKUP_KEYS:
            raise ValueError(f"at most {MAX_HOLD_LOOKUP_KEYS} keys at once")
        if not keys:
            return set()
        rows = await self._db.fetch(select(holds.c.hold_key).where(holds.c.hold_key.in_(keys)))
        return {row["hold_key"] for row in rows}

    async def progress(self) -> ReconcileProgress:
        rows = await self._db.fetch(
            select(hold_reconciliation.c.floor_ms, hold_reconciliation.c.watermark_ms).where(
                hold_reconciliation.c.id == HOLD_RECONCILIATION_ID
            )
        )
        if not rows:
            raise StoreConflictError("the store has no hold_reconciliation row (not migrated)")
        (row,) = rows
        return ReconcileProgress(row["floor_ms"], row["watermark_ms"])

    async def save_watermark(self, watermark_ms: int) -> None:
        updated = await self._db.write(
            update(hold_reconciliation)
            .where(hold_reconciliation.c.id == HOLD_RECONCILIATION_ID)
            .values(watermark_ms=watermark_ms)
            .returning(hold_reconciliation.c.id)
        )
        if not updated:
            raise StoreConflictError("the store has no hold_reconciliation row (not migrated)")
