"""Fixtures of the wallet service tests: databases of both backends, wallet processes.

Databases: SQLite, a new file per test (in `tmp_path`). PostgreSQL: one database
per test session, created under a unique name through the `postgres`
maintenance database (server from CROSSBOOK_TEST_POSTGRES_URL, default
postgresql://postgres@127.0.0.1:5432/postgres), migrated once, emptied before
each test and dropped at the end; `postgres_databases.create()` makes more
(never migrated). Databases left by a test process that was killed are dropped
by the next session. When the server cannot be reached the PostgreSQL tests are
skipped, except with CI=true, where they fail.

Processes: `wallet_process(...)` starts a `WalletProcess` that is stopped at the
end of the test; `shared_wallet` is one process for the module that asks for it
(faults enabled, development). A failed test's report carries the tail of every
wallet log of the session.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from crossbook.sql_support.migrate import upgrade
from crossbook.wallet_service.schema import metadata
from crossbook.wallet_service.store import WALLET_MIGRATIONS

from wallet_support import WalletFactory, WalletProcess

SERVER_URL = os.environ.get(
    "CROSSBOOK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PREFIX = "crossbook_wallet_test_"
BACKENDS = ("sqlite", pytest.param("postgres", marks=pytest.mark.postgres))


def _admin(*statements: str, url: str = SERVER_URL) -> list[str]:
    """Run statements on a database (default: maintenance); the last one's first column."""

    async def run() -> list[str]:
        connection = await asyncpg.connect(url, timeout=5)
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


class PostgresDatabases:
    """Creates uniquely named databases on the test server and drops them at the end."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def create(self) -> str:
        name = f"{PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
        try:
            if not self.names:
                self._drop_leftovers()
            _admin(f'CREATE DATABASE "{name}"')
        except (OSError, asyncpg.PostgresError, TimeoutError) as error:
            message = f"PostgreSQL at {SERVER_URL} is unreachable: {error!r}"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        self.names.append(name)
        return make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)

    @staticmethod
    def _drop_leftovers() -> None:
        names = _admin(f"SELECT datname FROM pg_database WHERE datname LIKE '{PREFIX}%'")
        for name in names:
            pid = name.removeprefix(PREFIX).split("_")[0]
            if pid.isdigit() and not _is_running(int(pid)):
                _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def drop_all(self) -> None:
        if self.names:
            _admin(*(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in self.names))


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases]:
    databases = PostgresDatabases()
    yield databases
    databases.drop_all()


@pytest.fixture(scope="session")
def wallet_postgres_url(postgres_databases: PostgresDatabases) -> str:
    """The session's migrated PostgreSQL database."""
    url = postgres_databases.create()
    upgrade(url, "head", WALLET_MIGRATIONS)
    return url


@pytest.fixture(params=BACKENDS)
def wallet_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty wallet database of each backend (SQLite not yet migrated)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'wallet.db'}"
    url: str = request.getfixturevalue("wallet_postgres_url")
    _admin(f"TRUNCATE {', '.join(metadata.tables)}", url=url)
    return url


@pytest.fixture(params=BACKENDS)
def fresh_wallet_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new database of each backend that was never migrated."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
    return databases.create()


@pytest.fixture(scope="session")
def wallet_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wallet-logs")


@pytest.fixture
def wallet_process(wallet_log_dir: Path, request: pytest.FixtureRequest) -> Iterator[WalletFactory]:
    """Make (not start) wallet processes; each is stopped at the end of the test."""
    made: list[WalletProcess] = []

    def make(database_url: str, **options: Any) -> WalletProcess:
        name = f"{request.node.name[:40]}-{len(made) + 1}"
        wallet = WalletProcess(name, database_url, wallet_log_dir, **options)
        made.append(wallet)
        return wallet

    yield make
    for wallet in made:
        wallet.close()


@pytest.fixture(scope="module")
def shared_wallet(
    wallet_log_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WalletProcess]:
    """One running wallet for a module's tests (SQLite, faults enabled, development)."""
    database = tmp_path_factory.mktemp("shared-wallet") / "wallet.db"
    wallet = WalletProcess("shared", f"sqlite:///{database}", wallet_log_dir, faults_enabled=True)
    wallet.start()
    yield wallet
    wallet.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report shows the tail of every wallet log of the session."""
    report = yield
    if report.failed:
        for wallet in WalletProcess.started:
            if wallet.log_paths:
                report.sections.append((f"wallet log: {wallet.name}", wallet.log_tail()))
    del item, call
    return report
