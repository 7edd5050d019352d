"""The real `Exchange` against the naive reference model, command by command.

A Hypothesis state machine sends the same random commands (deposits,
withdrawals, every kind of order, malformed orders, cancels, amends, time,
halts) to both, and checks after every step that they agree on:
- acceptance, and the rejection code (a rejection must leave the real state
  digest unchanged);
- the trades, every field, in order;
- every order ever placed: status, filled quantity and notional, fee paid,
  reservation, quantity, price, close reason (from the real events), and the
  reservation and effective time in force it was accepted with;
- the open orders (with their reservations and fees), the L3 book, depth, best
  prices and spread, the waiting stops, last prices and market status;
- every balance, available and locked.
It also checks `invariants.check_all` and `check_fills_match_trades`, that `seq` and
each market's `market_seq` are gap-free, that `take_balance_changes` names every
balance a command changed, once, with its final value, that `touched_orders` names
exactly the orders in the events, and at the end that a replay from scratch,
restored halfway from a JSON round trip of `Exchange.state()`, reproduces every
event and rejection.

The grids are small on purpose: prices within a few ticks of 100, quantities
of 1-20 lots, three users, so orders collide, self-trade, partially fill and
trigger stops often. Both markets have one quote minor unit per tick × lot, so
fees of a few units are rounded up on nearly every fill; ETH/USDT has a maker
rate above its taker rate and a minimum order value of two lots at 100. A few
rules build situations random orders rarely reach: stop cascades, mass
cancellation of stops, repricing onto the opposite best price.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from crossbook.domain import (
    AmendOrder,
    AssetCreated,
    CancelOrder,
    CloseReason,
    CreateAsset,
    CreateMarket,
    Deposit,
    Deposited,
    DomainError,
    ErrorCode,
    Event,
    Exchange,
    ExchangeLimits,
    MarketCreated,
    MarketStatus,
    OrderAccepted,
    OrderStatus,
    OrderType,
    OrderUpdated,
    PlaceOrder,
    SetMarketStatus,
    Side,
    StpMode,
    Tick,
    TimeInForce,
    TradeExecuted,
    Withdraw,
    Withdrawn,
)
from crossbook.domain.invariants import check_all, check_fills_match_trades
from crossbook.domain.snapshot import restore

from reference_model import CommandRejectedError, ReferenceExchange, Trade

BTC = "BTC/USDT"
ETH = "ETH/USDT"
USERS = (1, 2, 3)
ASSETS = ("BTC", "ETH", "USDT")

SETUP_COMMANDS: tuple[Any, ...] = (
    *(CreateAsset(code, 8) for code in ASSETS),
    # 1 tick × 1 lot = 0.0001 × 0.0001 = 1e-8 USDT = 1 unit; a lot is 10_000 BTC units
    CreateMarket(
        "BTC",
        "USDT",
        tick_size="0.0001",
        lot_size="0.0001",
        min_quantity="0.0001",
        max_quantity="100",
        max_price="0.02",  # 200 ticks
        maker_fee_rate="0.0005",
        taker_fee_rate="0.001",
    ),
    # 1 tick × 1 lot = 0.01 × 0.000001 = 1e-8 USDT = 1 unit; a lot is 100 ETH units;
    # maker rate above taker rate; minimum value 200 units (2 lots at 100)
    CreateMarket(
        "ETH",
        "USDT",
        tick_size="0.01",
        lot_size="0.000001",
        min_quantity="0.000001",
        max_quantity="1",
        max_price="2",  # 200 ticks
        min_notional="0.000002",
        maker_fee_rate="0.003",
        taker_fee_rate="0.002",
    ),
    *(
        Deposit(user, asset, amount)
        for user in USERS
        for asset, amount in (("USDT", 60_000), ("BTC", 1_000_000), ("ETH", 10_000))
    ),
)
DEPOSIT_STEP_UNITS = {"BTC": 10_000, "ETH": 100, "USDT": 1_000, "XRP": 1}

users = st.sampled_from(USERS)
symbols = st.sampled_from((BTC, ETH))
sides = st.sampled_from((Side.BUY, Side.SELL))
prices = st.integers(95, 105)
# a stop this many ticks beyond the last price; <= 0 would trigger at once (refused)
stop_offsets = st.sampled_from((1, 1, 2, 2, 3, 4, 0, -1))
limit_offsets = st.integers(-1, 3)  # a stop-limit's price beyond its stop price
quantities = st.integers(1, 20)
budgets = st.integers(50, 3_000)
stp_modes = st.sampled_from(tuple(StpMode))
client_ids = st.sampled_from((None, None, None, "a", "b", "c"))
post_only_flags = st.sampled_from((False, False, False, True))
limit_tifs = st.sampled_from(
    (TimeInForce.GTC, TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK, TimeInForce.GTD)
)
# a delay <= 0 is not in the future (INVALID_EXPIRY): one draw in ten
expire_delays = st.integers(-2, 27).map(lambda n: n * 100 if n > 0 else n // 2)
picks = st.integers(0, 63)
order_sources = st.sampled_from(
    ("resting", "resting", "resting", "partially_filled", "open", "any", "unknown")
)


@dataclass
class OrderView:
    """What the real exchange's events say about one order."""

    status: OrderStatus
    filled: int
    filled_notional: int
    fee_paid: int
    reserved: int
    quantity: int
    price: int
    reason: CloseReason | None


def trade_of(event: TradeExecuted) -> Trade:
    return Trade(
        price=event.price_ticks,
        lots=event.quantity_lots,
        notional=event.notional_units,
        taker_side=event.taker_side,
        maker_order_id=event.maker_order_id,
        buyer_order_id=event.buyer_order_id,
        seller_order_id=event.seller_order_id,
        buyer_user_id=event.buyer_user_id,
        seller_user_id=event.seller_user_id,
        buyer_fee=event.buyer_fee_units,
        seller_fee=event.seller_fee_units,
    )


def market_symbol(event: Event) -> str | None:
    """The market an event belongs to, or None for a non-market event."""
    if isinstance(event, MarketCreated):
        return event.spec.symbol
    if isinstance(event, AssetCreated | Deposited | Withdrawn):
        return None
    symbol: str = event.symbol  # type: ignore[attr-defined]
    return symbol


class ExchangeVersusReference(RuleBasedStateMachine):
    limits = ExchangeLimits()

    def __init__(self) -> None:
        super().__init__()
        self.exchange = Exchange(self.limits)
        self.model = ReferenceExchange(
            max_open_orders_per_user=self.limits.max_open_orders_per_user,
            max_fills_per_order=self.limits.max_fills_per_order,
        )
        self.trades: list[TradeExecuted] = []
        self.order_views: dict[int, OrderView] = {}
        self.accepted: dict[int, tuple[int, TimeInForce]] = {}  # reservation, effective TIF
        self.commands: list[Any] = []
        self.outcomes: list[ErrorCode | list[dict[str, Any]]] = []
        self.last_seq = 0
        self.market_seqs: dict[str, int] = {}
        self.last_error: ErrorCode | None = None
        for command in SETUP_COMMANDS:
            self.execute(command)
            assert self.last_error is None, (command, self.last_error)

    # -- running one command on both ------------------------------------------------

    def execute(self, command: Any) -> None:
        """Run `command` on the model and the exchange; they must agree on the outcome."""
        model_error: ErrorCode | None = None
        model_trades: list[Trade] = []
        try:
            model_trades = self.model.execute(command)
        except CommandRejectedError as rejection:
            model_error = rejection.code
        # the digest is costly: take it only when a rejection (that must change nothing) is due
        digest_before = self.exchange.state_digest() if model_error else None
        real_error: ErrorCode | None = None
        events: list[Event] = []
        balances_before = self.balances()
        try:
            events = self.exchange.execute(command)
        except DomainError as error:
            real_error = error.code
        assert real_error == model_error, (
            f"{command}: exchange {real_error or 'accepted'}, model {model_error or 'accepted'}"
        )
        self.last_error = real_error
        self.commands.append(command)
        self.outcomes.append(real_error or [e.to_dict() for e in events])
        if real_error is not None:
            assert self.exchange.state_digest() == digest_before, f"{command} rejected, yet changed"
            return
        self.record(events)
        self.check_balance_changes(balances_before)
        changed = {e.order_id for e in events if isinstance(e, OrderAccepted | OrderUpdated)}
        assert set(self.exchange.touched_orders) == changed, "touched orders differ from events"
        real_trades = [trade_of(e) for e in events if isinstance(e, TradeExecuted)]
        assert real_trades == model_trades, f"{command}: trades differ"

    def record(self, events: list[Event]) -> None:
        """Check the events' sequence numbers and keep what they say about orders."""
        for event in events:
            assert event.seq == self.last_seq + 1, f"seq gap before {event}"
            self.last_seq = event.seq
            assert event.ts_ms == self.exchange.now_ms, event
            symbol = market_symbol(event)
            if symbol is None:
                assert event.market_seq == 0, event
            else:
                expected = self.market_seqs.get(symbol, 0) + 1
                assert event.market_seq == expected, f"market_seq gap before {event}"
                self.market_seqs[symbol] = expected
            if isinstance(event, TradeExecuted):
                self.trades.append(event)
            elif isinstance(event, OrderAccepted):
                assert event.order_id not in self.order_views, event
                self.order_views[event.order_id] = OrderView(
                    OrderStatus.OPEN,
                    0,
                    0,
                    0,
                    event.reserved_units,
                    event.quantity_lots,
                    event.price_ticks,
                    None,
                )
                self.accepted[event.order_id] = (event.reserved_units, event.time_in_force)
            elif isinstance(event, OrderUpdated):
                self.order_views[event.order_id] = OrderView(
                    event.status,
                    event.filled_lots,
                    event.filled_notional_units,
                    event.fee_paid_units,
                    event.reserved_units,
                    event.quantity_lots,
                    event.price_ticks,
                    event.reason,
                )

    def balances(self) -> dict[tuple[int, str], tuple[int, int]]:
        return {k: (b.available, b.locked) for k, b in self.exchange.ledger.balances.items()}

    def check_balance_changes(self, before: dict[tuple[int, str], tuple[int, int]]) -> None:
        """Every balance the command changed is taken once, with its new value."""
        changes = self.exchange.take_balance_changes()
        keys = [(user, asset) for user, asset, _, _ in changes]
        assert len(keys) == len(set(keys)), f"a balance reported twice: {keys}"
        now = self.balances()
        for user, asset, available, locked in changes:
            assert (available, locked) == now[(user, asset)]
        moved = {key for key, value in now.items() if before.get(key, (0, 0)) != value}
        assert moved <= set(keys), f"changed but not reported: {moved - set(keys)}"

    def stop_price(self, symbol: str, side: Side, offset: int) -> int:
        """A stop `offset` ticks beyond the market's last price (100 before any trade)."""
        last = self.exchange.market(symbol).last_price_ticks or 100
        return last + offset if side is Side.BUY else last - offset

    def place(self, **fields: Any) -> None:
        self.execute(PlaceOrder(**fields))

    def expire_at(self, tif: TimeInForce, delay_ms: int) -> int | None:
        return self.exchange.now_ms + delay_ms if tif is TimeInForce.GTD else None

    def pick_order(self, pick: int, source: str) -> int:
        """An order id the model knows, or an unknown one: `source` says from which set."""
        if source == "resting":
            candidates = [o.order_id for m in self.model.markets.values() for o in m.resting]
        elif source == "partially_filled":
            candidates = [o.order_id for o in self.model.open_orders() if o.filled]
        elif source == "open":
            candidates = [o.order_id for o in self.model.open_orders()]
        elif source == "any":
            candidates = list(self.model.orders)  # closed ones too
        else:
            candidates = []
        candidates.sort()
        return candidates[pick % len(candidates)] if candidates else 10**6

    @initialize(
        orders=st.lists(
            st.tuples(users, symbols, sides, prices, quantities), min_size=2, max_size=16
        )
    )
    def seed_books(self, orders: list[tuple[int, str, Side, int, int]]) -> None:
        """Start with some resting liquidity (crossing ones trade at once)."""
        for user, symbol, side, price, quantity in orders:
            self.place_resting(user, symbol, side, price, quantity)

    def place_resting(self, user: int, symbol: str, side: Side, price: int, quantity: int) -> None:
        self.place(
            user_id=user,
            symbol=symbol,
            side=side,
            order_type=OrderType.LIMIT,
            price_ticks=price,
            quantity_lots=quantity,
        )

    # -- money -------------------------------------------------------------------------

    @rule(
        user=st.sampled_from((0, *USERS, -1)),
        asset=st.sampled_from((*ASSETS, "USDT", "XRP")),
        steps=st.integers(-1, 20),
    )
    def deposit(self, user: int, asset: str, steps: int) -> None:
        self.execute(Deposit(user, asset, steps * DEPOSIT_STEP_UNITS[asset]))

    @rule(
        user=st.sampled_from((0, *USERS)), asset=st.sampled_from(ASSETS), steps=st.integers(-1, 40)
    )
    def withdraw(self, user: int, asset: str, steps: int) -> None:
        self.execute(Withdraw(user, asset, steps * DEPOSIT_STEP_UNITS[asset]))

    # -- orders ------------------------------------------------------------------------

    @rule(
        user=users,
        symbol=symbols,
        side=sides,
        price=prices,
        quantity=quantities,
        tif=limit_tifs,
        post_only=post_only_flags,
        stp=stp_modes,
        cid=client_ids,
        delay=expire_delays,
    )
    def place_limit(
        self,
        user: int,
        symbol: str,
        side: Side,
        price: int,
        quantity: int,
        tif: TimeInForce,
        post_only: bool,
        stp: StpMode,
        cid: str | None,
        delay: int,
    ) -> None:
        self.place(
            user_id=user,
            symbol=symbol,
            side=side,
            order_type=OrderType.LIMIT,
            price_ticks=price,
            quantity_lots=quantity,
            time_in_force=tif,
            post_only=post_only,
            stp_mode=stp,
            client_order_id=cid,
            expire_at_ms=self.expire_at(tif, delay),
        )

    @rule(user=users, symbol=symbols, side=sides, price=prices, quantity=quantities)
    def place_gtc_limit(
        self, user: int, symbol: str, side: Side, price: int, quantity: int
    ) -> None:
        """Plain GTC limits (the commonest order) keep the books busy."""
        self.place_resting(user, symbol, side, price, quantity)

    @rule(
        user=users,
        symbol=symbols,
        side=sides,
        quantity=quantities,
        tif=st.sampled_from((TimeInForce.IOC, TimeInForce.GTC, TimeInForce.FOK)),
        stp=stp_modes,
        cid=client_ids,
    )
    def place_market(
        self,
        user: int,
        symbol: str,
        side: Side,
        quantity: int,
        tif: TimeInForce,
        stp: StpMode,
        cid: str | None,
    ) -> None:
        self.place(
            user_id=user,
            symbol=symbol,
            side=side,
            order_type=OrderType.MARKET,
            quantity_lots=quantity,
            time_in_force=tif,
            stp_mode=stp,
            client_order_id=cid,
        )

    @rule(user=users, symbol=symbols, budget=budgets, stp=stp_modes, cid=client_ids)
    def place_market_buy_by_budget(
        self, user: int, symbol: str, budget: int, stp: StpMode, cid: str | None
    ) -> None:
        self.place(
            user_id=user,
            symbol=symbol,
            side=Side.BUY,
            order_type=OrderType.MARKET,
            quote_budget_units=budget,
            stp_mode=stp,
            client_order_id=cid,
        )

    @rule(
        user=users,
        symbol=symbols,
        side=sides,
        stop_offset=stop_offsets,
        limit_offset=limit_offsets,
        quantity=quantities,
        tif=limit_tifs,
        post_only=post_only_flags,
        stp=stp_modes,
        cid=client_ids,
        delay=expire_delays,
    )
    def place_stop_limit(
        self,
        user: int,
        symbol: str,
        side: Side,
        stop_offset: int,
        limit_offset: int,
        quantity: int,
        tif: TimeInForce,
        post_only: bool,
        stp: StpMode,
        cid: str | None,
        delay: int,
    ) -> None:
        stop = self.stop_price(symbol, side, stop_offset)
        self.place(
            user_id=user,
            symbol=symbol,
            side=side,
            order_type=OrderType.STOP_LIMIT,
            stop_price_ticks=stop,
            price_ticks=stop + limit_offset if side is Side.BUY else stop - limit_offset,
            quantity_lots=quantity,
            time_in_force=tif,
            post_only=post_only,
            stp_mode=stp,
            client_order_id=cid,
            expire_at_ms=self.expire_at(tif, delay),
        )

    @rule(
        user=users,
        symbol=symbols,
        stop_offset=stop_offsets,
        quantity=quantities,
        tif=st.sampled_from((TimeInForce.IOC, TimeInForce.FOK)),
        stp=stp_modes,
        cid=client_ids,
    )
    def place_stop_market_sell(
        self,
        user: int,
        symbol: str,
        stop_offset: int,
        quantity: int,
        tif: TimeInForce,
        stp: StpMode,
        cid: str | None,
    ) -> None:
        stop = self.stop_price(symbol, Side.SELL, stop_offset)
        self.place(
            user_id=user,
            symbol=symbol,
            side=Side.SELL,
            order_type=OrderType.STOP_MARKET,
            stop_price_ticks=stop,
            quantity_lots=quantity,
            time_in_force=tif,
            stp_mode=stp,
            client_order_id=cid,
        )

    @rule(user=users, symbol=symbols, stop_offset=stop_offsets, budget=budgets, stp=stp_modes)
    def place_stop_market_buy(
        self, user: int, symbol: str, stop_offset: int, budget: int, stp: StpMode
    ) -> None:
        stop = self.stop_price(symbol, Side.BUY, stop_offset)
        self.place(
            user_id=user,
            symbol=symbol,
            side=Side.BUY,
            order_type=OrderType.STOP_MARKET,
            stop_price_ticks=stop,
            quote_budget_units=budget,
            stp_mode=stp,
        )

    @rule(
        user=st.sampled_from((*USERS, 0, -1)),
        symbol=st.sampled_from((BTC, ETH, "DOGE/USDT")),
        order_type=st.sampled_from(tuple(OrderType)),
        side=sides,
        quantity=st.sampled_from((-1, 0, 1, 5, 10**6, 10**6 + 1)),
        price=st.sampled_from((-1, 0, 100, 200, 201)),
        budget=st.sampled_from((0, 0, -5, 10, 500)),
        stop=st.sampled_from((0, 0, -1, 100, 201)),
        tif=st.sampled_from(tuple(TimeInForce)),
        post_only=st.booleans(),
        cid=st.sampled_from((None, "a", "", "x" * 65, "no spaces")),
        expire_in=st.sampled_from((None, -5, 0, 1_000)),
    )
    def place_malformed(
        self,
        user: int,
        symbol: str,
        order_type: OrderType,
        side: Side,
        quantity: int,
        price: int,
        budget: int,
        stop: int,
        tif: TimeInForce,
        post_only: bool,
        cid: str | None,
        expire_in: int | None,
    ) -> None:
        """Random field combinations, mostly invalid: each fault has its own code."""
        self.place(
            user_id=user,
            symbol=symbol,
            side=side,
            order_type=order_type,
            quantity_lots=quantity,
            price_ticks=price,
            quote_budget_units=budget,
            stop_price_ticks=stop,
            time_in_force=tif,
            post_only=post_only,
            client_order_id=cid,
            expire_at_ms=None if expire_in is None else self.exchange.now_ms + expire_in,
        )

    # -- cancel and amend --------------------------------------------------------------

    @rule(
        user=users,
        pick=picks,
        source=order_sources,
        as_owner=st.sampled_from((True, True, True, False)),
        by=st.sampled_from(("order_id", "order_id", "client_order_id", "neither")),
    )
    def cancel(self, user: int, pick: int, source: str, as_owner: bool, by: str) -> None:
        order_id = self.pick_order(pick, source)
        order = self.model.orders.get(order_id)
        if order is not None and as_owner:
            user = order.user_id
        if by == "order_id":
            self.execute(CancelOrder(user, order_id=order_id))
        elif by == "client_order_id":
            cid = order.client_order_id if order is not None else None
            self.execute(CancelOrder(user, client_order_id=cid or "c"))
        else:
            self.execute(CancelOrder(user))

    @rule(
        user=users,
        pick=picks,
        source=order_sources,
        as_owner=st.sampled_from((True, True, True, False)),
        new_quantity=st.sampled_from(
            (None, None, -12, -5, -2, -1, 0, 1, 3, 10, "filled", "filled+1")
        ),
        new_price=st.one_of(st.none(), prices, st.just(1_000)),
    )
    def amend(
        self,
        user: int,
        pick: int,
        source: str,
        as_owner: bool,
        new_quantity: int | str | None,
        new_price: int | None,
    ) -> None:
        """`new_quantity`: a change of the total, or exactly the filled quantity (refused),
        or one lot more than filled."""
        order = self.model.orders.get(self.pick_order(pick, source))
        if order is None:
            self.execute(AmendOrder(user, 10**6, quantity_lots=5))
            return
        if new_quantity == "filled":
            quantity: int | None = order.filled
        elif new_quantity == "filled+1":
            quantity = order.filled + 1
        else:
            quantity = None if new_quantity is None else order.quantity + int(new_quantity)
        self.execute(
            AmendOrder(
                order.user_id if as_owner else user,
                order.order_id,
                quantity_lots=quantity,
                price_ticks=new_price,
            )
        )

    @rule(
        user=users,
        symbol=symbols,
        side=sides,
        count=st.integers(1, 40),
        keep_every=st.integers(2, 30),
        gtd=st.booleans(),
    )
    def churn_stops(
        self, user: int, symbol: str, side: Side, count: int, keep_every: int, gtd: bool
    ) -> None:
        """Many stop-limits placed, then most cancelled: cancelled stops and GTD expiries are
        deleted lazily, and their clean-up must not lose or revive an order."""
        placed: list[int] = []
        for n in range(count):
            stop = self.stop_price(symbol, side, 1 + n % 4)
            tif = TimeInForce.GTD if gtd else TimeInForce.GTC
            self.place(
                user_id=user,
                symbol=symbol,
                side=side,
                order_type=OrderType.STOP_LIMIT,
                stop_price_ticks=stop,
                price_ticks=stop,
                quantity_lots=2,
                time_in_force=tif,
                expire_at_ms=self.expire_at(tif, 500 + 50 * n),
            )
            if self.last_error is None:
                placed.append(max(self.model.orders))
        for n, order_id in enumerate(placed):
            if n % keep_every:
                self.execute(CancelOrder(user, order_id=order_id))

    @rule(
        maker=users,
        stopper=users,
        kicker=users,
        symbol=symbols,
        side=sides,
        rungs=st.integers(2, 4),
        stop_market=st.booleans(),
        post_only=post_only_flags,
    )
    def stop_cascade(
        self,
        maker: int,
        stopper: int,
        kicker: int,
        symbol: str,
        side: Side,
        rungs: int,
        stop_market: bool,
        post_only: bool,
    ) -> None:
        """A ladder of resting orders and stops one tick apart, then a market order that
        trades at the first rung: each triggered stop trades further down (sell) or up
        (buy) the ladder and may trigger the next stop, in one command. A post-only
        stop-limit is closed rejected when its trigger finds it would take."""
        last = self.exchange.market(symbol).last_price_ticks or 100
        step = -1 if side is Side.SELL else 1
        for rung in range(1, rungs + 1):
            price = last + step * rung
            self.place_resting(maker, symbol, side.opposite, price, 2)
            stop: dict[str, Any] = {"stop_price_ticks": price}
            if not stop_market:
                stop |= {"order_type": OrderType.STOP_LIMIT, "price_ticks": price + step}
                stop |= {"quantity_lots": 3, "post_only": post_only}
            elif side is Side.SELL:
                stop |= {"order_type": OrderType.STOP_MARKET, "quantity_lots": 3}
            else:
                budget = (price + 2) * 3 + 10
                stop |= {"order_type": OrderType.STOP_MARKET, "quote_budget_units": budget}
            self.place(user_id=stopper, symbol=symbol, side=side, **stop)
        self.place(
            user_id=kicker,
            symbol=symbol,
            side=side,
            order_type=OrderType.MARKET,
            quantity_lots=1,
            stp_mode=StpMode.NONE,
        )

    @rule(pick=picks, delta=st.sampled_from((-3, -1, 1, 3)))
    def amend_quantity(self, pick: int, delta: int) -> None:
        """Resize a resting order in place: down keeps its time priority, up loses it."""
        order = self.model.orders.get(self.pick_order(pick, "resting"))
        if order is not None:
            self.execute(AmendOrder(order.user_id, order.order_id, order.quantity + delta))

    @rule(pick=picks, beyond=st.integers(0, 2))
    def amend_to_cross(self, pick: int, beyond: int) -> None:
        """Reprice a resting order to the opposite best price (or beyond): it takes at once."""
        order = self.model.orders.get(self.pick_order(pick, "resting"))
        if order is None:
            return
        opposite = Side.SELL if order.side is Side.BUY else Side.BUY
        best = self.model.markets[order.symbol].best_price(opposite)
        if best is None:
            return
        price = best + beyond if order.side is Side.BUY else best - beyond
        self.execute(AmendOrder(order.user_id, order.order_id, price_ticks=price))

    # -- time and market status --------------------------------------------------------

    @rule(advance_ms=st.integers(-500, 2_000))
    def tick(self, advance_ms: int) -> None:
        """Time passes (a tick from the past changes nothing)."""
        self.execute(Tick(max(0, self.exchange.now_ms + advance_ms)))

    @rule()
    def tick_to_next_expiry(self) -> None:
        """Time moves exactly to the earliest GTD expiry: due means `now >= expire_at`."""
        due = [o.expire_at_ms for o in self.model.open_orders() if o.expire_at_ms is not None]
        if due:
            self.execute(Tick(min(due)))

    @rule(
        symbol=st.sampled_from((BTC, ETH, BTC, ETH, "DOGE/USDT")),
        halted=st.sampled_from((False, False, False, False, True)),
    )
    def set_market_status(self, symbol: str, halted: bool) -> None:
        status = MarketStatus.HALTED if halted else MarketStatus.ACTIVE
        self.execute(SetMarketStatus(symbol, status))

    # -- agreement after every step ----------------------------------------------------

    @invariant()
    def same_orders(self) -> None:
        model = {
            o.order_id: OrderView(
                o.status,
                o.filled,
                o.filled_notional,
                o.fee_paid,
                o.reserved,
                o.quantity,
                o.price,
                o.close_reason,
            )
            for o in self.model.orders.values()
        }
        assert self.order_views == model
        assert self.accepted == {
            o.order_id: (o.reserved_at_acceptance, o.tif) for o in self.model.orders.values()
        }
        for user in USERS:
            assert [o.order_id for o in self.exchange.open_orders(user)] == sorted(
                o.order_id for o in self.model.open_orders() if o.user_id == user
            )
        real_open = self.exchange.orders
        assert sorted(real_open) == sorted(o.order_id for o in self.model.open_orders())
        for order_id, real in real_open.items():
            mine = self.model.orders[order_id]
            assert (real.reserved_units, real.fee_paid_units, real.triggered) == (
                mine.reserved,
                mine.fee_paid,
                mine.triggered,
            ), (real, mine)

    @invariant()
    def same_books_and_stops(self) -> None:
        for symbol, mine in self.model.markets.items():
            real = self.exchange.market(symbol)
            l3 = mine.l3()
            assert real.book.l3() == l3, symbol
            for side, book_side in ((Side.BUY, real.book.bids), (Side.SELL, real.book.asks)):
                depth = [
                    (price, sum(q for _, q in orders), len(orders)) for price, orders in l3[side]
                ]
                assert book_side.depth(50) == depth[:50], (symbol, side)
            bid, ask = mine.best_price(Side.BUY), mine.best_price(Side.SELL)
            assert (real.book.best_bid_ticks(), real.book.best_ask_ticks()) == (bid, ask)
            spread = None if bid is None or ask is None else ask - bid
            assert real.book.spread_ticks() == spread, symbol
            assert [o.order_id for o in real.stops.orders()] == [
                o.order_id for o in mine.waiting_stops
            ], symbol
            assert real.last_price_ticks == mine.last_price, symbol
            assert (real.status is MarketStatus.HALTED) == mine.halted, symbol

    @invariant()
    def same_balances(self) -> None:
        real = {
            key: (b.available, b.locked)
            for key, b in self.exchange.ledger.balances.items()
            if b.available or b.locked
        }
        assert real == self.model.nonzero_balances()

    @invariant()
    def exchange_invariants_hold(self) -> None:
        check_all(self.exchange)
        filled = {order_id: view.filled for order_id, view in self.order_views.items()}
        check_fills_match_trades(filled, self.trades)
        assert self.exchange.seq == self.last_seq
        for symbol, market in self.exchange.markets.items():
            assert market.market_seq == self.market_seqs[symbol], symbol

    def teardown(self) -> None:
        """Determinism (DESIGN rule 2) and exact recovery: a fresh exchange replaying the
        same commands, restored halfway from its state's JSON round trip, gives the same
        events, the same rejections and the same final state."""
        replay = Exchange(self.limits)
        halfway = len(self.commands) // 2
        for step, (command, outcome) in enumerate(zip(self.commands, self.outcomes, strict=True)):
            if step == halfway:
                restored = restore(json.loads(json.dumps(replay.state())), self.limits)
                assert restored.state_digest() == replay.state_digest()
                replay = restored
            try:
                replayed: ErrorCode | list[dict[str, Any]] = [
                    e.to_dict() for e in replay.execute(command)
                ]
            except DomainError as error:
                replayed = error.code
            assert replayed == outcome, command
        assert replay.state_digest() == self.exchange.state_digest()


ExchangeVersusReference.TestCase.settings = settings(
    ExchangeVersusReference.TestCase.settings, stateful_step_count=150
)
TestExchangeVersusReference = ExchangeVersusReference.TestCase


class ExchangeVersusReferenceTightLimits(ExchangeVersusReference):
    """The same, with two match steps per order (fill_limit) and six open orders a user."""

    limits = ExchangeLimits(max_open_orders_per_user=6, max_fills_per_order=2)


ExchangeVersusReferenceTightLimits.TestCase.settings = settings(
    ExchangeVersusReferenceTightLimits.TestCase.settings,
    stateful_step_count=120,
    max_examples=max(10, settings().max_examples // 4),  # a quarter of the profile's
)
TestExchangeVersusReferenceTightLimits = ExchangeVersusReferenceTightLimits.TestCase
