"""The end-to-end harness: `crossbook serve` in a process of its own, and its clients.

`ServerProcess` starts the console script `crossbook serve` on a free loopback port
against a PostgreSQL database, with its settings in `CROSSBOOK_*` variables (a JWT
secret of the test's, production mode, fee rates stated explicitly, the order
rate limit lifted), its output in a log file, and waits for `GET /ready` within a
bound (a failure bound: the poll ends the moment the server answers 200). It stops
with SIGTERM, or dies by SIGKILL in the kill test, and starts again on the same
database.

Everything else talks to it as a client does: `Http` (httpx, the envelope checked
on every answer), `Exchange` (the admin API: users, deposits, markets), `Trader`
(a user with a trader token) and `Scenario`, which creates the markets and users of
one test and checks the integrity of everything it created, over HTTP only:

- per asset, the balances of the scenario's users and of the fee account sum to
  what was deposited; no balance is negative and total = available + locked;
- every order's filled quantity, filled quote quantity and fee equal the sums over
  its trades, its fee is the configured rate applied to its fills (rounded up once
  per order, docs/trading-rules.md) and its status agrees with its fills;
- every trade is seen once by its buyer and once by its seller, with one maker and
  one taker, the same fees, quote = price × quantity, and in the market's public
  trades; each user's balances are its deposits plus what its trades settled;
- the fee account holds exactly the fees of the trades;
- locked balances equal the reservations of the open orders (a sell locks its
  remaining quantity; a buy its remaining notional at its limit plus the fee at the
  higher rate, less the fee already paid);
- the order book (REST) is sorted, not crossed, and each level is exactly the
  aggregate of the open orders at its price.

Each market has a base and a quote asset of its own (`E<n>BTC/E<n>USDT`), so these
sums are exact for one scenario whatever else the server holds. Amounts are compared
as decimal strings or summed as `Decimal`, never as floats.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal, localcontext
from pathlib import Path
from typing import Any, ClassVar

import httpx
from websockets.sync.client import ClientConnection, connect

from crossbook.api.auth import Principal, Role, TokenCodec

START_TIMEOUT_S = 60.0  # failure bound for `crossbook serve` to answer /ready
RECOVERY_TIMEOUT_S = 30.0  # failure bound for a running server to be ready again
STOP_TIMEOUT_S = 30.0  # failure bound for SIGTERM to end the process
REQUEST_TIMEOUT_S = 30.0  # failure bound for one HTTP request
WS_RECV_TIMEOUT_S = 10.0  # failure bound for one awaited WebSocket message
WS_MAX_MESSAGES = 1_000  # failure bound for a read-until loop on the WebSocket
READY_POLL_S = 0.05  # interval between /ready polls (within the bounds above)
PORT_ATTEMPTS = 3  # another process may take a free port before the server binds it
LOG_TAIL_LINES = 120

MAKER_FEE_RATE = "0.0005"  # the server's CROSSBOOK_MAKER_FEE_RATE (the seed's example)
TAKER_FEE_RATE = "0.001"  # the server's CROSSBOOK_TAKER_FEE_RATE
FEE_ACCOUNT_ID = 0
PAGE_LIMIT = 1_000
MAX_PAGES = 100  # failure bound for paging through a list
OPEN_STATUSES = ("open", "partially_filled")
CROSSBOOK = Path(sys.executable).with_name("crossbook")  # the venv's console script
POSTGRES_SERVER_URL = os.environ.get(  # its maintenance database
    "CROSSBOOK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)

_market_numbers = itertools.count(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- the server process ----------------------------------------------------------------------


class ServerProcess:
    """`crossbook serve` on one database; (re)started, stopped and killed by the test."""

    started: ClassVar[list[ServerProcess]] = []  # every server of the session (for logs)

    def __init__(
        self,
        name: str,
        database_url: str,
        log_dir: Path,
        jwt_secret: str,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.database_url = database_url
        self.log_dir = log_dir
        self.jwt_secret = jwt_secret
        self.extra_env = dict(extra_env or {})  # e.g. remote-wallet mode's settings
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_paths: list[Path] = []
        ServerProcess.started.append(self)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CROSSBOOK_")}
        env.update(
            PYTHONUNBUFFERED="1",
            CROSSBOOK_ENVIRONMENT="production",
            CROSSBOOK_JWT_SECRET=self.jwt_secret,
            CROSSBOOK_LOG_JSON="true",
            CROSSBOOK_LOG_LEVEL="info",
            CROSSBOOK_ORDER_RATE_PER_S="100000",
            CROSSBOOK_ORDER_BURST="100000",
            CROSSBOOK_READ_RATE_PER_S="100000",
            CROSSBOOK_READ_BURST="100000",
            CROSSBOOK_METRICS_ENABLED="true",
            CROSSBOOK_MAKER_FEE_RATE=MAKER_FEE_RATE,
            CROSSBOOK_TAKER_FEE_RATE=TAKER_FEE_RATE,
        )
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        """Start the process and return once `/ready` answers 200 (bounded); a port taken
        by someone else between choosing and binding it is retried on another port."""
        assert self.process is None, "the server is already running"
        for attempt in range(PORT_ATTEMPTS):
            if attempt:
                self.port = free_port()
            log_path = self.log_dir / f"{self.name}-{len(self.log_paths) + 1}.log"
            self.log_paths.append(log_path)
            with log_path.open("wb") as log:
                self.process = subprocess.Popen(
                    [
                        str(CROSSBOOK),
                        "serve",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(self.port),
                        "--database-url",
                        self.database_url,
                    ],
                    env=self.environment(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if self.wait_ready(START_TIMEOUT_S):
                return
            self.process.wait(STOP_TIMEOUT_S)
            self.process = None
            if "address already in use" not in log_path.read_text(errors="replace").lower():
                break
        raise AssertionError(f"{self.name}: `crossbook serve` exited before it was ready")

    def wait_ready(self, timeout_s: float) -> bool:
        """Poll `/ready` until it answers 200: True; False if the process exited; a failure
        if neither happens within `timeout_s`."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False
                with contextlib.suppress(httpx.TransportError):
                    if client.get(self.url + "/ready").status_code == 200:
                        return True
                time.sleep(READY_POLL_S)
        raise AssertionError(f"{self.name}: /ready did not answer 200 within {timeout_s} s")

    def stop(self) -> None:
        """SIGTERM, and the process must exit cleanly within the bound."""
        if self.process is None:
            return
        process, self.process = self.process, None
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)
            raise AssertionError(
                f"{self.name}: no exit within {STOP_TIMEOUT_S} s of SIGTERM"
            ) from None
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert code in (0, -signal.SIGTERM), f"{self.name}: exit status {code} after SIGTERM"

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, nothing the process could still do."""
        assert self.process is not None
        process, self.process = self.process, None
        process.send_signal(signal.SIGKILL)
        assert process.wait(STOP_TIMEOUT_S) == -signal.SIGKILL

    def log_tail(self) -> str:
        lines: list[str] = []
        for path in self.log_paths:
            if path.exists():
                lines += [f"--- {path.name}", *path.read_text(errors="replace").splitlines()]
        return "\n".join(lines[-LOG_TAIL_LINES:])


# -- HTTP ------------------------------------------------------------------------------------


class UnexpectedResponseError(AssertionError):
    pass


class Http:
    """Requests to one server's REST API (`/api/v1`), with an optional bearer token.

    URLs are built from the server's current port on every call, so a client keeps
    working after the server was restarted."""

    def __init__(self, server: ServerProcess, token: str | None = None) -> None:
        self.server = server
        self.token = token
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(headers=self.headers, timeout=REQUEST_TIMEOUT_S)

    def url(self, path: str) -> str:
        return f"{self.server.url}/api/v1{path}"

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.request(method, self.url(path), **kwargs)

    def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        """The `data` of a successful answer with this status."""
        response = self.call(method, path, **kwargs)
        body = response.json()
        if response.status_code != status or body.get("success") is not True:
            raise UnexpectedResponseError(f"{method} {path}: {response.status_code} {body}")
        assert set(body) == {"success", "data", "meta"}, body
        return body["data"]

    def fails(self, method: str, path: str, status: int, code: str, **kwargs: Any) -> Any:
        """The `error` of a refusal with this status and code."""
        response = self.call(method, path, **kwargs)
        body = response.json()
        assert (response.status_code, body["success"]) == (status, False), body
        assert body["error"]["code"] == code, body
        return body["error"]

    def pages(self, path: str, **params: Any) -> list[Any]:
        """Every item of a keyset-paginated list, newest first."""
        items: list[Any] = []
        before: str | None = None
        for _ in range(MAX_PAGES):
            query = {**params, "limit": PAGE_LIMIT}
            if before is not None:
                query["before"] = before
            response = self.call("GET", path, params=query)
            body = response.json()
            assert response.status_code == 200 and body["success"], body
            items += body["data"]
            before = body["meta"]["pagination"]["next_before"]
            if before is None:
                return items
        raise AssertionError(f"{path}: more than {MAX_PAGES} pages")

    def close(self) -> None:
        self.client.close()


# -- the exchange as its administrator and traders see it ------------------------------------


@dataclass(frozen=True)
class Market:
    symbol: str
    base: str
    quote: str
    base_decimals: int
    quote_decimals: int
    maker_fee_rate: Decimal
    taker_fee_rate: Decimal

    @property
    def channel(self) -> str:
        """The symbol as a client may spell it in a channel name or path: `E1BTC-E1USDT`."""
        return self.symbol.replace("/", "-")

    def quote_text(self, amount: Decimal) -> str:
        return decimal_text(amount, self.quote_decimals)

    def fee(self, accrued: Decimal) -> Decimal:
        """An accrued fee rounded up to a whole minor unit of the quote asset."""
        return round_up(accrued, self.quote_decimals)


def decimal_text(amount: Decimal, decimals: int) -> str:
    return f"{amount:.{decimals}f}"


def round_up(amount: Decimal, decimals: int) -> Decimal:
    with localcontext() as context:
        context.prec = 100
        return amount.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_CEILING)


def exact(a: Decimal | str, b: Decimal | str) -> Decimal:
    """a × b without rounding."""
    with localcontext() as context:
        context.prec = 100
        return Decimal(a) * Decimal(b)


@dataclass
class Balance:
    available: str
    locked: str
    total: str

    @classmethod
    def from_json(cls, data: dict[str, str]) -> Balance:
        return cls(data["available"], data["locked"], data["total"])


class Exchange:
    """One running server through its admin API (an admin token of the server's secret)."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.tokens = TokenCodec(server.jwt_secret, 3600)
        self.admin = Http(server, self.tokens.issue(Principal(Role.ADMIN, None)))
        self.clients: list[Http] = [self.admin]

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def balances(self, user_id: int) -> dict[str, Balance]:
        rows = self.admin.ok("GET", f"/admin/users/{user_id}/balances")
        return {row["asset"]: Balance.from_json(row) for row in rows}

    def public(self) -> Http:
        client = Http(self.server)
        self.clients.append(client)
        return client


@dataclass
class Trader:
    user_id: int
    token: str
    http: Http
    deposits: dict[str, Decimal] = field(default_factory=dict)

    def place(self, market: Market, **fields: Any) -> dict[str, Any]:
        """Place an order that must be accepted (201): `{"order", "trades"}`."""
        data: dict[str, Any] = self.http.ok(
            "POST", "/orders", 201, json={"symbol": market.symbol, **fields}
        )
        return data

    def order(self, order_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self.http.ok("GET", f"/orders/{order_id}")
        return data

    def balances(self) -> dict[str, Balance]:
        return {row["asset"]: Balance.from_json(row) for row in self.http.ok("GET", "/balances")}

    def orders(self) -> list[dict[str, Any]]:
        return self.http.pages("/orders")

    def trades(self) -> list[dict[str, Any]]:
        return self.http.pages("/trades", mine="true")


@dataclass
class OwnServer:
    """A server on a database of its own, for a test that kills or disconnects it."""

    server: ServerProcess
    database: str  # its name on the PostgreSQL server
    exchange: Exchange
    scenario: Scenario


def balance_of(balances: dict[str, Balance], asset: str, decimals: int) -> Balance:
    """The balance of `asset`, zero if the account never held it."""
    zero = decimal_text(Decimal(0), decimals)
    return balances.get(asset, Balance(zero, zero, zero))


class Scenario:
    """The markets and users of one test, and the integrity checks over all of them."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.markets: list[Market] = []
        self.traders: list[Trader] = []
        self.deposits: dict[str, Decimal] = defaultdict(Decimal)
        self.public = exchange.public()  # no token: market data and public trades

    # -- set-up, through the admin API --------------------------------------------------------

    def market(self) -> Market:
        """A new market `E<n>BTC/E<n>USDT` of two new assets (8 and 6 decimals), tick 0.01,
        step 0.0001, with the server's default (configured) fee rates."""
        n = next(_market_numbers)
        body = {
            "base": f"E{n}BTC",
            "quote": f"E{n}USDT",
            "base_decimals": 8,
            "quote_decimals": 6,
            "tick_size": "0.01",
            "step_size": "0.0001",
            "min_quantity": "0.0001",
            "max_quantity": "1000",
        }
        data = self.exchange.admin.ok("POST", "/admin/markets", 201, json=body)
        assert (data["maker_fee_rate"], data["taker_fee_rate"]) == (MAKER_FEE_RATE, TAKER_FEE_RATE)
        market = Market(
            symbol=data["symbol"],
            base=data["base_asset"],
            quote=data["quote_asset"],
            base_decimals=data["base_decimals"],
            quote_decimals=data["quote_decimals"],
            maker_fee_rate=Decimal(data["maker_fee_rate"]),
            taker_fee_rate=Decimal(data["taker_fee_rate"]),
        )
        self.markets.append(market)
        return market

    def trader(self, funds: dict[str, str] | None = None) -> Trader:
        """A new user, funded by admin deposits, with a trader token from the admin API."""
        admin = self.exchange.admin
        user_id = int(admin.ok("POST", "/admin/users", 201, json={})["id"])
        token = admin.ok("POST", f"/admin/users/{user_id}/tokens", 201, json={})["token"]
        http = Http(self.exchange.server, token)
        self.exchange.clients.append(http)
        trader = Trader(user_id, token, http)
        self.traders.append(trader)
        for asset, amount in (funds or {}).items():
            self.deposit(trader, asset, amount)
        return trader

    def deposit(self, trader: Trader, asset: str, amount: str) -> None:
        body = {"user_id": str(trader.user_id), "asset": asset, "amount": amount}
        transfer = self.exchange.admin.ok("POST", "/admin/deposits", 201, json=body)
        assert Decimal(transfer["amount"]) == Decimal(amount), transfer
        trader.deposits[asset] = trader.deposits.get(asset, Decimal(0)) + Decimal(amount)
        self.deposits[asset] += Decimal(amount)

    def book(self, market: Market) -> dict[str, Any]:
        data: dict[str, Any] = self.public.ok(
            "GET", f"/orderbook/{market.channel}", params={"depth": 1000}
        )
        return data

    # -- integrity ----------------------------------------------------------------------------

    def check_integrity(self) -> None:
        """Every check of the module docstring, over this scenario's markets and users."""
        orders = {t.user_id: t.orders() for t in self.traders}
        trades = {t.user_id: t.trades() for t in self.traders}
        balances = {t.user_id: self.exchange.balances(t.user_id) for t in self.traders}
        balances[FEE_ACCOUNT_ID] = self.exchange.balances(FEE_ACCOUNT_ID)
        self._check_conservation(balances)
        for market in self.markets:
            mine = {
                uid: [o for o in user_orders if o["symbol"] == market.symbol]
                for uid, user_orders in orders.items()
            }
            fills = {
                uid: [t for t in user_trades if t["symbol"] == market.symbol]
                for uid, user_trades in trades.items()
            }
            for uid, user_orders in mine.items():
                check_orders_against_trades(market, uid, user_orders, fills[uid])
            self._check_trades(market, fills)
            self._check_settlement(market, fills, balances)
            for uid, user_orders in mine.items():
                check_locked(market, uid, user_orders, fills[uid], balances[uid])
            check_book(market, self.book(market), [o for os in mine.values() for o in os])

    def _decimals(self) -> dict[str, int]:
        out = {m.base: m.base_decimals for m in self.markets}
        out.update({m.quote: m.quote_decimals for m in self.markets})
        return out

    def _check_conservation(self, balances: dict[int, dict[str, Balance]]) -> None:
        """Per asset: the users' and the fee account's totals sum to the deposits."""
        for asset, decimals in self._decimals().items():
            accounts = {uid: balance_of(b, asset, decimals) for uid, b in balances.items()}
            for uid, b in accounts.items():
                available, locked = Decimal(b.available), Decimal(b.locked)
                assert available >= 0 and locked >= 0, (asset, uid, b)
                assert Decimal(b.total) == available + locked, (asset, uid, b)
            held = sum((Decimal(b.total) for b in accounts.values()), Decimal(0))
            assert held == self.deposits[asset], (asset, held, self.deposits[asset], accounts)

    def _check_trades(self, market: Market, fills: dict[int, list[dict[str, Any]]]) -> None:
        """Each trade once from its buyer's side and once from its seller's, consistent
        with itself and with the market's public trades."""
        views: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        for trades in fills.values():
            for trade in trades:
                assert trade["side"] not in views[trade["id"]], ("seen twice", trade)
                views[trade["id"]][trade["side"]] = trade
        shared = ("symbol", "price", "quantity", "quote_quantity", "taker_side", "executed_at")
        shared += ("buyer_fee", "seller_fee", "fee_asset")
        for trade_id, pair in views.items():
            assert set(pair) == {"buy", "sell"}, (trade_id, pair)
            buy, sell = pair["buy"], pair["sell"]
            assert {k: buy[k] for k in shared} == {k: sell[k] for k in shared}, pair
            assert buy["fee"] == buy["buyer_fee"] and sell["fee"] == sell["seller_fee"], pair
            assert buy["fee_asset"] == market.quote, pair
            assert {buy["liquidity"], sell["liquidity"]} == {"maker", "taker"}, pair
            taker = buy if buy["liquidity"] == "taker" else sell
            assert buy["taker_side"] == taker["side"], pair
            assert Decimal(buy["quantity"]) > 0, pair
            assert Decimal(buy["quote_quantity"]) == exact(buy["price"], buy["quantity"]), pair
        public = self.public.pages("/trades", symbol=market.channel)
        fields = ("id", "price", "quantity", "quote_quantity", "taker_side", "executed_at")
        assert sorted((tuple(t[k] for k in fields) for t in public), key=str) == sorted(
            (tuple(p["buy"][k] for k in fields) for p in views.values()), key=str
        ), market.symbol

    def _check_settlement(
        self,
        market: Market,
        fills: dict[int, list[dict[str, Any]]],
        balances: dict[int, dict[str, Balance]],
    ) -> None:
        """Each user's totals are its deposits plus its trades' settlement (buyer: +base,
        -(quote + fee); seller: -base, +(quote - fee)); the fee account holds the fees."""
        fees = Decimal(0)
        for trader in self.traders:
            base = trader.deposits.get(market.base, Decimal(0))
            quote = trader.deposits.get(market.quote, Decimal(0))
            for t in fills[trader.user_id]:
                sign = 1 if t["side"] == "buy" else -1
                base += sign * Decimal(t["quantity"])
                quote -= sign * Decimal(t["quote_quantity"]) + Decimal(t["fee"])
                fees += Decimal(t["fee"])
            account = balances[trader.user_id]
            got_base = balance_of(account, market.base, market.base_decimals).total
            got_quote = balance_of(account, market.quote, market.quote_decimals).total
            assert Decimal(got_base) == base, (trader.user_id, market.base, got_base, base)
            assert Decimal(got_quote) == quote, (trader.user_id, market.quote, got_quote, quote)
        fee_account = balances[FEE_ACCOUNT_ID]
        fee_quote = balance_of(fee_account, market.quote, market.quote_decimals)
        fee_base = balance_of(fee_account, market.base, market.base_decimals)
        assert Decimal(fee_quote.total) == fees, (market.symbol, fee_quote, fees)
        assert Decimal(fee_base.total) == 0, (market.symbol, fee_base)


def check_orders_against_trades(
    market: Market, user_id: int, orders: list[dict[str, Any]], trades: list[dict[str, Any]]
) -> None:
    """Filled quantity, filled quote and fee of each order are the sums over its trades;
    the fee is the configured rates on those trades, rounded up once for the order."""
    by_order: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for trade in trades:
        by_order[trade["order_id"]].append(trade)
    assert set(by_order) <= {o["id"] for o in orders}, (user_id, sorted(by_order))
    for order in orders:
        own = by_order.get(order["id"], [])
        what = (user_id, order, own)
        filled = sum((Decimal(t["quantity"]) for t in own), Decimal(0))
        quote = sum((Decimal(t["quote_quantity"]) for t in own), Decimal(0))
        fee = sum((Decimal(t["fee"]) for t in own), Decimal(0))
        assert Decimal(order["filled_quantity"]) == filled, what
        assert Decimal(order["filled_quote_quantity"]) == quote, what
        assert Decimal(order["fee"]) == fee, what
        assert order["fee_asset"] == market.quote, what
        accrued = sum((exact(t["quote_quantity"], rate_of(market, t)) for t in own), Decimal(0))
        assert order["fee"] == market.quote_text(market.fee(accrued)), what
        check_status(order, filled)


def rate_of(market: Market, trade: dict[str, Any]) -> Decimal:
    return market.maker_fee_rate if trade["liquidity"] == "maker" else market.taker_fee_rate


def check_locked(
    market: Market,
    user_id: int,
    orders: list[dict[str, Any]],
    trades: list[dict[str, Any]],
    balances: dict[str, Balance],
) -> None:
    """Locked base = remaining quantity of open sells; locked quote = for each open buy,
    notional(limit, remaining) + ceil(accrued fee + notional × max rate) - fee paid
    (docs: `domain/fees.py`), the accrued fee being the exact rate × quote of its fills."""
    max_rate = max(market.maker_fee_rate, market.taker_fee_rate)
    accrued: dict[str, Decimal] = defaultdict(Decimal)
    for t in trades:
        accrued[t["order_id"]] += exact(t["quote_quantity"], rate_of(market, t))
    base = quote = Decimal(0)
    for order in orders:
        if order["status"] not in OPEN_STATUSES:
            continue
        assert order["type"] == "limit", order  # the scenarios place no stop orders
        remaining = Decimal(order["quantity"]) - Decimal(order["filled_quantity"])
        if order["side"] == "sell":
            base += remaining
            continue
        notional = exact(order["price"], remaining)
        worst_fee = market.fee(accrued[order["id"]] + exact(notional, max_rate))
        quote += notional + worst_fee - Decimal(order["fee"])
    got_base = balance_of(balances, market.base, market.base_decimals).locked
    got_quote = balance_of(balances, market.quote, market.quote_decimals).locked
    assert Decimal(got_base) == base, (user_id, market.base, got_base, base)
    assert Decimal(got_quote) == quote, (user_id, market.quote, got_quote, quote)


def check_book(market: Market, book: dict[str, Any], orders: list[dict[str, Any]]) -> None:
    """Sorted, not crossed, and each level the aggregate of the open orders at its price."""
    bids = [Decimal(lv["price"]) for lv in book["bids"]]
    asks = [Decimal(lv["price"]) for lv in book["asks"]]
    assert bids == sorted(bids, reverse=True) and len(set(bids)) == len(bids), book
    assert asks == sorted(asks) and len(set(asks)) == len(asks), book
    if bids and asks:
        assert bids[0] < asks[0], ("crossed", book)
    expected: dict[str, dict[Decimal, list[Decimal]]] = {"bids": {}, "asks": {}}
    for order in orders:
        if order["status"] in OPEN_STATUSES:
            side = "bids" if order["side"] == "buy" else "asks"
            remaining = Decimal(order["quantity"]) - Decimal(order["filled_quantity"])
            expected[side].setdefault(Decimal(order["price"]), []).append(remaining)
    for side in ("bids", "asks"):
        got = {
            Decimal(lv["price"]): (Decimal(lv["quantity"]), lv["num_orders"]) for lv in book[side]
        }
        want = {price: (sum(qs, Decimal(0)), len(qs)) for price, qs in expected[side].items()}
        assert got == want, (market.symbol, side, got, want)


def check_status(order: dict[str, Any], filled: Decimal) -> None:
    status = order["status"]
    if order["quantity"] is not None:
        quantity = Decimal(order["quantity"])
        assert filled <= quantity, order
        if status == "filled":
            assert filled == quantity, order
        if filled == quantity:
            assert status == "filled", order
    if status == "open":
        assert filled == 0 and order["close_reason"] is None, order
    elif status == "partially_filled":
        assert filled > 0 and order["close_reason"] is None, order
    else:
        assert order["close_reason"] is not None, order


# -- the WebSocket ---------------------------------------------------------------------------


class BookStream:
    """An `orderbook:<symbol>` subscription kept as a local book (snapshot + diffs)."""

    def __init__(self, connection: ClientConnection, channel: str) -> None:
        self.connection = connection
        self.channel = channel
        self.sequence = -1
        self.sides: dict[str, dict[str, tuple[str, int]]] = {"bids": {}, "asks": {}}

    def recv(self) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(self.connection.recv(timeout=WS_RECV_TIMEOUT_S))
        assert message.get("type") != "error", message
        return message

    def subscribe(self) -> dict[str, Any]:
        self.connection.send(json.dumps({"op": "subscribe", "channels": [self.channel]}))
        ack = self.recv()
        assert ack["type"] == "subscribed", ack
        snapshot = self.recv()
        assert snapshot["type"] == "snapshot", snapshot
        data: dict[str, Any] = snapshot["data"]
        self.sequence = data["sequence"]
        for side in ("bids", "asks"):
            self.sides[side] = {
                lv["price"]: (lv["quantity"], lv["num_orders"]) for lv in data[side]
            }
        return snapshot

    def follow_to(self, sequence: int) -> list[dict[str, Any]]:
        """Apply updates until the local book is at `sequence`; the updates applied."""
        applied: list[dict[str, Any]] = []
        for _ in range(WS_MAX_MESSAGES):
            if self.sequence >= sequence:
                assert self.sequence == sequence, (self.sequence, sequence)
                return applied
            message = self.recv()
            if message["type"] != "update":
                continue
            data = message["data"]
            assert data["first_sequence"] == self.sequence + 1, ("gap", self.sequence, data)
            for side in ("bids", "asks"):
                for level in data[side]:
                    if Decimal(level["quantity"]) == 0:
                        assert level["num_orders"] == 0, level
                        self.sides[side].pop(level["price"], None)
                    else:
                        self.sides[side][level["price"]] = (level["quantity"], level["num_orders"])
            self.sequence = data["last_sequence"]
            applied.append(data)
        raise AssertionError(f"no update up to sequence {sequence} in {WS_MAX_MESSAGES} messages")

    def levels(self, side: str) -> list[tuple[str, str, int]]:
        """(price, quantity, num_orders), best first."""
        ordered = sorted(self.sides[side].items(), key=lambda kv: Decimal(kv[0]))
        if side == "bids":
            ordered.reverse()
        return [(price, qty, n) for price, (qty, n) in ordered]


def rest_levels(book: dict[str, Any], side: str) -> list[tuple[str, str, int]]:
    return [(lv["price"], lv["quantity"], lv["num_orders"]) for lv in book[side]]


@contextlib.contextmanager
def book_stream(server: ServerProcess, market: Market) -> Iterator[BookStream]:
    with connect(server.ws_url, open_timeout=WS_RECV_TIMEOUT_S) as connection:
        yield BookStream(connection, f"orderbook:{market.channel}")
