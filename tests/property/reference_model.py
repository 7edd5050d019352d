"""A deliberately naive reference model of the exchange: the rules in executable form.

It is written from the rules, not from the domain code, and trades speed for
obviousness: plain lists and dicts, linear scans, every price level found by
sorting. It imports only value types from `crossbook.domain` (enums, commands,
error codes), never the engine, book, matching, fee, ledger or stop code.

Units: price in ticks, quantity in lots, money in minor units of an asset.
    notional (quote units) = price_ticks * lots * notional_units
    base units             = lots * lot_base_units
Fee rates are parts per million (ppm) of the notional, charged in the quote asset.

The rules implemented here (the stateful property test checks the real
exchange against them after every command):

Fees: per ORDER, cumulative. An order accrues the exact `notional * rate_ppm` of
each of its fills (maker rate when it is the maker, taker rate when it takes);
after a fill it has paid ceil(accrued / 1e6) in total, and the fill's fee is
the increase. The buyer pays notional + fee from locked quote; the seller gives
base from locked base and receives notional - fee; fees go to user 0.

Reservations (funds locked per open order):
- sell: remaining lots in base units;
- buy with a limit price L: notional(L, remaining)
  + ceil((accrued + notional(L, remaining) * max(maker, taker) ppm) / 1e6) - fee paid,
  recomputed after every fill (the excess is released);
- market buy by base quantity: the exact cost of walking the book when placed
  (notional + taker fee); less available quote rejects the whole order;
- market buy by quote budget and stop-market buy: the budget;
- everything an order still holds is released when it closes.

Matching: price-time priority; fills at the maker's price; a limit taker stops
at its limit; self-trade prevention by the taker's mode; TIF, post-only, stops
and amends as stated on the methods below. A rejected command raises
`CommandRejectedError(code)` and changes nothing: every check runs before the
first change.

Where the rules leave room, the model takes these readings:
- a quote-budget buy stops at the first lot it cannot pay for, even part-way
  through a maker's quantity (it never reaches, so never STP-cancels, the
  makers behind);
- a FOK order that cannot fill completely changes nothing but itself: no
  trades and no STP cancels;
- a FOK market buy by quantity still needs the cost of the walk it would make
  available, like any market buy by quantity;
- stops triggered by the trades of a triggered stop queue up behind the stops
  already triggered (each batch in placement order);
- open GTD orders expire on `Tick` whatever their market's status, waiting stops
  included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from crossbook.domain.commands import (
    AmendOrder,
    CancelOrder,
    CreateAsset,
    CreateMarket,
    Deposit,
    PlaceOrder,
    SetMarketStatus,
    Tick,
    Withdraw,
)
from crossbook.domain.errors import ErrorCode
from crossbook.domain.markets import MarketStatus
from crossbook.domain.orders import (
    CloseReason,
    OrderStatus,
    OrderType,
    Side,
    StpMode,
    TimeInForce,
)

FEE_ACCOUNT = 0
PPM = 1_000_000
INT64_MAX = 2**63 - 1
CLIENT_ORDER_ID_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-"
)
OPEN_STATUSES = (OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED)


class CommandRejectedError(Exception):
    """The model refuses a command; nothing changed."""

    def __init__(self, code: ErrorCode) -> None:
        super().__init__(code)
        self.code = code


def ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class Spec:
    """A market's rules in integer units (derived from the decimal strings once)."""

    symbol: str
    base: str
    quote: str
    lot_base_units: int
    notional_units: int
    min_lots: int
    max_lots: int
    min_notional: int
    max_price: int
    maker_ppm: int
    taker_ppm: int

    def notional(self, price: int, lots: int) -> int:
        return price * lots * self.notional_units


@dataclass(eq=False)  # identity: `in` and `remove` must find this very order
class ModelOrder:
    order_id: int
    user_id: int
    symbol: str
    side: Side
    order_type: OrderType
    tif: TimeInForce
    price: int  # 0 for market orders
    quantity: int  # 0 for a quote-budget buy until it closes
    budget: int  # > 0 only for a quote-budget buy
    stop_price: int  # 0 unless a stop order
    client_order_id: str | None
    stp_mode: StpMode
    post_only: bool
    expire_at_ms: int | None
    status: OrderStatus = OrderStatus.OPEN
    close_reason: CloseReason | None = None
    filled: int = 0
    filled_notional: int = 0
    accrued: int = 0  # sum of notional * rate_ppm over this order's fills
    fee_paid: int = 0
    reserved: int = 0
    reserved_at_acceptance: int = 0
    triggered: bool = True  # False while a stop waits

    @property
    def remaining(self) -> int:
        return self.quantity - self.filled

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


@dataclass
class Trade:
    price: int
    lots: int
    notional: int
    taker_side: Side
    maker_order_id: int
    buyer_order_id: int
    seller_order_id: int
    buyer_user_id: int
    seller_user_id: int
    buyer_fee: int
    seller_fee: int


@dataclass
class Market:
    spec: Spec
    halted: bool = False
    last_price: int = 0  # 0 until the first trade
    # every resting order of both sides, oldest time priority first
    resting: list[ModelOrder] = field(default_factory=list)
    # stops not yet triggered, in placement order
    waiting_stops: list[ModelOrder] = field(default_factory=list)

    def queue(self, side: Side) -> list[ModelOrder]:
        """Resting orders of `side`, best price first, then time priority."""
        orders = [o for o in self.resting if o.side is side]
        if side is Side.BUY:
            return sorted(orders, key=lambda o: -o.price)  # sorted() is stable: time order kept
        return sorted(orders, key=lambda o: o.price)

    def best_price(self, side: Side) -> int | None:
        queue = self.queue(side)
        return queue[0].price if queue else None

    def l3(self) -> dict[Side, list[tuple[int, list[tuple[int, int]]]]]:
        book: dict[Side, list[tuple[int, list[tuple[int, int]]]]] = {}
        for side in (Side.BUY, Side.SELL):
            levels: list[tuple[int, list[tuple[int, int]]]] = []
            for order in self.queue(side):
                if not levels or levels[-1][0] != order.price:
                    levels.append((order.price, []))
                levels[-1][1].append((order.order_id, order.remaining))
            book[side] = levels
        return book


@dataclass
class Walk:
    """What a taker would do against the book right now (computed, nothing changed)."""

    steps: list[tuple[ModelOrder, int]] = field(default_factory=list)  # lots 0 = STP cancel
    filled: int = 0
    notional: int = 0
    accrued: int = 0  # the taker's accrued fee after the walk
    stopped_by_stp: bool = False
    budget_exhausted: bool = False  # met a lot the budget cannot pay for
    step_limit_hit: bool = False


class ReferenceExchange:
    def __init__(
        self, *, max_open_orders_per_user: int = 1_000, max_fills_per_order: int = 10_000
    ) -> None:
        self.max_open_orders_per_user = max_open_orders_per_user
        self.max_fills_per_order = max_fills_per_order
        self.asset_decimals: dict[str, int] = {}
        self.markets: dict[str, Market] = {}
        self.balances: dict[tuple[int, str], list[int]] = {}  # [available, locked]
        self.orders: dict[int, ModelOrder] = {}  # every order ever accepted
        self.trades: list[Trade] = []  # every trade ever
        self.now_ms = 0
        self.next_order_id = 1
        self._command_trades: list[Trade] = []

    # -- entry point ------------------------------------------------------------

    def execute(self, command: object) -> list[Trade]:
        """Apply `command` and return its trades, or raise `CommandRejectedError` (no change)."""
        self._command_trades = []
        if isinstance(command, CreateAsset):
            self._create_asset(command)
        elif isinstance(command, CreateMarket):
            self._create_market(command)
        elif isinstance(command, SetMarketStatus):
            self._set_market_status(command)
        elif isinstance(command, Deposit):
            self._deposit(command)
        elif isinstance(command, Withdraw):
            self._withdraw(command)
        elif isinstance(command, PlaceOrder):
            self._place(command)
        elif isinstance(command, CancelOrder):
            self._cancel(command)
        elif isinstance(command, AmendOrder):
            self._amend(command)
        elif isinstance(command, Tick):
            self._tick(command)
        else:
            raise TypeError(command)
        return self._command_trades

    # -- reads --------------------------------------------------------------------

    def open_orders(self) -> list[ModelOrder]:
        """Resting orders and waiting stops: exactly the orders still open."""
        return [o for m in self.markets.values() for o in (*m.resting, *m.waiting_stops)]

    def balance(self, user_id: int, asset: str) -> list[int]:
        return self.balances.setdefault((user_id, asset), [0, 0])

    def nonzero_balances(self) -> dict[tuple[int, str], tuple[int, int]]:
        return {key: (a, b) for key, (a, b) in self.balances.items() if a or b}

    # -- administration -------------------------------------------------------------

    def _create_asset(self, cmd: CreateAsset) -> None:
        if cmd.code in self.asset_decimals:
            raise CommandRejectedError(ErrorCode.ASSET_EXISTS)
        self.asset_decimals[cmd.code] = cmd.decimals

    def _create_market(self, cmd: CreateMarket) -> None:
        """Only well-formed market rules are modelled (the tests create no others)."""
        for code in (cmd.base, cmd.quote):
            if code not in self.asset_decimals:
                raise CommandRejectedError(ErrorCode.ASSET_NOT_FOUND)
        symbol = f"{cmd.base}/{cmd.quote}"
        if symbol in self.markets:
            raise CommandRejectedError(ErrorCode.MARKET_EXISTS)
        base_scale = Decimal(10) ** self.asset_decimals[cmd.base]
        quote_scale = Decimal(10) ** self.asset_decimals[cmd.quote]
        tick, lot = Decimal(cmd.tick_size), Decimal(cmd.lot_size)
        assert cmd.max_price is not None, "the tests always give a max_price"
        spec = Spec(
            symbol=symbol,
            base=cmd.base,
            quote=cmd.quote,
            lot_base_units=_exact_int(lot * base_scale),
            notional_units=_exact_int(tick * lot * quote_scale),
            min_lots=_exact_int(Decimal(cmd.min_quantity) / lot),
            max_lots=_exact_int(Decimal(cmd.max_quantity) / lot),
            min_notional=_exact_int(Decimal(cmd.min_notional) * quote_scale),
            max_price=_exact_int(Decimal(cmd.max_price) / tick),
            maker_ppm=_exact_int(Decimal(cmd.maker_fee_rate) * PPM),
            taker_ppm=_exact_int(Decimal(cmd.taker_fee_rate) * PPM),
        )
        self.markets[symbol] = Market(spec)

    def _set_market_status(self, cmd: SetMarketStatus) -> None:
        market = self._market(cmd.symbol)
        if not isinstance(cmd.status, MarketStatus):
            raise CommandRejectedError(ErrorCode.INVALID_MARKET_SPEC)
        market.halted = cmd.status is MarketStatus.HALTED

    def _deposit(self, cmd: Deposit) -> None:
        self._check_asset(cmd.asset)
        self._check_user(cmd.user_id, fee_account_allowed=True)
        available, locked = self.balance(cmd.user_id, cmd.asset)
        if not is_int(cmd.amount_units) or not 0 < cmd.amount_units <= INT64_MAX - (
            available + locked
        ):
            raise CommandRejectedError(ErrorCode.INVALID_AMOUNT)
        self.balance(cmd.user_id, cmd.asset)[0] += cmd.amount_units

    def _withdraw(self, cmd: Withdraw) -> None:
        self._check_asset(cmd.asset)
        self._check_user(cmd.user_id, fee_account_allowed=True)
        if not is_int(cmd.amount_units) or not 0 < cmd.amount_units <= INT64_MAX:
            raise CommandRejectedError(ErrorCode.INVALID_AMOUNT)
        if self.balance(cmd.user_id, cmd.asset)[0] < cmd.amount_units:
            raise CommandRejectedError(ErrorCode.INSUFFICIENT_BALANCE)
        self.balance(cmd.user_id, cmd.asset)[0] -= cmd.amount_units

    def _tick(self, cmd: Tick) -> None:
        """Time only moves forward; open GTD orders (resting or waiting stops) that are due
        expire (reason gtd_expired)."""
        self.now_ms = max(self.now_ms, cmd.now_ms)
        due = [
            o
            for o in self.open_orders()
            if o.expire_at_ms is not None and o.expire_at_ms <= self.now_ms
        ]
        for order in sorted(due, key=lambda o: (o.expire_at_ms, o.order_id)):
            self._close(order, OrderStatus.EXPIRED, CloseReason.GTD_EXPIRED)

    # -- placing an order -------------------------------------------------------------

    def _place(self, cmd: PlaceOrder) -> None:
        """Checks, in order: market exists, market active, user, the order's shape,
        open-order count, client order id free, stop not already triggered / post-only
        not taking, funds; then accept, reserve, and match (or wait, for a stop)."""
        market = self._market(cmd.symbol)
        if market.halted:
            raise CommandRejectedError(ErrorCode.MARKET_HALTED)
        self._check_user(cmd.user_id, fee_account_allowed=False)
        spec = market.spec
        self._check_shape(spec, cmd)
        mine = [o for o in self.open_orders() if o.user_id == cmd.user_id]
        if len(mine) >= self.max_open_orders_per_user:
            raise CommandRejectedError(ErrorCode.TOO_MANY_OPEN_ORDERS)
        if cmd.client_order_id is not None and any(
            o.client_order_id == cmd.client_order_id for o in mine
        ):
            raise CommandRejectedError(ErrorCode.DUPLICATE_CLIENT_ORDER_ID)
        is_market = cmd.order_type in (OrderType.MARKET, OrderType.STOP_MARKET)
        tif = cmd.time_in_force
        if is_market and tif is not TimeInForce.FOK:
            tif = TimeInForce.IOC  # market orders never rest
        order = ModelOrder(
            order_id=self.next_order_id,
            user_id=cmd.user_id,
            symbol=spec.symbol,
            side=cmd.side,
            order_type=cmd.order_type,
            tif=tif,
            price=cmd.price_ticks,
            quantity=cmd.quantity_lots,
            budget=cmd.quote_budget_units,
            stop_price=cmd.stop_price_ticks,
            client_order_id=cmd.client_order_id,
            stp_mode=cmd.stp_mode,
            post_only=cmd.post_only,
            expire_at_ms=cmd.expire_at_ms,
            triggered=cmd.stop_price_ticks == 0,
        )
        if not order.triggered:
            if market.last_price and self._stop_condition_holds(order, market.last_price):
                raise CommandRejectedError(ErrorCode.STOP_WOULD_TRIGGER)
        elif order.post_only and self._would_cross(market, order.side, order.price):
            raise CommandRejectedError(ErrorCode.POST_ONLY_WOULD_TAKE)
        reservation = self._initial_reservation(market, order)
        if self._available(order.user_id, self._reserve_asset(spec, order)) < reservation:
            raise CommandRejectedError(ErrorCode.INSUFFICIENT_BALANCE)
        # -- accepted -----------------------------------------------------------
        self.next_order_id += 1
        self.orders[order.order_id] = order
        self._lock(order, reservation)
        order.reserved_at_acceptance = reservation
        if not order.triggered:
            market.waiting_stops.append(order)
            return
        self._take(market, order)
        self._fire_stops(market)

    def _check_shape(self, spec: Spec, cmd: PlaceOrder) -> None:
        """The order's own fields, checked in a fixed order (the first fault decides)."""
        for value, kind in (
            (cmd.side, Side),
            (cmd.order_type, OrderType),
            (cmd.time_in_force, TimeInForce),
            (cmd.stp_mode, StpMode),
        ):
            if not isinstance(value, kind):
                raise CommandRejectedError(ErrorCode.INVALID_ORDER)
        if not isinstance(cmd.post_only, bool):
            raise CommandRejectedError(ErrorCode.INVALID_ORDER)
        has_limit_price = cmd.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT)
        is_stop = cmd.order_type in (OrderType.STOP_LIMIT, OrderType.STOP_MARKET)
        if has_limit_price:
            if cmd.quote_budget_units:
                raise CommandRejectedError(ErrorCode.INVALID_ORDER)
            self._check_price(spec, cmd.price_ticks, ErrorCode.INVALID_PRICE)
            self._check_quantity(spec, cmd.quantity_lots)
            if spec.notional(cmd.price_ticks, cmd.quantity_lots) < spec.min_notional:
                raise CommandRejectedError(ErrorCode.MIN_NOTIONAL)
            if cmd.post_only and cmd.time_in_force not in (TimeInForce.GTC, TimeInForce.GTD):
                raise CommandRejectedError(ErrorCode.INVALID_ORDER)
        else:
            if cmd.price_ticks or cmd.post_only:
                raise CommandRejectedError(ErrorCode.INVALID_ORDER)
            budget = cmd.quote_budget_units
            if cmd.quantity_lots and budget:
                raise CommandRejectedError(ErrorCode.INVALID_ORDER)
            if budget:
                if cmd.side is not Side.BUY or cmd.time_in_force is TimeInForce.FOK:
                    raise CommandRejectedError(ErrorCode.INVALID_ORDER)
                if not is_int(budget) or not 0 < budget <= INT64_MAX:
                    raise CommandRejectedError(ErrorCode.INVALID_QUANTITY)
                if budget < spec.min_notional:
                    raise CommandRejectedError(ErrorCode.MIN_NOTIONAL)
            else:
                if cmd.order_type is OrderType.STOP_MARKET and cmd.side is Side.BUY:
                    raise CommandRejectedError(ErrorCode.INVALID_ORDER)  # needs a quote budget
                self._check_quantity(spec, cmd.quantity_lots)
        if is_stop:
            self._check_price(spec, cmd.stop_price_ticks, ErrorCode.INVALID_STOP_PRICE)
        elif cmd.stop_price_ticks:
            raise CommandRejectedError(ErrorCode.INVALID_ORDER)
        if cmd.time_in_force is TimeInForce.GTD:
            if not has_limit_price:
                raise CommandRejectedError(ErrorCode.INVALID_ORDER)
            if not is_int(cmd.expire_at_ms) or cmd.expire_at_ms <= self.now_ms:  # type: ignore[operator]
                raise CommandRejectedError(ErrorCode.INVALID_EXPIRY)
        elif cmd.expire_at_ms is not None:
            raise CommandRejectedError(ErrorCode.INVALID_EXPIRY)
        cid = cmd.client_order_id
        if cid is not None and (
            not isinstance(cid, str)
            or not 1 <= len(cid) <= 64
            or any(c not in CLIENT_ORDER_ID_CHARS for c in cid)
        ):
            raise CommandRejectedError(ErrorCode.INVALID_ORDER)

    @staticmethod
    def _check_price(spec: Spec, price: object, code: ErrorCode) -> None:
        if not is_int(price) or not 0 < price <= spec.max_price:  # type: ignore[operator]
            raise CommandRejectedError(code)

    @staticmethod
    def _check_quantity(spec: Spec, lots: object) -> None:
        if not is_int(lots) or not spec.min_lots <= lots <= spec.max_lots:  # type: ignore[operator]
            raise CommandRejectedError(ErrorCode.INVALID_QUANTITY)

    def _initial_reservation(self, market: Market, order: ModelOrder) -> int:
        spec = market.spec
        if order.side is Side.SELL:
            return order.quantity * spec.lot_base_units
        if order.budget:
            return order.budget
        if order.price:
            return self._buy_limit_reservation(spec, order, order.price, order.quantity)
        walk = self._walk(market, order)  # market buy by base quantity: its exact cost now
        return walk.notional + ceil_div(walk.accrued, PPM) - order.fee_paid

    @staticmethod
    def _buy_limit_reservation(spec: Spec, order: ModelOrder, price: int, remaining: int) -> int:
        notional = spec.notional(price, remaining)
        worst_rate = max(spec.maker_ppm, spec.taker_ppm)
        return notional + ceil_div(order.accrued + notional * worst_rate, PPM) - order.fee_paid

    # -- matching ---------------------------------------------------------------------

    @staticmethod
    def _crosses(taker: ModelOrder, maker_price: int) -> bool:
        if taker.price == 0:  # market order: any price
            return True
        return maker_price <= taker.price if taker.side is Side.BUY else maker_price >= taker.price

    def _would_cross(self, market: Market, side: Side, price: int) -> bool:
        best = market.best_price(Side.SELL if side is Side.BUY else Side.BUY)
        if best is None:
            return False
        return best <= price if side is Side.BUY else best >= price

    def _walk(self, market: Market, taker: ModelOrder) -> Walk:
        """The steps `taker` would take against the book now, best price first, FIFO."""
        spec = market.spec
        walk = Walk(accrued=taker.accrued)
        opposite = Side.SELL if taker.side is Side.BUY else Side.BUY
        for maker in market.queue(opposite):
            if not self._crosses(taker, maker.price):
                break
            if not taker.budget and walk.filled == taker.remaining:
                break
            if len(walk.steps) == self.max_fills_per_order:
                walk.step_limit_hit = True
                break
            if maker.user_id == taker.user_id and taker.stp_mode is not StpMode.NONE:
                if taker.stp_mode in (StpMode.CANCEL_MAKER, StpMode.CANCEL_BOTH):
                    walk.steps.append((maker, 0))
                if taker.stp_mode in (StpMode.CANCEL_TAKER, StpMode.CANCEL_BOTH):
                    walk.stopped_by_stp = True
                    break
                continue
            if taker.budget:
                lots = self._affordable_lots(spec, taker, walk, maker)
                if lots < maker.remaining:
                    walk.budget_exhausted = True  # not even one more lot fits the budget
            else:
                lots = min(maker.remaining, taker.remaining - walk.filled)
            if lots:
                notional = spec.notional(maker.price, lots)
                walk.steps.append((maker, lots))
                walk.filled += lots
                walk.notional += notional
                walk.accrued += notional * spec.taker_ppm
            if walk.budget_exhausted:
                break
        return walk

    @staticmethod
    def _affordable_lots(spec: Spec, taker: ModelOrder, walk: Walk, maker: ModelOrder) -> int:
        """Most lots of `maker` whose cumulative notional + cumulative fee fit the budget."""

        def spent_after(lots: int) -> int:
            notional = spec.notional(maker.price, lots)
            fee_total = ceil_div(walk.accrued + notional * spec.taker_ppm, PPM)
            return walk.notional + notional + fee_total

        lots = 0
        while lots < maker.remaining and spent_after(lots + 1) <= taker.budget:
            lots += 1
        return lots

    def _take(self, market: Market, taker: ModelOrder) -> None:
        """`taker` trades against the book, then rests or closes.

        FOK: all of it now or nothing (an STP stop counts as not all): expired
        unfilled_fok (fill_limit if the step limit cut the walk), with no trades and
        no STP cancels. Otherwise every step is applied; the order then closes filled /
        cancelled by STP / expired (the step limit cut it, whatever its type:
        fill_limit; market: no_liquidity; IOC: unfilled_ioc), or rests.
        """
        walk = self._walk(market, taker)
        if taker.tif is TimeInForce.FOK and (walk.filled < taker.remaining or walk.stopped_by_stp):
            reason = CloseReason.FILL_LIMIT if walk.step_limit_hit else CloseReason.UNFILLED_FOK
            self._close(taker, OrderStatus.EXPIRED, reason)
            return
        for maker, lots in walk.steps:
            if lots:
                self._fill(market, taker, maker, lots)
            else:
                self._close(maker, OrderStatus.CANCELLED, CloseReason.SELF_TRADE_PREVENTION)
        if taker.budget:
            done = walk.budget_exhausted and taker.filled > 0
        else:
            done = taker.filled == taker.quantity
        if done:
            self._close(taker, OrderStatus.FILLED, CloseReason.FILLED)
        elif walk.stopped_by_stp:
            self._close(taker, OrderStatus.CANCELLED, CloseReason.SELF_TRADE_PREVENTION)
        elif walk.step_limit_hit:
            self._close(taker, OrderStatus.EXPIRED, CloseReason.FILL_LIMIT)
        elif taker.price == 0:
            self._close(taker, OrderStatus.EXPIRED, CloseReason.NO_LIQUIDITY)
        elif taker.tif is TimeInForce.IOC:
            self._close(taker, OrderStatus.EXPIRED, CloseReason.UNFILLED_IOC)
        else:
            self._rest(market, taker)

    def _fill(self, market: Market, taker: ModelOrder, maker: ModelOrder, lots: int) -> None:
        spec = market.spec
        price = maker.price
        notional = spec.notional(price, lots)
        base_units = lots * spec.lot_base_units
        maker_fee = self._charge_fee(maker, notional, spec.maker_ppm)
        taker_fee = self._charge_fee(taker, notional, spec.taker_ppm)
        if taker.side is Side.BUY:
            buyer, seller, buyer_fee, seller_fee = taker, maker, taker_fee, maker_fee
        else:
            buyer, seller, buyer_fee, seller_fee = maker, taker, maker_fee, taker_fee
        self._spend_locked(buyer, spec.quote, notional + buyer_fee)
        self._spend_locked(seller, spec.base, base_units)
        self.balance(buyer.user_id, spec.base)[0] += base_units
        self.balance(seller.user_id, spec.quote)[0] += notional - seller_fee
        self.balance(FEE_ACCOUNT, spec.quote)[0] += buyer_fee + seller_fee
        for order in (maker, taker):
            order.filled += lots
            order.filled_notional += notional
        market.last_price = price
        trade = Trade(
            price=price,
            lots=lots,
            notional=notional,
            taker_side=taker.side,
            maker_order_id=maker.order_id,
            buyer_order_id=buyer.order_id,
            seller_order_id=seller.order_id,
            buyer_user_id=buyer.user_id,
            seller_user_id=seller.user_id,
            buyer_fee=buyer_fee,
            seller_fee=seller_fee,
        )
        self.trades.append(trade)
        self._command_trades.append(trade)
        taker.status = OrderStatus.PARTIALLY_FILLED  # until it closes, below
        if maker.remaining == 0:
            self._close(maker, OrderStatus.FILLED, CloseReason.FILLED)
        else:
            maker.status = OrderStatus.PARTIALLY_FILLED
        for order in (maker, taker):
            if order.is_open and order.side is Side.BUY and order.price:
                self._trim_buy_reservation(spec, order)

    @staticmethod
    def _charge_fee(order: ModelOrder, notional: int, rate_ppm: int) -> int:
        """Cumulative per-order rounding: the fee is the increase of ceil(accrued / 1e6)."""
        order.accrued += notional * rate_ppm
        paid_now = ceil_div(order.accrued, PPM)
        fee = paid_now - order.fee_paid
        order.fee_paid = paid_now
        return fee

    def _rest(self, market: Market, order: ModelOrder) -> None:
        assert order.price > 0 and order.remaining > 0, order
        if order.side is Side.BUY:
            self._trim_buy_reservation(market.spec, order)
        market.resting.append(order)  # the back of the queue: the newest time priority

    # -- stops ------------------------------------------------------------------------

    @staticmethod
    def _stop_condition_holds(order: ModelOrder, last_price: int) -> bool:
        if order.side is Side.BUY:
            return last_price >= order.stop_price
        return last_price <= order.stop_price

    def _fire_stops(self, market: Market) -> None:
        """Stops whose condition holds at the last price trigger in placement order; the
        trades of each triggered order may trigger more, which queue up behind."""
        queue = self._pop_triggered(market)
        while queue:
            order = queue.pop(0)
            self._trigger(market, order)
            queue.extend(self._pop_triggered(market))

    def _pop_triggered(self, market: Market) -> list[ModelOrder]:
        if not market.last_price:
            return []
        fired = [
            o for o in market.waiting_stops if self._stop_condition_holds(o, market.last_price)
        ]
        market.waiting_stops = [o for o in market.waiting_stops if o not in fired]
        return fired

    def _trigger(self, market: Market, order: ModelOrder) -> None:
        """A triggered stop is a new taker (stop-limit: limit with its TIF; stop-market:
        market); a post-only one that would take is closed rejected."""
        order.triggered = True
        if order.post_only and self._would_cross(market, order.side, order.price):
            self._close(order, OrderStatus.REJECTED, CloseReason.POST_ONLY_WOULD_TAKE)
            return
        self._take(market, order)

    # -- cancel and amend -------------------------------------------------------------

    def _cancel(self, cmd: CancelOrder) -> None:
        """By order id (wins if both given) or client order id; only the caller's open
        orders; allowed while the market is halted."""
        order = self._find_open_order(cmd.user_id, cmd.order_id, cmd.client_order_id)
        self._close(order, OrderStatus.CANCELLED, CloseReason.CANCELLED_BY_USER)

    def _amend(self, cmd: AmendOrder) -> None:
        """Resting limit orders only. Reducing the quantity at the same price keeps time
        priority; anything else goes to the back and may trade at once as a taker."""
        order = self._find_open_order(cmd.user_id, cmd.order_id, None)
        market = self.markets[order.symbol]
        spec = market.spec
        if market.halted:
            raise CommandRejectedError(ErrorCode.MARKET_HALTED)
        if order not in market.resting:
            raise CommandRejectedError(ErrorCode.ORDER_NOT_AMENDABLE)
        quantity = order.quantity if cmd.quantity_lots is None else cmd.quantity_lots
        price = order.price if cmd.price_ticks is None else cmd.price_ticks
        self._check_quantity(spec, quantity)
        self._check_price(spec, price, ErrorCode.INVALID_PRICE)
        if quantity <= order.filled:
            raise CommandRejectedError(ErrorCode.INVALID_QUANTITY)
        if quantity == order.quantity and price == order.price:
            raise CommandRejectedError(ErrorCode.INVALID_ORDER)
        if spec.notional(price, quantity) < spec.min_notional:
            raise CommandRejectedError(ErrorCode.MIN_NOTIONAL)
        keeps_priority = price == order.price and quantity < order.quantity
        if order.post_only and not keeps_priority and self._would_cross(market, order.side, price):
            raise CommandRejectedError(ErrorCode.POST_ONLY_WOULD_TAKE)
        if order.side is Side.SELL:
            needed = (quantity - order.filled) * spec.lot_base_units
        else:
            needed = self._buy_limit_reservation(spec, order, price, quantity - order.filled)
        asset = self._reserve_asset(spec, order)
        if needed > order.reserved and self._available(order.user_id, asset) < (
            needed - order.reserved
        ):
            raise CommandRejectedError(ErrorCode.INSUFFICIENT_BALANCE)
        # -- accepted -----------------------------------------------------------
        self._lock(order, needed - order.reserved)  # a negative amount releases
        order.quantity = quantity
        if keeps_priority:
            return
        market.resting.remove(order)
        order.price = price
        self._take(market, order)
        self._fire_stops(market)

    def _find_open_order(
        self, user_id: int, order_id: int | None, client_order_id: str | None
    ) -> ModelOrder:
        if order_id is not None:
            found = self.orders.get(order_id) if is_int(order_id) else None
        elif isinstance(client_order_id, str):
            found = next(
                (
                    o
                    for o in self.open_orders()
                    if o.user_id == user_id and o.client_order_id == client_order_id
                ),
                None,
            )
        else:
            raise CommandRejectedError(ErrorCode.INVALID_ORDER)
        if found is None or not found.is_open or found.user_id != user_id:
            raise CommandRejectedError(ErrorCode.ORDER_NOT_FOUND)
        return found

    # -- closing and money ------------------------------------------------------------

    def _close(self, order: ModelOrder, status: OrderStatus, reason: CloseReason) -> None:
        """Terminal: out of the book / stop list, everything it holds released."""
        market = self.markets[order.symbol]
        if order in market.resting:
            market.resting.remove(order)
        if order in market.waiting_stops:
            market.waiting_stops.remove(order)
        order.status = status
        order.close_reason = reason
        if order.budget:
            order.quantity = order.filled
        self._lock(order, -order.reserved)

    def _trim_buy_reservation(self, spec: Spec, order: ModelOrder) -> None:
        needed = self._buy_limit_reservation(spec, order, order.price, order.remaining)
        assert needed <= order.reserved, ("reservation would grow after a fill", order, needed)
        self._lock(order, needed - order.reserved)

    def _lock(self, order: ModelOrder, amount: int) -> None:
        """Move `amount` (negative: release) between the owner's available and locked."""
        spec = self.markets[order.symbol].spec
        balance = self.balance(order.user_id, self._reserve_asset(spec, order))
        balance[0] -= amount
        balance[1] += amount
        order.reserved += amount
        assert balance[0] >= 0 and balance[1] >= 0 and order.reserved >= 0, (order, balance)

    def _spend_locked(self, order: ModelOrder, asset: str, amount: int) -> None:
        balance = self.balance(order.user_id, asset)
        balance[1] -= amount
        order.reserved -= amount
        assert balance[1] >= 0 and order.reserved >= 0, ("spent more than locked", order)

    def _available(self, user_id: int, asset: str) -> int:
        return self.balances.get((user_id, asset), [0, 0])[0]

    @staticmethod
    def _reserve_asset(spec: Spec, order: ModelOrder) -> str:
        return spec.quote if order.side is Side.BUY else spec.base

    # -- lookups ----------------------------------------------------------------------

    def _market(self, symbol: str) -> Market:
        market = self.markets.get(symbol)
        if market is None:
            raise CommandRejectedError(ErrorCode.MARKET_NOT_FOUND)
        return market

    def _check_asset(self, code: str) -> None:
        if code not in self.asset_decimals:
            raise CommandRejectedError(ErrorCode.ASSET_NOT_FOUND)

    @staticmethod
    def _check_user(user_id: object, *, fee_account_allowed: bool) -> None:
        lowest = FEE_ACCOUNT if fee_account_allowed else FEE_ACCOUNT + 1
        if not is_int(user_id) or not lowest <= user_id <= INT64_MAX:  # type: ignore[operator]
            raise CommandRejectedError(ErrorCode.INVALID_USER)


def _exact_int(value: Decimal) -> int:
    assert value == value.to_integral_value(), value
    return int(value)
