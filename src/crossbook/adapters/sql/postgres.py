"""The PostgreSQL write path: one asyncpg connection, one transaction per batch.

Per batch, in one transaction, a fixed number of round trips whatever its size:
binary COPY for the append-only tables (events, trades, ledger entries); one
`INSERT … SELECT FROM unnest($1::type[], …) ON CONFLICT DO UPDATE` per narrow
upserted table (balances, asset totals, markets); for the wide `orders` (25
columns) a binary COPY into a per-connection temporary table, then one
`INSERT … SELECT … ON CONFLICT DO UPDATE` from it (measured about twice as fast
as `unnest`, whose array encoding checks every element on the client). The counters row is updated
only if it still holds the sequence number the batch follows
(`WHERE seq = prev_seq`): a second writer, or a batch replayed after a gap,
fails the whole transaction instead of forking the log.

Durability is the server's: with the default `synchronous_commit = on`, COMMIT
returns after the WAL is flushed to disk.

Known limits: no reconnection here; after an error the store replaces the
writer when the engine recovers (`SqlStore.load_state`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from sqlalchemy import Table
from sqlalchemy.dialects import postgresql

from crossbook.adapters.sql import schema
from crossbook.adapters.sql.errors import StoreConflictError
from crossbook.adapters.sql.rows import (
    EVENT_COLUMNS,
    LEDGER_COLUMNS,
    MARKET_COLUMNS,
    ORDER_COLUMNS,
    SETTLEMENT_COLUMNS,
    SETTLEMENT_LEG_COLUMNS,
    TRADE_COLUMNS,
    BatchRows,
    Committed,
    batch_rows,
)
from crossbook.engine.batch import CommitBatch

CLOSE_TIMEOUT_S = 5.0
_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


def _array_type(table: Table, column: str) -> str:
    return f"{table.c[column].type.compile(dialect=_DIALECT)}[]"


def _unnest(table: Table, columns: Sequence[str]) -> str:
    arrays = ", ".join(f"${i}::{_array_type(table, c)}" for i, c in enumerate(columns, 1))
    return f"unnest({arrays})"


def upsert_sql(table: Table, columns: Sequence[str], key: Sequence[str]) -> str:
    """`INSERT … SELECT * FROM unnest($1::type[], …) ON CONFLICT (key) DO UPDATE SET …`,
    every non-key column taking the new value."""
    sets = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    return (
        f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM {_unnest(table, columns)}"
        f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}"
    )


def insert_sql(table: Table, columns: Sequence[str]) -> str:
    return (
        f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM {_unnest(table, columns)}"
    )


_COUNTERS = schema.COUNTER_COLUMNS
ORDERS_STAGE = "orders_stage"  # per-connection temporary table, emptied at every commit
ORDERS_STAGE_CREATE = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {ORDERS_STAGE} (LIKE orders) ON COMMIT DELETE ROWS"
)
ORDERS_UPSERT = (
    f"INSERT INTO orders ({', '.join(ORDER_COLUMNS)})"
    f" SELECT {', '.join(ORDER_COLUMNS)} FROM {ORDERS_STAGE}"
    f" ON CONFLICT (order_id) DO UPDATE SET"
    f" {', '.join(f'{c} = excluded.{c}' for c in ORDER_COLUMNS if c != 'order_id')}"
)
BALANCES_UPSERT = upsert_sql(
    schema.balances, ("user_id", "asset", "available", "locked"), ("user_id", "asset")
)
ASSET_TOTALS_UPSERT = upsert_sql(
    schema.asset_totals,
    ("asset", "net_deposits"),
    ("asset",),
)
ASSETS_INSERT = insert_sql(schema.assets, ("code", "decimals"))
MARKETS_INSERT = insert_sql(schema.markets, MARKET_COLUMNS)
MARKETS_UPDATE = (
    "UPDATE markets AS m SET status = u.status, last_price_ticks = u.last_price_ticks,"
    " market_seq = u.market_seq"
    f" FROM {_unnest(schema.markets, ('symbol', 'status', 'last_price_ticks', 'market_seq'))}"
    " AS u(symbol, status, last_price_ticks, market_seq) WHERE m.symbol = u.symbol"
)
STATE_INSERT = (
    f"INSERT INTO engine_state (id, {', '.join(_COUNTERS)})"
    f" VALUES ({schema.ENGINE_STATE_ID}, {', '.join(f'${i}' for i in range(1, 6))})"
)
STATE_UPDATE = (
    f"UPDATE engine_state SET {', '.join(f'{c} = ${i}' for i, c in enumerate(_COUNTERS, 1))}"
    f" WHERE id = {schema.ENGINE_STATE_ID} AND seq = $6"
)


def _columns(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return list(zip(*rows, strict=True))


def _affected(status: str) -> int:
    """Rows affected, from a command status such as 'UPDATE 3' or 'INSERT 0 3'."""
    return int(status.rsplit(" ", 1)[-1])


class PostgresWriter:
    """Writes batches on one dedicated connection (the engine's single writer)."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection

    @classmethod
    async def connect(cls, dsn: str) -> PostgresWriter:
        connection = await asyncpg.connect(
            dsn, server_settings={"application_name": "crossbook-writer"}
        )
        try:
            await connection.execute(ORDERS_STAGE_CREATE)
        except BaseException:
            await connection.close()
            raise
        return cls(connection)

    async def close(self) -> None:
        await self.connection.close(timeout=CLOSE_TIMEOUT_S)

    async def write(self, batch: CommitBatch, before: Committed, after: Committed) -> None:
        rows = batch_rows(batch, after, wide_as_text=False)
        async with self.connection.transaction():
            await self.write_reference_data(rows)
            await self.write_log(rows)
            await self.write_projections(rows)
            await self.write_counters(rows, before.seq, first=before.counters is None)

    async def write_reference_data(self, rows: BatchRows) -> None:
        conn = self.connection
        if rows.assets:
            await conn.execute(ASSETS_INSERT, *_columns(rows.assets))
        if rows.new_markets:
            await conn.execute(MARKETS_INSERT, *_columns(rows.new_markets))

    async def write_log(self, rows: BatchRows) -> None:
        """Append the events, trades and journal legs (binary COPY)."""
        conn = self.connection
        if rows.events:
            await conn.copy_records_to_table("events", records=rows.events, columns=EVENT_COLUMNS)
        if rows.trades:
            await conn.copy_records_to_table("trades", records=rows.trades, columns=TRADE_COLUMNS)
        if rows.ledger:
            await conn.copy_records_to_table(
                "ledger_entries", records=rows.ledger, columns=LEDGER_COLUMNS
            )
        if rows.settlements:
            await conn.copy_records_to_table(
                "settlements", records=rows.settlements, columns=SETTLEMENT_COLUMNS
            )
            await conn.copy_records_to_table(
                "settlement_legs", records=rows.settlement_legs, columns=SETTLEMENT_LEG_COLUMNS
            )

    async def write_projections(self, rows: BatchRows) -> None:
        conn = self.connection
        if rows.orders:
            await conn.copy_records_to_table(
                ORDERS_STAGE, records=rows.orders, columns=ORDER_COLUMNS
            )
            await conn.execute(ORDERS_UPSERT)
        if rows.balances:
            await conn.execute(BALANCES_UPSERT, *_columns(rows.balances))
        if rows.asset_totals:
            await conn.execute(ASSET_TOTALS_UPSERT, *_columns(rows.asset_totals))
        if rows.market_updates:
            status = await conn.execute(MARKETS_UPDATE, *_columns(rows.market_updates))
            if _affected(status) != len(rows.market_updates):
                raise StoreConflictError("the batch updates a market the store does not have")

    async def write_counters(self, rows: BatchRows, prev_seq: int, *, first: bool) -> None:
        counters = [rows.counters[name] for name in _COUNTERS]
        if first:
            await self.connection.execute(STATE_INSERT, *counters)
            return
        status = await self.connection.execute(STATE_UPDATE, *counters, prev_seq)
        if _affected(status) != 1:
            raise StoreConflictError(f"the committed state is no longer at seq {prev_seq}")
