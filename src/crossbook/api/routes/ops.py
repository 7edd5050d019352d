"""Operations: liveness, readiness and Prometheus metrics (outside `/api/v1`)."""

from __future__ import annotations

import asyncio
import hmac
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from crossbook.api.context import ApiContext
from crossbook.api.envelope import success
from crossbook.api.errors import ApiCode, ApiError
from crossbook.api.metrics import CONTENT_TYPE
from crossbook.api.routes.common import context, errors
from crossbook.api.schemas import Envelope, HealthOut

router = APIRouter(tags=["operations"])
Context = Annotated[ApiContext, Depends(context)]
log = structlog.get_logger(__name__)
READY_TIMEOUT_S = 2.0  # a database slower than this to answer SELECT 1 is not ready


@router.get("/health", response_model=Envelope[HealthOut], summary="The process is alive")
async def health(request: Request) -> Response:
    return success(request, {"status": "ok", "checks": {}})


@router.get(
    "/ready",
    response_model=Envelope[HealthOut],
    responses=errors(503),
    summary="The database answers and the engine takes work",
)
async def ready(request: Request, ctx: Context) -> Response:
    checks = {"engine": "ok" if ctx.engine.available else "unavailable"}
    try:
        await asyncio.wait_for(ctx.store.ping(), READY_TIMEOUT_S)
        checks["database"] = "ok"
    except Exception as error:  # any failure to answer is "not ready", reported as such
        log.warning("readiness: database check failed", error=str(error))
        checks["database"] = "unavailable"
    if any(value != "ok" for value in checks.values()):
        raise ApiError(ApiCode.NOT_READY, "not ready", details=checks)
    return success(request, {"status": "ready", "checks": checks})


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}},
        **errors(401, 404, 429),
    },
)
async def metrics(request: Request, ctx: Context) -> Response:
    """Off (404) unless the options serve it (the settings' default: development only);
    with a metrics token set, only for `Authorization: Bearer <metrics token>`."""
    options = ctx.options
    if not options.metrics_served:
        raise ApiError(ApiCode.NOT_FOUND, "not found")
    if options.metrics_token is not None:
        given = request.headers.get("authorization", "")
        wanted = f"Bearer {options.metrics_token}"
        if not hmac.compare_digest(given.encode(), wanted.encode()):
            raise ApiError(
                ApiCode.UNAUTHORIZED,
                "/metrics needs the metrics token",
                headers={"WWW-Authenticate": "Bearer"},
            )
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE)
