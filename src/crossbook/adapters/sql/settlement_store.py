"""`SqlSettlements`: the settlement outbox's `SettlementStore` port (remote-wallet mode).

The engine's commits write the outbox (`settlement_queries`); this is how the
settlement workers and the operators read it and record outcomes: every record
is one short transaction of its own (bounded by the drivers' timeouts).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import RowMapping

from crossbook.adapters.sql import settlement_queries
from crossbook.adapters.sql.connections import SqlConnections
from crossbook.adapters.sql.queries import DEFAULT_QUERY_LIMIT, MAX_QUERY_LIMIT
from crossbook.engine.settlement_plan import SettlementStatus, StoredSettlement


class SqlSettlements:
    """The outbox's settlements and legs."""

    __slots__ = ("_db",)

    def __init__(self, db: SqlConnections) -> None:
        self._db = db

    async def pending_settlement_ids(self, *, after_id: int, limit: int) -> list[int]:
        rows = await self._db.fetch(settlement_queries.pending_ids(after_id, limit))
        return [row["settlement_id"] for row in rows]

    async def get_settlement(self, settlement_id: int) -> StoredSettlement | None:
        head, legs = await self._db.fetch_all(settlement_queries.by_id(settlement_id))
        return settlement_queries.settlement_from_rows(head[0], legs) if head else None

    async def record_settlements(self, settlements: Sequence[StoredSettlement]) -> None:
        """All of them in one transaction."""
        statements = [w for s in settlements for w in settlement_queries.record_statements(s)]
        await self._db.write_all(statements)

    async def list_settlements(
        self, status: SettlementStatus, *, after_id: int = 0, limit: int = DEFAULT_QUERY_LIMIT
    ) -> list[StoredSettlement]:
        if not 1 <= limit <= MAX_QUERY_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_QUERY_LIMIT}")
        heads, legs = await self._db.fetch_all(
            settlement_queries.in_status(status, after_id, limit)
        )
        by_id: dict[int, list[RowMapping]] = {}
        for leg in legs:
            by_id.setdefault(leg["settlement_id"], []).append(leg)
        return [
            settlement_queries.settlement_from_rows(head, by_id.get(head["settlement_id"], []))
            for head in heads
        ]

    async def count_settlements(self, status: SettlementStatus) -> int:
        (row,) = await self._db.fetch(settlement_queries.count_in(status))
        return int(next(iter(row.values())))
