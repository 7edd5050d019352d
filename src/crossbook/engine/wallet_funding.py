"""Remote-wallet mode's order funding: hold before the engine, void if unused.

`WalletFunding` is the `OrderFunding` of `OrderEntry` when balances live in the
wallet service. Placing an order (or amending it to cost more):
1. compute the worst-case cost (`domain.funding`). A market buy by quantity
   is costed on the committed book, plus `market_buy_margin_bps`: concurrent
   orders may take the best levels before it reaches the engine, and a hold
   that no longer covers its plan is refused (INSUFFICIENT_BALANCE). The unused
   part of a hold is released at once;
2. ask the wallet to hold it, under a fresh key `hold:<uuid>`. One attempt, no
   retry: the trader is waiting, and may retry. The breaker fails fast while the
   wallet is down. Refused for lack of funds → INSUFFICIENT_BALANCE (a
   `DomainError`); any other wallet failure → `WalletOutageError`, and nothing is
   accepted;
3. the command goes to the engine carrying the `Hold`. If the engine refuses it,
   the engine itself voids the hold in the same commit (`Engine`).

A hold that may exist but funds nothing must be voided, or the user's funds
stay locked. While an attempt runs, its hold's key is in `holds_in_flight`
(from before the wallet is asked until the command's fate is durable), so the
hold reconciler (`engine.hold_reconciler`) leaves it alone; afterwards the store
knows its fate, or the reconciler voids it. Here:
- the hold call's outcome is unknown (timeout, connection lost): `VoidHold` is
  submitted to the engine, which commits it to the settlement outbox; the
  workers carry it to the wallet with retries. The caller still hears
  `WalletOutageError`;
- the engine could not take the command, or that `VoidHold` (overloaded, not
  available): it is voided directly, in the background, at most
  `void_policy.max_attempts` times with its backoff, and at most
  `MAX_BACKGROUND_VOIDS` at once. One that runs out of attempts or finds no
  room is left to the reconciler;
- the command's outcome is unknown (`EngineUnavailableError` with
  `outcome_unknown`, or the wait for it ended otherwise): it may have committed,
  consuming the hold, so nothing is voided here; the key stays in flight for
  `undecided_hold_ms` (longer than a commit can take), then the reconciler
  decides from the store.
The wallet's `void` is safe whether or not the hold was applied, and refuses a
hold that arrives after its void.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Awaitable, Callable, Container, Sequence
from dataclasses import replace
from typing import Protocol

import structlog

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
from crossbook.domain.fees import reserve_asset
from crossbook.domain.funding import amend_hold_units, place_hold_units
from crossbook.domain.orders import OPEN_STATUSES
from crossbook.engine.engine import EngineOverloadedError, EngineUnavailableError
from crossbook.engine.guarded_wallet import WalletCircuitOpenError
from crossbook.engine.order_entry import WalletOutageError
from crossbook.engine.ports import (
    MAX_READ_LIMIT,
    ReadStore,
    Wallet,
    WalletRejectedError,
    WalletUnavailableError,
)
from crossbook.engine.read_model.records import StoredOrder
from crossbook.engine.retry import RetryPolicy
from crossbook.engine.submission import CommandSink
from crossbook.wallet_protocol import WalletCode, WalletOp, WalletOpKind

log = structlog.get_logger(__name__)

MAX_BACKGROUND_VOIDS = 1_000
BACKGROUND_VOID_POLICY = RetryPolicy(max_attempts=5, initial_backoff_ms=1_000, max_backoff_ms=5_000)
DEFAULT_MARKET_BUY_MARGIN_BPS = 500
DEFAULT_UNDECIDED_HOLD_MS = 30_000

RestingAsks = Callable[[int, str], Awaitable[dict[int, int]]]  # (user, symbol) -> ticks: lots


class LevelLike(Protocol):
    @property
    def price_ticks(self) -> int: ...

    @property
    def quantity_lots(self) -> int: ...


class BookLike(Protocol):
    @property
    def asks(self) -> Sequence[LevelLike]: ...


class CommittedBooks(Protocol):
    """The committed books (the read model's `MarketData` satisfies this)."""

    def book(self, symbol: str, depth: int) -> BookLike:
        """The best `depth` levels per side, best first."""
        ...


def stored_resting_asks(store: ReadStore) -> RestingAsks:
    """The user's committed resting asks on a market, read from the store."""

    async def resting_asks(user_id: int, symbol: str) -> dict[int, int]:
        orders = await store.list_orders(
            user_id, statuses=OPEN_STATUSES, symbol=symbol, limit=MAX_READ_LIMIT
        )
        asks: dict[int, int] = {}
        for order in orders:
            if order.side is Side.SELL and order.triggered and order.price_ticks:
                remaining = order.quantity_lots - order.filled_lots
                asks[order.price_ticks] = asks.get(order.price_ticks, 0) + remaining
        return asks

    return resting_asks


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


class WalletFunding:
    """Holds in the wallet (behind its circuit breaker) before the engine; voids if unused."""

    def __init__(
        self,
        wallet: Wallet,
        engine: CommandSink,
        books: CommittedBooks,
        resting_asks: RestingAsks,
        *,
        max_levels: int,
        market_buy_margin_bps: int = DEFAULT_MARKET_BUY_MARGIN_BPS,
        void_policy: RetryPolicy = BACKGROUND_VOID_POLICY,
        undecided_hold_ms: int = DEFAULT_UNDECIDED_HOLD_MS,
        rng: random.Random | None = None,
    ) -> None:
        self._wallet = wallet  # behind the circuit breaker
        self._engine = engine  # the engine itself: a `VoidHold` is no client's outcome
        self._books = books
        self._resting_asks = resting_asks
        self._max_levels = max_levels  # ask levels a market buy is costed on (its fill limit)
        self._margin_bps = market_buy_margin_bps  # slippage a market buy by quantity is held for
        self._void_policy = void_policy
        self._rng = rng or random.Random()
        self._voids: set[asyncio.Task[None]] = set()
        self._undecided_hold_s = undecided_hold_ms / 1000
        self._in_flight: set[str] = set()  # hold keys whose command's fate is not durable

    @property
    def trades_settled(self) -> bool:
        return False  # PENDING until the settlement workers applied their legs

    @property
    def background_voids(self) -> int:
        return len(self._voids)

    @property
    def holds_in_flight(self) -> Container[str]:
        """The keys of the holds attempts of this process own (see the module docstring)."""
        return self._in_flight

    async def fund_place(self, command: PlaceOrder, spec: MarketSpec) -> PlaceOrder:
        """`command` with a confirmed hold for its worst-case cost.

        The user's resting asks are read only for a market buy by quantity with
        self-trade prevention (they change its walk; where one sits in its level's
        queue is not known, so the hold may be an upper bound: `domain.funding`).
        """
        asks: list[tuple[int, int]] = []
        own: dict[int, int] = {}
        market_buy = command.side is Side.BUY and command.order_type is OrderType.MARKET
        if market_buy and not command.quote_budget_units:
            book = self._books.book(spec.symbol, self._max_levels)
            asks = [(level.price_ticks, level.quantity_lots) for level in book.asks]
            if command.stp_mode is not StpMode.NONE:
                own = await self._resting_asks(command.user_id, spec.symbol)
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
            # nothing to hold, no wallet call: a malformed order (the engine refuses it
            # with the right code), or a market buy whose walk costs nothing (no asks, or
            # self-trade prevention stops it first); the engine plans that on its own
            # book and refuses it (INSUFFICIENT_BALANCE) if it costs anything there
            return command
        if asks:
            units += -(-units * self._margin_bps // 10_000)
        hold = await self._hold(command.user_id, reserve_asset(spec, command.side), units)
        return replace(command, hold=hold)

    async def fund_amend(
        self, command: AmendOrder, spec: MarketSpec, current: StoredOrder
    ) -> AmendOrder:
        """`command` with a hold for what its new reservation may exceed the current one."""
        order = current
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

    def submitted(self, command: PlaceOrder | AmendOrder, error: BaseException | None) -> None:
        hold = command.hold
        if hold is None:
            return
        if error is None or isinstance(error, DomainError):
            self._in_flight.discard(hold.key)  # committed: consumed, or voided with the refusal
        elif isinstance(error, EngineOverloadedError) or (
            isinstance(error, EngineUnavailableError) and not error.outcome_unknown
        ):
            self.void_in_background(VoidHold(command.user_id, hold))  # nothing was taken
        else:  # it may have committed: leave the fate to the store and the reconciler
            loop = asyncio.get_running_loop()
            loop.call_later(self._undecided_hold_s, self._in_flight.discard, hold.key)

    async def _hold(self, user_id: int, asset: str, units: int) -> Hold:
        hold = Hold(f"hold:{uuid.uuid4().hex}", asset, units)
        self._in_flight.add(hold.key)
        try:
            await self._wallet.apply(WalletOp(hold.key, WalletOpKind.HOLD, user_id, asset, units))
        except WalletRejectedError as error:
            self._in_flight.discard(hold.key)
            if error.code == WalletCode.INSUFFICIENT_BALANCE:
                raise insufficient_balance(asset, units, error) from None
            raise WalletOutageError(error.code) from None
        except WalletCircuitOpenError:
            self._in_flight.discard(hold.key)
            raise WalletOutageError("circuit open") from None  # no call made: nothing held
        except WalletUnavailableError as error:
            await self._void_unknown(VoidHold(user_id, hold))
            raise WalletOutageError(str(error)) from None
        except BaseException:
            self._in_flight.discard(hold.key)  # cancelled: the reconciler decides after grace
            raise
        return hold

    async def _void_unknown(self, void: VoidHold) -> None:
        """A hold that may have been applied funds nothing: void it durably if possible."""
        try:
            await self._engine.submit(void)
        except (EngineOverloadedError, EngineUnavailableError):
            self.void_in_background(void)  # keeps the key in flight until it ends
        except BaseException:
            self._in_flight.discard(void.hold.key)  # refused: the reconciler decides
            raise
        else:
            self._in_flight.discard(void.hold.key)  # committed: the store knows its fate

    def void_in_background(self, void: VoidHold) -> None:
        """Void a hold the engine could not take, directly at the wallet (bounded); its key
        stays in flight until that ends."""
        key = void.hold.key
        if len(self._voids) >= MAX_BACKGROUND_VOIDS:
            log.error("too many background voids; left to the reconciler", hold_key=key)
            self._in_flight.discard(key)
            return
        task = asyncio.create_task(self._void_directly(void), name="wallet-void")
        self._voids.add(task)
        task.add_done_callback(self._voids.discard)
        task.add_done_callback(lambda _: self._in_flight.discard(key))

    async def _void_directly(self, void: VoidHold) -> None:
        hold = void.hold
        op = WalletOp(
            f"void:{hold.key}", WalletOpKind.VOID, void.user_id, hold.asset, target_key=hold.key
        )
        policy = self._void_policy
        for attempt in range(1, policy.max_attempts + 1):
            try:
                await self._wallet.apply(op)
                return
            except WalletRejectedError as error:
                log.error("wallet refused a void", hold_key=hold.key, code=error.code)
                return
            except WalletUnavailableError:
                if attempt < policy.max_attempts:
                    await asyncio.sleep(policy.backoff_ms(attempt, self._rng) / 1000)
        log.error("could not void a hold; left to the reconciler", hold_key=hold.key)

    async def close(self) -> None:
        """Cancel the background voids still running (the reconciler of the next start
        voids their holds)."""
        for task in list(self._voids):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
