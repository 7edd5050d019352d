"""The FastAPI application: REST v1 under `/api/v1`, the WebSocket at `/ws`, operations.

`create_app(options, metrics)` wires routes, the gateway middleware and the exception
handlers that turn every refusal into the seed's error envelope. No handler
returns a 5xx for bad input: a `DomainError` or `ApiError` maps to its 4xx, an
engine-layer refusal (engine overloaded or unavailable, wallet outage, refused
transfer, a failed wallet call) to its code through `errors.from_engine`, a
malformed body to 400 with the field's code, an unknown route to 404 and a known
path with another method to 405 (`Allow` naming every method of that path); only
an unexpected exception gives 500 INTERNAL_ERROR, which is a bug: the gateway
middleware answers it in the envelope with a trace id, logs it, and keeps the
connection usable. `/docs`, `/redoc` and `/openapi.json` are served only when the
options say so (the settings' default: in development).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from crossbook import __version__
from crossbook.api.context import ApiContext, ApiOptions
from crossbook.api.envelope import failure
from crossbook.api.errors import (
    ENGINE_REFUSALS,
    FIELD_CODES,
    REFERENCE_CODES,
    ApiCode,
    ApiError,
    EngineRefusal,
    from_domain,
    from_engine,
)
from crossbook.api.metrics import ApiMetrics
from crossbook.api.middleware import GatewayMiddleware
from crossbook.api.params import echo
from crossbook.api.rate_limit import RateLimiter
from crossbook.api.routes import account, admin, holds, market, ops, orders, settlements
from crossbook.api.ws import StreamHub
from crossbook.api.ws import router as ws_router
from crossbook.domain import DomainError
from crossbook.engine.ports import StoreUnavailableError

ROUTERS = (
    orders.router,
    market.router,
    account.router,
    admin.router,
    settlements.router,
    holds.router,
    ops.router,
    ws_router,
)
DECIMAL_FIELDS = frozenset({"price", "stop_price", "quantity", "quote_quantity", "amount"})

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_app(
    options: ApiOptions, metrics: ApiMetrics, lifespan: Lifespan | None = None
) -> FastAPI:
    """The app; `attach` gives it its runtime (in `lifespan`, or before serving)."""
    docs = options.docs_served
    app = FastAPI(
        title="crossbook",
        version=__version__,
        description="Spot-exchange trade engine: REST v1 and WebSocket streams.",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    for router in ROUTERS:
        app.include_router(router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.add_middleware(
        GatewayMiddleware,
        metrics=metrics,
        max_body_bytes=options.max_body_bytes,
        read_limiter=RateLimiter(options.read_rate_per_s, options.read_burst),
    )
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(DomainError, _domain_error)
    for refusal in ENGINE_REFUSALS:
        app.add_exception_handler(refusal, _engine_refusal)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(StoreUnavailableError, _store_unavailable)
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document without the 422 answers it adds to every route: this API
    answers a malformed request with 400 and the field's code (see `validation_error`)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema


def attach(app: FastAPI, context: ApiContext, hub: StreamHub) -> None:
    app.state.context = context
    app.state.hub = hub


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return failure(request, exc)


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    error = from_domain(exc)
    error.details = _edge_details(request, error.details)
    return failure(request, error)


async def _engine_refusal(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EngineRefusal)
    return failure(request, from_engine(exc))


def _edge_details(request: Request, details: dict[str, object]) -> dict[str, object]:
    """Details as the API shows values: amounts of a named asset as its decimal strings,
    ids as strings (the domain speaks integer units, DESIGN rule 5)."""
    out = {key: value for key, value in details.items() if value is not None}
    context: ApiContext | None = getattr(request.app.state, "context", None)
    asset = context.market_data.assets().get(str(out.get("asset"))) if context else None
    for key, value in out.items():
        if not isinstance(value, int) or isinstance(value, bool):
            continue
        if key.endswith("_id"):
            out[key] = str(value)
        elif asset is not None and key in ("required", "available"):
            out[key] = asset.format_amount(value)
    return out


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return failure(request, validation_error(exc.errors()))


def validation_error(problems: Any) -> ApiError:
    """The first problem of a request that failed the schema, with its field's code.

    A reference that is not of its form (a path parameter, a body's `user_id`) names
    nothing: ORDER_NOT_FOUND, USER_NOT_FOUND … (404), as an unknown one would."""
    first = problems[0] if problems else {}
    location = [str(part) for part in first.get("loc", ())]
    name = location[-1] if location else "body"
    if len(location) >= 2 and (location[0], location[1]) in REFERENCE_CODES:
        what = location[1]
        return ApiError(
            REFERENCE_CODES[location[0], what],
            f"no such {what.removesuffix('_id').removesuffix('_key')}",
            details={what: echo(first.get("input"))},
        )
    field = next((p for p in reversed(location) if p in FIELD_CODES), None)
    code = FIELD_CODES[field] if field else ApiCode.INVALID_REQUEST
    message = first.get("msg", "invalid request")
    if field in DECIMAL_FIELDS and first.get("type", "").startswith("string_type"):
        message = f"{field} must be a decimal string"
    return ApiError(
        code,
        f"{name}: {message}",
        details={"field": ".".join(location[1:]) or name, "problems": len(problems)},
    )


async def _store_unavailable(request: Request, exc: Exception) -> Response:
    """The database did not answer a read (or a short write) in time: 503, retry."""
    assert isinstance(exc, StoreUnavailableError)
    error = ApiError(
        ApiCode.STORE_UNAVAILABLE,
        "the database is unavailable; retry",
        headers={"Retry-After": "1"},
    )
    return failure(request, error)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: ApiCode.NOT_FOUND, 405: ApiCode.METHOD_NOT_ALLOWED}.get(
        exc.status_code, ApiCode.INVALID_REQUEST
    )
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request.url.path))
    error = ApiError(code, str(exc.detail), status=exc.status_code, headers=headers)
    return failure(request, error)


def allowed_methods(path: str) -> list[str]:
    """Every method some route answers at `path` (Starlette's 405 names only the first
    route whose path matched)."""
    methods: set[str] = set()
    for router in ROUTERS:
        for route in router.routes:
            if isinstance(route, Route) and route.methods and route.path_regex.fullmatch(path):
                methods |= route.methods
    return sorted(methods)
