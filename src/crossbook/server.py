"""`crossbook serve`: the settings, the runtime and the app on uvicorn, in one process.

One worker process by design: the engine is the single writer of trading state
(DESIGN rule 1), so more HTTP workers would need the engine in its own process
(the scale-out direction in DESIGN section 5), not copies of it.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
import uvicorn
from fastapi import FastAPI

from crossbook.api.app import attach, create_app
from crossbook.api.connections import ConnectionGuard, ConnectionLimits, guarded_protocols
from crossbook.api.metrics import ApiMetrics
from crossbook.bootstrap import api_options, configure_logging, open_runtime
from crossbook.config import Settings, load_settings

log = structlog.get_logger(__name__)
WS_MAX_MESSAGE_BYTES = 64 * 1024


def build_app(
    settings: Settings, *, demo: bool = False, guard: ConnectionGuard | None = None
) -> FastAPI:
    """The app whose lifespan opens (and closes) the runtime."""
    metrics = ApiMetrics()
    if guard is not None:
        metrics.watch_connections(guard)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_runtime(settings, demo=demo, metrics=metrics) as runtime:
            attach(app, runtime.context, runtime.hub)
            # start-up objects (the restored exchange, modules) are long-lived: keep them
            # out of the collector's full passes, which otherwise pause the loop ~100 ms
            gc.freeze()
            log.info(
                "serving",
                host=settings.host,
                port=settings.port,
                database=runtime.store.db.sqlalchemy_url.render_as_string(hide_password=True),
                markets=sorted(runtime.market_data.markets()),
            )
            yield

    return create_app(api_options(settings), metrics, lifespan)


def uvicorn_config(
    settings: Settings, *, demo: bool = False, log_level: str | None = None
) -> uvicorn.Config:
    """The server: the app on uvicorn, its connections guarded (`api.connections`)."""
    guard = ConnectionGuard(
        ConnectionLimits(
            max_connections=settings.max_connections,
            max_connections_per_client=settings.max_connections_per_client,
            header_timeout_ms=settings.http_header_timeout_ms,
            body_timeout_ms=settings.http_body_timeout_ms,
            ws_close_grace_ms=settings.ws_close_grace_ms,
        )
    )
    http, ws = guarded_protocols(guard)
    return uvicorn.Config(
        build_app(settings, demo=demo, guard=guard),
        host=settings.host,
        port=settings.port,
        http=http,
        ws=ws,
        log_level=log_level or settings.log_level,
        access_log=False,  # the gateway logs every request with its request id
        ws_max_size=WS_MAX_MESSAGE_BYTES,
        lifespan="on",
    )


def run(
    *,
    host: str | None = None,
    port: int | None = None,
    database_url: str | None = None,
    demo: bool = False,
) -> None:
    settings = load_settings(host=host, port=port, database_url=database_url)
    configure_logging(settings)
    uvicorn.Server(uvicorn_config(settings, demo=demo)).run()
