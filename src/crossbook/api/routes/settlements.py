"""`/admin/settlements`: remote-wallet mode's settlements and dead-letter queue.

The dead-letter queue is the settlements in status SETTLEMENT_FAILED: each says
why (`reason`), how many wallet calls failed (`attempts`), when, and the state
of every leg. Replaying one puts it back to PENDING for the workers (legs that
were compensated are applied afresh); it becomes SETTLED once all its legs are
applied. In embedded mode there are no settlements: every route is 404.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from starlette.requests import Request
from starlette.responses import Response

from crossbook.api.context import ApiContext
from crossbook.api.envelope import iso_ms, success
from crossbook.api.errors import ApiCode, ApiError
from crossbook.api.params import (
    DEFAULT_PAGE_LIMIT,
    IdCursor,
    PageLimit,
    cursor_id,
)
from crossbook.api.routes.common import API_PREFIX, admin, context, errors, remote_wallet_only
from crossbook.api.schemas import Envelope, ReplayOut, SettlementOut
from crossbook.api.views import amount_json
from crossbook.domain.units import INT64_MAX
from crossbook.engine.settlement import (
    SettlementNotFailedError,
    SettlementNotFoundError,
    SettlementService,
)
from crossbook.engine.settlement_plan import SettlementStatus, StoredSettlement

router = APIRouter(
    prefix=f"{API_PREFIX}/admin/settlements", tags=["admin"], dependencies=[Depends(admin)]
)
Context = Annotated[ApiContext, Depends(context)]
MAX_REPLAY_ALL = 1_000
# an integer path segment, so `/replay` is never taken for a settlement id
SettlementIdPath = Annotated[int, Path(description="a settlement's id", ge=1, le=INT64_MAX)]


@router.get(
    "",
    response_model=Envelope[list[SettlementOut]],
    responses=errors(400, 401, 403, 404, 429, 503),
    summary="List settlements (default: the dead-letter queue)",
)
async def list_settlements(
    request: Request,
    ctx: Context,
    status: Annotated[
        SettlementStatus,
        Query(description="PENDING, SETTLED or SETTLEMENT_FAILED (the dead-letter queue)"),
    ] = SettlementStatus.SETTLEMENT_FAILED,
    after: IdCursor = None,
    limit: PageLimit = DEFAULT_PAGE_LIMIT,
) -> Response:
    """`after`: only settlements with a larger id (a keyset cursor)."""
    service = _service(ctx)
    found = await service.list_settlements(status, after_id=cursor_id(after) or 0, limit=limit)
    return success(request, [settlement_json(ctx, s) for s in found])


@router.get(
    "/{settlement_id:int}",
    response_model=Envelope[SettlementOut],
    responses=errors(401, 403, 404, 429, 503),
    summary="One settlement, with its legs",
)
async def get_settlement(
    request: Request, settlement_id: SettlementIdPath, ctx: Context
) -> Response:
    service = _service(ctx)
    found = await service.get(settlement_id)
    if found is None:
        raise _not_found(settlement_id)
    return success(request, settlement_json(ctx, found))


@router.post(
    "/replay",
    response_model=Envelope[ReplayOut],
    responses=errors(401, 403, 404, 503),
    summary="Replay every settlement in the dead-letter queue",
)
async def replay_all(request: Request, ctx: Context) -> Response:
    replayed = await _service(ctx).replay_all(limit=MAX_REPLAY_ALL)
    return success(request, {"replayed": [str(i) for i in replayed]})


@router.post(
    "/{settlement_id:int}/replay",
    response_model=Envelope[SettlementOut],
    responses=errors(401, 403, 404, 409, 503),
    summary="Replay one settlement of the dead-letter queue",
)
async def replay(request: Request, settlement_id: SettlementIdPath, ctx: Context) -> Response:
    service = _service(ctx)
    try:
        requeued = await service.replay(settlement_id)
    except SettlementNotFoundError:
        raise _not_found(settlement_id) from None
    except SettlementNotFailedError:
        raise ApiError(
            ApiCode.SETTLEMENT_NOT_FAILED,
            "only a settlement in the dead-letter queue (SETTLEMENT_FAILED) can be replayed",
            details={"id": str(settlement_id)},
        ) from None
    return success(request, settlement_json(ctx, requeued))


def settlement_json(ctx: ApiContext, s: StoredSettlement) -> dict[str, Any]:
    assets = ctx.market_data.assets()
    return {
        "id": str(s.settlement_id),
        "kind": str(s.kind),
        "trade_id": None if s.trade_id is None else str(s.trade_id),
        "status": str(s.status),
        "attempts": s.attempts,
        "reason": s.reason,
        "created_at": iso_ms(s.created_at_ms),
        "updated_at": iso_ms(s.updated_at_ms),
        "settled_at": None if s.settled_at_ms is None else iso_ms(s.settled_at_ms),
        "failed_at": None if s.failed_at_ms is None else iso_ms(s.failed_at_ms),
        "legs": [
            {
                "name": leg.name,
                "op": str(leg.kind),
                "user_id": str(leg.user_id),
                "asset": leg.asset,
                "amount": amount_json(assets, leg.asset, leg.amount_units),
                "account": str(leg.account),
                "target_key": leg.target_key,
                "state": str(leg.state),
                "generation": leg.generation,
            }
            for leg in s.legs
        ],
    }


def _service(ctx: ApiContext) -> SettlementService:
    return remote_wallet_only(ctx.settlements, "settlements")


def _not_found(settlement_id: int) -> ApiError:
    return ApiError(
        ApiCode.SETTLEMENT_NOT_FOUND,
        f"settlement {settlement_id} not found",
        details={"id": str(settlement_id)},
    )
