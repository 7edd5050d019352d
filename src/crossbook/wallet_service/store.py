"""`WalletStore`: the wallet service's durable truth on SQLite or PostgreSQL (SQLAlchemy Core).

    store = await WalletStore.open("sqlite:///crossbook-wallet.db")   # migrates first
    state = await store.load()              # every balance and asset total
    record = await store.operation(key)     # an idempotency key's row, or None
    records = await store.operations(keys)  # the rows of many keys, in one query
    holds = await store.applied_holds(before_ms, after_ms, user_id, after, limit)
    await store.commit(change)              # a batch's writes, one transaction: all or none
    await store.close()

SQLite: stdlib `sqlite3` engines (`sql_support.engines`) used from worker
threads, in WAL mode with `PRAGMA synchronous` from the URL (default FULL: a
committed operation survives a crash of the process and of the machine);
writes in `BEGIN IMMEDIATE`, reads in deferred snapshots. PostgreSQL: an async
engine on asyncpg; a write is one READ COMMITTED transaction.

A `Change` is what one batch of operations writes, already merged: each new
operation row in its final state, each balance and asset total touched with its
final value, the holds recorded earlier that the batch voided. `commit` writes
it with a handful of statements whatever the batch's size: executemany for the
rows and upserts, one `UPDATE … CASE` for the voided holds.

`applied_holds` reads one page of the holds still `applied` in one snapshot: a
range of the partial index `ix_wallet_operations_applied_at_ms_key` from the
cursor on (a row-value comparison, `(applied_at_ms, key) > cursor`, which both
backends turn into the start of the range), `LIMIT` rows; a `user_id` filter
is applied to the rows of that range (no index of its own: the rows examined
are the applied holds of the window, not only the user's). Keys compare in
the database's collation of `key` (bytewise on SQLite and on PostgreSQL with
the C collation): the order and the cursor agree either way.

Invariants:
- after `commit(change)` returns, the whole change is committed; if it raises,
  the caller cannot know whether it was (the connection may have dropped after
  COMMIT was sent) and must re-read the database (`load`, `operations`);
- `commit` inserts the operation rows with a plain INSERT: a key that another
  writer recorded meanwhile fails the whole transaction instead of being
  overwritten; a voided hold must still be `applied` in the database, else the
  whole transaction fails too.

Known limits: one service process per database (the service keeps the
balances in memory and is their only writer); no retry here, the caller decides;
at most `MAX_KEYS_PER_STATEMENT` keys per `IN (…)` or `CASE` statement (more are
split over several statements of the same transaction or snapshot).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    RowMapping,
    Select,
    Table,
    case,
    event,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from crossbook.sql_support.database import DatabaseUrl
from crossbook.sql_support.engines import postgres_engine, sqlite_engine
from crossbook.sql_support.migrate import Migrations, upgrade
from crossbook.sql_support.wide_integer import wide_value
from crossbook.wallet_protocol import (
    HoldsCursor,
    WalletAccount,
    WalletBalance,
    WalletHold,
    WalletOpKind,
)
from crossbook.wallet_service.model import OperationRecord, OperationStatus
from crossbook.wallet_service.schema import (
    APPLIED_HOLD,
    VERSION_TABLE,
    metadata,
    wallet_assets,
    wallet_balances,
    wallet_operations,
)

T = TypeVar("T")

WALLET_MIGRATIONS = Migrations(
    script_location=Path(__file__).resolve().parent / "migrations",
    metadata=metadata,
    version_table=VERSION_TABLE,
    lock_key=0x77616C6C6574,  # pg_advisory_xact_lock key ("wallet")
)
POSTGRES_POOL_SIZE = 4
MAX_KEYS_PER_STATEMENT = 1_000  # bound parameters stay far below SQLite's and asyncpg's limits


@dataclass(frozen=True, slots=True)
class AssetTotals:
    asset: str
    net_deposits: int
    in_transit: int


@dataclass(frozen=True, slots=True)
class WalletState:
    """Everything the service keeps in memory: the committed balances and asset totals."""

    balances: list[WalletBalance]
    assets: list[AssetTotals]


@dataclass(frozen=True, slots=True)
class Change:
    """What one batch of operations writes, in one transaction (final values only)."""

    records: Sequence[OperationRecord] = ()  # inserted: operations and tombstones, distinct keys
    balances: Sequence[WalletBalance] = ()  # upserted: the balances touched, distinct
    assets: Sequence[AssetTotals] = ()  # upserted: the totals of the assets touched, distinct
    voided: Mapping[str, str] = field(default_factory=dict)  # stored hold key -> its void's key

    @property
    def is_empty(self) -> bool:
        return not (self.records or self.balances or self.assets or self.voided)


class _Runner(Protocol):
    async def run(self, work: Callable[[Connection], T], *, write: bool) -> T:
        """`work` on a connection, in one transaction (committed if `write`)."""
        ...

    async def close(self) -> None: ...


class _SqliteRunner:
    def __init__(self, db: DatabaseUrl) -> None:
        self._write = sqlite_engine(db, begin="IMMEDIATE")
        self._read = sqlite_engine(db, begin="DEFERRED")
        for engine in (self._write, self._read):
            _set_durability(engine, db.sqlite_synchronous)

    async def run(self, work: Callable[[Connection], T], *, write: bool) -> T:
        engine = self._write if write else self._read
        return await asyncio.to_thread(_in_transaction, engine, work)

    async def close(self) -> None:
        await asyncio.to_thread(self._write.dispose)
        await asyncio.to_thread(self._read.dispose)


def _set_durability(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA journal_mode = WAL")
        dbapi_connection.execute(f"PRAGMA synchronous = {synchronous.upper()}")


def _in_transaction(engine: Engine, work: Callable[[Connection], T]) -> T:
    with engine.begin() as connection:
        return work(connection)


class _PostgresRunner:
    def __init__(self, db: DatabaseUrl) -> None:
        self._engine: AsyncEngine = postgres_engine(db, pool_size=POSTGRES_POOL_SIZE)

    async def run(self, work: Callable[[Connection], T], *, write: bool) -> T:
        if write:
            async with self._engine.begin() as connection:
                return await connection.run_sync(work)
        async with self._engine.connect() as connection:
            return await connection.run_sync(work)

    async def close(self) -> None:
        await self._engine.dispose()


class WalletStore:
    """The wallet's tables on one database (see the module docstring)."""

    def __init__(self, db: DatabaseUrl, runner: _Runner) -> None:
        self.db = db
        self._runner = runner

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True) -> Self:
        """Connect to `url`, bring its schema up to date (unless `migrate=False`)."""
        db = DatabaseUrl.parse(url)
        if migrate:
            await asyncio.to_thread(upgrade, url, "head", WALLET_MIGRATIONS)
        runner: _Runner = _SqliteRunner(db) if db.is_sqlite else _PostgresRunner(db)
        return cls(db, runner)

    async def close(self) -> None:
        await self._runner.close()

    async def load(self) -> WalletState:
        return await self._runner.run(_load, write=False)

    async def operation(self, key: str) -> OperationRecord | None:
        return (await self.operations((key,))).get(key)

    async def operations(self, keys: Collection[str]) -> dict[str, OperationRecord]:
        """The recorded operations among `keys` (one snapshot); absent keys are left out."""
        unique = sorted(set(keys))
        if not unique:
            return {}
        return await self._runner.run(lambda c: _operations(c, unique), write=False)

    async def applied_holds(
        self,
        applied_before_ms: int,
        applied_after_ms: int | None,
        user_id: int | None,
        after: HoldsCursor | None,
        limit: int,
    ) -> list[WalletHold]:
        """At most `limit` holds still applied, applied_after_ms < applied_at_ms <=
        applied_before_ms, after the cursor, ascending by (applied_at_ms, key)."""
        query = applied_holds_query(applied_before_ms, applied_after_ms, user_id, after, limit)
        return await self._runner.run(lambda c: _holds(c, query), write=False)

    async def commit(self, change: Change) -> None:
        """Write `change` in one transaction (see the module docstring)."""
        if change.is_empty:
            return
        await self._runner.run(lambda c: _commit(c, change), write=True)


def _load(connection: Connection) -> WalletState:
    balances = [
        WalletBalance(row.user_id, row.asset, row.available, row.locked)
        for row in connection.execute(select(wallet_balances))
    ]
    assets = [
        AssetTotals(row.asset, int(row.net_deposits), int(row.in_transit))
        for row in connection.execute(select(wallet_assets))
    ]
    return WalletState(balances, assets)


def _chunks(keys: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(keys), MAX_KEYS_PER_STATEMENT):
        yield keys[start : start + MAX_KEYS_PER_STATEMENT]


def _operations(connection: Connection, keys: Sequence[str]) -> dict[str, OperationRecord]:
    found: dict[str, OperationRecord] = {}
    for chunk in _chunks(keys):
        query = select(wallet_operations).where(wallet_operations.c.key.in_(chunk))
        for row in connection.execute(query).mappings():
            record = _record(row)
            found[record.key] = record
    return found


HOLD_COLUMNS = (
    wallet_operations.c.key,
    wallet_operations.c.user_id,
    wallet_operations.c.asset,
    wallet_operations.c.amount_units,
    wallet_operations.c.applied_at_ms,
)


def applied_holds_query(
    applied_before_ms: int,
    applied_after_ms: int | None,
    user_id: int | None,
    after: HoldsCursor | None,
    limit: int,
) -> Select[Any]:
    """The statement of `WalletStore.applied_holds` (a range of the partial index)."""
    at, key = wallet_operations.c.applied_at_ms, wallet_operations.c.key
    query = select(*HOLD_COLUMNS).where(APPLIED_HOLD, at <= applied_before_ms)
    if applied_after_ms is not None:
        query = query.where(at > applied_after_ms)
    if user_id is not None:
        query = query.where(wallet_operations.c.user_id == user_id)
    if after is not None:  # a row value: both backends start the index range at the cursor
        query = query.where(tuple_(at, key) > tuple_(after.applied_at_ms, after.key))
    return query.order_by(at, key).limit(limit)


def _holds(connection: Connection, query: Select[Any]) -> list[WalletHold]:
    return [
        WalletHold(row.key, row.user_id, row.asset, row.amount_units, row.applied_at_ms)
        for row in connection.execute(query)
    ]


def _record(row: RowMapping) -> OperationRecord:
    return OperationRecord(
        key=row["key"],
        kind=WalletOpKind(row["op"]),
        user_id=row["user_id"],
        asset=row["asset"],
        amount_units=row["amount_units"],
        account=WalletAccount(row["account"]),
        target_key=row["target_key"],
        result_units=row["result_units"],
        applied_at_ms=row["applied_at_ms"],
        status=OperationStatus(row["status"]),
        voided_by=row["voided_by"],
    )


def _operation_row(record: OperationRecord) -> dict[str, Any]:
    return {
        "key": record.key,
        "op": record.kind.value,
        "user_id": record.user_id,
        "asset": record.asset,
        "amount_units": record.amount_units,
        "account": record.account.value,
        "target_key": record.target_key,
        "result_units": record.result_units,
        "applied_at_ms": record.applied_at_ms,
        "status": record.status.value,
        "voided_by": record.voided_by,
    }


def _commit(connection: Connection, change: Change) -> None:
    as_text = connection.dialect.name == "sqlite"
    if change.records:
        connection.execute(wallet_operations.insert(), [_operation_row(r) for r in change.records])
    _mark_voided(connection, change.voided)
    balances = [
        {"user_id": b.user_id, "asset": b.asset, "available": b.available, "locked": b.locked}
        for b in change.balances
    ]
    _upsert(connection, wallet_balances, balances, ("user_id", "asset"))
    assets = [
        {
            "asset": totals.asset,
            "net_deposits": wide_value(totals.net_deposits, as_text=as_text),
            "in_transit": wide_value(totals.in_transit, as_text=as_text),
        }
        for totals in change.assets
    ]
    _upsert(connection, wallet_assets, assets, ("asset",))


def _mark_voided(connection: Connection, voided: Mapping[str, str]) -> None:
    """Each hold `applied` → `voided` by its void; fails unless every one of them was applied."""
    holds = sorted(voided)
    for chunk in _chunks(holds):
        void_key = case({hold: voided[hold] for hold in chunk}, value=wallet_operations.c.key)
        statement = (
            update(wallet_operations)
            .where(
                wallet_operations.c.key.in_(chunk),
                wallet_operations.c.status == OperationStatus.APPLIED.value,
            )
            .values(status=OperationStatus.VOIDED.value, voided_by=void_key)
        )
        updated = connection.execute(statement).rowcount
        if updated != len(chunk):
            missing = len(chunk) - updated
            raise RuntimeError(f"{missing} of {len(chunk)} holds to void are no longer applied")


def _upsert(
    connection: Connection, table: Table, rows: Sequence[dict[str, Any]], key: Sequence[str]
) -> None:
    if not rows:
        return
    insert = (postgresql if connection.dialect.name == "postgresql" else sqlite).insert(table)
    updates = {name: insert.excluded[name] for name in rows[0] if name not in key}
    connection.execute(insert.on_conflict_do_update(index_elements=key, set_=updates), rows)
