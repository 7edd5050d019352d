"""The gateway's side of remote-wallet mode: hold before the engine, void if unused.

Placing an order (or amending it to cost more):
1. compute the worst-case cost (`domain.funding`). A market buy by quantity
   is costed on the committed book, plus `market_buy_margin_bps`: concurrent
   orders may take the best levels before it reaches the engine, and a hold
   that no longer covers its plan is refused (INSUFFICIENT_BALANCE). The unused
   part of a hold is released at once;
2. ask the wallet to hold it, under a fresh key `hold:<uuid>`. One attempt, no
   retry: the trader is waiting, and may retry. The breaker fails fast while the
   wallet is down. Refused for lack of funds → INSUFFICIENT_BALANCE (400); any
   other wallet failure → WALLET_UNAVAILABLE (503) and nothing is accepted;
3. submit the command carrying the `Hold`. If the engine refuses it, the engine
   itself voids the hold in the same commit (`Engine`).

A hold that may exist but funds nothing must be voided, or the user's funds
stay locked:
- the hold call's outcome is unknown (timeout, connection lost): the gateway
  submits `VoidHold` to the engine, which commits it to the settlement outbox;
  the workers carry it to the wallet with retries. The answer is still 503;
- the engine could not take the command (overloaded, recovering): nothing
  durable can record the void, so the gateway voids directly, in the
  background, with a few retries.
The wallet's `void` is safe whether or not the hold was applied, and refuses a
hold that arrives after its void.

Known limit: if this process dies between a successful hold and the engine's
commit, that hold stays locked in the wallet (nothing durable names it). The
wallet's operation log lists holds by key; reconciling them is an operator's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import structlog

from crossbook.api.errors import ApiCode, ApiError
from crossbook.domain import (
    AmendOrder,
    DomainError,
    ErrorCode,
    Hold,
    MarketSpec,
    OrderType,
    PlaceOrder,
    Side,
    StpMode,
    VoidHold,
)
from crossbook.domain.funding import amend_hold_units, place_hold_units, reserve_asset
from crossbook.engine.breaker import CircuitBreaker
from crossbook.engine.guarded_wallet import WalletCircuitOpenError
from crossbook.engine.ports import Wallet, WalletRejectedError, WalletUnavailableError
from crossbook.engine.read_model.market_data import MarketData
from crossbook.engine.read_model.records import StoredBalance, StoredOrder
from crossbook.engine.settlement import SettlementService
from crossbook.wallet_protocol import WalletCode, WalletOp, WalletOpKind

log = structlog.get_logger(__name__)


class Closeable(Protocol):
    async def aclose(self) -> None: ...


MAX_BACKGROUND_VOIDS = 1_000
BACKGROUND_VOID_ATTEMPTS = 5
BACKGROUND_VOID_WAIT_S = 1.0


def wallet_unavailable(reason: str) -> ApiError:
    return ApiError(
        ApiCode.WALLET_UNAVAILABLE,
        f"wallet service unavailable ({reason}); nothing was accepted, retry"
        " (a transfer: with the same Idempotency-Key)",
        headers={"Retry-After": "1"},
    )


def insufficient_balance(asset: str, units: int, error: WalletRejectedError) -> DomainError:
    """The wallet's refusal for lack of funds as the exchange's own: amounts in integer
    units (the wallet sends them as integer strings), formatted at the edge as usual."""
    available = str(error.details.get("available", ""))
    return DomainError(
        ErrorCode.INSUFFICIENT_BALANCE,
        f"insufficient {asset} balance",
        asset=asset,
        required=units,
        available=int(available) if available.isdigit() else None,
    )


@dataclass(slots=True)
class WalletAccess:
    """What the API uses in remote-wallet mode (None in the context when embedded)."""

    wallet: Wallet  # behind the circuit breaker
    breaker: CircuitBreaker
    settlements: SettlementService
    client: Closeable  # the wallet's HTTP client, closed last
    market_buy_margin_bps: int = 500  # slippage a market buy by quantity is held for
    _voids: set[asyncio.Task[None]] = field(default_factory=set)

    # -- reads and administration ----------------------------------------------------

    async def balances(self, user_id: int) -> list[StoredBalance]:
        try:
            return await self.wallet.balances(user_id)
        except WalletUnavailableError as error:
            raise wallet_unavailable(str(error)) from None
        except WalletRejectedError as error:
            raise wallet_unavailable(error.code) from None

    async def transfer(
        self,
        kind: WalletOpKind,
        user_id: int,
        asset: str,
        units: int,
        idempotency_key: str | None = None,
    ) -> None:
        """A deposit or withdrawal, applied by the wallet once per key.

        With the caller's `idempotency_key` a retry after WALLET_UNAVAILABLE (applied or
        not?) is safe; without one each call is a new transfer.
        """
        assert kind in (WalletOpKind.DEPOSIT, WalletOpKind.WITHDRAW), kind
        key = f"admin:{kind}:{idempotency_key or uuid.uuid4().hex}"
        await self._apply(WalletOp(key, kind, user_id, asset, units))

    # -- order entry ---------------------------------------------------------------------

    async def hold_for_place(
        self,
        command: PlaceOrder,
        spec: MarketSpec,
        market_data: MarketData,
        max_levels: int,
        own_asks: Callable[[], Awaitable[dict[int, int]]],
    ) -> PlaceOrder:
        """`command` with a confirmed hold for its worst-case cost.

        `own_asks` reads the user's resting asks (price ticks -> lots); it is called only
        for a market buy by quantity with self-trade prevention (they change its walk).
        """
        asks: list[tuple[int, int]] = []
        own: dict[int, int] = {}
        market_buy = command.side is Side.BUY and command.order_type is OrderType.MARKET
        if market_buy and not command.quote_budget_units:
            book = market_data.book(spec.symbol, max_levels)
            asks = [(level.price_ticks, level.quantity_lots) for level in book.asks]
            if command.stp_mode is not StpMode.NONE:
                own = await own_asks()
        units = place_hold_units(
            spec,
            command.side,
            quantity_lots=command.quantity_lots,
            price_ticks=command.price_ticks,
            quote_budget_units=command.quote_budget_units,
            asks=asks,
            stp_mode=command.stp_mode,
            own_asks=own,
        )
        if units <= 0:
            return command  # malformed: the engine refuses it with the right code
        if asks:
            units += -(-units * self.market_buy_margin_bps // 10_000)
        hold = await self._hold(command.user_id, reserve_asset(spec, command.side), units)
        return replace(command, hold=hold)

    async def hold_for_amend(
        self, command: AmendOrder, spec: MarketSpec, order: StoredOrder
    ) -> AmendOrder:
        """`command` with a hold for what its new reservation may exceed the current one."""
        quantity = order.quantity_lots if command.quantity_lots is None else command.quantity_lots
        price = order.price_ticks if command.price_ticks is None else command.price_ticks
        units = amend_hold_units(
            spec,
            order.side,
            price_ticks=price,
            remaining_lots=quantity - order.filled_lots,
            reserved_units=order.reserved_units,
        )
        if units <= 0:
            return command
        hold = await self._hold(command.user_id, reserve_asset(spec, order.side), units)
        return replace(command, hold=hold)

    async def _hold(self, user_id: int, asset: str, units: int) -> Hold:
        hold = Hold(f"hold:{uuid.uuid4().hex}", asset, units)
        try:
            await self.wallet.apply(WalletOp(hold.key, WalletOpKind.HOLD, user_id, asset, units))
        except WalletRejectedError as error:
            if error.code == WalletCode.INSUFFICIENT_BALANCE:
                raise insufficient_balance(asset, units, error) from None
            raise wallet_unavailable(error.code) from None
        except WalletCircuitOpenError:
            raise wallet_unavailable("circuit open") from None  # no call made: nothing held
        except WalletUnavailableError as error:
            raise UnknownHoldError(VoidHold(user_id, hold), str(error)) from None
        return hold

    def void_in_background(self, void: VoidHold) -> None:
        """Void a hold the engine could not take, directly at the wallet (bounded)."""
        if len(self._voids) >= MAX_BACKGROUND_VOIDS:
            log.error("too many background voids; hold left locked", hold_key=void.hold.key)
            return
        task = asyncio.create_task(self._void_directly(void), name="wallet-void")
        self._voids.add(task)
        task.add_done_callback(self._voids.discard)

    async def _void_directly(self, void: VoidHold) -> None:
        hold = void.hold
        op = WalletOp(
            f"void:{hold.key}", WalletOpKind.VOID, void.user_id, hold.asset, target_key=hold.key
        )
        for attempt in range(1, BACKGROUND_VOID_ATTEMPTS + 1):
            try:
                await self.wallet.apply(op)
                return
            except WalletRejectedError as error:
                log.error("wallet refused a void", hold_key=hold.key, code=error.code)
                return
            except WalletUnavailableError:
                await asyncio.sleep(BACKGROUND_VOID_WAIT_S * attempt)
        log.error("could not void a hold; it stays locked", hold_key=hold.key, user_id=void.user_id)

    async def close(self) -> None:
        for task in list(self._voids):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _apply(self, op: WalletOp) -> None:
        try:
            await self.wallet.apply(op)
        except WalletRejectedError as error:
            if error.code == WalletCode.INSUFFICIENT_BALANCE:
                raise insufficient_balance(op.asset, op.amount_units, error) from None
            if error.code == WalletCode.IDEMPOTENCY_KEY_REUSED:
                raise ApiError(
                    ApiCode.IDEMPOTENCY_KEY_REUSED,
                    "this Idempotency-Key was used for a different transfer",
                ) from None
            raise ApiError(ApiCode.INVALID_REQUEST, error.message, details=error.details) from None
        except WalletUnavailableError as error:
            raise wallet_unavailable(str(error)) from None


class UnknownHoldError(Exception):
    """The hold's outcome is unknown: it must be voided before answering 503."""

    def __init__(self, void: VoidHold, reason: str) -> None:
        super().__init__(reason)
        self.void = void
        self.reason = reason
