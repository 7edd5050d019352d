"""Database URLs: which backend, and how each library is told to reach it.

Shared by every crossbook database (the exchange's store, the wallet service's).
Accepted forms:
- `sqlite:///relative/file.db`, `sqlite:////absolute/file.db`: the embedded
  default. An optional `?synchronous=full|normal` picks SQLite's durability
  (default `full`; the store that opens the file applies it); no other query
  parameter is accepted;
- `postgresql://user@host:port/dbname` (also `postgres://` and
  `postgresql+asyncpg://`): the asyncpg driver is used, directly (`asyncpg_dsn`)
  and under SQLAlchemy (`sqlalchemy_url`).

Known limit: an in-memory SQLite database is refused, since the migrations, the
writer and the readers each open their own connection to the same file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy.engine import URL, make_url

SQLITE_SYNCHRONOUS = ("full", "normal")
DEFAULT_SQLITE_SYNCHRONOUS = "full"
_POSTGRES_DRIVERS = frozenset({"postgresql", "postgres", "postgresql+asyncpg"})


@dataclass(frozen=True, slots=True)
class DatabaseUrl:
    backend: Literal["sqlite", "postgresql"]
    url: URL  # without the query parameters that are ours
    sqlite_synchronous: str = DEFAULT_SQLITE_SYNCHRONOUS

    @classmethod
    def parse(cls, text: str) -> DatabaseUrl:
        url = make_url(text)
        if url.drivername == "sqlite":
            if not url.database or url.database == ":memory:":
                raise ValueError("SQLite needs a database file: sqlite:///path/to/file.db")
            query = dict(url.query)
            synchronous = query.pop("synchronous", DEFAULT_SQLITE_SYNCHRONOUS)
            if not isinstance(synchronous, str) or synchronous.lower() not in SQLITE_SYNCHRONOUS:
                raise ValueError(f"synchronous must be one of {', '.join(SQLITE_SYNCHRONOUS)}")
            if query:
                raise ValueError(f"unknown SQLite URL parameters: {', '.join(sorted(query))}")
            return cls("sqlite", url.set(query={}), synchronous.lower())
        if url.drivername in _POSTGRES_DRIVERS:
            return cls("postgresql", url.set(drivername="postgresql"))
        raise ValueError(f"unsupported database URL scheme {url.drivername!r}")

    @property
    def is_sqlite(self) -> bool:
        return self.backend == "sqlite"

    @property
    def sqlite_path(self) -> str:
        assert self.is_sqlite and self.url.database, self
        return self.url.database

    @property
    def asyncpg_dsn(self) -> str:
        """The URL asyncpg connects with (password included)."""
        assert not self.is_sqlite, self
        return self.url.render_as_string(hide_password=False)

    @property
    def sqlalchemy_url(self) -> URL:
        """The URL SQLAlchemy engines connect with (stdlib sqlite3, or asyncpg)."""
        if self.is_sqlite:
            return self.url.set(drivername="sqlite+pysqlite")
        return self.url.set(drivername="postgresql+asyncpg")
