"""The SQLite write path: stdlib `sqlite3` on one dedicated thread, one transaction per batch.

The connection lives on a single-thread executor, so every write runs on the
same thread and the event loop never blocks on SQLite. A batch is one
`BEGIN IMMEDIATE … COMMIT` holding one `executemany` per table: plain inserts
for the append-only tables (events, trades, ledger entries), `INSERT … ON
CONFLICT DO UPDATE` for the projections and the candle rollup (one row per
candle the batch touches, `candle_rows`; its wide volumes are added exactly by
`wide_add`, a function registered on the connection, since SQLite's `+` turns a
sum beyond 64 bits into a float). As on PostgreSQL, the counters row is
updated only if it still holds the sequence number the batch follows.

Durability (`PRAGMA synchronous`, chosen by the URL, default FULL), always in
WAL mode:
- FULL: COMMIT returns after the WAL is fsynced. A committed batch survives a
  crash of the process (SIGKILL) and of the machine (power loss, kernel panic).
- NORMAL: COMMIT returns after the WAL frames are written to the operating
  system, without fsync. A committed batch survives a SIGKILL of the process
  (the kernel holds the data), but the last batches before a power loss or an
  OS crash may be lost; the database itself stays consistent either way.

Deadline: a batch is written by `deadline_s` (monotonic) or not at all. The
write lock is taken by `BEGIN IMMEDIATE` in short busy waits
(`SQLITE_WRITER_BUSY_SLICE_MS`) retried until the deadline, so while another
connection holds the lock the transaction never starts and the failure is
known: `StoreUnavailableError(committed=False)`. The deadline is checked again
before COMMIT (past it, the batch is rolled back). A failure of COMMIT itself
is ambiguous (`committed=None`), unless SQLite left the transaction open (it
is then rolled back: not committed).

`probe(deadline_s)` takes the write lock and gives it back: it fails while
another connection holds the lock, and, since the writer's thread runs one
thing at a time, it never overlaps an earlier write.

Known limits: one writer process per database file (SQLite's own lock makes a
second writer wait, then fail); after an error the store replaces the writer
when the engine recovers (`SqlStore.load_state`); once the lock is taken the
statements and the COMMIT (its fsync) are not interrupted, so a slow disk can
hold a write past its deadline (the engine waits for it to end before reading
what committed).
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

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

SQLITE_WRITER_BUSY_SLICE_MS = 50  # one busy wait of the writer's BEGIN IMMEDIATE
SQLITE_CACHE_KIB = 64 * 1024
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})

T = TypeVar("T")


def insert_sql(table: str, columns: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def upsert_sql(table: str, columns: Sequence[str], key: Sequence[str]) -> str:
    sets = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    return f"{insert_sql(table, columns)} ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}"


_COUNTERS = schema.COUNTER_COLUMNS
EVENTS_INSERT = insert_sql("events", EVENT_COLUMNS)
TRADES_INSERT = insert_sql("trades", TRADE_COLUMNS)
LEDGER_INSERT = insert_sql("ledger_entries", LEDGER_COLUMNS)
SETTLEMENTS_INSERT = insert_sql("settlements", SETTLEMENT_COLUMNS)
SETTLEMENT_LEGS_INSERT = insert_sql("settlement_legs", SETTLEMENT_LEG_COLUMNS)
# a key decided twice (a hold voided again) keeps its first fate
HOLDS_INSERT = f"{insert_sql('holds', HOLD_COLUMNS)} ON CONFLICT (hold_key) DO NOTHING"
ORDERS_UPSERT = upsert_sql("orders", ORDER_COLUMNS, ("order_id",))
BALANCES_UPSERT = upsert_sql(
    "balances", ("user_id", "asset", "available", "locked"), ("user_id", "asset")
)
ASSET_TOTALS_UPSERT = upsert_sql(
    "asset_totals",
    ("asset", "net_deposits"),
    ("asset",),
)
ASSETS_INSERT = insert_sql("assets", ("code", "decimals"))
MARKETS_INSERT = insert_sql("markets", MARKET_COLUMNS)
MARKETS_UPDATE = (
    "UPDATE markets SET status = ?, last_price_ticks = ?, market_seq = ? WHERE symbol = ?"
)
WIDE_ADD = "wide_add"  # exact sum of two WideIntegers (int or decimal text), as text
CANDLES_UPSERT = (
    f"{insert_sql('candles', CANDLE_COLUMNS)} ON CONFLICT ({', '.join(CANDLE_KEY)}) DO UPDATE SET"
    " open_ticks = CASE WHEN excluded.first_trade_id < candles.first_trade_id"
    " THEN excluded.open_ticks ELSE candles.open_ticks END,"
    " first_trade_id = min(candles.first_trade_id, excluded.first_trade_id),"
    " close_ticks = CASE WHEN excluded.last_trade_id > candles.last_trade_id"
    " THEN excluded.close_ticks ELSE candles.close_ticks END,"
    " last_trade_id = max(candles.last_trade_id, excluded.last_trade_id),"
    " high_ticks = max(candles.high_ticks, excluded.high_ticks),"
    " low_ticks = min(candles.low_ticks, excluded.low_ticks),"
    f" volume_lots = {WIDE_ADD}(candles.volume_lots, excluded.volume_lots),"
    f" quote_volume_units = {WIDE_ADD}(candles.quote_volume_units, excluded.quote_volume_units),"
    " trade_count = candles.trade_count + excluded.trade_count"
)
STATE_INSERT = insert_sql("engine_state", ("id", *_COUNTERS))
STATE_UPDATE = (
    f"UPDATE engine_state SET {', '.join(f'{c} = ?' for c in _COUNTERS)}"
    f" WHERE id = {schema.ENGINE_STATE_ID} AND seq = ?"
)


class SqliteWriter:
    """Writes batches on one connection owned by one thread (the engine's single writer)."""

    def __init__(self, executor: ThreadPoolExecutor, connection: sqlite3.Connection) -> None:
        self._executor = executor
        self.connection = connection

    @classmethod
    async def connect(cls, path: str, synchronous: str) -> SqliteWriter:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crossbook-sqlite-writer")
        try:
            connection = await _run(executor, lambda: _connect(path, synchronous))
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(executor, connection)

    async def close(self) -> None:
        await _run(self._executor, self.connection.close)
        self._executor.shutdown(wait=True)

    async def write(
        self, batch: CommitBatch, before: Committed, after: Committed, deadline_s: float
    ) -> None:
        """Convert and write `batch` on the writer thread (the conversion too, off the loop)."""

        def work() -> None:
            rows = batch_rows(batch, after, wide_as_text=True)
            candles = candle_rows(batch.trades, wide_as_text=True)
            self.write_rows(rows, candles, before, deadline_s)

        await _run(self._executor, work)

    async def probe(self, deadline_s: float) -> None:
        """Take the write lock by `deadline_s` and give it back (see the module docstring)."""

        def work() -> None:
            self.begin_immediate(deadline_s)
            self.connection.execute("ROLLBACK")

        await _run(self._executor, work)

    def write_rows(
        self,
        rows: BatchRows,
        candles: Sequence[CandleRow],
        before: Committed,
        deadline_s: float = math.inf,
    ) -> None:
        conn = self.connection
        self.begin_immediate(deadline_s)
        try:
            self.write_reference_data(rows)
            self.write_log(rows)
            self.write_projections(rows)
            if candles:
                conn.executemany(CANDLES_UPSERT, candles)
            self.write_counters(rows, before.seq, first=before.counters is None)
            if time.monotonic() > deadline_s:
                raise TimeoutError("the batch was written past its commit deadline")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if is_unavailable(exc):
                raise StoreUnavailableError(f"write failed: {exc}", committed=False) from exc
            raise
        try:
            conn.execute("COMMIT")
        except BaseException as exc:
            if not conn.in_transaction:  # COMMIT ran and failed part-way: ambiguous
                raise StoreUnavailableError(f"COMMIT failed: {exc}", committed=None) from exc
            conn.execute("ROLLBACK")  # COMMIT was refused (busy): the transaction is intact
            raise StoreUnavailableError(f"COMMIT refused: {exc}", committed=False) from exc

    def begin_immediate(self, deadline_s: float) -> None:
        """`BEGIN IMMEDIATE`, retried in short busy waits until `deadline_s`; past it,
        `StoreUnavailableError(committed=False)` (no transaction was started)."""
        while True:
            try:
                self.connection.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorcode", None) not in _BUSY_CODES:
                    raise StoreUnavailableError(f"BEGIN failed: {exc}", committed=False) from exc
                if time.monotonic() >= deadline_s:
                    raise StoreUnavailableError(
                        "another connection held the write lock past the commit deadline",
                        committed=False,
                    ) from exc

    def write_reference_data(self, rows: BatchRows) -> None:
        conn = self.connection
        if rows.assets:
            conn.executemany(ASSETS_INSERT, rows.assets)
        if rows.new_markets:
            conn.executemany(MARKETS_INSERT, rows.new_markets)

    def write_log(self, rows: BatchRows) -> None:
        conn = self.connection
        if rows.events:
            conn.executemany(EVENTS_INSERT, rows.events)
        if rows.trades:
            conn.executemany(TRADES_INSERT, rows.trades)
        if rows.ledger:
            conn.executemany(LEDGER_INSERT, rows.ledger)
        if rows.settlements:
            conn.executemany(SETTLEMENTS_INSERT, rows.settlements)
            conn.executemany(SETTLEMENT_LEGS_INSERT, rows.settlement_legs)
        if rows.holds:
            conn.executemany(HOLDS_INSERT, rows.holds)

    def write_projections(self, rows: BatchRows) -> None:
        conn = self.connection
        if rows.orders:
            conn.executemany(ORDERS_UPSERT, rows.orders)
        if rows.balances:
            conn.executemany(BALANCES_UPSERT, rows.balances)
        if rows.asset_totals:
            conn.executemany(ASSET_TOTALS_UPSERT, rows.asset_totals)
        if rows.market_updates:
            cursor = conn.executemany(
                MARKETS_UPDATE,
                [(st, last, mseq, sym) for sym, st, last, mseq in rows.market_updates],
            )
            if cursor.rowcount != len(rows.market_updates):
                raise StoreConflictError("the batch updates a market the store does not have")

    def write_counters(self, rows: BatchRows, prev_seq: int, *, first: bool) -> None:
        counters = [rows.counters[name] for name in _COUNTERS]
        if first:
            self.connection.execute(STATE_INSERT, (schema.ENGINE_STATE_ID, *counters))
            return
        cursor = self.connection.execute(STATE_UPDATE, (*counters, prev_seq))
        if cursor.rowcount != 1:
            raise StoreConflictError(f"the committed state is no longer at seq {prev_seq}")


def _connect(path: str, synchronous: str) -> sqlite3.Connection:
    connection = sqlite3.connect(
        path, isolation_level=None, timeout=SQLITE_WRITER_BUSY_SLICE_MS / 1000
    )
    try:
        mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StoreError(f"SQLite refused WAL mode (journal_mode is {mode!r})")
        connection.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        connection.execute("PRAGMA foreign_keys = ON")
        connection.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
        connection.execute("PRAGMA temp_store = MEMORY")
        connection.create_function(WIDE_ADD, 2, _wide_add, deterministic=True)
    except BaseException:
        connection.close()
        raise
    return connection


def _wide_add(a: int | str, b: int | str) -> str:
    return str(int(a) + int(b))


async def _run(executor: ThreadPoolExecutor, work: Callable[[], T]) -> T:
    return await asyncio.get_running_loop().run_in_executor(executor, work)
