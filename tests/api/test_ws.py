"""The WebSocket at `/ws` against a live server, through a real client (`websockets`).

Every wait is a `recv` bounded by `RECV_TIMEOUT_S` and every read-until loop by a
message count: a bound is a failure, never a way to let time pass. The server
queues a connection's messages in order and each REST call answers only after its
batch is committed and published, so "read until the message that the last REST
call caused" is an exact synchronisation point.

The slow-consumer tests run on a server of their own whose accepted sockets have a
small fixed kernel send buffer: otherwise TCP autotuning on loopback absorbs
megabytes before the server's own bounded queue (the thing under test) fills.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from crossbook.api.auth import Authenticator, Principal, Role, TokenCodec
from crossbook.api.metrics import ApiMetrics
from crossbook.api.ws import StreamHub, StreamLimits
from crossbook.api.ws import _handle as handle
from crossbook.domain import (
    CreateAsset,
    CreateMarket,
    Deposit,
    Exchange,
    OrderType,
    PlaceOrder,
    Side,
)
from crossbook.engine.read_model.market_data import MarketData

from api_support import (
    Api,
    LiveServer,
    Trader,
    fresh_market,
    new_trader,
    place,
    settings_for,
    tokens,
)

RECV_TIMEOUT_S = 10.0  # failure bound for one awaited message
MAX_MESSAGES = 1_000  # failure bound for a read-until loop
Message = dict[str, Any]


# -- the client ----------------------------------------------------------------------------


class Stream:
    """One `/ws` connection speaking the JSON protocol."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection

    def send(self, **request: Any) -> None:
        self.connection.send(json.dumps(request))

    def recv(self) -> Message:
        message = json.loads(self.connection.recv(timeout=RECV_TIMEOUT_S))
        assert isinstance(message, dict), message
        return message

    def expect(self, kind: str) -> Message:
        """The next message, which must be of type `kind`."""
        message = self.recv()
        assert message["type"] == kind, message
        return message

    def until(self, done: Callable[[Message], bool]) -> list[Message]:
        """The messages up to and including the first one that is `done`."""
        received: list[Message] = []
        for _ in range(MAX_MESSAGES):
            received.append(self.recv())
            if done(received[-1]):
                return received
        raise AssertionError(f"no awaited message in {MAX_MESSAGES}: {received[-3:]}")

    def subscribe(self, *channels: str) -> Message:
        self.send(op="subscribe", channels=list(channels))
        return self.expect("subscribed")

    def error(self, code: str) -> Message:
        """The next message, which must be an error with `code`."""
        message = self.expect("error")
        assert message["code"] == code, message
        assert set(message) == {"type", "code", "message", "details"}, message
        return message

    def assert_usable(self) -> None:
        self.send(op="ping", id="still-there")
        assert self.recv() == {"type": "pong", "id": "still-there"}


@contextmanager
def stream(server: LiveServer) -> Iterator[Stream]:
    with connect(server.ws_url, open_timeout=RECV_TIMEOUT_S) as connection:
        yield Stream(connection)


def dashed(symbol: str) -> str:
    """`T1/USDT` as a client may spell it in a channel name: `T1-USDT`."""
    return symbol.replace("/", "-")


def token(trader: Trader) -> str:
    return tokens(trader.api.server).issue(Principal(Role.TRADER, trader.user_id))


# -- order book: snapshot + diffs rebuild the REST book ------------------------------------


class LocalBook:
    """An order book kept by a client: a snapshot, then each diff applied in turn."""

    def __init__(self, snapshot: Message) -> None:
        self.sequence: int = snapshot["sequence"]
        self.sides: dict[str, dict[str, Message]] = {
            side: {level["price"]: level for level in snapshot[side]} for side in ("bids", "asks")
        }

    def apply(self, diff: Message) -> None:
        assert diff["first_sequence"] == self.sequence + 1, (self.sequence, diff)
        assert diff["last_sequence"] >= diff["first_sequence"], diff
        self.sequence = diff["last_sequence"]
        for side, levels in self.sides.items():
            for level in diff[side]:
                if Decimal(level["quantity"]) == 0:
                    assert levels.pop(level["price"], None) is not None, ("unknown level", diff)
                else:
                    levels[level["price"]] = level

    def levels(self, side: str) -> list[Message]:
        ordered = sorted(self.sides[side].values(), key=lambda level: Decimal(level["price"]))
        return ordered[::-1] if side == "bids" else ordered

    def follow(self, client: Stream, channel: str, sequence: int) -> None:
        """Apply the updates `client` receives until the book includes `sequence`."""
        for update in client.until(lambda m: m["data"]["last_sequence"] >= sequence):
            assert (update["type"], update["channel"]) == ("update", channel), update
            self.apply(update["data"])
        assert self.sequence == sequence


def subscribe_book(client: Stream, symbol: str) -> LocalBook:
    channel = f"orderbook:{symbol}"
    assert client.subscribe(f"orderbook:{dashed(symbol)}")["channels"] == [channel]
    snapshot = client.expect("snapshot")
    assert snapshot["channel"] == channel
    assert snapshot["data"]["symbol"] == symbol
    return LocalBook(snapshot["data"])


def amend(trader: Trader, order: Message, **fields: str) -> Message:
    data: Message = trader.api.ok("PATCH", f"/orders/{order['order']['id']}", json=fields)
    return data


def cancel(trader: Trader, order: Message) -> Message:
    data: Message = trader.api.ok("DELETE", f"/orders/{order['order']['id']}")
    return data


def burst(server: LiveServer, symbol: str, traders: list[Trader], count: int) -> None:
    """`count` crossing limit orders sent at once (so the engine batches several)."""

    async def one(client: httpx.AsyncClient, i: int) -> httpx.Response:
        side = "buy" if i % 2 else "sell"
        price = str(Decimal("100.00") + Decimal("0.25") * (i % 9))
        body = {"symbol": symbol, "side": side, "type": "limit", "quantity": "0.3", "price": price}
        headers = {"Authorization": f"Bearer {token(traders[i % len(traders)])}"}
        return await client.post("/orders", json=body, headers=headers)

    async def all_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url + "/api/v1", timeout=30) as client:
            return await asyncio.gather(*(one(client, i) for i in range(count)))

    responses = asyncio.run(all_at_once())
    assert [r.status_code for r in responses] == [201] * count


def test_book_diffs_applied_to_the_snapshot_rebuild_the_rest_book(server: LiveServer) -> None:
    symbol = fresh_market(server)
    base = symbol.split("/")[0]
    a, b, c = (new_trader(server, {base: "50", "USDT": "100000"}) for _ in range(3))
    channel = f"orderbook:{symbol}"

    with stream(server) as first:
        first_book = subscribe_book(first, symbol)
        assert (first_book.levels("bids"), first_book.levels("asks")) == ([], [])

        # both sides, several levels, two orders on one level
        place(a, symbol, side="buy", type="limit", quantity="1.5", price="100.00")
        a_low = place(a, symbol, side="buy", type="limit", quantity="0.5", price="99.50")
        b_bid = place(b, symbol, side="buy", type="limit", quantity="0.8", price="100.00")
        b_deep = place(b, symbol, side="buy", type="limit", quantity="2", price="98.75")
        c_ask = place(c, symbol, side="sell", type="limit", quantity="1", price="101.00")
        c_ask2 = place(c, symbol, side="sell", type="limit", quantity="0.4", price="101.00")
        b_ask = place(b, symbol, side="sell", type="limit", quantity="3", price="102.50")
        place(c, symbol, side="sell", type="limit", quantity="1", price="110.00")
        # a taker that fills one bid and part of the next on the same level
        taker = place(c, symbol, side="sell", type="limit", quantity="2", price="100.00")
        assert taker["order"]["status"] == "filled"
        assert len(taker["trades"]) == 2
        assert b.api.ok("GET", f"/orders/{b_bid['order']['id']}")["status"] == "partially_filled"
        cancel(a, a_low)
        amend(b, b_deep, quantity="1.5")  # smaller: keeps its place
        amend(c, c_ask2, price="101.25")  # moves to another level

        with stream(server) as second:  # joins midway
            second_book = subscribe_book(second, symbol)
            assert second_book.levels("bids") and second_book.levels("asks")
            swept = place(a, symbol, side="buy", type="market", quantity="1.2")
            assert [t["price"] for t in swept["trades"]] == ["101.00", "101.25"]
            amend(b, b_ask, price="101.90", quantity="2.5")
            burst(server, symbol, [a, b, c], 40)
            cancel(b, b_bid)
            cancel(c, c_ask)  # already filled: answered, changes nothing

            rest = Api(server).ok("GET", f"/orderbook/{dashed(symbol)}", params={"depth": 1000})
            assert rest["bids"] and rest["asks"]  # 98.75 and 110.00 are out of the burst's reach
            for book, client in ((first_book, first), (second_book, second)):
                book.follow(client, channel, rest["sequence"])
                assert book.levels("bids") == rest["bids"]
                assert book.levels("asks") == rest["asks"]


# -- trades and ticker ---------------------------------------------------------------------


PUBLIC_TRADE_FIELDS = {
    "id",
    "symbol",
    "price",
    "quantity",
    "quote_quantity",
    "taker_side",
    "executed_at",
}


def test_trades_channel_streams_public_trades_and_the_ticker_the_new_last_price(
    server: LiveServer,
) -> None:
    symbol = fresh_market(server)
    base = symbol.split("/")[0]
    seller = new_trader(server, {base: "1"})
    buyer = new_trader(server, {"USDT": "1000"})

    with stream(server) as client:
        acked = client.subscribe(f"trades:{dashed(symbol)}", f"ticker:{dashed(symbol)}")
        assert acked["channels"] == [f"trades:{symbol}", f"ticker:{symbol}"]
        first = client.expect("ticker")
        assert first["channel"] == f"ticker:{symbol}"
        assert first["data"]["symbol"] == symbol
        assert first["data"]["last_price"] is None
        assert first["data"]["trade_count_24h"] == 0

        place(seller, symbol, side="sell", type="limit", quantity="0.3", price="250.00")
        place(seller, symbol, side="sell", type="limit", quantity="0.2", price="250.50")
        taken = place(buyer, symbol, side="buy", type="market", quantity="0.4")

        before = client.until(lambda m: m["type"] == "trades")
        assert {m["type"] for m in before[:-1]} <= {"ticker"}, before
        trades = before[-1]
        assert trades["channel"] == f"trades:{symbol}"
        assert [(t["price"], t["quantity"], t["taker_side"]) for t in trades["data"]] == [
            ("250.00", "0.3000", "buy"),
            ("250.50", "0.1000", "buy"),
        ]
        for streamed, answered in zip(trades["data"], taken["trades"], strict=True):
            assert set(streamed) == PUBLIC_TRADE_FIELDS
            assert streamed == {field: answered[field] for field in PUBLIC_TRADE_FIELDS}

        ticker = client.expect("ticker")
        assert ticker["data"]["last_price"] == "250.50"
        assert ticker["data"]["trade_count_24h"] == 2
        assert ticker["data"]["volume_24h"] == "0.4000"
        assert ticker["data"]["best_ask"] == "250.50"
        assert ticker["data"]["best_ask_quantity"] == "0.1000"


# -- private channels ----------------------------------------------------------------------


PRIVATE_CHANNELS = ("orders", "fills", "balances")


def test_private_channels_need_a_traders_token(server: LiveServer) -> None:
    alice = new_trader(server)
    bob = new_trader(server)
    admin_token = tokens(server).issue(Principal(Role.ADMIN, None))

    with stream(server) as client:
        for channel in PRIVATE_CHANNELS:
            client.send(op="subscribe", channels=[channel])
            client.error("UNAUTHORIZED")
        client.send(op="auth", token="not-a-token")
        client.error("UNAUTHORIZED")
        client.send(op="auth", token=admin_token)
        client.error("FORBIDDEN")
        client.send(op="subscribe", channels=["orders"])  # still anonymous
        client.error("UNAUTHORIZED")

        client.send(op="auth", token=token(alice), id=7)
        assert client.recv() == {"type": "authenticated", "user_id": str(alice.user_id), "id": 7}
        client.send(op="auth", token=token(bob))
        client.error("FORBIDDEN")  # one connection, one user
        assert client.subscribe(*PRIVATE_CHANNELS)["channels"] == list(PRIVATE_CHANNELS)


def balances(trader: Trader) -> set[tuple[str, str, str]]:
    return {(b["asset"], b["available"], b["locked"]) for b in trader.api.ok("GET", "/balances")}


def test_private_channels_stream_only_the_callers_orders_fills_and_balances(
    server: LiveServer,
) -> None:
    symbol = fresh_market(server)
    base = symbol.split("/")[0]
    alice = new_trader(server, {"USDT": "1000", base: "2"})
    bob = new_trader(server, {"USDT": "50000", base: "20"})
    carol = new_trader(server, {"USDT": "50000", base: "20"})

    with stream(server) as alices, stream(server) as bobs:
        for client, trader in ((alices, alice), (bobs, bob)):
            client.send(op="auth", token=token(trader))
            client.expect("authenticated")
        alices.subscribe(*PRIVATE_CHANNELS)
        bobs.subscribe("orders")

        # every (asset, available, locked) Alice's balances went through
        alice_states: set[tuple[str, str, str]] = set()
        resting = place(alice, symbol, side="buy", type="limit", quantity="0.1", price="9.00")
        alice_states |= balances(alice)
        place(carol, symbol, side="sell", type="limit", quantity="1", price="10.00")
        taker = place(alice, symbol, side="buy", type="limit", quantity="0.2", price="10.00")
        assert taker["order"]["status"] == "filled"
        alice_states |= balances(alice)

        bob_orders = [
            place(bob, symbol, side="buy", type="limit", quantity="0.3", price="10.00"),
            place(bob, symbol, side="sell", type="limit", quantity="0.5", price="12.00"),
            place(bob, symbol, side="buy", type="limit", quantity="0.1", price="8.00"),
        ]
        amend(bob, bob_orders[1], quantity="0.4")
        cancel(bob, bob_orders[1])
        cancel(alice, resting)  # Alice's last action
        alice_states |= balances(alice)

        alice_ids = {resting["order"]["id"], taker["order"]["id"]}
        received = alices.until(
            lambda m: (
                m["type"] == "order"
                and m["data"]["id"] == resting["order"]["id"]
                and m["data"]["status"] == "cancelled"
            )
        )
        for message in received:
            data = message["data"]
            if message["type"] == "order":
                assert message["channel"] == "orders"
                assert data["id"] in alice_ids, message
                assert data["event"] == "updated" or data["user_id"] == str(alice.user_id)
            elif message["type"] == "fill":
                assert message["channel"] == "fills"
                assert data["order_id"] == taker["order"]["id"], message
                assert (data["side"], data["liquidity"]) == ("buy", "taker")
            else:
                assert (message["type"], message["channel"]) == ("balance", "balances"), message
                assert (data["asset"], data["available"], data["locked"]) in alice_states, message
        kinds = [(m["type"], m["data"].get("event")) for m in received]
        assert kinds.count(("order", "accepted")) == 2
        assert kinds.count(("fill", None)) == 1
        assert {m["data"]["asset"] for m in received if m["type"] == "balance"} == {"USDT", base}

        bob_ids = {o["order"]["id"] for o in bob_orders}
        bobs_received = bobs.until(
            lambda m: (
                m["data"]["id"] == bob_orders[1]["order"]["id"]
                and m["data"]["status"] == "cancelled"
            )
        )
        assert {m["data"]["id"] for m in bobs_received} == bob_ids


# -- protocol errors and unsubscribe -------------------------------------------------------


@pytest.mark.parametrize(
    ("request_text", "code"),
    [
        ("{not json", "INVALID_REQUEST"),
        ("[1, 2]", "INVALID_REQUEST"),
        ('"ping"', "INVALID_REQUEST"),
        ('{"op": "dance"}', "INVALID_REQUEST"),
        ('{"channels": ["ticker:BTC-USDT"]}', "INVALID_REQUEST"),
        ('{"op": "subscribe", "channels": []}', "INVALID_REQUEST"),
        ('{"op": "subscribe", "channels": ["candles:BTC-USDT"]}', "INVALID_REQUEST"),
        ('{"op": "subscribe", "channels": ["orderbook"]}', "INVALID_REQUEST"),
        ('{"op": "subscribe", "channels": [42]}', "INVALID_REQUEST"),
        ('{"op": "subscribe", "channels": ["orderbook:NOPE-USDT"]}', "MARKET_NOT_FOUND"),
        ('{"op": "auth"}', "UNAUTHORIZED"),
        ('{"op": "ping", "id": "' + "x" * 5000 + '"}', "PAYLOAD_TOO_LARGE"),
    ],
    ids=[
        "invalid-json",
        "array",
        "string",
        "unknown-op",
        "no-op",
        "no-channels",
        "unknown-channel-kind",
        "channel-without-market",
        "channel-not-a-string",
        "unknown-market",
        "auth-without-token",
        "too-large",
    ],
)
def test_a_bad_message_gets_an_error_and_the_connection_stays_usable(
    server: LiveServer, request_text: str, code: str
) -> None:
    with stream(server) as client:
        client.connection.send(request_text)
        client.error(code)
        client.assert_usable()


def test_a_binary_message_gets_an_error_and_the_connection_stays_usable(
    server: LiveServer,
) -> None:
    with stream(server) as client:
        client.connection.send(b'{"op": "ping"}')
        client.error("INVALID_REQUEST")
        client.assert_usable()


def test_a_subscription_with_one_bad_channel_subscribes_to_none(server: LiveServer) -> None:
    symbol = fresh_market(server)
    with stream(server) as client:
        client.send(op="subscribe", channels=[f"ticker:{symbol}", "nope:x"])
        client.error("INVALID_REQUEST")
        client.assert_usable()  # no ticker was queued before the pong


def test_unsubscribe_stops_that_channel_and_keeps_the_others(server: LiveServer) -> None:
    symbol = fresh_market(server)
    base = symbol.split("/")[0]
    seller = new_trader(server, {base: "1"})
    buyer = new_trader(server, {"USDT": "1000"})
    kept, dropped = f"ticker:{symbol}", [f"orderbook:{symbol}", f"trades:{symbol}"]

    with stream(server) as client:
        client.subscribe(*dropped, kept)
        assert [client.recv()["type"] for _ in range(2)] == ["snapshot", "ticker"]
        client.send(op="unsubscribe", channels=[f"orderbook:{dashed(symbol)}", dropped[1]])
        assert client.expect("unsubscribed")["channels"] == dropped

        place(seller, symbol, side="sell", type="limit", quantity="0.5", price="40.00")
        place(buyer, symbol, side="buy", type="market", quantity="0.5")
        received = client.until(lambda m: m["data"].get("last_price") == "40.00")
        assert {m["channel"] for m in received} == {kept}, received


# -- slow consumers ------------------------------------------------------------------------


SEND_BUFFER_BYTES = 4_096  # the kernel doubles it; fixed, not autotuned
MAX_ORDERS = 3_000  # failure bounds: far more than it takes to fill the buffers below
MAX_REQUEST_PAIRS = 400  # about 40 KB sent, 270 KB of replies


class SmallSendBufferServer(LiveServer):
    """A `LiveServer` listening on a socket whose accepted connections inherit a small,
    fixed kernel send buffer, so a client that stops reading backs up into the server's
    bounded queue after tens of KiB instead of megabytes."""

    def __init__(self, database_path: Path, **overrides: Any) -> None:
        super().__init__(settings_for(f"sqlite:///{database_path}", **overrides))
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        self.listener.bind(("127.0.0.1", self.settings.port))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.listener]}, daemon=True
        )

    def stop(self) -> None:
        super().stop()
        self.listener.close()


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    running = SmallSendBufferServer(
        tmp_path_factory.mktemp("ws-slow") / "crossbook.db", ws_max_pending_messages=5
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()


class Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def server_errors() -> Iterator[list[logging.LogRecord]]:
    """The errors uvicorn logs during the test (an exception escaping the endpoint)."""
    handler = Collected()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


@contextmanager
def non_reading_stream(server: LiveServer) -> Iterator[Stream]:
    """A client about to stop reading: a small receive buffer, at most one message held
    by the library, no compression (what backs up is what the server sends) and no
    keepalive (a client that does not read cannot see its pongs)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4_096)
        sock.connect(("127.0.0.1", server.settings.port))
        with connect(
            server.ws_url,
            sock=sock,
            compression=None,
            max_queue=1,
            ping_interval=None,
            open_timeout=RECV_TIMEOUT_S,
        ) as connection:
            yield Stream(connection)


def slow_consumer_disconnects(server: LiveServer) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "crossbook_websocket_disconnects_total" and sample.labels == {
                "reason": "slow_consumer"
            }:
                return sample.value
    return 0.0


def trade_until(server: LiveServer, symbol: str, disconnects: float) -> None:
    """Trade pairs of orders (each changing the book twice) until the server has dropped
    `disconnects` slow consumers in all."""
    base = symbol.split("/", maxsplit=1)[0]
    buyer = new_trader(server, {"USDT": "100000"})
    seller = new_trader(server, {base: "100"})
    for i in range(MAX_ORDERS // 2):
        price = str(Decimal("10.00") + Decimal("0.01") * (i % 100))
        place(buyer, symbol, side="buy", type="limit", quantity="0.0001", price=price)
        place(seller, symbol, side="sell", type="limit", quantity="0.0001", price=price)
        if i % 10 == 9 and slow_consumer_disconnects(server) >= disconnects:
            return
    raise AssertionError(f"no slow-consumer disconnect after {MAX_ORDERS} orders")


def closed_by_server(client: Stream) -> ConnectionClosed:
    """Read (whatever is buffered) until the connection closes; its close exception."""
    for _ in range(100 * MAX_MESSAGES):
        try:
            client.connection.recv(timeout=RECV_TIMEOUT_S)
        except ConnectionClosed as closed:
            return closed
    raise AssertionError("the server never closed the connection")


def assert_closed_as_slow_consumer(client: Stream) -> None:
    closed = closed_by_server(client)
    assert closed.rcvd is not None, closed  # a close frame, not a dropped socket
    assert (closed.rcvd.code, closed.rcvd.reason) == (1008, "slow consumer")


def test_a_client_that_stops_reading_is_closed_1008_as_a_slow_consumer(
    slow_server: LiveServer, server_errors: list[logging.LogRecord]
) -> None:
    symbol = fresh_market(slow_server)
    before = slow_consumer_disconnects(slow_server)
    with non_reading_stream(slow_server) as client:
        subscribe_book(client, symbol)
        trade_until(slow_server, symbol, before + 1)  # the client reads nothing meanwhile
        assert_closed_as_slow_consumer(client)
    assert slow_consumer_disconnects(slow_server) == before + 1
    assert [r.getMessage() for r in server_errors] == []


def test_a_client_sending_requests_but_not_reading_is_dropped_as_a_slow_consumer(
    slow_server: LiveServer, server_errors: list[logging.LogRecord]
) -> None:
    """Dropped and no longer read: the close frame follows what the socket holds, but a
    socket closed while the client's requests sit unread in it is reset, so the
    client sees the 1008 close or a reset, whichever its kernel delivers."""
    symbol = fresh_market(slow_server)
    channel = f"ticker:{dashed(symbol)}"
    before = slow_consumer_disconnects(slow_server)
    with non_reading_stream(slow_server) as client:
        client.assert_usable()
        # small requests, larger replies (each subscription answers with a ticker), so
        # what it sends stays far below what the kernel takes even if the server stopped
        # reading: sending never blocks, whatever the server does
        for i in range(MAX_REQUEST_PAIRS):
            try:
                client.send(op="subscribe", channels=[channel])
                client.send(op="unsubscribe", channels=[channel])
            except ConnectionClosed:
                break  # the close arrived before the metric was polled: checked below
            if i % 10 == 9 and slow_consumer_disconnects(slow_server) > before:
                break
        else:
            raise AssertionError(f"no slow-consumer disconnect after {MAX_REQUEST_PAIRS} pairs")
        closed = closed_by_server(client)
        if closed.rcvd is not None:  # the close frame arrived before any reset
            assert (closed.rcvd.code, closed.rcvd.reason) == (1008, "slow consumer")
    assert slow_consumer_disconnects(slow_server) == before + 1
    assert [r.getMessage() for r in server_errors] == []


def test_a_slow_consumer_that_never_reads_does_not_delay_dropping_another(
    slow_server: LiveServer, server_errors: list[logging.LogRecord]
) -> None:
    symbol = fresh_market(slow_server)
    before = slow_consumer_disconnects(slow_server)
    with non_reading_stream(slow_server) as stalled, non_reading_stream(slow_server) as other:
        subscribe_book(stalled, symbol)
        subscribe_book(other, symbol)
        trade_until(slow_server, symbol, before + 2)  # both dropped, neither has read
        assert_closed_as_slow_consumer(other)
        assert_closed_as_slow_consumer(stalled)
    assert [r.getMessage() for r in server_errors] == []


def test_an_error_echoes_the_request_id(server: LiveServer) -> None:
    with connect(server.ws_url) as ws:
        ws.send(json.dumps({"op": "subscribe", "channels": ["nope:X"], "id": 7}))
        reply = json.loads(ws.recv(timeout=RECV_TIMEOUT_S))
        assert (reply["type"], reply["code"], reply["id"]) == ("error", "INVALID_REQUEST", 7)


def test_private_channels_end_when_the_token_expires() -> None:
    """In-process hub with a fake clock: no waiting for a real token to expire."""
    exchange = Exchange()
    setup = [
        CreateAsset("BTC", 8),
        CreateAsset("USDT", 6),
        CreateMarket(
            "BTC",
            "USDT",
            tick_size="0.01",
            lot_size="0.0001",
            min_quantity="0.0001",
            max_quantity="100",
        ),
        Deposit(1, "USDT", 10**12),
    ]
    for command in setup:
        exchange.execute(command)
    clock_ms = [int(time.time()) * 1000]  # the hub's clock, moved by hand below
    codec = TokenCodec("x" * 32, 60)
    market_data = MarketData.from_exchange(exchange)
    hub = StreamHub(
        market_data,
        ApiMetrics(),
        limits=StreamLimits(max_pending_messages=100, max_subscriptions=10, book_depth=10),
        auth=Authenticator(codec, last_user_id=1),
        now_ms=lambda: clock_ms[0],
    )
    market_data.subscribe(hub)
    connection = hub.connect(websocket=None)  # type: ignore[arg-type]
    assert connection is not None
    token = codec.issue(Principal(Role.TRADER, 1), ttl_s=60, now_s=clock_ms[0] // 1000)
    handle(hub, connection, {"op": "auth", "token": token})
    handle(hub, connection, {"op": "subscribe", "channels": ["orders"]})
    place_order = PlaceOrder(1, "BTC/USDT", Side.BUY, OrderType.LIMIT, 1, 100)
    market_data.apply(exchange.execute(place_order))
    received = [json.loads(connection.pending.popleft()) for _ in range(3)]
    assert [m["type"] for m in received] == ["authenticated", "subscribed", "order"]
    clock_ms[0] += 60_000  # the token's expiry
    market_data.apply(exchange.execute(place_order))
    expired = json.loads(connection.pending.popleft())
    assert (expired["type"], expired["code"]) == ("error", "UNAUTHORIZED")
    assert expired["details"]["channels"] == ["orders"]
    assert connection.user_id is None and not connection.channels
    market_data.apply(exchange.execute(place_order))
    assert not connection.pending
