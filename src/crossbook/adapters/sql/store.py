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

Besides the `Store` port it is the API's `ReadStore`: orders, trades, balances,
candles (OHLCV computed from the trades; see `queries`), users and `ping`. Each
read is one read-only snapshot. The one write outside the engine's batches is
`create_user`: one short transaction of its own, never through the engine's
writer (users are accounts, not trading state). On SQLite it takes the write
lock with `BEGIN IMMEDIATE` and, while the engine writer holds it, waits up to
the read timeout (SQLite's busy timeout); on PostgreSQL two concurrent inserts can
pick the same next id, and the one that loses on the primary key is retried,
at most `CREATE_USER_ATTEMPTS` times in all (each lost attempt means another
user was created meanwhile), then `StoreError`.

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
writer reconnects only through `load_state()` after a failure, never silently;
candles read every trade of the market in their range on each call (no rollup
table); on SQLite `ping` only shows that the file opens (`SELECT 1` reads no
page); a read abandoned at its timeout on SQLite finishes on its thread (bounded
by the busy timeout) after its caller was answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine, Executable, RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from crossbook.adapters.sql import queries, settlement_queries
from crossbook.adapters.sql.errors import StoreConflictError, StoreError, is_unavailable
from crossbook.adapters.sql.migrate import upgrade
from crossbook.adapters.sql.postgres import PostgresWriter
from crossbook.adapters.sql.queries import DEFAULT_QUERY_LIMIT, MAX_QUERY_LIMIT, Window
from crossbook.adapters.sql.rows import Committed, MarketAssets
from crossbook.adapters.sql.schema import COUNTER_COLUMNS, RULE_COLUMNS
from crossbook.adapters.sql.sqlite import SqliteWriter
from crossbook.domain import MarketStatus, OrderStatus
from crossbook.engine.batch import CommitBatch
from crossbook.engine.ports import StoreUnavailableError
from crossbook.engine.read_model.records import (
    Candle,
    StoredBalance,
    StoredOrder,
    StoredTrade,
    StoredUser,
)
from crossbook.engine.settlement_plan import SettlementStatus, StoredSettlement
from crossbook.sql_support.database import DatabaseUrl
from crossbook.sql_support.engines import postgres_engine, sqlite_engine

Rows = Sequence[RowMapping]
_Write = tuple[Executable, Sequence[Mapping[str, Any]] | None]
T = TypeVar("T")

CREATE_USER_ATTEMPTS = 20  # `create_user` tries at most this often to win the next id
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


class _Reader(Protocol):
    """The store's connections besides the engine's writer: reads, and short writes."""

    async def fetch(self, statements: Sequence[queries.AnySelect]) -> list[Rows]:
        """Run `statements` in one read-only snapshot; their rows, in order."""
        ...

    async def write(self, statement: Executable) -> Rows:
        """Run `statement` in a short write transaction of its own; its RETURNING rows."""
        ...

    async def write_all(self, statements: Sequence[_Write]) -> None:
        """Run `statements` (each with its parameter sets, or None) in one transaction."""
        ...

    async def close(self) -> None: ...


class _SqliteReader:
    """Reads in `BEGIN` (deferred) snapshots; writes in `BEGIN IMMEDIATE`, which waits
    for the write lock (busy timeout) while the engine's writer holds it."""

    def __init__(self, engine: Engine, write_engine: Engine) -> None:
        self._engine = engine
        self._write_engine = write_engine

    async def fetch(self, statements: Sequence[queries.AnySelect]) -> list[Rows]:
        return await asyncio.to_thread(self._fetch, statements)

    def _fetch(self, statements: Sequence[queries.AnySelect]) -> list[Rows]:
        with self._engine.begin() as connection:
            return [connection.execute(s).mappings().all() for s in statements]

    async def write(self, statement: Executable) -> Rows:
        return await asyncio.to_thread(self._write, statement)

    def _write(self, statement: Executable) -> Rows:
        with self._write_engine.begin() as connection:
            return connection.execute(statement).mappings().all()

    async def write_all(self, statements: Sequence[_Write]) -> None:
        await asyncio.to_thread(self._write_all, statements)

    def _write_all(self, statements: Sequence[_Write]) -> None:
        with self._write_engine.begin() as connection:
            for statement, params in statements:
                connection.execute(statement, params)

    async def close(self) -> None:
        try:
            await asyncio.to_thread(self._write_engine.dispose)
        finally:
            await asyncio.to_thread(self._engine.dispose)


class _PostgresReader:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def fetch(self, statements: Sequence[queries.AnySelect]) -> list[Rows]:
        async with self._engine.connect() as connection:
            snapshot = await connection.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
            async with snapshot.begin():
                return [(await snapshot.execute(s)).mappings().all() for s in statements]

    async def write(self, statement: Executable) -> Rows:
        async with self._engine.begin() as connection:  # READ COMMITTED, read-write
            return (await connection.execute(statement)).mappings().all()

    async def write_all(self, statements: Sequence[_Write]) -> None:
        async with self._engine.begin() as connection:
            for statement, params in statements:
                await connection.execute(statement, params)

    async def close(self) -> None:
        await self._engine.dispose()


class SqlStore:
    """The durable truth on a SQL database (see the module docstring)."""

    def __init__(
        self,
        db: DatabaseUrl,
        reader: _Reader,
        open_writer: Callable[[], Awaitable[_Writer]],
        *,
        commit_deadline_ms: int = DEFAULT_COMMIT_DEADLINE_MS,
        read_timeout_ms: int = DEFAULT_READ_TIMEOUT_MS,
    ) -> None:
        self.db = db
        self._reader = reader
        self._open_writer = open_writer
        self._commit_deadline_s = commit_deadline_ms / 1000
        self._read_timeout_s = read_timeout_ms / 1000
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
        reader: _Reader
        open_writer: Callable[[], Awaitable[_Writer]]
        read_timeout_s = read_timeout_ms / 1000
        if db.is_sqlite:
            reader = _SqliteReader(
                sqlite_engine(db, begin="DEFERRED", busy_timeout_s=read_timeout_s),
                sqlite_engine(db, begin="IMMEDIATE", busy_timeout_s=read_timeout_s),
            )
            open_writer = partial(SqliteWriter.connect, db.sqlite_path, db.sqlite_synchronous)
        else:
            reader = _PostgresReader(postgres_engine(db, timeout_s=read_timeout_s))
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
        writer = await self._translated(self._open_writer())  # the drivers bound it
        try:
            await writer.probe(time.monotonic() + self._commit_deadline_s)
        except BaseException:
            with contextlib.suppress(Exception):
                await writer.close()
            raise
        self._writer = writer
        state, assets, markets, totals = await self._fetch_all(queries.committed_statements())
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
            await self._reader.close()

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
        state, assets, markets, balances, totals, orders = await self._fetch_all(
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

    # -- reads ------------------------------------------------------------------------

    async def get_order(self, user_id: int, order_id: int) -> StoredOrder | None:
        """The order if it belongs to `user_id` (another user's order is None, as unknown)."""
        return self._one_order(await self._fetch(queries.order_of_user(user_id, order_id)))

    async def get_order_by_client_id(
        self, user_id: int, client_order_id: str
    ) -> StoredOrder | None:
        """The user's newest order with that client order id."""
        statement = queries.order_by_client_id(user_id, client_order_id)
        return self._one_order(await self._fetch(statement))

    async def list_orders(
        self,
        user_id: int,
        *,
        statuses: Collection[OrderStatus] | None = None,
        symbol: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        before_order_id: int | None = None,
        after_order_id: int | None = None,
        limit: int = DEFAULT_QUERY_LIMIT,
    ) -> list[StoredOrder]:
        """The user's orders, newest first (time range on `created_at_ms`; see `queries`)."""
        window = Window(limit, before_order_id, after_order_id, start_ms, end_ms)
        rows = await self._fetch(queries.orders_of_user(user_id, window, statuses, symbol))
        return _ordered([StoredOrder.from_row(row) for row in rows], window)

    async def list_market_trades(
        self,
        symbol: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        before_trade_id: int | None = None,
        after_trade_id: int | None = None,
        limit: int = DEFAULT_QUERY_LIMIT,
    ) -> list[StoredTrade]:
        """A market's trades, newest first (time range on `executed_at_ms`)."""
        window = Window(limit, before_trade_id, after_trade_id, start_ms, end_ms)
        rows = await self._fetch(queries.trades_of_market(symbol, window))
        return _ordered([StoredTrade.from_row(row) for row in rows], window)

    async def list_user_trades(
        self,
        user_id: int,
        *,
        symbol: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        before_trade_id: int | None = None,
        after_trade_id: int | None = None,
        limit: int = DEFAULT_QUERY_LIMIT,
    ) -> list[StoredTrade]:
        """The trades the user bought or sold in, newest first."""
        window = Window(limit, before_trade_id, after_trade_id, start_ms, end_ms)
        rows = await self._fetch(queries.trades_of_user(user_id, window, symbol))
        return _ordered([StoredTrade.from_row(row) for row in rows], window)

    async def list_balances(
        self, user_id: int, *, limit: int = MAX_QUERY_LIMIT
    ) -> list[StoredBalance]:
        """The user's balances by asset code (at most `limit`)."""
        rows = await self._fetch(queries.balances_of_user(user_id, limit))
        return [
            StoredBalance(row["user_id"], row["asset"], row["available"], row["locked"])
            for row in rows
        ]

    async def candles(
        self,
        symbol: str,
        interval_ms: int,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = DEFAULT_QUERY_LIMIT,
    ) -> list[Candle]:
        """The newest `limit` candles with trades whose open time is in the range,
        oldest first (whole intervals; see `queries.candles`)."""
        rows = await self._fetch(queries.candles(symbol, interval_ms, start_ms, end_ms, limit))
        return [_candle(row) for row in rows]

    async def ping(self) -> None:
        """Raise if the database does not answer `SELECT 1`."""
        await self._fetch(queries.ping())

    # -- users --------------------------------------------------------------------------

    async def create_user(self, name: str | None, created_at_ms: int) -> StoredUser:
        """Create a user with the next id (from 1), in one short transaction of its own."""
        statement = queries.insert_next_user(name, created_at_ms)
        lost: IntegrityError | None = None
        for _ in range(CREATE_USER_ATTEMPTS):
            try:
                (row,) = await self._translated(self._reader.write(statement))
            except IntegrityError as exc:  # a concurrent insert took that id first
                lost = exc
                continue
            return _user(row)
        raise StoreError(
            f"create_user lost the race for the next user id {CREATE_USER_ATTEMPTS} times"
        ) from lost

    async def get_user(self, user_id: int) -> StoredUser | None:
        rows = await self._fetch(queries.user_by_id(user_id))
        return _user(rows[0]) if rows else None

    async def list_users(
        self, *, after_user_id: int = 0, limit: int = DEFAULT_QUERY_LIMIT
    ) -> list[StoredUser]:
        """Users with an id above `after_user_id`, by id ascending (at most `limit`)."""
        rows = await self._fetch(queries.users_after(after_user_id, limit))
        return [_user(row) for row in rows]

    async def last_user_id(self) -> int:
        (row,) = await self._fetch(queries.last_user_id())
        return int(row["last_user_id"])

    # -- the settlement outbox (remote-wallet mode) -------------------------------------

    async def pending_settlement_ids(self, *, after_id: int, limit: int) -> list[int]:
        rows = await self._fetch(settlement_queries.pending_ids(after_id, limit))
        return [row["settlement_id"] for row in rows]

    async def get_settlement(self, settlement_id: int) -> StoredSettlement | None:
        head, legs = await self._fetch_all(settlement_queries.by_id(settlement_id))
        return settlement_queries.settlement_from_rows(head[0], legs) if head else None

    async def record_settlements(self, settlements: Sequence[StoredSettlement]) -> None:
        """All of them in one transaction."""
        statements = [w for s in settlements for w in settlement_queries.record_statements(s)]
        await self._translated(self._reader.write_all(statements))

    async def list_settlements(
        self, status: SettlementStatus, *, after_id: int = 0, limit: int = DEFAULT_QUERY_LIMIT
    ) -> list[StoredSettlement]:
        if not 1 <= limit <= MAX_QUERY_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_QUERY_LIMIT}")
        heads, legs = await self._fetch_all(settlement_queries.in_status(status, after_id, limit))
        by_id: dict[int, list[RowMapping]] = {}
        for leg in legs:
            by_id.setdefault(leg["settlement_id"], []).append(leg)
        return [
            settlement_queries.settlement_from_rows(head, by_id.get(head["settlement_id"], []))
            for head in heads
        ]

    async def count_settlements(self, status: SettlementStatus) -> int:
        (row,) = await self._fetch(settlement_queries.count_in(status))
        return int(next(iter(row.values())))

    async def _fetch(self, statement: queries.AnySelect) -> Rows:
        (rows,) = await self._fetch_all([statement])
        return rows

    async def _fetch_all(self, statements: Sequence[queries.AnySelect]) -> list[Rows]:
        return await self._bounded(self._reader.fetch(statements))

    async def _bounded(self, work: Awaitable[T]) -> T:
        """A read within the read timeout (abandoned past it), as `_translated`."""
        return await self._translated(asyncio.wait_for(work, self._read_timeout_s))

    @staticmethod
    async def _translated(work: Awaitable[T]) -> T:
        """`work`, with an outage of the database (see `errors`) raised as the port's
        `StoreUnavailableError` and anything else as it is.

        Writes go through this alone: bounded by the drivers' timeouts, which leave their
        transaction rolled back, never abandoned half-way (a write abandoned in its
        busy wait on SQLite would still commit once the lock came free)."""
        try:
            return await work
        except StoreUnavailableError:
            raise
        except Exception as exc:
            if is_unavailable(exc):
                raise StoreUnavailableError(f"the database did not answer: {exc!r}") from exc
            raise

    @staticmethod
    def _one_order(rows: Rows) -> StoredOrder | None:
        return StoredOrder.from_row(rows[0]) if rows else None


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


def _candle(row: RowMapping) -> Candle:
    """From a row of `queries.candles` (PostgreSQL's sums and counts are NUMERIC/BIGINT)."""
    return Candle(
        open_time_ms=int(row["open_time_ms"]),
        open_ticks=int(row["open_ticks"]),
        high_ticks=int(row["high_ticks"]),
        low_ticks=int(row["low_ticks"]),
        close_ticks=int(row["close_ticks"]),
        volume_lots=queries.wide_sum(row, "volume_lots"),
        quote_volume_units=queries.wide_sum(row, "quote_volume_units"),
        trade_count=int(row["trade_count"]),
    )


def _user(row: RowMapping) -> StoredUser:
    return StoredUser(row["user_id"], row["name"], row["created_at_ms"])


def _ordered(items: list[T], window: Window) -> list[T]:
    return items[::-1] if window.reverse else items
