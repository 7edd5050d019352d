"""`ApiContext`: everything a request handler may use, built by the composition root.

Handlers reach it through `context_of(request)`; they never construct adapters
and never read settings: what they need of them is in `options`. Reads of public
market state go through `market_data` (a projection of committed events); reads
of accounts and history through `store` (the committed database) and `funds`
(balances, wherever they live). Every change goes through the engine layer:
orders through `orders` (the order-entry service), deposits and withdrawals
through `funds`, plain admin commands (assets, markets, halts) through
`commands`. So nothing a handler returns can show an uncommitted change (DESIGN
rule 4), and no handler knows whether balances are embedded or in a wallet
service; `settlements` and `holds` exist only in remote-wallet mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import HTTPConnection

from crossbook.api.auth import Authenticator, Principal, Role, bearer_token
from crossbook.api.book_cache import BookCache
from crossbook.api.errors import ApiCode, ApiError
from crossbook.api.metrics import ApiMetrics
from crossbook.api.rate_limit import RateLimiter
from crossbook.domain import DomainError, ErrorCode, MarketSpec
from crossbook.engine.funds import Funds
from crossbook.engine.hold_reconciler import HoldReconciler
from crossbook.engine.order_entry import OrderEntry
from crossbook.engine.ports import ReadStore, UserStore
from crossbook.engine.read_model.market_data import MarketData, MarketInfo
from crossbook.engine.settlement import SettlementService
from crossbook.engine.submission import CommandSubmitter, EngineState


@dataclass(frozen=True, slots=True)
class ApiOptions:
    """What the API takes from the settings (the composition root builds it)."""

    docs_served: bool  # /docs, /redoc, /openapi.json
    metrics_served: bool  # /metrics (404 otherwise)
    metrics_token: str | None = field(repr=False)  # if set, /metrics needs it as a bearer
    max_body_bytes: int
    read_rate_per_s: float  # per client address
    read_burst: int
    maker_fee_rate: str  # a new market's, when the request names none
    taker_fee_rate: str


@dataclass(slots=True)
class ApiContext:
    options: ApiOptions
    engine: EngineState  # health and metrics only: changes go through the services below
    orders: OrderEntry
    funds: Funds
    commands: CommandSubmitter  # admin commands that are plain engine commands
    store: ReadStore
    users: UserStore
    market_data: MarketData
    auth: Authenticator
    rate_limiter: RateLimiter
    metrics: ApiMetrics
    settlements: SettlementService | None = None  # remote-wallet mode only
    holds: HoldReconciler | None = None  # remote-wallet mode only
    books: BookCache = field(default_factory=BookCache)  # rendered REST books

    # -- markets ---------------------------------------------------------------------

    def market(self, symbol_text: str) -> MarketInfo:
        """The committed market a path or query names: `BTC/USDT`, `BTC-USDT`, `btc_usdt`."""
        symbol = normalize_symbol(symbol_text)
        info = self.market_data.market(symbol)
        if info is None:
            raise DomainError(
                ErrorCode.MARKET_NOT_FOUND, f"unknown market {symbol_text}", symbol=symbol_text
            )
        return info

    def spec(self, symbol: str) -> MarketSpec:
        """The spec of a market known to exist (a stored order or trade names it)."""
        info = self.market_data.market(symbol)
        assert info is not None, symbol
        return info.spec

    # -- principals ------------------------------------------------------------------

    def principal(self, connection: HTTPConnection) -> Principal:
        return self.auth.verify(bearer_token(connection.headers.get("authorization")))

    def trader(self, connection: HTTPConnection) -> int:
        principal = self.principal(connection)
        if principal.user_id is None:
            raise ApiError(ApiCode.FORBIDDEN, "this endpoint needs a trader's token")
        return principal.user_id

    def admin(self, connection: HTTPConnection) -> Principal:
        principal = self.principal(connection)
        if principal.role is not Role.ADMIN:
            raise ApiError(ApiCode.FORBIDDEN, "this endpoint needs an admin token")
        return principal


def normalize_symbol(text: str) -> str:
    return text.strip().upper().replace("-", "/").replace("_", "/")


def context_of(connection: HTTPConnection) -> ApiContext:
    context: ApiContext = connection.app.state.context
    return context
