"""`crossbook wallet serve`: the settings, the store, the service and the app on uvicorn.

Start-up: the database is migrated (`wallet_alembic_version`), every balance is
loaded and the totals are checked (a database whose totals do not add up is
refused: the process exits with `EXIT_HALTED`; any other start-up failure with
uvicorn's status 3), then uvicorn listens. SIGTERM or SIGINT stops it
cleanly: requests in flight finish (each operation is committed or not
started), then the store is closed. A broken invariant while serving stops the
server the same way and the process exits with `EXIT_HALTED`.

One worker process by design: the service holds the balances in memory and is
the only writer of its database.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import structlog
import uvicorn
from starlette.applications import Starlette

from crossbook.wallet_service.app import create_app
from crossbook.wallet_service.service import WalletService
from crossbook.wallet_service.settings import WalletSettings
from crossbook.wallet_service.store import WalletStore

log = structlog.get_logger(__name__)
EXIT_HALTED = 70  # EX_SOFTWARE: an invariant broke


def build_app(settings: WalletSettings, on_fatal: Callable[[BaseException], None]) -> Starlette:
    """The app whose lifespan opens (and closes) the store and the service."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = await WalletStore.open(settings.database_url)
        try:
            app.state.service = await WalletService.open(store, on_fatal=on_fatal)
            log.info(
                "wallet serving",
                host=settings.host,
                port=settings.port,
                environment=settings.environment,
                database=store.db.sqlalchemy_url.render_as_string(hide_password=True),
                faults_enabled=settings.faults_enabled,
            )
            yield
        finally:
            await store.close()
            log.info("wallet stopped")

    return create_app(settings, lifespan)


def run(settings: WalletSettings) -> int:
    """Serve until SIGTERM/SIGINT (exit status 0) or a broken invariant (`EXIT_HALTED`)."""
    configure_logging(settings.log_level)
    halted: list[BaseException] = []
    server: uvicorn.Server | None = None

    def on_fatal(error: BaseException) -> None:
        halted.append(error)
        if server is not None:
            server.should_exit = True

    config = uvicorn.Config(
        build_app(settings, on_fatal),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # every applied operation is logged by the service
        lifespan="on",
    )
    server = uvicorn.Server(config)
    try:
        server.run()
    except SystemExit:  # uvicorn's way out when the start-up failed
        if not halted:
            raise
    if halted:
        log.critical("wallet stopped on a broken invariant", error=str(halted[0]))
        return EXIT_HALTED
    return 0


def configure_logging(level_name: str) -> None:
    """Structured logs on stderr, one JSON object per line."""
    level = logging.getLevelNamesMapping()[level_name.upper()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
