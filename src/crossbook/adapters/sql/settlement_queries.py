"""Statements of the settlement outbox (remote-wallet mode), and rows → `StoredSettlement`.

Reads: the ids of PENDING settlements (by the `(status, settlement_id)` index),
one settlement with its legs, a page of settlements in one status, a count.
Writes (outside the engine's batches, by the settlement workers): a
settlement's status, attempts, reason and timestamps, its legs' state and
generation, and its trade's `settlement_status` / `settled_at_ms`
(`record_statements`; the store runs those of many settlements in one
transaction). A SETTLED settlement's legs are not rewritten: all of them were
applied, in the generation they hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Executable, and_, bindparam, func, select, update

from crossbook.adapters.sql.queries import AnySelect
from crossbook.adapters.sql.schema import settlement_legs, settlements, trades
from crossbook.engine.settlement_plan import (
    Leg,
    LegState,
    SettlementKind,
    SettlementStatus,
    StoredSettlement,
)
from crossbook.wallet_protocol import WalletAccount, WalletOpKind


def pending_ids(after_id: int, limit: int) -> AnySelect:
    return (
        select(settlements.c.settlement_id)
        .where(
            and_(
                settlements.c.status == str(SettlementStatus.PENDING),
                settlements.c.settlement_id > after_id,
            )
        )
        .order_by(settlements.c.settlement_id)
        .limit(limit)
    )


def by_id(settlement_id: int) -> list[AnySelect]:
    """The settlement row, then its legs in order."""
    return [
        select(settlements).where(settlements.c.settlement_id == settlement_id),
        select(settlement_legs)
        .where(settlement_legs.c.settlement_id == settlement_id)
        .order_by(settlement_legs.c.leg_no),
    ]


def in_status(status: SettlementStatus, after_id: int, limit: int) -> list[AnySelect]:
    """A page of settlements in `status` (ascending id), then all of their legs."""
    page = (
        select(settlements)
        .where(and_(settlements.c.status == str(status), settlements.c.settlement_id > after_id))
        .order_by(settlements.c.settlement_id)
        .limit(limit)
    )
    ids = page.with_only_columns(settlements.c.settlement_id).scalar_subquery()
    legs = (
        select(settlement_legs)
        .where(settlement_legs.c.settlement_id.in_(ids))
        .order_by(settlement_legs.c.settlement_id, settlement_legs.c.leg_no)
    )
    return [page, legs]


def count_in(status: SettlementStatus) -> AnySelect:
    return select(func.count()).select_from(settlements).where(settlements.c.status == str(status))


def record_statements(
    settlement: StoredSettlement,
) -> list[tuple[Executable, Sequence[Mapping[str, Any]] | None]]:
    """The writes that store `settlement` (and its trade's status), as one transaction."""
    s = settlement
    head = (
        update(settlements)
        .where(settlements.c.settlement_id == s.settlement_id)
        .values(
            status=str(s.status),
            attempts=s.attempts,
            reason=s.reason,
            updated_at_ms=s.updated_at_ms,
            settled_at_ms=s.settled_at_ms,
            failed_at_ms=s.failed_at_ms,
        )
    )
    legs = (
        update(settlement_legs)
        .where(
            and_(
                settlement_legs.c.settlement_id == s.settlement_id,
                settlement_legs.c.leg_no == bindparam("b_leg_no"),
            )
        )
        .values(state=bindparam("b_state"), generation=bindparam("b_generation"))
    )
    out: list[tuple[Executable, Sequence[Mapping[str, Any]] | None]] = [(head, None)]
    if s.status is not SettlementStatus.SETTLED:  # SETTLED: every leg applied, as planned
        leg_params = [
            {"b_leg_no": n, "b_state": str(leg.state), "b_generation": leg.generation}
            for n, leg in enumerate(s.legs)
        ]
        out.append((legs, leg_params))
    if s.trade_id is not None:
        trade = (
            update(trades)
            .where(trades.c.trade_id == s.trade_id)
            .values(settlement_status=str(s.status), settled_at_ms=s.settled_at_ms or 0)
        )
        out.append((trade, None))
    return out


def settlement_from_rows(
    row: Mapping[Any, Any], leg_rows: Sequence[Mapping[Any, Any]]
) -> StoredSettlement:
    settled = row["status"] == SettlementStatus.SETTLED  # then every leg was applied
    return StoredSettlement(
        settlement_id=row["settlement_id"],
        kind=SettlementKind(row["kind"]),
        trade_id=row["trade_id"],
        status=SettlementStatus(row["status"]),
        attempts=row["attempts"],
        reason=row["reason"],
        created_at_ms=row["created_at_ms"],
        updated_at_ms=row["updated_at_ms"],
        settled_at_ms=row["settled_at_ms"],
        failed_at_ms=row["failed_at_ms"],
        legs=tuple(
            Leg(
                name=leg["name"],
                kind=WalletOpKind(leg["op"]),
                user_id=leg["user_id"],
                asset=leg["asset"],
                amount_units=leg["amount_units"],
                account=WalletAccount(leg["account"]),
                target_key=leg["target_key"],
                state=LegState.APPLIED if settled else LegState(leg["state"]),
                generation=leg["generation"],
            )
            for leg in leg_rows
        ),
    )
