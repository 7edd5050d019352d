"""`/admin/holds`: remote-wallet mode's wallet holds that nothing on the exchange owns.

Which holds are orphaned is the hold reconciler's rule (`engine.hold_reconciler`):
these routes list the orphans it finds now, void one or all of them, and show
its figures. A void is a command the engine commits (the hold's fate recorded, a
VOID settlement in the outbox): the answer comes after that commit, and the
wallet releases the funds once a settlement worker has applied the VOID, so the
balance shows them available shortly after. A wallet, store or engine failure
answers its 503 or 429 (`errors.from_engine`), never a 500. In embedded mode
every route is 404.

Limits: listing and voiding scan the reconciler's window (bounded by its page
and orphan limits) and wait while a pass is running; when a scan stops at its
bound (`meta.complete` false) the holds beyond it are neither listed nor found
by a void of one key until those before them are voided.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from starlette.requests import Request
from starlette.responses import Response

from crossbook.api.context import ApiContext
from crossbook.api.envelope import iso_ms, success
from crossbook.api.errors import ApiCode, ApiError
from crossbook.api.params import echo
from crossbook.api.routes.common import API_PREFIX, admin, context, errors, remote_wallet_only
from crossbook.api.schemas import (
    Envelope,
    OrphanedHoldOut,
    OrphanedHoldsEnvelope,
    ReconciliationOut,
    VoidOrphanedOut,
)
from crossbook.api.views import amount_json
from crossbook.domain import Asset
from crossbook.engine.hold_reconciler import HoldReconciler, OrphanedHold
from crossbook.wallet_protocol import KEY_PATTERN, MAX_KEY_CHARS

router = APIRouter(
    prefix=f"{API_PREFIX}/admin/holds", tags=["admin"], dependencies=[Depends(admin)]
)
Context = Annotated[ApiContext, Depends(context)]
# the wallet protocol's key: one of another form names no hold (404 HOLD_NOT_FOUND)
HoldKeyPath = Annotated[
    str,
    Path(
        description="a wallet hold's key, as listed (`hold:<hex>`)",
        min_length=1,
        max_length=MAX_KEY_CHARS,
        pattern=f"^{KEY_PATTERN.pattern}$",
    ),
]
NOT_FOUND_TEXT = "Embedded mode: no wallet holds (NOT_FOUND)"
NO_ORPHAN_TEXT = (
    "No orphaned hold has this key, or the key is not of the wallet's form (HOLD_NOT_FOUND);"
    " embedded mode (NOT_FOUND)"
)
REFUSED_TEXT = "The engine refuses the hold's user, e.g. the fee account (INVALID_USER)"


@router.get(
    "/orphaned",
    response_model=OrphanedHoldsEnvelope,
    responses=errors(401, 403, 404, 429, 503, text={404: NOT_FOUND_TEXT}),
    summary="The wallet holds nothing on the exchange owns, oldest first",
)
async def list_orphaned(request: Request, ctx: Context) -> Response:
    """Nothing is voided. `meta.complete` is false when the scan stopped at its bound."""
    scan = await _reconciler(ctx).orphaned()
    assets = ctx.market_data.assets()
    return success(
        request,
        [hold_json(assets, orphan) for orphan in scan.orphans],
        extra_meta={"complete": scan.complete},
    )


@router.post(
    "/{hold_key}/void",
    response_model=Envelope[OrphanedHoldOut],
    responses=errors(400, 401, 403, 404, 429, 503, text={400: REFUSED_TEXT, 404: NO_ORPHAN_TEXT}),
    summary="Void one orphaned hold",
)
async def void_one(request: Request, hold_key: HoldKeyPath, ctx: Context) -> Response:
    """404 HOLD_NOT_FOUND unless the hold is orphaned now: unknown to the wallet, already
    voided, owned by an order or an attempt in flight, or younger than the grace time."""
    reconciler = _reconciler(ctx)
    voided = await reconciler.void_one(hold_key)
    if voided is None:
        raise ApiError(
            ApiCode.HOLD_NOT_FOUND,
            f"no orphaned hold {hold_key}: the wallet has no such hold applied, an order or"
            " an order-entry attempt owns it, or it is younger than the grace time"
            f" ({reconciler.limits.grace_ms} ms)",
            details={"hold_key": echo(hold_key)},
        )
    return success(request, hold_json(ctx.market_data.assets(), voided))


@router.post(
    "/void-orphaned",
    response_model=Envelope[VoidOrphanedOut],
    responses=errors(401, 403, 404, 503, text={404: NOT_FOUND_TEXT}),
    summary="Run a reconciliation pass that voids every orphaned hold",
)
async def void_orphaned(request: Request, ctx: Context) -> Response:
    """Voids even when the periodic passes only report (CROSSBOOK_HOLD_RECONCILE_VOID)."""
    report = await _reconciler(ctx).reconcile(void=True)
    return success(
        request, {"found": report.found, "voided": report.voided, "complete": report.complete}
    )


@router.get(
    "/reconciliation",
    response_model=Envelope[ReconciliationOut],
    responses=errors(401, 403, 404, 429, text={404: NOT_FOUND_TEXT}),
    summary="The hold reconciler's figures since start-up",
)
async def reconciliation(request: Request, ctx: Context) -> Response:
    reconciler = _reconciler(ctx)
    stats = reconciler.stats
    return success(
        request,
        {
            "passes": stats.passes,
            "startup_pass_done": stats.startup_pass_done,
            "holds_found": stats.holds_found,
            "holds_voided": stats.holds_voided,
            "void_failures": stats.void_failures,
            "orphaned": stats.orphaned,
            "last_pass_at": None
            if stats.last_pass_at_ms is None
            else iso_ms(stats.last_pass_at_ms),
            "last_pass_duration_ms": stats.last_pass_duration_ms,
            "last_pass_complete": stats.last_pass_complete,
            "grace_ms": reconciler.limits.grace_ms,
            "interval_ms": reconciler.limits.interval_ms,
        },
    )


def hold_json(assets: Mapping[str, Asset], hold: OrphanedHold) -> dict[str, Any]:
    return {
        "key": hold.key,
        "user_id": str(hold.user_id),
        "asset": hold.asset,
        "amount": amount_json(assets, hold.asset, hold.amount_units),
        "applied_at": iso_ms(hold.applied_at_ms),
        "age_ms": hold.age_ms,
    }


def _reconciler(ctx: ApiContext) -> HoldReconciler:
    return remote_wallet_only(ctx.holds, "wallet holds")
