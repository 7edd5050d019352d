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

Invariants: only committed events are streamed (the hub is the engine's
publisher: it sees a batch only after its COMMIT, DESIGN rule 4); a snapshot and
the subscription it starts are taken together without yielding to the event
loop, so no batch falls between them; each message is rendered once per batch
and shared by its subscribers; private messages go only to connections
authenticated as their owner.
Bounds: each connection queues at most `ws_max_pending_messages` outgoing
messages; a connection that falls that far behind is dropped rather than allowed
to grow memory: the reaper unsubscribes it at once (nothing more is queued or
answered), and its writer, the only task that sends on its socket, closes it
(1008, "slow consumer") as soon as the socket takes the close frame. At most
`ws_max_subscriptions` channels and `MAX_INBOUND_CHARS` per client message, which
is JSON text (a binary message is refused).
Known limits: the close frame waits behind what the socket already holds, so a
client that never reads again is cut only by the server's keepalive timeout; a
book snapshot holds at most `SNAPSHOT_MAX_LEVELS` levels per side (diffs cover
every level), so a client of a deeper book misses the levels beyond it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from crossbook.api.auth import Authenticator
from crossbook.api.context import normalize_symbol
from crossbook.api.envelope import plain_json
from crossbook.api.errors import ApiCode, ApiError
from crossbook.api.metrics import ApiMetrics
from crossbook.api.views import (
    OrderView,
    fills_json,
    levels_json,
    order_json,
    ticker_json,
    trade_json,
)
from crossbook.domain import (
    BalanceChanged,
    DomainError,
    ErrorCode,
    Event,
    MarketSpec,
    OrderAccepted,
    OrderUpdated,
    TradeExecuted,
)
from crossbook.engine.market_data import BookDiff, MarketData, MarketDataBatch

router = APIRouter()
log = structlog.get_logger(__name__)

MAX_INBOUND_CHARS = 4_096
MAX_REQUEST_ID_CHARS = 64  # a client message's `id`, echoed in its reply
SNAPSHOT_MAX_LEVELS = 100_000  # per side; diffs cover every level, so snapshots nearly do
PUBLIC_KINDS = ("orderbook", "trades", "ticker")
PRIVATE_CHANNELS = ("orders", "fills", "balances")
SLOW_CONSUMER_CLOSE = 1008


@dataclass(eq=False)
class Connection:
    """One client: its subscriptions and its bounded queue of rendered messages."""

    websocket: WebSocket
    queue: asyncio.Queue[bytes]
    user_id: int | None = None
    channels: set[str] = field(default_factory=set)
    auth_expires_at_s: int | None = None  # private channels end when the token does
    overflowed: bool = False
    closed: bool = False

    def offer(self, message: bytes) -> bool:
        if self.overflowed:
            return False
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.overflowed = True
            return False
        return True


class StreamHub:
    """The engine's publisher: applies each committed batch to `MarketData`, then fans out."""

    def __init__(
        self,
        market_data: MarketData,
        metrics: ApiMetrics,
        *,
        max_pending_messages: int,
        max_subscriptions: int,
        book_depth: int,
        auth: Authenticator,
        now_ms: Callable[[], int],
        engine_balances: bool = True,
    ) -> None:
        self.market_data = market_data
        # remote-wallet mode: the engine's balances are only what it holds for open
        # orders, not the user's balances (those are the wallet's): not streamed
        self._engine_balances = engine_balances
        self.auth = auth
        self.metrics = metrics
        self.max_pending_messages = max_pending_messages
        self.max_subscriptions = max_subscriptions
        self.book_depth = book_depth
        self._now_ms = now_ms
        self._by_channel: dict[str, set[Connection]] = {}
        self._by_user: dict[int, set[Connection]] = {}
        self._slow: list[Connection] = []
        self._wake_reaper = asyncio.Event()

    # -- the Publisher port ------------------------------------------------------------

    def publish(self, events: Sequence[Event]) -> None:
        batch = self.market_data.apply(events)
        self.metrics.events.inc(len(events))
        self.metrics.trades.inc(len(batch.trades))
        self._publish_public(batch)
        if self._by_user:
            self._publish_private(batch.events)

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
            elif isinstance(event, OrderAccepted | OrderUpdated):
                if event.user_id in self._by_user:
                    self._send_user(event.user_id, "orders", self._order_message(event))
            elif (
                isinstance(event, BalanceChanged)
                and self._engine_balances
                and event.user_id in self._by_user
            ):
                self._send_user(event.user_id, "balances", self._balance_message(event))

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

    def _balance_message(self, event: BalanceChanged) -> bytes:
        asset = self.market_data.assets()[event.asset]
        data = {
            "asset": event.asset,
            "available": asset.format_amount(event.available),
            "locked": asset.format_amount(event.locked),
            "total": asset.format_amount(event.available + event.locked),
            "sequence": event.seq,
        }
        return _message("balance", "balances", data)

    # -- subscriptions -----------------------------------------------------------------

    def connect(self, websocket: WebSocket) -> Connection:
        self.metrics.ws_connections.inc()
        return Connection(websocket, asyncio.Queue(self.max_pending_messages))

    def disconnect(self, connection: Connection) -> None:
        """Forget the connection (idempotent)."""
        if connection.closed:
            return
        connection.closed = True
        for channel in list(connection.channels):
            self._unsubscribe(connection, channel)
        self.metrics.ws_connections.dec()

    def channels(
        self, connection: Connection, names: Iterable[object], *, adding: bool
    ) -> list[str]:
        """The canonical names of `names`, refusing all of them if one is bad or if
        `adding` them would exceed the connection's subscription limit."""
        channels = [self._channel(connection, name) for name in names]
        fresh = set(channels) - connection.channels
        if adding and len(connection.channels) + len(fresh) > self.max_subscriptions:
            raise ApiError(
                ApiCode.INVALID_REQUEST,
                f"at most {self.max_subscriptions} channels per connection",
            )
        return channels

    def subscribe(self, connection: Connection, channels: list[str]) -> None:
        """Subscribe to canonical `channels`, queueing each snapshot in the same step."""
        fresh = [c for c in dict.fromkeys(channels) if c not in connection.channels]
        assert len(connection.channels) + len(fresh) <= self.max_subscriptions
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
            spec = self._spec(symbol)
            book = self.market_data.book(symbol, self.book_depth)
            data = {
                "symbol": symbol,
                "sequence": book.market_seq,
                "bids": levels_json(spec, book.bids),
                "asks": levels_json(spec, book.asks),
            }
            self.offer(connection, _message("snapshot", channel, data))
        elif kind == "ticker":
            self.offer(connection, self._ticker_message(symbol))

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
        if connection.overflowed:
            return
        if not connection.offer(message):  # it just overflowed: the reaper drops it
            self._slow.append(connection)
            self._wake_reaper.set()

    def take_slow(self) -> list[Connection]:
        slow, self._slow = self._slow, []
        self._wake_reaper.clear()
        return slow

    async def reap_slow_consumers(self) -> None:
        """Drop connections that fell behind (runs for the server's lifetime). Never
        waits on a client: each one's writer sends the close (see `_write`)."""
        while True:
            await self._wake_reaper.wait()
            for connection in self.take_slow():
                if not connection.closed:
                    self.disconnect(connection)
                    self.metrics.ws_disconnects.labels("slow_consumer").inc()


def _message(kind: str, channel: str, data: Any) -> bytes:
    return orjson.dumps({"type": kind, "channel": channel, "data": data})


# -- the endpoint ------------------------------------------------------------------------


@router.websocket("/ws")
async def stream(websocket: WebSocket) -> None:
    hub: StreamHub = websocket.app.state.hub
    await websocket.accept()
    connection = hub.connect(websocket)
    writer = asyncio.create_task(_write(connection), name="ws-writer")
    try:
        await _read(hub, connection)
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        hub.disconnect(connection)


async def _write(connection: Connection) -> None:
    """Send the queued messages in order, then, once the connection has overflowed,
    the slow-consumer close. The only task that sends on the socket, so a close never
    races a message; ends quietly when the client is gone."""
    websocket = connection.websocket
    with contextlib.suppress(WebSocketDisconnect):
        while not connection.overflowed:
            message = await connection.queue.get()
            await websocket.send_text(message.decode())
        await websocket.close(SLOW_CONSUMER_CLOSE, "slow consumer")


async def _read(hub: StreamHub, connection: Connection) -> None:
    """Answer the client's messages until it disconnects or is closed; a slow
    consumer's messages are no longer answered (its replies could not be queued)."""
    websocket = connection.websocket
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if connection.overflowed:
            continue
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
        return -(2**63) <= value < 2**63
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
