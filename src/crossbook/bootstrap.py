"""The composition root of the server: the one place that picks concrete adapters.

    async with open_runtime(settings) as runtime:   # store, read model, hub, engine
        app = create_app(api_options(settings), runtime.metrics)
        attach(app, runtime.context, runtime.hub)

Start-up order (DESIGN rule 4 holds from the first request):
1. open the store (migrations applied);
2. build the read model (`MarketData`) from the store's committed snapshot and
   the last 24 h of one-minute candles of its markets (the tickers' window),
   with its listeners (the stream hub, the index of open orders' acceptances),
   and point the committed-event relay at it;
3. start the engine from that same snapshot (read once; nothing commits in
   between: the engine is the only writer, and it is not running yet), so the
   read model continues exactly where the engine starts;
4. build the engine-layer services the gateways call: order entry (with its
   funding strategy, chosen here once) and funds, both reporting outcomes to
   the API's metrics;
5. on an empty database, create the default assets and markets; with `demo`,
   also two funded users (development only).
Every committed batch then flows: engine ─▶ relay ─▶ read model ─▶ stream hub,
and (remote-wallet mode) relay ─▶ settlement workers.
Shutdown stops the engine (queued callers get "unavailable") and closes the store.

Remote-wallet mode (`wallet_url` set): the exchange is wallet-funded, the
wallet client sits behind a circuit breaker, orders are funded by wallet holds
(`WalletFunding`) and balances live in the wallet (`WalletFunds`); the
settlement workers are the engine's last publisher; they start before the first
request (after a scan of the outbox for settlements left PENDING by an earlier
run) and stop after the engine.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import structlog

from crossbook.adapters.sql import SqlStore
from crossbook.adapters.wallet_client import HttpWallet
from crossbook.api.auth import Authenticator, Principal, Role, TokenCodec
from crossbook.api.book_cache import BookCache
from crossbook.api.context import ApiContext, ApiOptions
from crossbook.api.errors import outcome_code
from crossbook.api.metrics import ApiMetrics
from crossbook.api.rate_limit import RateLimiter
from crossbook.api.ws import StreamHub, StreamLimits
from crossbook.config import Settings
from crossbook.domain import (
    CreateAsset,
    CreateMarket,
    Event,
    ExchangeLimits,
    Funding,
)
from crossbook.domain.exchange import BalanceState
from crossbook.engine.breaker import CircuitBreaker
from crossbook.engine.clock import WALL_CLOCK
from crossbook.engine.engine import Engine, EngineLimits
from crossbook.engine.funds import EmbeddedFunds, Funds, WalletFunds
from crossbook.engine.guarded_wallet import GuardedWallet
from crossbook.engine.hold_reconciler import HoldReconciler, ReconcileLimits
from crossbook.engine.order_entry import EmbeddedFunding, OrderEntry, OrderFunding
from crossbook.engine.ports import MAX_READ_LIMIT, Publisher
from crossbook.engine.read_model.candles import DEFAULT_WINDOW_MINUTES, MINUTE_MS
from crossbook.engine.read_model.market_data import MarketData
from crossbook.engine.read_model.open_orders import OpenOrderIndex
from crossbook.engine.read_model.records import Candle
from crossbook.engine.retry import RetryPolicy
from crossbook.engine.settlement import SettlementLimits, SettlementService
from crossbook.engine.submission import CommandSubmitter, OutcomeListener
from crossbook.engine.wallet_funding import WalletFunding, stored_resting_asks

log = structlog.get_logger(__name__)

# the markets an empty database starts with: (base, decimals), (quote, decimals), rules
DEFAULT_ASSETS = (("BTC", 8), ("ETH", 8), ("USDT", 6))
DEFAULT_MARKETS = (
    ("BTC", "USDT", "0.01", "0.0001", "0.0001", "1000"),
    ("ETH", "USDT", "0.01", "0.0001", "0.0001", "10000"),
)
WALLET_ENTRY_CONNECTIONS = 50  # wallet connections for order entry, besides the workers'
MAX_CIRCUIT_WAIT_MS = 1_000  # a settlement worker re-tries an open circuit this often at most
DEMO_USERS = ("alice", "bob")
DEMO_FUNDS = (("BTC", 10 * 10**8), ("ETH", 100 * 10**8), ("USDT", 1_000_000 * 10**6))


class _Relay:
    """The engine's publisher: each committed batch goes to the read model (which then
    tells its listeners, the stream hub) and then to the settlement workers, if any."""

    def __init__(self, read_model: MarketData) -> None:
        self.read_model = read_model
        self.settlements: Publisher | None = None  # remote-wallet mode, set once they exist

    def publish(self, events: Sequence[Event], balances: Sequence[BalanceState]) -> None:
        self.read_model.apply(events, balances)
        if self.settlements is not None:
            self.settlements.publish(events, balances)


@dataclass(slots=True)
class _RemoteWallet:
    """Remote-wallet mode's parts: its client (closed last), workers and strategies."""

    client: HttpWallet
    settlements: SettlementService
    funding: WalletFunding
    funds: WalletFunds
    reconciler: HoldReconciler

    async def close(self) -> None:
        try:
            await self.reconciler.stop()
            await self.settlements.stop()
            await self.funding.close()
        finally:
            await self.client.aclose()


@dataclass(slots=True)
class Runtime:
    settings: Settings
    store: SqlStore
    engine: Engine
    market_data: MarketData
    hub: StreamHub
    metrics: ApiMetrics
    context: ApiContext
    setup_funds: Funds  # this module's own transfers (demo users): no API outcomes


def api_options(settings: Settings) -> ApiOptions:
    """What the API takes from the settings."""
    token = settings.metrics_token
    return ApiOptions(
        docs_served=settings.docs_served,
        metrics_served=settings.metrics_served,
        metrics_token=None if token is None else token.get_secret_value(),
        max_body_bytes=settings.max_body_bytes,
        read_rate_per_s=settings.read_rate_per_s,
        read_burst=settings.read_burst,
        maker_fee_rate=settings.maker_fee_rate,
        taker_fee_rate=settings.taker_fee_rate,
    )


def counted_outcomes(metrics: ApiMetrics) -> OutcomeListener:
    """Every outcome of a command submitted for the API, counted by action and result."""

    def count(action: str, refusal: Exception | None) -> None:
        metrics.orders.labels(action, outcome_code(refusal)).inc()

    return count


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings, *, demo: bool = False, metrics: ApiMetrics | None = None
) -> AsyncIterator[Runtime]:
    metrics = metrics or ApiMetrics()
    store = await SqlStore.open(
        settings.database_url,
        commit_deadline_ms=settings.commit_deadline_ms,
        read_timeout_ms=settings.database_read_timeout_ms,
    )
    try:
        state = await store.load_state()
        symbols = [] if state is None else [market["symbol"] for market in state["markets"]]
        candles = await _recent_minute_candles(store, symbols, WALL_CLOCK.now_ms())
        market_data = MarketData.from_snapshot(state, candles)
        tokens = TokenCodec(settings.jwt_secret_value, settings.jwt_ttl_s)
        auth = Authenticator(tokens, await store.users.last_user_id())
        books = BookCache()  # rendered book levels, shared by REST and the streams
        hub = StreamHub(
            market_data,
            metrics,
            limits=StreamLimits(
                max_pending_messages=settings.ws_max_pending_messages,
                max_queued_bytes=settings.ws_max_queued_bytes,
                max_total_queued_bytes=settings.ws_max_total_queued_bytes,
                max_subscriptions=settings.ws_max_subscriptions,
                ops_per_s=settings.ws_ops_per_s,
                ops_burst=settings.ws_ops_burst,
                max_connections_per_client=settings.ws_max_connections_per_client,
            ),
            auth=auth,
            now_ms=WALL_CLOCK.now_ms,
            books=books,
            engine_balances=settings.wallet_url is None,
        )
        market_data.subscribe(hub)
        open_orders = OpenOrderIndex.from_snapshot(state)
        market_data.subscribe(open_orders)
        relay = _Relay(market_data)
        engine = Engine(
            store,
            relay,
            limits=EngineLimits(
                queue_capacity=settings.queue_capacity,
                batch_max_commands=settings.batch_max_commands,
                commit_deadline_ms=settings.commit_deadline_ms,
                outcome_wait_ms=settings.commit_outcome_wait_ms,
            ),
            exchange_limits=ExchangeLimits(
                max_open_orders_per_user=settings.max_open_orders_per_user,
                max_fills_per_order=settings.max_fills_per_order,
            ),
            on_batch=metrics.on_batch,
            funding=Funding.EMBEDDED if settings.wallet_url is None else Funding.WALLET,
        )
        await engine.start(state)  # the snapshot the read model was built from
        assert engine.exchange.seq == market_data.seq, "the engine recovered another state"
        wallet = (
            None
            if settings.wallet_url is None
            else _remote_wallet(settings, store, metrics, engine, market_data)
        )
        if wallet is not None:
            relay.settlements = wallet.settlements
        metrics.watch_engine(lambda: engine.queue_depth, lambda: engine.available)
        submitter = CommandSubmitter(engine, counted_outcomes(metrics))
        if wallet is None:  # the one choice of funding strategy
            funding: OrderFunding = EmbeddedFunding()
            funds: Funds = EmbeddedFunds(submitter, store.reads)
            setup_funds: Funds = EmbeddedFunds(CommandSubmitter(engine), store.reads)
        else:
            funding, funds, setup_funds = wallet.funding, wallet.funds, wallet.funds
        context = ApiContext(
            options=api_options(settings),
            engine=engine,
            orders=OrderEntry(submitter, funding, open_orders, store.reads),
            funds=funds,
            commands=submitter,
            store=store.reads,
            users=store.users,
            market_data=market_data,
            auth=auth,
            rate_limiter=RateLimiter(settings.order_rate_per_s, settings.order_burst),
            metrics=metrics,
            settlements=None if wallet is None else wallet.settlements,
            holds=None if wallet is None else wallet.reconciler,
            books=books,
        )
        runtime = Runtime(settings, store, engine, market_data, hub, metrics, context, setup_funds)
        try:
            if wallet is not None:
                await wallet.settlements.start()
                wallet.reconciler.start()  # its first pass runs at once
            if not market_data.markets():
                await create_default_markets(runtime)
            if demo:
                await create_demo_users(runtime)
            yield runtime
        finally:
            await engine.stop()
            if wallet is not None:
                await wallet.close()
    finally:
        await store.close()


def _remote_wallet(
    settings: Settings, store: SqlStore, metrics: ApiMetrics, engine: Engine, books: MarketData
) -> _RemoteWallet:
    """The wallet client behind its breaker, the settlement workers (not started), and
    the wallet-funded strategies of order entry and funds."""
    assert settings.wallet_url is not None
    client = HttpWallet(
        settings.wallet_url,
        settings.wallet_token_value,
        timeout_ms=settings.wallet_timeout_ms,
        max_connections=settings.settlement_workers + WALLET_ENTRY_CONNECTIONS,
    )
    breaker = CircuitBreaker(settings.breaker_failure_threshold, settings.breaker_reset_ms)
    guarded = GuardedWallet(client, breaker)
    settlements = SettlementService(
        store.settlements,
        guarded,
        policy=RetryPolicy(
            settings.settlement_max_attempts,
            settings.settlement_backoff_ms,
            settings.settlement_max_backoff_ms,
        ),
        limits=SettlementLimits(
            workers=settings.settlement_workers,
            queue_capacity=settings.settlement_queue_capacity,
            circuit_wait_ms=min(settings.breaker_reset_ms, MAX_CIRCUIT_WAIT_MS),
        ),
        clock=WALL_CLOCK,
        on_settled=metrics.on_settled,
        specs=lambda symbol: engine.exchange.markets[symbol].spec,  # immutable once created
    )
    metrics.watch_settlements(settlements.stats, lambda: settlements.pending, lambda: breaker.state)
    funding = WalletFunding(
        guarded,
        engine,
        books,
        stored_resting_asks(store.reads),
        max_levels=settings.max_fills_per_order,  # a market buy walks no more levels
        market_buy_margin_bps=settings.market_buy_hold_margin_bps,
        undecided_hold_ms=settings.hold_orphan_grace_ms,
    )
    reconciler = HoldReconciler(
        guarded,
        store.holds,
        engine,
        engine,
        funding.holds_in_flight,
        limits=ReconcileLimits(
            grace_ms=settings.hold_orphan_grace_ms,
            interval_ms=settings.hold_reconcile_interval_ms,
        ),
        void=settings.hold_reconcile_void,
    )
    metrics.watch_holds(reconciler.stats)
    return _RemoteWallet(client, settlements, funding, WalletFunds(guarded), reconciler)


async def _recent_minute_candles(
    store: SqlStore, symbols: list[str], now: int
) -> dict[str, list[Candle]]:
    """Per market, the one-minute candles of the tickers' window (in pages of the read limit)."""
    start = (now // MINUTE_MS - DEFAULT_WINDOW_MINUTES) * MINUTE_MS
    out: dict[str, list[Candle]] = {}
    for symbol in symbols:
        candles: list[Candle] = []
        page_start = start
        for _ in range(DEFAULT_WINDOW_MINUTES // MAX_READ_LIMIT + 2):  # bounded pages
            page_end = page_start + MAX_READ_LIMIT * MINUTE_MS - 1
            candles += await store.reads.candles(
                symbol, MINUTE_MS, start_ms=page_start, end_ms=page_end, limit=MAX_READ_LIMIT
            )
            page_start = page_end + 1
            if page_start > now:
                break
        out[symbol] = candles
    return out


async def create_default_markets(runtime: Runtime) -> None:
    engine, settings = runtime.engine, runtime.settings
    known = runtime.market_data.assets()
    for code, decimals in DEFAULT_ASSETS:
        if code not in known:
            await engine.submit(CreateAsset(code, decimals))
    for base, quote, tick, lot, min_qty, max_qty in DEFAULT_MARKETS:
        await engine.submit(
            CreateMarket(
                base,
                quote,
                tick_size=tick,
                lot_size=lot,
                min_quantity=min_qty,
                max_quantity=max_qty,
                maker_fee_rate=settings.maker_fee_rate,
                taker_fee_rate=settings.taker_fee_rate,
            )
        )
    log.info("created the default markets", markets=[f"{b}/{q}" for b, q, *_ in DEFAULT_MARKETS])


async def create_demo_users(runtime: Runtime) -> None:
    """Two funded users with printed tokens, if the database has no users (development)."""
    if runtime.settings.environment != "development":
        log.warning("--demo users are created only in development")
        return
    if await runtime.store.users.list_users(limit=1):
        return
    for name in DEMO_USERS:
        user = await runtime.store.users.create_user(name, WALL_CLOCK.now_ms())
        runtime.context.auth.user_created(user.user_id)
        for asset, units in DEMO_FUNDS:
            if asset in runtime.market_data.assets():
                await runtime.setup_funds.deposit(user.user_id, asset, units)
        token = runtime.context.auth.tokens.issue(Principal(Role.TRADER, user.user_id))
        log.info("demo user", name=name, user_id=user.user_id, token=token)


def configure_logging(settings: Settings) -> None:
    """Structured logs on stderr: JSON lines (or console lines), with the request id."""
    level = logging.getLevelNamesMapping()[settings.log_level.upper()]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if settings.log_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
