"""`ApiContext`: everything a request handler may use, built by the composition root.

Handlers reach it through `context_of(request)`; they never construct adapters.
Reads of public market state go through `market_data` (a projection of committed
events); reads of accounts and history through `store` (the committed database);
every change goes through `engine.submit`. So nothing a handler returns can
show an uncommitted change (DESIGN rule 4). In remote-wallet mode `wallet` is
set: balances are read from the wallet service, and orders are held there first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from starlette.requests import HTTPConnection

from crossbook.api.auth import Authenticator, Principal, Role, bearer_token
from crossbook.api.book_cache import BookCache
from crossbook.api.errors import ApiCode, ApiError
from crossbook.api.metrics import ApiMetrics
from crossbook.api.rate_limit import RateLimiter
from crossbook.api.wallet_entry import WalletAccess
from crossbook.config import Settings
from crossbook.domain import Command, DomainError, ErrorCode, Event, MarketSpec
from crossbook.engine.ports import ReadStore, UserStore
from crossbook.engine.read_model.market_data import MarketData, MarketInfo


class CommandSink(Protocol):
    """The engine as handlers see it (`Engine` satisfies this)."""

    @property
    def available(self) -> bool: ...

    @property
    def queue_depth(self) -> int: ...

    async def submit(self, command: Command) -> list[Event]: ...


@dataclass(slots=True)
class ApiContext:
    settings: Settings
    engine: CommandSink
    store: ReadStore
    users: UserStore
    market_data: MarketData
    auth: Authenticator
    rate_limiter: RateLimiter
    metrics: ApiMetrics
    wallet: WalletAccess | None = None  # remote-wallet mode: balances live in the wallet
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
