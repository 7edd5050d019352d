"""The external wallet service (`crossbook wallet serve`): balances in a process of its own.

The exchange engine in remote-wallet mode keeps no balances: it asks this
service, through its `Wallet` port (`crossbook.engine.ports`) and over HTTP, to
hold, release, debit and credit funds, and to list the holds still applied (those
no void released). The service has its own database (SQLite by default,
PostgreSQL by URL) and an HTTP API authenticated by one service token.

Both sides share only `crossbook.wallet_protocol` (operations, receipts, holds) and
the database plumbing of `crossbook.sql_support`; the service imports nothing
of the exchange's engine, api or adapters (a layering test checks it).

Modules: `settings` (CROSSBOOK_WALLET_*), `schema` and `migrations` (its own
tables and Alembic history), `store` (SQLAlchemy Core), `ledger` (the domain
`Ledger` plus debits, credits and the money in transit between them),
`service` (that ledger in memory, one operation at a time, committed before it
is answered), `bodies` (strict request validation), `faults` (injected
failures for tests), `app` (the HTTP routes), `server` (uvicorn, logging,
start and stop).

Invariants:
- balances per (user, asset) are integer minor units, available and locked,
  never negative; per asset, sum(available + locked) + in_transit equals
  deposits minus withdrawals, checked after every operation (a broken one
  halts the service);
- every operation carries a key and is applied at most once: a repeated key
  with the same request answers the first receipt (`replayed`), with another
  request it is refused; a refused operation records nothing;
- nothing is answered before it is committed; operations queued together are
  committed together (group commit, at most `max_batch_operations` per
  transaction); after a failed commit the balances are reloaded from the
  database, which is the truth, and every operation of the batch is answered
  WALLET_UNAVAILABLE (a retry with the same key replays or applies it).

Known limits: one process per database (balances live in its memory), no TLS,
one shared service token
(no per-client credentials or rotation without a restart); fault injection is
for tests and refused in production.
"""
