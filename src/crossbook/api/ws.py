"""WebSocket streams at `/ws`: public market channels and private account channels.

Client → server (JSON text):
    {"op": "subscribe",   "channels": ["orderbook:BTC-USDT", "trades:BTC-USDT", "ticker:BTC-USDT"]}
    {"op": "unsubscribe", "channels": [...]}
    {"op": "auth", "token": "<JWT>"}            then the private channels:
    {"op": "subscribe",   "channels": ["orders", "fills", "balances"]}
    {"op": "ping"}
A request may carry an `id`, echoed in its acknowledgement or `error`.
Server → client: `subscribed` / `unsubscribed` / `authenticated` / `pong` / `error`
acknowledgements, and data messages `{"type", "channel", "data"}`:
- `orderbook:<SYM>`: first a `snapshot` (aggregated levels, `sequence` = the
  market's sequence it includes), then one `update` per committed batch that
  touched the market: `first_sequence`/`last_sequence` and the changed levels with
  their new absolute quantity (a zero quantity, such as "0.0000", removes the
  level). The first update after a snapshot has `first_sequence == sequence + 1`
  and each next one continues the last; a gap means the client missed something
  and must resubscribe;
- `trades:<SYM>`: `trades`, the public trades of one batch; `ticker:<SYM>`: a
  `ticker` on subscribe and after each batch that traded or moved the best prices;
- `orders`: `order` messages (`event` = accepted with the full order, or updated
  with its new state); `fills`: the caller's `fill`s with side, liquidity and fee;
  `balances`: `balance` with the new available/locked of one asset (embedded
  mode only: in remote-wallet mode balances are the wallet's). Private
  messages carry the event `sequence` (exchange-wide, increasing). When the
  token expires the private channels end with an UNAUTHORIZED `error`; the
  client authenticates again and resubscribes.

Invariants: only committed events are streamed (the hub listens to the read
model, which is fed only committed batches, DESIGN rule 4, and tells the hub of
each once it is applied, so what the hub renders is the state after the batch);
a snapshot and the subscription it starts are taken together without yielding
to the event loop, so no batch falls between them; each message is rendered
once per batch and shared by its subscribers, and a book snapshot once per
market sequence; private messages go only to connections authenticated as
their owner.
Bounds (`StreamLimits`, each a setting): a connection queues at most
`max_pending_messages` messages and `max_queued_bytes` bytes, all connections
together `max_total_queued_bytes`; at most `max_subscriptions` channels, and
`max_connections_per_client` connections per client address (beyond: 429 at the
handshake); a client may send `ops_burst` messages at once and `ops_per_s`
after that, each at most `MAX_INBOUND_CHARS` of JSON text (a binary message is
refused). A connection that would pass a queue bound is a slow consumer and one
that sends beyond its budget is rate limited: either is dropped at once — its
queue freed, nothing more queued, read or answered — and closed 1008 ("slow
consumer", "too many messages"): the close frame goes behind what the socket
already holds and the connection is aborted if that has not drained within
`ws_close_grace_ms` (`connections.DROP_WEBSOCKET`). A client still sending when
it is dropped may see a reset instead of the close frame (a socket closed with
unread data resets).
Known limits: a book snapshot holds at most `SNAPSHOT_MAX_LEVELS` levels per
side (diffs cover every level), so a client of a deeper book misses the levels
beyond it; the byte bounds count a shared message once per connection that
queues it (conservative: the memory held is at most the count).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from crossbook.api.auth import Authenticator
from crossbook.api.book_cache import BookCache
from crossbook.api.connections import DROP_WEBSOCKET
from crossbook.api.context import normalize_symbol
from crossbook.api.envelope import failure, plain_json
from crossbook.api.errors import ApiCode, ApiError
from crossbook.api.metrics import ApiMetrics
from crossbook.api.views import (
    fills_json,
    levels_json,
    order_json,
    ticker_json,
    trade_json,
)
from crossbook.domain import (
    INT64_MAX,
    DomainError,
    ErrorCode,
    Event,
    MarketSpec,
    OrderAccepted,
    OrderUpdated,
    TradeExecuted,
)
from crossbook.domain.exchange import BalanceState
from crossbook.engine.order_view import OrderView
from crossbook.engine.read_model.books import BookDiff
from crossbook.engine.read_model.market_data import MarketData, MarketDataBatch

router = APIRouter()
log = structlog.get_logger(__name__)

MAX_INBOUND_CHARS = 4_096
MAX_REQUEST_ID_CHARS = 64  # a client message's `id`, echoed in its reply
SNAPSHOT_MAX_LEVELS = 100_000  # per side; diffs cover every level, so snapshots nearly do
PUBLIC_KINDS = ("orderbook", "trades", "ticker")
PRIVATE_CHANNELS = ("orders", "fills", "balances")
POLICY_CLOSE = 1008


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """The bounds of the streams (DESIGN rule 7); every one has a setting."""

    max_pending_messages: int = 2_000  # queued per connection
    max_queued_bytes: int = 16 * 2**20  # queued per connection
    max_total_queued_bytes: int = 512 * 2**20  # queued, all connections together
    max_subscriptions: int = 100  # channels per connection
    ops_per_s: float = 10.0  # client messages per connection, refilled …
    ops_burst: int = 50  # … into a bucket of this size
    max_connections_per_client: int = 32  # WebSockets open from one client address
    book_depth: int = SNAPSHOT_MAX_LEVELS  # levels per side of a book snapshot

    def __post_init__(self) -> None:
        assert 0 < self.max_queued_bytes <= self.max_total_queued_bytes, self
        assert self.max_pending_messages > 0 and self.max_subscriptions > 0, self
        assert self.ops_per_s > 0 and self.ops_burst > 0, self
        assert self.max_connections_per_client > 0 and self.book_depth > 0, self


class Drop(enum.StrEnum):
    """Why the server closed a connection (the metric's label)."""

    SLOW_CONSUMER = "slow_consumer"
    RATE_LIMITED = "rate_limited"


CLOSE_REASON = {Drop.SLOW_CONSUMER: "slow consumer", Drop.RATE_LIMITED: "too many messages"}


class Connection:
    """One client: its subscriptions, its queue of rendered messages (bounded in count
    and bytes) and its budget of client messages (a token bucket)."""

    __slots__ = (
        "auth_expires_at_s",
        "channels",
        "client",
        "closed",
        "drop",
        "ops_at_s",
        "ops_tokens",
        "pending",
        "pending_bytes",
        "ready",
        "user_id",
        "websocket",
    )

    def __init__(self, websocket: WebSocket, client: str, ops_burst: int, now_s: float) -> None:
        self.websocket = websocket
        self.client = client
        self.pending: deque[bytes] = deque()
        self.pending_bytes = 0
        self.ready = asyncio.Event()  # something to send, or the connection was dropped
        self.user_id: int | None = None
        self.channels: set[str] = set()
        self.auth_expires_at_s: int | None = None  # private channels end when the token does
        self.drop: Drop | None = None  # set once: the server closes the connection
        self.closed = False  # forgotten by the hub
        self.ops_tokens = float(ops_burst)
        self.ops_at_s = now_s


class StreamHub:
    """Fan-out of the read model: a `BatchListener` of `market_data` (subscribed by the
    composition root) that streams what each applied batch changed."""

    def __init__(
        self,
        market_data: MarketData,
        metrics: ApiMetrics,
        *,
        limits: StreamLimits,
        auth: Authenticator,
        now_ms: Callable[[], int],
        engine_balances: bool = True,
        monotonic_s: Callable[[], float] = time.monotonic,
        books: BookCache | None = None,
    ) -> None:
        self.books = books or BookCache()
        self.market_data = market_data
        # remote-wallet mode: the engine's balances are only what it holds for open
        # orders, not the user's balances (those are the wallet's): not streamed
        self._engine_balances = engine_balances
        self.auth = auth
        self.metrics = metrics
        self.limits = limits
        self._now_ms = now_ms
        self._monotonic_s = monotonic_s
        self._by_channel: dict[str, set[Connection]] = {}
        self._by_user: dict[int, set[Connection]] = {}
        self._by_client: dict[str, int] = {}  # open connections by client address
        self.queued_bytes = 0  # of every connection's queue together
        self._snapshots: dict[str, tuple[int, bytes]] = {}  # symbol -> (market_seq, snapshot)

    # -- the read model's BatchListener --------------------------------------------------

    def batch_applied(self, batch: MarketDataBatch) -> None:
        self.metrics.events.inc(len(batch.events))
        self.metrics.trades.inc(len(batch.trades))
        self._publish_public(batch)
        if self._by_user:
            self._publish_private(batch.events)
            if self._engine_balances and batch.events:
                self._publish_balances(batch.balances, batch.events[-1].seq)

    def _publish_public(self, batch: MarketDataBatch) -> None:
        for symbol, diff in batch.book_diffs.items():
            channel = f"orderbook:{symbol}"
            if self._by_channel.get(channel):
                self._send(channel, _message("update", channel, self._diff_json(diff)))
        trades_by_symbol: dict[str, list[TradeExecuted]] = {}
        for trade in batch.trades:
            trades_by_symbol.setdefault(trade.symbol, []).append(trade)
        for symbol, trades in trades_by_symbol.items():
            channel = f"trades:{symbol}"
            if self._by_channel.get(channel):
                spec = self._spec(symbol)
                data = [trade_json(spec, t) for t in trades]
                self._send(channel, _message("trades", channel, data))
        for symbol in batch.tickers_changed:
            channel = f"ticker:{symbol}"
            if self._by_channel.get(channel):
                self._send(channel, self._ticker_message(symbol))

    def _publish_private(self, events: Sequence[Event]) -> None:
        for event in events:
            if isinstance(event, TradeExecuted):
                self._private_fill(event)
            elif isinstance(event, OrderAccepted | OrderUpdated) and event.user_id in self._by_user:
                self._send_user(event.user_id, "orders", self._order_message(event))

    def _publish_balances(self, balances: Sequence[BalanceState], seq: int) -> None:
        """Each changed balance of a subscribed user, as of the batch's last `seq`."""
        for user_id, asset, available, locked in balances:
            if user_id in self._by_user:
                message = self._balance_message(asset, available, locked, seq)
                self._send_user(user_id, "balances", message)

    def _private_fill(self, trade: TradeExecuted) -> None:
        spec = self._spec(trade.symbol)
        for user_id in {trade.buyer_user_id, trade.seller_user_id}:
            if user_id in self._by_user:
                for fill in fills_json(spec, trade, user_id, settled=self._engine_balances):
                    message = _message("fill", "fills", {**fill, "sequence": trade.seq})
                    self._send_user(user_id, "fills", message)

    # -- rendering ---------------------------------------------------------------------

    def _spec(self, symbol: str) -> MarketSpec:
        info = self.market_data.market(symbol)
        assert info is not None, symbol
        return info.spec

    def _diff_json(self, diff: BookDiff) -> dict[str, Any]:
        spec = self._spec(diff.symbol)
        return {
            "symbol": diff.symbol,
            "first_sequence": diff.first_market_seq,
            "last_sequence": diff.last_market_seq,
            "bids": levels_json(spec, diff.bids),
            "asks": levels_json(spec, diff.asks),
        }

    def _ticker_message(self, symbol: str) -> bytes:
        now = self._now_ms()
        data = ticker_json(self._spec(symbol), self.market_data.ticker(symbol, now), now)
        return _message("ticker", f"ticker:{symbol}", data)

    def _order_message(self, event: OrderAccepted | OrderUpdated) -> bytes:
        spec = self._spec(event.symbol)
        if isinstance(event, OrderAccepted):
            data = {
                "event": "accepted",
                **order_json(spec, OrderView.from_events(event, None)),
                "sequence": event.seq,
            }
        else:
            data = {
                "event": "updated",
                "id": str(event.order_id),
                "symbol": event.symbol,
                "status": event.status.value,
                "price": spec.format_price(event.price_ticks) if event.price_ticks else None,
                "quantity": spec.format_quantity(event.quantity_lots),
                "filled_quantity": spec.format_quantity(event.filled_lots),
                "filled_quote_quantity": spec.format_quote(event.filled_notional_units),
                "fee": spec.format_quote(event.fee_paid_units),
                "triggered": event.triggered,
                "close_reason": None if event.reason is None else event.reason.value,
                "sequence": event.seq,
            }
        return _message("order", "orders", data)

    def _balance_message(self, code: str, available: int, locked: int, seq: int) -> bytes:
        asset = self.market_data.assets()[code]
        data = {
            "asset": code,
            "available": asset.format_amount(available),
            "locked": asset.format_amount(locked),
            "total": asset.format_amount(available + locked),
            "sequence": seq,
        }
        return _message("balance", "balances", data)

    # -- subscriptions -----------------------------------------------------------------

    def connect(self, websocket: WebSocket, client: str = "") -> Connection | None:
        """A new connection from `client`, or None if that address has as many open as
        it may have."""
        held = self._by_client.get(client, 0)
        if held >= self.limits.max_connections_per_client:
            return None
        self._by_client[client] = held + 1
        self.metrics.ws_connections.inc()
        return Connection(websocket, client, self.limits.ops_burst, self._monotonic_s())

    def disconnect(self, connection: Connection) -> None:
        """Forget the connection and free its queue (idempotent)."""
        if connection.closed:
            return
        connection.closed = True
        for channel in list(connection.channels):
            self._unsubscribe(connection, channel)
        self._discard_pending(connection)
        held = self._by_client[connection.client] - 1
        if held:
            self._by_client[connection.client] = held
        else:
            del self._by_client[connection.client]
        self.metrics.ws_connections.dec()

    def take_op(self, connection: Connection) -> bool:
        """Spend one of the connection's client-message tokens; False when it has none."""
        now_s = self._monotonic_s()
        limits = self.limits
        tokens = connection.ops_tokens + (now_s - connection.ops_at_s) * limits.ops_per_s
        connection.ops_at_s = now_s
        connection.ops_tokens = min(float(limits.ops_burst), tokens) - 1.0
        if connection.ops_tokens >= 0:
            return True
        self.drop(connection, Drop.RATE_LIMITED)
        return False

    def channels(
        self, connection: Connection, names: Sequence[object], *, adding: bool
    ) -> list[str]:
        """The canonical names of `names`, refusing all of them if one is bad or if
        `adding` them would exceed the connection's subscription limit."""
        limit = self.limits.max_subscriptions
        if len(names) > limit:
            raise ApiError(ApiCode.INVALID_REQUEST, f"at most {limit} channels per request")
        channels = [self._channel(connection, name) for name in names]
        fresh = set(channels) - connection.channels
        if adding and len(connection.channels) + len(fresh) > limit:
            raise ApiError(ApiCode.INVALID_REQUEST, f"at most {limit} channels per connection")
        return channels

    def subscribe(self, connection: Connection, channels: list[str]) -> None:
        """Subscribe to canonical `channels`, queueing each snapshot in the same step."""
        fresh = [c for c in dict.fromkeys(channels) if c not in connection.channels]
        assert len(connection.channels) + len(fresh) <= self.limits.max_subscriptions
        for channel in fresh:
            connection.channels.add(channel)
            if channel in PRIVATE_CHANNELS:
                assert connection.user_id is not None
                self._by_user.setdefault(connection.user_id, set()).add(connection)
            else:
                self._by_channel.setdefault(channel, set()).add(connection)
                self._queue_snapshot(connection, channel)

    def unsubscribe(self, connection: Connection, channels: list[str]) -> None:
        for channel in channels:
            self._unsubscribe(connection, channel)

    def _unsubscribe(self, connection: Connection, channel: str) -> None:
        if channel not in connection.channels:
            return
        connection.channels.discard(channel)
        if channel in PRIVATE_CHANNELS:
            if not connection.channels.intersection(PRIVATE_CHANNELS):
                assert connection.user_id is not None
                users = self._by_user.get(connection.user_id, set())
                users.discard(connection)
                if not users:
                    self._by_user.pop(connection.user_id, None)
        else:
            subscribers = self._by_channel.get(channel, set())
            subscribers.discard(connection)
            if not subscribers:
                self._by_channel.pop(channel, None)

    def _channel(self, connection: Connection, name: object) -> str:
        """The canonical channel name (`orderbook:BTC/USDT`, `orders`) or a refusal."""
        if not isinstance(name, str) or len(name) > 64:
            raise ApiError(ApiCode.INVALID_REQUEST, "a channel is a string such as trades:BTC-USDT")
        if name in PRIVATE_CHANNELS:
            if connection.user_id is None:
                raise ApiError(ApiCode.UNAUTHORIZED, f"authenticate before subscribing to {name}")
            expires_s = connection.auth_expires_at_s
            if expires_s is not None and self._now_ms() // 1000 >= expires_s:
                raise ApiError(ApiCode.UNAUTHORIZED, "token expired: authenticate again")
            return name
        kind, _, symbol_text = name.partition(":")
        if kind not in PUBLIC_KINDS or not symbol_text:
            raise ApiError(
                ApiCode.INVALID_REQUEST,
                f"unknown channel {name!r}",
                details={"channels": [*(f"{k}:<symbol>" for k in PUBLIC_KINDS), *PRIVATE_CHANNELS]},
            )
        symbol = normalize_symbol(symbol_text)
        if self.market_data.market(symbol) is None:
            raise DomainError(ErrorCode.MARKET_NOT_FOUND, f"unknown market {symbol_text}")
        return f"{kind}:{symbol}"

    def _queue_snapshot(self, connection: Connection, channel: str) -> None:
        kind, _, symbol = channel.partition(":")
        if kind == "orderbook":
            self.offer(connection, self._book_snapshot(symbol, channel))
        elif kind == "ticker":
            self.offer(connection, self._ticker_message(symbol))

    def _book_snapshot(self, symbol: str, channel: str) -> bytes:
        """The market's snapshot message, rendered once per market sequence and shared
        by every subscriber (a 3,000-level book is ~160 KB, ~15 ms to render whole;
        its levels are re-rendered only where they changed, `BookCache`)."""
        info = self.market_data.market(symbol)
        assert info is not None, symbol
        cached = self._snapshots.get(symbol)
        if cached is not None and cached[0] == info.market_seq:
            return cached[1]
        book = self.market_data.book(symbol, self.limits.book_depth)
        bids, asks = self.books.sides(info.spec, book)  # levels rendered once per change
        data = {"symbol": symbol, "sequence": book.market_seq, "bids": bids, "asks": asks}
        message = _message("snapshot", channel, data)
        self._snapshots[symbol] = (book.market_seq, message)
        return message

    # -- delivery ----------------------------------------------------------------------

    def _send(self, channel: str, message: bytes) -> None:
        for connection in self._by_channel.get(channel, ()):
            self.offer(connection, message)

    def _send_user(self, user_id: int, channel: str, message: bytes) -> None:
        now_s = self._now_ms() // 1000
        for connection in list(self._by_user.get(user_id, ())):
            expires_s = connection.auth_expires_at_s
            if expires_s is not None and now_s >= expires_s:
                self._end_private(connection)
            elif channel in connection.channels:
                self.offer(connection, message)

    def _end_private(self, connection: Connection) -> None:
        """The token expired: drop the private channels and say so (public ones stay)."""
        ended = [c for c in PRIVATE_CHANNELS if c in connection.channels]
        for channel in ended:
            self._unsubscribe(connection, channel)
        connection.user_id = None
        connection.auth_expires_at_s = None
        error = {
            "type": "error",
            "code": str(ApiCode.UNAUTHORIZED),
            "message": "token expired: authenticate again and resubscribe",
            "details": {"channels": ended},
        }
        self.offer(connection, orjson.dumps(error))

    def offer(self, connection: Connection, message: bytes) -> None:
        """Queue `message`, or drop the connection if it would pass a bound."""
        if connection.drop is not None or connection.closed:
            return
        size = len(message)
        limits = self.limits
        if (
            len(connection.pending) >= limits.max_pending_messages
            or connection.pending_bytes + size > limits.max_queued_bytes
            or self.queued_bytes + size > limits.max_total_queued_bytes
        ):
            self.drop(connection, Drop.SLOW_CONSUMER)
            return
        connection.pending.append(message)
        connection.pending_bytes += size
        self.queued_bytes += size
        connection.ready.set()

    def take(self, connection: Connection) -> bytes | None:
        """The next message to send (the writer's side of `offer`), or None."""
        if not connection.pending:
            return None
        message = connection.pending.popleft()
        connection.pending_bytes -= len(message)
        self.queued_bytes -= len(message)
        return message

    def drop(self, connection: Connection, reason: Drop) -> None:
        """Close the connection at once: its queue is freed, nothing more is queued or
        read, and its endpoint closes the socket (`_drop_socket`)."""
        if connection.drop is not None:
            return
        connection.drop = reason
        self._discard_pending(connection)
        connection.ready.set()
        self.metrics.ws_disconnects.labels(str(reason)).inc()

    def _discard_pending(self, connection: Connection) -> None:
        self.queued_bytes -= connection.pending_bytes
        connection.pending.clear()
        connection.pending_bytes = 0


def _message(kind: str, channel: str, data: Any) -> bytes:
    return orjson.dumps({"type": kind, "channel": channel, "data": data})


# -- the endpoint ------------------------------------------------------------------------


@router.websocket("/ws")
async def stream(websocket: WebSocket) -> None:
    hub: StreamHub = websocket.app.state.hub
    client = websocket.client.host if websocket.client else ""
    connection = hub.connect(websocket, client)
    if connection is None:
        limit = hub.limits.max_connections_per_client
        refusal = ApiError(
            ApiCode.TOO_MANY_CONNECTIONS,
            f"at most {limit} WebSocket connections per client address",
            headers={"Retry-After": "1"},
            details={"limit": limit},
        )
        await websocket.send_denial_response(failure(websocket, refusal))
        return
    try:
        await websocket.accept()
        tasks = (
            asyncio.create_task(_write(hub, connection), name="ws-writer"),
            asyncio.create_task(_read(hub, connection), name="ws-reader"),
        )
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        hub.disconnect(connection)
    if connection.drop is not None:
        await _drop_socket(websocket, connection.drop)


async def _drop_socket(websocket: WebSocket, reason: Drop) -> None:
    """Close 1008 at once: through the server's drop (stop reading, the close frame
    behind what the socket holds, abort after a grace time) where it has one."""
    drop = websocket.scope.get("extensions", {}).get(DROP_WEBSOCKET)
    if drop is not None:
        drop(POLICY_CLOSE, CLOSE_REASON[reason])
        return
    with contextlib.suppress(Exception):  # the client may be gone: nothing to tell it
        await websocket.close(POLICY_CLOSE, CLOSE_REASON[reason])


async def _write(hub: StreamHub, connection: Connection) -> None:
    """Send the queued messages in order until the connection is dropped; the only task
    that sends on the socket. Ends quietly when the client is gone."""
    websocket = connection.websocket
    with contextlib.suppress(WebSocketDisconnect):
        while connection.drop is None:
            await connection.ready.wait()
            connection.ready.clear()
            while (message := hub.take(connection)) is not None:
                await websocket.send_text(message.decode())


async def _read(hub: StreamHub, connection: Connection) -> None:
    """Answer the client's messages until it disconnects, is dropped, or sends faster
    than its budget (then it is dropped)."""
    websocket = connection.websocket
    while connection.drop is None:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect" or not hub.take_op(connection):
            return
        request: dict[str, Any] = {}
        try:
            request = _parse(message.get("text"))
            _handle(hub, connection, request)
        except (ApiError, DomainError) as error:
            hub.offer(connection, _error_reply(error.code, error.message, error.details, request))
        except Exception as error:  # a bug: answered, logged, and the connection kept
            trace_id = secrets.token_hex(16)
            log.error("unexpected websocket error", trace_id=trace_id, exc_info=error)
            message_text = "An unexpected error occurred"
            details = {"trace_id": trace_id}
            hub.offer(
                connection, _error_reply(ApiCode.INTERNAL_ERROR, message_text, details, request)
            )


def _error_reply(
    code: str, message: str, details: Mapping[str, object], request: Mapping[str, Any]
) -> bytes:
    reply = {
        "type": "error",
        "code": str(code),
        "message": message,
        "details": {str(k): plain_json(v) for k, v in details.items()},
        **({"id": request["id"]} if "id" in request else {}),
    }
    return orjson.dumps(reply)


def _parse(text: str | None) -> dict[str, Any]:
    """One client message as a JSON object (None: a binary message, refused)."""
    if text is None:
        raise ApiError(ApiCode.INVALID_REQUEST, "a message is JSON text, not binary")
    if len(text) > MAX_INBOUND_CHARS:
        raise ApiError(ApiCode.PAYLOAD_TOO_LARGE, f"messages are at most {MAX_INBOUND_CHARS} chars")
    try:
        request = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ApiError(ApiCode.INVALID_REQUEST, "a message is a JSON object") from None
    if not isinstance(request, dict):
        raise ApiError(ApiCode.INVALID_REQUEST, "a message is a JSON object")
    request_id = request.get("id")
    if "id" in request and not _is_request_id(request_id):
        request.pop("id")  # never echoed: it is not an id
        raise ApiError(
            ApiCode.INVALID_REQUEST,
            f"id is an integer or a string of at most {MAX_REQUEST_ID_CHARS} characters",
        )
    return request


def _is_request_id(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -INT64_MAX - 1 <= value <= INT64_MAX
    return isinstance(value, str) and len(value) <= MAX_REQUEST_ID_CHARS


def _handle(hub: StreamHub, connection: Connection, request: dict[str, Any]) -> None:
    """Answer one client request; the reply is queued before any snapshot it causes."""
    op = request.get("op")
    reply: dict[str, Any] = {"id": request["id"]} if "id" in request else {}
    if op == "ping":
        hub.offer(connection, orjson.dumps({"type": "pong", **reply}))
        return
    if op == "auth":
        token = request.get("token")
        if not isinstance(token, str):
            raise ApiError(ApiCode.UNAUTHORIZED, "auth needs a token")
        principal = hub.auth.verify(token)
        if principal.user_id is None:
            raise ApiError(ApiCode.FORBIDDEN, "private channels need a trader's token")
        if connection.user_id not in (None, principal.user_id):
            raise ApiError(ApiCode.FORBIDDEN, "this connection is authenticated as another user")
        connection.user_id = principal.user_id
        connection.auth_expires_at_s = principal.expires_at_s
        ack = {"type": "authenticated", "user_id": str(principal.user_id), **reply}
        hub.offer(connection, orjson.dumps(ack))
        return
    if op in ("subscribe", "unsubscribe"):
        names = request.get("channels")
        if not isinstance(names, list) or not names:
            raise ApiError(ApiCode.INVALID_REQUEST, f"{op} needs a non-empty list of channels")
        channels = hub.channels(connection, names, adding=op == "subscribe")
        hub.offer(connection, orjson.dumps({"type": f"{op}d", "channels": channels, **reply}))
        if op == "subscribe":
            hub.subscribe(connection, channels)
        else:
            hub.unsubscribe(connection, channels)
        return
    raise ApiError(ApiCode.INVALID_REQUEST, "op must be subscribe, unsubscribe, auth or ping")
