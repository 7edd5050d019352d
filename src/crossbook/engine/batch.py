"""What one engine batch hands to the store: its events and the rows they changed.

The store keeps projections (assets, markets, balances, orders, trades, the
event log and the counters) from which `Exchange.state()` can be rebuilt
exactly, so a batch carries the FINAL record of every order and balance its
commands touched, taken from the exchange after the whole batch ran.

Wallet-funded (remote-wallet mode), a batch also carries its settlement outbox
(`settlement_plan`): the wallet operations its trades and releases owe, written
in the same transaction, and its trades are recorded PENDING rather than settled,
and the fate of every wallet hold its commands named (`HoldFate`: consumed by an
order, or voided), which the hold reconciler reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crossbook.domain import (
    AssetCreated,
    Deposited,
    Event,
    Exchange,
    Funding,
    HoldConsumed,
    HoldVoided,
    MarketCreated,
    Order,
    TradeExecuted,
    Withdrawn,
)
from crossbook.domain.exchange import BalanceState
from crossbook.domain.orders import order_record
from crossbook.engine.settlement_plan import PlannedSettlement, plan_settlements


@dataclass(frozen=True, slots=True)
class HoldFate:
    """What became of a wallet hold: it funds order `order_id`, or it is voided (None)."""

    hold_key: str
    user_id: int
    asset: str
    amount_units: int
    order_id: int | None  # None: voided
    seq: int  # of the event that decided it

    @property
    def consumed(self) -> bool:
        return self.order_id is not None


def hold_fates(events: list[Event]) -> list[HoldFate]:
    """The fates `events` decide, in event order (remote-wallet mode)."""
    fates: list[HoldFate] = []
    for event in events:
        cls = type(event)
        if cls is HoldConsumed:
            assert isinstance(event, HoldConsumed)
            fates.append(
                HoldFate(
                    event.hold_key,
                    event.user_id,
                    event.asset,
                    event.amount_units,
                    event.order_id,
                    event.seq,
                )
            )
        elif cls is HoldVoided:
            assert isinstance(event, HoldVoided)
            fates.append(
                HoldFate(
                    event.hold_key, event.user_id, event.asset, event.amount_units, None, event.seq
                )
            )
    return fates


@dataclass(slots=True)
class CommitBatch:
    """One transaction's worth of changes, all derived from the batch's events."""

    events: list[Event]  # the event log, in `seq` order
    orders: list[dict[str, Any]]  # `order_record` of every order created or changed
    trades: list[TradeExecuted]
    balances: list[BalanceState]  # (user_id, asset, available, locked), final
    net_deposit_changes: dict[str, int]  # asset -> deposits minus withdrawals in this batch
    assets: list[tuple[str, int]]  # (code, decimals) created in this batch
    markets: list[dict[str, Any]]  # runtime (+ "rules" if created) of every touched market
    counters: dict[str, int]  # `Exchange.counters()` after the batch
    settlements: list[PlannedSettlement] = field(default_factory=list)  # wallet-funded only
    holds: list[HoldFate] = field(default_factory=list)  # wallet-funded only
    trades_settled: bool = True  # False: the trades await their settlements

    @property
    def is_empty(self) -> bool:
        return not self.events


@dataclass(slots=True)
class BatchBuilder:
    """Collects the effects of the commands of one batch, in order."""

    events: list[Event] = field(default_factory=list)
    orders: dict[int, Order] = field(default_factory=dict)

    def add(self, exchange: Exchange, events: list[Event]) -> None:
        """Record one successfully executed command (call right after `execute`)."""
        self.events.extend(events)
        self.orders.update(exchange.touched_orders)

    def build(self, exchange: Exchange) -> CommitBatch:
        trades: list[TradeExecuted] = []
        deposits: dict[str, int] = {}
        assets: list[tuple[str, int]] = []
        created: dict[str, MarketCreated] = {}
        touched_markets: dict[str, None] = {}
        for event in self.events:
            if isinstance(event, TradeExecuted):
                trades.append(event)
            elif isinstance(event, Withdrawn):
                deposits[event.asset] = deposits.get(event.asset, 0) - event.amount_units
            elif isinstance(event, Deposited):
                deposits[event.asset] = deposits.get(event.asset, 0) + event.amount_units
            elif isinstance(event, AssetCreated):
                assets.append((event.code, event.decimals))
            elif isinstance(event, MarketCreated):
                created[event.spec.symbol] = event
                touched_markets[event.spec.symbol] = None
                continue
            if event.market_seq:  # every other market event names its market
                touched_markets[getattr(event, "symbol")] = None  # noqa: B009
        wallet_funded = exchange.funding is Funding.WALLET
        settlements: list[PlannedSettlement] = []
        holds: list[HoldFate] = []
        if wallet_funded:
            specs = {s: m.spec for s, m in exchange.markets.items()}
            settlements = plan_settlements(self.events, specs)
            holds = hold_fates(self.events)
        markets = []
        for symbol in touched_markets:
            row = exchange.market_runtime(exchange.markets[symbol])
            if symbol in created:
                row["rules"] = created[symbol].spec.rules()
            markets.append(row)
        return CommitBatch(
            events=self.events,
            orders=[order_record(order) for order in self.orders.values()],
            trades=trades,
            balances=exchange.take_balance_changes(),
            net_deposit_changes=deposits,
            assets=assets,
            markets=markets,
            counters=exchange.counters(),
            settlements=settlements,
            holds=holds,
            trades_settled=not wallet_funded,
        )
