"""Database plumbing shared by the exchange's SQL store and the wallet service.

Both are separate consumers of the same kind of database (SQLite embedded,
PostgreSQL in production), opened the same way: `database` parses a URL,
`engines` creates SQLAlchemy engines with the connection settings they need,
`migrate` runs an Alembic history (and is the body of each history's `env.py`),
`naming` names constraints, `wide_integer` stores integers beyond 64 bits
exactly.

Nothing here knows a table of either: the exchange's schema and queries stay
in `adapters.sql`, the wallet's in `wallet_service`. This package imports only
SQLAlchemy, Alembic, the standard library and `crossbook.domain` (a layering
test checks it), so the wallet service can use it without importing the
exchange's adapters.
"""
