"""The PostgreSQL write path: one asyncpg connection, one transaction per batch.

Per batch, in one transaction, a fixed number of round trips whatever its size:
binary COPY for the append-only tables (events, trades, ledger entries); one
`INSERT … SELECT FROM unnest($1::type[], …) ON CONFLICT DO UPDATE` per narrow
upserted table (balances, asset totals, markets, and the candle rollup: one row
per candle the batch touches, `candle_rows`, merged into the stored row with
NUMERIC sums); for the wide `orders` (25
columns) a binary COPY into a per-connection temporary table, then one
`INSERT … SELECT … ON CONFLICT DO UPDATE` from it (measured about twice as fast
as `unnest`, whose array encoding checks every element on the client). The counters row is updated
only if it still holds the sequence number the batch follows
(`WHERE seq = prev_seq`): a second writer, or a batch replayed after a gap,
fails the whole transaction instead of forking the log.

Durability is the server's: with the default `synchronous_commit = on`, COMMIT
returns after the WAL is flushed to disk.

Deadline: a batch is written by `deadline_s` (monotonic) or not at all. The
transaction starts with `SET LOCAL lock_timeout` and `statement_timeout` from
the time left (in the same round trip as BEGIN), so a lock held by another
session (on `engine_state`, say) cancels the waiting statement at the
deadline; every call also has a client-side timeout a little beyond it
(`CLIENT_TIMEOUT_GRACE_S`: a network that stops answering), and the deadline is
checked before each statement and before COMMIT. A failure before COMMIT was
sent is known: `StoreUnavailableError(committed=False)` for an outage (the
transaction cannot commit without its COMMIT). A failure during COMMIT is
ambiguous (`committed=None`). After any failure the writer closes its
connection at once (the server rolls back whatever was not committed).

`probe(deadline_s)` takes `LOCK TABLE engine_state IN EXCLUSIVE MODE` (with a
`lock_timeout`) and gives it back. It conflicts with every writer of the table
(an earlier attempt of ours that reached its counters update and may still be
committing, on a connection we abandoned) and with other sessions' row locks
and table locks on it, but not with plain reads: once it succeeds, no earlier
write of ours can still land, and the store can take commits.

Known limits: no reconnection here; after an error the store replaces the
writer when the engine recovers (`SqlStore.load_state`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
from sqlalchemy import Table
from sqlalchemy.dialects import postgresql

from crossbook.adapters.sql import schema
from crossbook.adapters.sql.candle_rows import CANDLE_COLUMNS, CANDLE_KEY, CandleRow, candle_rows
from crossbook.adapters.sql.errors import StoreConflictError, StoreError, is_unavailable
from crossbook.adapters.sql.rows import (
    EVENT_COLUMNS,
    HOLD_COLUMNS,
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
from crossbook.engine.ports import StoreUnavailableError

CLOSE_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 5.0
CLIENT_TIMEOUT_GRACE_S = 0.5  # client-side timeouts run this much past the server's
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
# a key decided twice (a hold voided again) keeps its first fate
HOLDS_INSERT = f"{insert_sql(schema.holds, HOLD_COLUMNS)} ON CONFLICT (hold_key) DO NOTHING"
MARKETS_UPDATE = (
    "UPDATE markets AS m SET status = u.status, last_price_ticks = u.last_price_ticks,"
    " market_seq = u.market_seq"
    f" FROM {_unnest(schema.markets, ('symbol', 'status', 'last_price_ticks', 'market_seq'))}"
    " AS u(symbol, status, last_price_ticks, market_seq) WHERE m.symbol = u.symbol"
)
CANDLES_UPSERT = (
    f"{insert_sql(schema.candles, CANDLE_COLUMNS)} ON CONFLICT ({', '.join(CANDLE_KEY)})"
    " DO UPDATE SET"
    " open_ticks = CASE WHEN excluded.first_trade_id < candles.first_trade_id"
    " THEN excluded.open_ticks ELSE candles.open_ticks END,"
    " first_trade_id = LEAST(candles.first_trade_id, excluded.first_trade_id),"
    " close_ticks = CASE WHEN excluded.last_trade_id > candles.last_trade_id"
    " THEN excluded.close_ticks ELSE candles.close_ticks END,"
    " last_trade_id = GREATEST(candles.last_trade_id, excluded.last_trade_id),"
    " high_ticks = GREATEST(candles.high_ticks, excluded.high_ticks),"
    " low_ticks = LEAST(candles.low_ticks, excluded.low_ticks),"
    " volume_lots = candles.volume_lots + excluded.volume_lots,"
    " quote_volume_units = candles.quote_volume_units + excluded.quote_volume_units,"
    " trade_count = candles.trade_count + excluded.trade_count"
)
STATE_INSERT = (
    f"INSERT INTO engine_state (id, {', '.join(_COUNTERS)})"
    f" VALUES ({schema.ENGINE_STATE_ID}, {', '.join(f'${i}' for i in range(1, 6))})"
)
STATE_UPDATE = (
    f"UPDATE engine_state SET {', '.join(f'{c} = ${i}' for i, c in enumerate(_COUNTERS, 1))}"
    f" WHERE id = {schema.ENGINE_STATE_ID} AND seq = $6"
)
PROBE = "LOCK TABLE engine_state IN EXCLUSIVE MODE"


def _begin_sql(timeout_ms: int | None) -> str:
    """BEGIN, with the transaction's lock and statement timeouts when there is a deadline."""
    if timeout_ms is None:
        return "BEGIN"
    return (
        f"BEGIN; SET LOCAL lock_timeout = {timeout_ms}; SET LOCAL statement_timeout = {timeout_ms}"
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
        self._deadline_s = math.inf  # of the write in progress

    @classmethod
    async def connect(cls, dsn: str) -> PostgresWriter:
        connection = await asyncpg.connect(
            dsn,
            timeout=CONNECT_TIMEOUT_S,
            server_settings={"application_name": "crossbook-writer"},
        )
        try:
            await connection.execute(ORDERS_STAGE_CREATE, timeout=CONNECT_TIMEOUT_S)
        except BaseException:
            connection.terminate()
            raise
        return cls(connection)

    async def close(self) -> None:
        await self.connection.close(timeout=CLOSE_TIMEOUT_S)

    async def write(
        self, batch: CommitBatch, before: Committed, after: Committed, deadline_s: float
    ) -> None:
        rows = batch_rows(batch, after, wide_as_text=False)
        candles = candle_rows(batch.trades, wide_as_text=False)
        conn = self.connection
        self._deadline_s = deadline_s
        try:
            await conn.execute(_begin_sql(self._server_timeout_ms()), timeout=self._timeout_s())
            await self.write_reference_data(rows)
            await self.write_log(rows)
            await self.write_projections(rows)
            await self.write_candles(candles)
            await self.write_counters(rows, before.seq, first=before.counters is None)
            commit_timeout_s = self._timeout_s()
        except BaseException as exc:
            conn.terminate()  # nothing was committed: the server rolls the transaction back
            if is_unavailable(exc):
                raise StoreUnavailableError(f"write failed: {exc!r}", committed=False) from exc
            raise
        finally:
            self._deadline_s = math.inf
        try:
            status = await conn.execute("COMMIT", timeout=commit_timeout_s)
        except BaseException as exc:
            conn.terminate()
            raise StoreUnavailableError(
                f"COMMIT failed: {exc!r}; the batch may have committed", committed=None
            ) from exc
        if status != "COMMIT":  # the server rolled back a transaction that had failed
            conn.terminate()
            raise StoreError(f"the transaction did not commit (COMMIT answered {status!r})")

    async def probe(self, deadline_s: float) -> None:
        """Take the write lock on `engine_state` by `deadline_s` and give it back (see the
        module docstring); `StoreUnavailableError` if another session holds it."""
        self._deadline_s = deadline_s
        try:
            await self.connection.execute(
                f"{_begin_sql(self._server_timeout_ms())}; {PROBE}; ROLLBACK",
                timeout=self._timeout_s(),
            )
        except BaseException as exc:
            self.connection.terminate()
            if is_unavailable(exc):
                raise StoreUnavailableError(f"the write lock is not free: {exc!r}") from exc
            raise
        finally:
            self._deadline_s = math.inf

    def _server_timeout_ms(self) -> int | None:
        if self._deadline_s == math.inf:
            return None
        return max(1, math.ceil((self._deadline_s - time.monotonic()) * 1000))

    def _timeout_s(self) -> float | None:
        """The client-side timeout of the next call; raises once the deadline has passed."""
        if self._deadline_s == math.inf:
            return None
        left_s = self._deadline_s - time.monotonic()
        if left_s <= 0:
            raise TimeoutError("the commit deadline passed")
        return left_s + CLIENT_TIMEOUT_GRACE_S

    async def write_reference_data(self, rows: BatchRows) -> None:
        conn = self.connection
        if rows.assets:
            await conn.execute(ASSETS_INSERT, *_columns(rows.assets), timeout=self._timeout_s())
        if rows.new_markets:
            await conn.execute(
                MARKETS_INSERT, *_columns(rows.new_markets), timeout=self._timeout_s()
            )

    async def write_log(self, rows: BatchRows) -> None:
        """Append the events, trades, journal legs and settlements (binary COPY), and the
        hold fates (`unnest`: a key decided twice must not fail the batch)."""
        for table, records, columns in (
            ("events", rows.events, EVENT_COLUMNS),
            ("trades", rows.trades, TRADE_COLUMNS),
            ("ledger_entries", rows.ledger, LEDGER_COLUMNS),
            ("settlements", rows.settlements, SETTLEMENT_COLUMNS),
            ("settlement_legs", rows.settlement_legs, SETTLEMENT_LEG_COLUMNS),
        ):
            if records:
                await self.connection.copy_records_to_table(
                    table, records=records, columns=columns, timeout=self._timeout_s()
                )
        if rows.holds:
            await self.connection.execute(
                HOLDS_INSERT, *_columns(rows.holds), timeout=self._timeout_s()
            )

    async def write_projections(self, rows: BatchRows) -> None:
        conn = self.connection
        if rows.orders:
            await conn.copy_records_to_table(
                ORDERS_STAGE, records=rows.orders, columns=ORDER_COLUMNS, timeout=self._timeout_s()
            )
            await conn.execute(ORDERS_UPSERT, timeout=self._timeout_s())
        if rows.balances:
            await conn.execute(BALANCES_UPSERT, *_columns(rows.balances), timeout=self._timeout_s())
        if rows.asset_totals:
            await conn.execute(
                ASSET_TOTALS_UPSERT, *_columns(rows.asset_totals), timeout=self._timeout_s()
            )
        if rows.market_updates:
            status = await conn.execute(
                MARKETS_UPDATE, *_columns(rows.market_updates), timeout=self._timeout_s()
            )
            if _affected(status) != len(rows.market_updates):
                raise StoreConflictError("the batch updates a market the store does not have")

    async def write_candles(self, candles: Sequence[CandleRow]) -> None:
        if candles:
            await self.connection.execute(
                CANDLES_UPSERT, *_columns(candles), timeout=self._timeout_s()
            )

    async def write_counters(self, rows: BatchRows, prev_seq: int, *, first: bool) -> None:
        counters = [rows.counters[name] for name in _COUNTERS]
        if first:
            await self.connection.execute(STATE_INSERT, *counters, timeout=self._timeout_s())
            return
        status = await self.connection.execute(
            STATE_UPDATE, *counters, prev_seq, timeout=self._timeout_s()
        )
        if _affected(status) != 1:
            raise StoreConflictError(f"the committed state is no longer at seq {prev_seq}")
