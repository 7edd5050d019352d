"""The settlement outbox: which wallet operations a committed batch owes (remote-wallet mode).

One settlement per event that moves money out of the engine, identified by the
event's `seq` (unique, and ordered like the engine's history):

- `TradeExecuted` → a TRADE settlement of the trade's five legs (four when the
  fees are 0; amounts from `domain.settlement.trade_legs`), debits first, so
  that compensating a failure never takes back a credit the user may have
  spent if it can be avoided:
  1. buyer_pays: debit the buyer's LOCKED quote;
  2. seller_delivers: debit the seller's LOCKED base;
  3. buyer_receives: credit the buyer's available base;
  4. seller_receives: credit the seller's available quote;
  5. fee: credit the fee account's available quote;
- `HoldReleased` → a RELEASE settlement, one leg: release locked → available;
- `HoldVoided` → a VOID settlement, one leg: void the hold by its key.

Every leg's idempotency key is `<base>:g<generation>` with base
`trade:<trade_id>:<leg>`, `release:<seq>` or `void:<seq>`: stable across
retries and restarts, so the wallet applies a leg at most once; the generation
moves on only when a leg was compensated and has to be applied afresh.

A trade's legs are computed from its event by the same function the exchange's
own ledger settled it with (`Ledger.settle_fill`): they sum to zero per asset and
move what the ledger moved, so with every settlement applied the wallet holds
exactly what an embedded ledger would.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from crossbook.domain import (
    FEE_ACCOUNT_ID,
    Event,
    HoldReleased,
    HoldVoided,
    MarketSpec,
    TradeExecuted,
)
from crossbook.domain.settlement import trade_legs
from crossbook.wallet_protocol import WalletAccount, WalletOp, WalletOpKind


class SettlementKind(enum.StrEnum):
    TRADE = "trade"
    RELEASE = "release"
    VOID = "void"


class SettlementStatus(enum.StrEnum):
    PENDING = "PENDING"
    SETTLED = "SETTLED"
    SETTLEMENT_FAILED = "SETTLEMENT_FAILED"


class LegState(enum.StrEnum):
    PENDING = "pending"  # not applied (or its outcome unknown: retried with the same key)
    APPLIED = "applied"
    REVERSED = "reversed"  # applied, then compensated: applied afresh on replay
    UNDO_UNKNOWN = "undo_unknown"  # its compensation's outcome is unknown: retried first


@dataclass(frozen=True, slots=True)
class Leg:
    name: str
    kind: WalletOpKind
    user_id: int
    asset: str
    amount_units: int
    account: WalletAccount = WalletAccount.AVAILABLE
    target_key: str | None = None
    state: LegState = LegState.PENDING
    generation: int = 0

    def op(self, base_key: str) -> WalletOp:
        """The leg as a wallet operation, keyed for its generation."""
        return WalletOp(
            f"{base_key}:g{self.generation}",
            self.kind,
            self.user_id,
            self.asset,
            self.amount_units,
            self.account,
            self.target_key,
        )

    def undo(self, base_key: str) -> WalletOp:
        """The operation that reverses this leg (only debits and credits have one)."""
        kind = {WalletOpKind.DEBIT: WalletOpKind.CREDIT, WalletOpKind.CREDIT: WalletOpKind.DEBIT}[
            self.kind
        ]
        return WalletOp(
            f"{base_key}:g{self.generation}:undo",
            kind,
            self.user_id,
            self.asset,
            self.amount_units,
            self.account,
        )


@dataclass(frozen=True, slots=True)
class PlannedSettlement:
    settlement_id: int  # the seq of the event it settles
    kind: SettlementKind
    trade_id: int | None
    created_at_ms: int
    legs: tuple[Leg, ...]

    @property
    def base_keys(self) -> list[str]:
        return [
            leg_base_key(self.kind, self.settlement_id, self.trade_id, leg) for leg in self.legs
        ]


def leg_base_key(kind: SettlementKind, settlement_id: int, trade_id: int | None, leg: Leg) -> str:
    if kind is SettlementKind.TRADE:
        return f"trade:{trade_id}:{leg.name}"
    return f"{kind}:{settlement_id}"


def plan_settlements(
    events: Iterable[Event], specs: Mapping[str, MarketSpec]
) -> list[PlannedSettlement]:
    """The settlements `events` owe, in event order."""
    planned: list[PlannedSettlement] = []
    for event in events:
        cls = type(event)
        if cls is TradeExecuted:
            assert isinstance(event, TradeExecuted)
            planned.append(_trade(event, specs[event.symbol]))
        elif cls is HoldReleased:
            assert isinstance(event, HoldReleased)
            leg = Leg(
                "release", WalletOpKind.RELEASE, event.user_id, event.asset, event.amount_units
            )
            planned.append(
                PlannedSettlement(event.seq, SettlementKind.RELEASE, None, event.ts_ms, (leg,))
            )
        elif cls is HoldVoided:
            assert isinstance(event, HoldVoided)
            leg = Leg(
                "void", WalletOpKind.VOID, event.user_id, event.asset, 0, target_key=event.hold_key
            )
            planned.append(
                PlannedSettlement(event.seq, SettlementKind.VOID, None, event.ts_ms, (leg,))
            )
    return planned


def _trade(trade: TradeExecuted, spec: MarketSpec) -> PlannedSettlement:
    base, quote = spec.base.code, spec.quote.code
    amounts = trade_legs(
        spec,
        trade.quantity_lots,
        trade.notional_units,
        trade.buyer_fee_units,
        trade.seller_fee_units,
    )
    buyer, seller = trade.buyer_user_id, trade.seller_user_id
    base_units = amounts.base_units
    debit, credit, locked = WalletOpKind.DEBIT, WalletOpKind.CREDIT, WalletAccount.LOCKED
    legs = [
        Leg("buyer_pays", debit, buyer, quote, amounts.buyer_pays_units, locked),
        Leg("seller_delivers", debit, seller, base, base_units, locked),
        Leg("buyer_receives", credit, buyer, base, base_units),
        Leg("seller_receives", credit, seller, quote, amounts.seller_receives_units),
    ]
    if amounts.fee_units:
        legs.append(Leg("fee", credit, FEE_ACCOUNT_ID, quote, amounts.fee_units))
    legs = [leg for leg in legs if leg.amount_units > 0]  # a 0 leg moves nothing
    return PlannedSettlement(
        trade.seq, SettlementKind.TRADE, trade.trade_id, trade.ts_ms, tuple(legs)
    )


@dataclass(frozen=True, slots=True)
class StoredSettlement:
    settlement_id: int
    kind: SettlementKind
    trade_id: int | None
    status: SettlementStatus
    attempts: int  # wallet calls that failed transiently, over the settlement's life
    reason: str | None
    created_at_ms: int
    updated_at_ms: int
    settled_at_ms: int | None
    failed_at_ms: int | None
    legs: tuple[Leg, ...]

    def base_key(self, leg: Leg) -> str:
        return leg_base_key(self.kind, self.settlement_id, self.trade_id, leg)
