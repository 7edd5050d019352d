"""The SQL store: schema, migrations and the engine's store ports on SQL.

On SQLite (embedded default) or PostgreSQL, one object per port: `SqlStore`
(the engine's `Store`: `commit`, `load_state`), and on it `store.reads`
(`ReadStore`), `store.users` (`UserStore`) and `store.settlements`
(`SettlementStore`); `upgrade(url)` migrates a database without the store.
"""

from crossbook.adapters.sql.errors import StoreConflictError, StoreError
from crossbook.adapters.sql.migrate import upgrade
from crossbook.adapters.sql.queries import DEFAULT_QUERY_LIMIT, MAX_QUERY_LIMIT
from crossbook.adapters.sql.store import SqlStore
from crossbook.engine.read_model.records import (
    Candle,
    StoredBalance,
    StoredOrder,
    StoredTrade,
    StoredUser,
)

__all__ = [
    "DEFAULT_QUERY_LIMIT",
    "MAX_QUERY_LIMIT",
    "Candle",
    "SqlStore",
    "StoreConflictError",
    "StoreError",
    "StoredBalance",
    "StoredOrder",
    "StoredTrade",
    "StoredUser",
    "upgrade",
]
