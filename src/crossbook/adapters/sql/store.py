"""`SqlStore`: the engine's `Store` port on SQLite (embedded default) or PostgreSQL.

    store = await SqlStore.open("sqlite:///var/crossbook.db")   # migrates first
    state = await store.load_state()        # None for an empty database
    exchange = restore(state) if state else Exchange()
    ...
    await store.commit(batch)               # one transaction: all of it or none
    await store.close()

Write path (the engine's single writer): PostgreSQL through one asyncpg
connection (binary COPY for the append-only tables, set-based upserts for the
projections, a fixed number of round trips per batch; see `postgres`); SQLite
through stdlib `sqlite3` on one dedicated thread (`executemany`; see `sqlite`,
which also states the durability of each `synchronous` setting; the default is
FULL). Reads, `load_state` included, go
through SQLAlchemy Core engines, separate from the writer.

`SqlStore` is the engine's `Store` port alone. The other ports on the same
database are objects of their own, sharing its read connections
(`connections.SqlConnections`): `store.reads` (`SqlReads`, the API's
`ReadStore`: orders, trades, balances, candles, `ping`), `store.users`
(`SqlUsers`, the `UserStore`: the one write outside the engine's batches) and
`store.settlements` (`SqlSettlements`, the settlement outbox), `store.holds`
(`SqlHoldFates`, the hold fates and the hold reconciler's progress).

Outages and stalls (bounded waits, one exception):
- every read (`ping` included) ends within `read_timeout_ms`, abandoned past it;
  the short writes (`create_user`, the settlement outbox's records) are bounded
  by the drivers' own timeouts, set to the same value (SQLite's busy timeout,
  asyncpg's connect and statement timeouts, the pool's wait), which roll their
  transaction back rather than abandon it half-way; a connection failure or
  timeout of any driver raises the port's `StoreUnavailableError`
  (`errors.is_unavailable` says which errors are that);
- `commit` ends by `commit_deadline_ms` (the writers' deadline: SQLite's
  `BEGIN IMMEDIATE` stops waiting for the lock, PostgreSQL's lock and statement
  timeouts fire), raising `StoreUnavailableError(committed=False)` when nothing
  was written, `committed=None` when COMMIT itself failed (see `sqlite`,
  `postgres`); a COMMIT already sent may run past the deadline (a slow fsync);
- `load_state()` after a failure reconnects the writer and `probe`s the write
  lock before reading: it raises while another session holds the lock, and it
  returns only once no earlier attempt can still land, so what it reads is final.

Invariants:
- after `commit(batch)` returns, the whole batch is committed (PostgreSQL:
  WAL flushed; SQLite FULL: WAL fsynced); if it raises, none of it is when the
  error says `committed=False`, and otherwise `load_state()` reads whether it
  did; either way the store refuses every later commit until `load_state()` has
  run: the engine
  recovers from it (DESIGN rule 4), and that call also reconnects the writer and
  re-reads what the store knows of the committed state;
- batches must follow each other: the first event of a batch has the sequence
  number after the last committed one, else `StoreConflictError` (checked here
  and, against other writers, inside the transaction);
- a batch without events still commits its counters if they changed (a `Tick`
  that expired nothing moves `now_ms` only), so the committed counters are
  always those of the last batch;
- `load_state()` equals `Exchange.state()` of the committed exchange without the
  books and stop books (which `restore` rebuilds from the open orders); order
  records are those of open orders only, by order id.

Known limits: `commit` is not reentrant (one batch at a time, by design); the
writer reconnects only through `load_state()` after a failure, never silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from functools import partial
from types import TracebackType
from typing import Any, Protocol

from sqlalchemy import RowMapping

from crossbook.adapters.sql import queries
from crossbook.adapters.sql.connections import (
    PostgresReader,
    Reader,
    SqlConnections,
    SqliteReader,
    translated,
)
from crossbook.adapters.sql.errors import StoreConflictError, StoreError
from crossbook.adapters.sql.hold_store import SqlHoldFates
from crossbook.adapters.sql.migrate import upgrade
from crossbook.adapters.sql.postgres import PostgresWriter
from crossbook.adapters.sql.reads import SqlReads
from crossbook.adapters.sql.rows import Committed, MarketAssets
from crossbook.adapters.sql.schema import COUNTER_COLUMNS, RULE_COLUMNS
from crossbook.adapters.sql.settlement_store import SqlSettlements
from crossbook.adapters.sql.sqlite import SqliteWriter
from crossbook.adapters.sql.users import SqlUsers
from crossbook.domain import MarketStatus
from crossbook.engine.batch import CommitBatch
from crossbook.engine.read_model.records import StoredOrder
from crossbook.sql_support.database import DatabaseUrl
from crossbook.sql_support.engines import postgres_engine, sqlite_engine

DEFAULT_COMMIT_DEADLINE_MS = 1_000  # a commit that has not ended by then fails
DEFAULT_READ_TIMEOUT_MS = 5_000  # a read (or a short write of its own) that has not either


class _Writer(Protocol):
    async def write(
        self, batch: CommitBatch, before: Committed, after: Committed, deadline_s: float
    ) -> None:
        """Write `batch` in one transaction by `deadline_s` (monotonic), if the database is
        still at `before.seq`; `StoreUnavailableError` says whether it can have committed."""
        ...

    async def probe(self, deadline_s: float) -> None:
        """Take the write lock and give it back, by `deadline_s`: raises while another
        session holds it; returns only once no earlier write of ours can still commit."""
        ...

    async def close(self) -> None: ...


class SqlStore:
    """The durable truth on a SQL database (see the module docstring)."""

    def __init__(
        self,
        db: DatabaseUrl,
        reader: Reader,
        open_writer: Callable[[], Awaitable[_Writer]],
        *,
        commit_deadline_ms: int = DEFAULT_COMMIT_DEADLINE_MS,
        read_timeout_ms: int = DEFAULT_READ_TIMEOUT_MS,
    ) -> None:
        self.db = db
        self._connections = SqlConnections(reader, read_timeout_ms)
        self.reads = SqlReads(self._connections)
        self.users = SqlUsers(self._connections)
        self.settlements = SqlSettlements(self._connections)
        self.holds = SqlHoldFates(self._connections)
        self._open_writer = open_writer
        self._commit_deadline_s = commit_deadline_ms / 1000
        self._writer: _Writer | None = None
        self._committed = Committed(0, None, {}, {}, {})  # until `_resync`
        self._committing = False
        self._failure: BaseException | None = None

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        migrate: bool = True,
        commit_deadline_ms: int = DEFAULT_COMMIT_DEADLINE_MS,
        read_timeout_ms: int = DEFAULT_READ_TIMEOUT_MS,
    ) -> SqlStore:
        """Connect to `url`, bring its schema up to date (unless `migrate=False`).

        `commit_deadline_ms` bounds each commit, `read_timeout_ms` each read (see the
        module docstring)."""
        db = DatabaseUrl.parse(url)
        if migrate:
            await asyncio.to_thread(upgrade, url)
        reader: Reader
        open_writer: Callable[[], Awaitable[_Writer]]
        read_timeout_s = read_timeout_ms / 1000
        if db.is_sqlite:
            reader = SqliteReader(
                sqlite_engine(db, begin="DEFERRED", busy_timeout_s=read_timeout_s),
                sqlite_engine(db, begin="IMMEDIATE", busy_timeout_s=read_timeout_s),
            )
            open_writer = partial(SqliteWriter.connect, db.sqlite_path, db.sqlite_synchronous)
        else:
            reader = PostgresReader(postgres_engine(db, timeout_s=read_timeout_s))
            open_writer = partial(PostgresWriter.connect, db.asyncpg_dsn)
        store = cls(
            db,
            reader,
            open_writer,
            commit_deadline_ms=commit_deadline_ms,
            read_timeout_ms=read_timeout_ms,
        )
        try:
            await store._resync()
        except BaseException:
            await store.close()
            raise
        return store

    async def _resync(self) -> None:
        """(Re)connect the writer, wait until no earlier write can still land and the write
        lock is free (`probe`), then learn the committed state from the database."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            with contextlib.suppress(Exception):
                await writer.close()  # SQLite: after the write in progress on its thread
        writer = await translated(self._open_writer())  # the drivers bound it
        try:
            await writer.probe(time.monotonic() + self._commit_deadline_s)
        except BaseException:
            with contextlib.suppress(Exception):
                await writer.close()
            raise
        self._writer = writer
        state, assets, markets, totals = await self._connections.fetch_all(
            queries.committed_statements()
        )
        decimals = {row["code"]: row["decimals"] for row in assets}
        self._committed = Committed(
            seq=state[0]["seq"] if state else 0,
            counters={name: state[0][name] for name in COUNTER_COLUMNS} if state else None,
            decimals=decimals,
            markets={
                row["symbol"]: MarketAssets.from_rules(_rules(row), decimals) for row in markets
            },
            net_deposits={row["asset"]: int(row["net_deposits"]) for row in totals},
        )
        self._failure = None

    async def close(self) -> None:
        try:
            if self._writer is not None:
                await self._writer.close()
        finally:
            await self._connections.close()

    async def __aenter__(self) -> SqlStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def last_seq(self) -> int:
        """The seq of the last committed event (0 for an empty store)."""
        return self._committed.seq

    # -- the Store port -----------------------------------------------------------

    async def commit(self, batch: CommitBatch) -> None:
        """Write the whole batch in one transaction, or raise having written none of it."""
        if self._failure is not None or self._writer is None:
            raise StoreError("an earlier commit failed; recover through load_state() first")
        if self._committing:
            raise StoreError("commit is not reentrant: one batch at a time")
        before = self._committed
        if batch.is_empty and batch.counters == before.counters:
            return
        self._committing = True
        try:
            _check_follows(batch, before.seq)
            after = before.after(batch)
            await self._writer.write(
                batch, before, after, time.monotonic() + self._commit_deadline_s
            )
        except BaseException as exc:
            self._failure = exc
            raise
        finally:
            self._committing = False
        self._committed = after

    async def load_state(self) -> dict[str, Any] | None:
        """The committed exchange in `Exchange.state()` form (no books), or None if empty.

        After a failed commit this is also how the store recovers: it reconnects its
        writer and re-learns the committed state first (raising if it cannot yet).
        """
        if self._failure is not None:
            await self._resync()
        state, assets, markets, balances, totals, orders = await self._connections.fetch_all(
            queries.state_statements()
        )
        if not state:
            return None
        return {
            "counters": {name: state[0][name] for name in COUNTER_COLUMNS},
            "assets": sorted((row["code"], row["decimals"]) for row in assets),
            "markets": [
                {
                    "symbol": row["symbol"],
                    "status": MarketStatus(row["status"]),
                    "last_price_ticks": row["last_price_ticks"],
                    "market_seq": row["market_seq"],
                    "rules": _rules(row),
                }
                for row in sorted(markets, key=lambda row: str(row["symbol"]))
            ],
            "balances": sorted(
                (row["user_id"], row["asset"], row["available"], row["locked"]) for row in balances
            ),
            "net_deposits": sorted((row["asset"], int(row["net_deposits"])) for row in totals),
            "orders": [StoredOrder.from_row(row).record() for row in orders],
        }


def _check_follows(batch: CommitBatch, committed_seq: int) -> None:
    """Refuse a batch that does not start right after the committed seq, or is malformed."""
    if not batch.events:
        if batch.counters["seq"] != committed_seq:
            raise StoreConflictError(
                f"an empty batch at seq {batch.counters['seq']}, the store is at {committed_seq}"
            )
        return
    first, last = batch.events[0].seq, batch.events[-1].seq
    if first != committed_seq + 1:
        raise StoreConflictError(f"batch starts at seq {first}, the store is at {committed_seq}")
    if batch.counters["seq"] != last or last - first + 1 != len(batch.events):
        raise StoreError("malformed batch: its events are not the seqs up to its counters")


def _rules(row: RowMapping) -> dict[str, str]:
    return {name: row[name] for name in RULE_COLUMNS}
