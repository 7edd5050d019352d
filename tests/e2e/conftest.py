"""Fixtures of the end-to-end suite: PostgreSQL databases and `crossbook serve` processes.

Databases: each one is created under a unique name through the `postgres`
maintenance database (server from CROSSBOOK_TEST_POSTGRES_URL, default
postgresql://postgres@127.0.0.1:5432/postgres) and dropped at the end of the
session; databases left by a test process that was killed are dropped by the next
session. When PostgreSQL cannot be reached the tests are skipped, except with
CI=true, where they fail.

Servers: `server` is the session's `crossbook serve`, on the session's database,
shared by the scenarios (each scenario trades in markets and assets of its own).
`own_server` starts a server on a database of its own for a test that stops,
kills or disconnects it. Every server is stopped with SIGTERM at the end; a failed
test's report carries the tail of the servers' logs.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable, Generator, Iterator

import asyncpg
import pytest
from e2e_support import POSTGRES_SERVER_URL as SERVER_URL
from e2e_support import Exchange, OwnServer, Scenario, ServerProcess
from sqlalchemy.engine import make_url

PREFIX = "crossbook_e2e_"


def maintenance(*statements: str) -> list[str]:
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


class Databases:
    """Creates uniquely named PostgreSQL databases and drops them at the end."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def create(self) -> tuple[str, str]:
        """(name, url) of a new, empty database (`crossbook serve` migrates it)."""
        name = f"{PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
        try:
            if not self.names:
                self._drop_leftovers()
            maintenance(f'CREATE DATABASE "{name}"')
        except (OSError, asyncpg.PostgresError, TimeoutError) as error:
            message = f"PostgreSQL at {SERVER_URL} is unreachable: {error!r}"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        self.names.append(name)
        url = make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)
        return name, url

    @staticmethod
    def _drop_leftovers() -> None:
        names = maintenance(f"SELECT datname FROM pg_database WHERE datname LIKE '{PREFIX}%'")
        for name in names:
            pid = name.removeprefix(PREFIX).split("_")[0]
            if pid.isdigit() and not _is_running(int(pid)):
                maintenance(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def drop_all(self) -> None:
        if self.names:
            maintenance(*(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in self.names))


@pytest.fixture(scope="session")
def databases() -> Iterator[Databases]:
    created = Databases()
    yield created
    created.drop_all()


ServerFactory = Callable[..., tuple[ServerProcess, str]]  # (name, extra_env=None)


@pytest.fixture(scope="session")
def start_server(
    databases: Databases, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerFactory]:
    """Start `crossbook serve` on a new database: (server, database name)."""
    log_dir = tmp_path_factory.mktemp("e2e-logs")
    servers: list[ServerProcess] = []

    def start(name: str, extra_env: dict[str, str] | None = None) -> tuple[ServerProcess, str]:
        database, url = databases.create()
        server = ServerProcess(
            name, url, log_dir, jwt_secret=secrets.token_urlsafe(48), extra_env=extra_env
        )
        servers.append(server)
        server.start()
        return server, database

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def server(start_server: ServerFactory) -> ServerProcess:
    return start_server("session")[0]


@pytest.fixture(scope="session")
def exchange(server: ServerProcess) -> Iterator[Exchange]:
    admin = Exchange(server)
    yield admin
    admin.close()


@pytest.fixture
def scenario(exchange: Exchange) -> Scenario:
    """A test's own markets and users on the session's server."""
    return Scenario(exchange)


@pytest.fixture
def own_server(start_server: ServerFactory, request: pytest.FixtureRequest) -> Iterator[OwnServer]:
    """A server on a database of its own (for tests that kill or disconnect it)."""
    server, database = start_server(request.node.name[:40])
    exchange = Exchange(server)
    yield OwnServer(server, database, exchange, Scenario(exchange))
    exchange.close()
    server.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report shows the tail of every server log of the session."""
    report = yield
    if report.failed:
        for server in ServerProcess.started:
            report.sections.append((f"crossbook serve log: {server.name}", server.log_tail()))
    del item, call
    return report
