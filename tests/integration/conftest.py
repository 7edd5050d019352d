"""Fixtures for the SQL store tests: every test runs on SQLite and on PostgreSQL.

SQLite: a new database file per test (in `tmp_path`). PostgreSQL: one database
per test session, created under a unique name through the `postgres`
maintenance database (server from CROSSBOOK_TEST_POSTGRES_URL, default
postgresql://postgres@127.0.0.1:5432/postgres), migrated once, emptied before
each test and dropped at the end (databases left by a test process that was
killed are dropped by the next session). When the server cannot be reached the
PostgreSQL tests are skipped, except with CI=true, where they fail.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator

import asyncpg
import pytest
from sql_store_support import TABLES
from sqlalchemy.engine import make_url

from crossbook.adapters.sql.migrate import upgrade

SERVER_URL = os.environ.get(
    "CROSSBOOK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PREFIX = "crossbook_test_"
BACKENDS = ("sqlite", pytest.param("postgres", marks=pytest.mark.postgres))


def _admin(*statements: str) -> list[str]:
    """Run statements on the maintenance database; the first column of the last one's rows."""

    async def run() -> list[str]:
        connection = await asyncpg.connect(SERVER_URL, timeout=5)
        try:
            rows = []
            for statement in statements:
                rows = await connection.fetch(statement)
            return [row[0] for row in rows]
        finally:
            await connection.close()

    return asyncio.run(run())


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _drop_leftovers() -> None:
    """Drop test databases of test processes that died before their teardown."""
    names = _admin(f"SELECT datname FROM pg_database WHERE datname LIKE '{PREFIX}%'")
    for name in names:
        pid = name.removeprefix(PREFIX).split("_")[0]
        if pid.isdigit() and not _is_running(int(pid)):
            _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _unreachable(error: BaseException) -> None:
    message = f"PostgreSQL at {SERVER_URL} is unreachable: {error!r}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


class PostgresDatabases:
    """Creates uniquely named databases on the test server and drops them at the end."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def create(self) -> str:
        name = f"{PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
        try:
            if not self.names:
                _drop_leftovers()
            _admin(f'CREATE DATABASE "{name}"')
        except (OSError, asyncpg.PostgresError, TimeoutError) as error:
            _unreachable(error)
        self.names.append(name)
        return make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        if self.names:
            _admin(*(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in self.names))


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases]:
    databases = PostgresDatabases()
    yield databases
    databases.drop_all()


@pytest.fixture(scope="session")
def postgres_url(postgres_databases: PostgresDatabases) -> str:
    """The session's migrated PostgreSQL database."""
    url = postgres_databases.create()
    upgrade(url)
    return url


def _empty_postgres(url: str) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")
        finally:
            await connection.close()

    asyncio.run(run())


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty database of each backend (PostgreSQL migrated; `SqlStore.open` migrates)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'store.db'}"
    url: str = request.getfixturevalue("postgres_url")
    _empty_postgres(url)
    return url


@pytest.fixture(params=BACKENDS)
def fresh_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A new database of each backend that was never migrated."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'fresh.db'}"
    databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
    return databases.create()
