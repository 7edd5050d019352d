"""Order entry: place, amend and cancel, the same for every gateway.

A gateway parses a request into a command (integer units, DESIGN rule 5) and
calls `OrderEntry`; it answers from the outcome, which is built from the
command's committed events, so nothing it shows is uncommitted (rule 4) and
nothing is read back from the store:
- place: the order as it stands after matching (`OrderAccepted` and its last
  `OrderUpdated`) and the trades it took part in;
- amend: the order as the caller read it before (what an amend cannot change)
  with the amend's last `OrderUpdated` of it, and its trades;
- cancel: the order from its acceptance (`OpenOrderIndex`) and the cancel's
  `OrderUpdated`. An order that is not open (closed, unknown, another user's:
  the engine says ORDER_NOT_FOUND) gives no order: each gateway answers that
  as its protocol says (REST v1 answers the closed order from the store, 200).

How an order is funded before the engine sees it is an `OrderFunding`, chosen
once by the composition root: `EmbeddedFunding` (the engine reserves from its
own ledger) or `WalletFunding` (remote-wallet mode, `engine.wallet_funding`:
a wallet hold first, voided if nothing uses it).

Errors raised: `DomainError` (a refusal with its stable code),
`EngineOverloadedError`, `EngineUnavailableError` (`engine.engine`) and
`WalletOutageError`; never a gateway's error type. Every outcome is reported once,
under its action (place, amend, cancel), through the `CommandSubmitter`.

Known limits: an amend's or a cancel's answer is the order right after that
command, as for a placement; a later command of the same batch may have
changed it since. A cancel whose order's acceptance is not indexed yet (placed
in a batch still being published) is answered from the store.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from crossbook.domain import (
    AmendOrder,
    CancelOrder,
    DomainError,
    ErrorCode,
    Event,
    MarketSpec,
    OrderAccepted,
    OrderUpdated,
    PlaceOrder,
    TradeExecuted,
)
from crossbook.engine.order_view import OrderView, last_update, placed_order, trades_of
from crossbook.engine.ports import ReadStore
from crossbook.engine.read_model.records import StoredOrder
from crossbook.engine.submission import CommandSubmitter

Funded = TypeVar("Funded", PlaceOrder, AmendOrder)


class WalletOutageError(Exception):
    """The wallet service could not fund or serve the request (`reason` says how);
    nothing was accepted, so a retry is safe (a transfer: with the same key)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class OrderOutcome:
    """A placed or amended order after its command, and the trades it took part in."""

    order: OrderView
    trades: list[TradeExecuted]
    trades_settled: bool  # False in remote-wallet mode: the wallet applies them after the commit


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    order: OrderView | None  # None: the order was not open (closed, unknown, another user's)


class OrderFunding(Protocol):
    """How an order is funded before the engine sees it (one strategy per process)."""

    @property
    def trades_settled(self) -> bool:
        """Whether a committed trade is already settled (embedded) or awaits the wallet."""
        ...

    async def fund_place(self, command: PlaceOrder, spec: MarketSpec) -> PlaceOrder:
        """`command` ready for the engine, or a `DomainError` / `WalletOutageError`."""
        ...

    async def fund_amend(
        self, command: AmendOrder, spec: MarketSpec, current: StoredOrder
    ) -> AmendOrder:
        """`command` ready for the engine, given the order as the caller last read it."""
        ...

    def submitted(self, command: PlaceOrder | AmendOrder, error: BaseException | None) -> None:
        """The engine's answer to `command`: None (committed), a `DomainError` (refused,
        committed), `EngineOverloadedError` / `EngineUnavailableError` (not taken, or its
        outcome unknown), or anything else that ended the wait (its fate unknown here)."""
        ...


class EmbeddedFunding:
    """The engine reserves from its own ledger: nothing to do before or after."""

    __slots__ = ()

    @property
    def trades_settled(self) -> bool:
        return True

    async def fund_place(self, command: PlaceOrder, spec: MarketSpec) -> PlaceOrder:
        return command

    async def fund_amend(
        self, command: AmendOrder, spec: MarketSpec, current: StoredOrder
    ) -> AmendOrder:
        return command

    def submitted(self, command: PlaceOrder | AmendOrder, error: BaseException | None) -> None:
        return None


class OpenOrders(Protocol):
    """The acceptances of open orders (`OpenOrderIndex` satisfies this)."""

    def find(
        self, user_id: int, order_id: int | None, client_order_id: str | None
    ) -> OrderAccepted | None: ...


class OrderEntry:
    __slots__ = ("_funding", "_open_orders", "_orders", "_submitter")

    def __init__(
        self,
        submitter: CommandSubmitter,
        funding: OrderFunding,
        open_orders: OpenOrders,
        orders: ReadStore,
    ) -> None:
        self._submitter = submitter
        self._funding = funding
        self._open_orders = open_orders
        self._orders = orders

    async def place(self, command: PlaceOrder, spec: MarketSpec) -> OrderOutcome:
        """Place `command` (on the market `spec`): the order after matching and its trades."""
        funded = await self._fund("place", self._funding.fund_place(command, spec))
        order, trades = placed_order(await self._submit(funded, "place"))
        return OrderOutcome(order, trades, self._funding.trades_settled)

    async def amend(
        self, command: AmendOrder, spec: MarketSpec, current: StoredOrder
    ) -> OrderOutcome:
        """Amend the order `current` (the caller's committed read of it, on `spec`)."""
        assert (current.user_id, current.order_id) == (command.user_id, command.order_id)
        funded = await self._fund("amend", self._funding.fund_amend(command, spec, current))
        events = await self._submit(funded, "amend")
        update = last_update(events, command.order_id)
        assert update is not None, "an amend always updates its order"
        order = OrderView.from_stored(current).with_update(update)
        trades = trades_of(events, command.order_id)
        return OrderOutcome(order, trades, self._funding.trades_settled)

    async def cancel(self, command: CancelOrder) -> CancelOutcome:
        """Cancel the user's open order (by id, or else by client order id)."""
        accepted = self._open_orders.find(
            command.user_id, command.order_id, command.client_order_id
        )
        try:
            events = await self._submitter.submit(command, "cancel")
        except DomainError as error:
            if error.code is ErrorCode.ORDER_NOT_FOUND:
                return CancelOutcome(None)
            raise
        update = next(e for e in events if isinstance(e, OrderUpdated))  # the cancel's one
        if accepted is not None and accepted.order_id == update.order_id:
            return CancelOutcome(OrderView.from_events(accepted, update))
        stored = await self._orders.get_order(command.user_id, update.order_id)
        assert stored is not None, "a committed cancel's order is stored"
        return CancelOutcome(OrderView.from_stored(stored))

    async def _fund(self, action: str, funding: Awaitable[Funded]) -> Funded:
        try:
            return await funding
        except (DomainError, WalletOutageError) as refusal:
            self._submitter.report(action, refusal)
            raise

    async def _submit(self, command: PlaceOrder | AmendOrder, action: str) -> list[Event]:
        try:
            events = await self._submitter.submit(command, action)
        except BaseException as error:
            self._funding.submitted(command, error)
            raise
        self._funding.submitted(command, None)
        return events
