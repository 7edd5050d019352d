"""`SqlUsers`: the `UserStore` port on the SQL store (accounts, not trading state).

`create_user` is the one write outside the engine's batches: one short
transaction of its own, never through the engine's writer. On SQLite it takes
the write lock with `BEGIN IMMEDIATE` and, while the engine writer holds it,
waits up to the read timeout (SQLite's busy timeout); on PostgreSQL two
concurrent inserts can pick the same next id, and the one that loses on the
primary key is retried, at most `CREATE_USER_ATTEMPTS` times in all (each lost
attempt means another user was created meanwhile), then `StoreError`.
"""

from __future__ import annotations

from sqlalchemy import RowMapping
from sqlalchemy.exc import IntegrityError

from crossbook.adapters.sql import queries
from crossbook.adapters.sql.connections import SqlConnections
from crossbook.adapters.sql.errors import StoreError
from crossbook.adapters.sql.queries import DEFAULT_QUERY_LIMIT
from crossbook.engine.read_model.records import StoredUser

CREATE_USER_ATTEMPTS = 20  # `create_user` tries at most this often to win the next id


class SqlUsers:
    """Users: ids from 1, dense; user 0 is the exchange's fee account, never a user."""

    __slots__ = ("_db",)

    def __init__(self, db: SqlConnections) -> None:
        self._db = db

    async def create_user(self, name: str | None, created_at_ms: int) -> StoredUser:
        """Create a user with the next id (from 1), in one short transaction of its own."""
        statement = queries.insert_next_user(name, created_at_ms)
        lost: IntegrityError | None = None
        for _ in range(CREATE_USER_ATTEMPTS):
            try:
                (row,) = await self._db.write(statement)
            except IntegrityError as exc:  # a concurrent insert took that id first
                lost = exc
                continue
            return _user(row)
        raise StoreError(
            f"create_user lost the race for the next user id {CREATE_USER_ATTEMPTS} times"
        ) from lost

    async def get_user(self, user_id: int) -> StoredUser | None:
        rows = await self._db.fetch(queries.user_by_id(user_id))
        return _user(rows[0]) if rows else None

    async def list_users(
        self, *, after_user_id: int = 0, limit: int = DEFAULT_QUERY_LIMIT
    ) -> list[StoredUser]:
        """Users with an id above `after_user_id`, by id ascending (at most `limit`)."""
        rows = await self._db.fetch(queries.users_after(after_user_id, limit))
        return [_user(row) for row in rows]

    async def last_user_id(self) -> int:
        (row,) = await self._db.fetch(queries.last_user_id())
        return int(row["last_user_id"])


def _user(row: RowMapping) -> StoredUser:
    return StoredUser(row["user_id"], row["name"], row["created_at_ms"])
