"""A PostgreSQL outage as API clients see it: every route that needs the database
answers 503 in the envelope with Retry-After, promptly and on a kept-alive
connection (before: 500 and a dropped connection), and the server serves again
once the database is back.

The outage is real to the server: its database is reached through `PgProxy`, which
aborts every connection and refuses new ones while cut.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pg_proxy import PgProxy
from sqlalchemy.engine import make_url

from crossbook.api.auth import Principal, Role

from api_support import (
    LiveServer,
    RawHttp,
    Trader,
    fresh_market,
    new_trader,
    place,
    settings_for,
    tokens,
)

BOUND_S = 10.0  # generous bound on "promptly" (the server's timeouts below are 0.5 s)
TIMEOUTS_MS = 500


class ProxyThread:
    """`PgProxy` on an event loop of its own, driven from the test's thread."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.proxy = PgProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
        self.call(self.proxy.start())
        self.url = parsed.set(port=self.proxy.port).render_as_string(hide_password=False)

    def call(self, work: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(BOUND_S)

    def cut(self) -> None:
        self.loop.call_soon_threadsafe(self.proxy.cut)

    def restore(self) -> None:
        self.call(self.proxy.restore())

    def close(self) -> None:
        self.call(self.proxy.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(BOUND_S)


@pytest.fixture
def proxied_server(postgres_databases: Any) -> Iterator[tuple[LiveServer, ProxyThread]]:
    proxy = ProxyThread(postgres_databases.create())
    overrides = {
        "commit_deadline_ms": TIMEOUTS_MS,
        "commit_outcome_wait_ms": TIMEOUTS_MS,
        "database_read_timeout_ms": TIMEOUTS_MS,
    }
    server = LiveServer(settings_for(proxy.url, **overrides))
    server.start()
    try:
        yield server, proxy
    finally:
        server.stop()
        proxy.close()


def bearer(trader: Trader) -> dict[str, str]:
    token = tokens(trader.api.server).issue(Principal(Role.TRADER, trader.user_id))
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


@pytest.mark.postgres
def test_routes_that_need_the_database_answer_503_during_an_outage(
    proxied_server: tuple[LiveServer, ProxyThread],
) -> None:
    server, proxy = proxied_server
    symbol = fresh_market(server)
    trader = new_trader(server, {"USDT": "1000"})
    order = place(trader, symbol, side="buy", type="limit", quantity="1", price="10")["order"]
    admin = {"Authorization": f"Bearer {tokens(server).issue(Principal(Role.ADMIN, None))}"}
    admin["Content-Type"] = "application/json"
    deposit = json.dumps({"user_id": trader.user_id, "asset": "USDT", "amount": "1"}).encode()
    calls = [
        ("GET", f"/api/v1/orders/{order['id']}", b"", bearer(trader), "STORE_UNAVAILABLE"),
        ("GET", "/api/v1/orders", b"", bearer(trader), "STORE_UNAVAILABLE"),
        ("PATCH", f"/api/v1/orders/{order['id']}", b'{"price": "11"}', bearer(trader), None),
        ("GET", "/api/v1/balances", b"", bearer(trader), "STORE_UNAVAILABLE"),
        ("POST", "/api/v1/admin/deposits", deposit, admin, None),
        ("POST", "/api/v1/admin/withdrawals", deposit, admin, None),
    ]
    raw = RawHttp(server, timeout_s=BOUND_S)
    try:
        proxy.cut()
        for method, target, body, headers, code in calls:
            started = time.monotonic()
            status, fields, text = raw.request(method, target, body, headers)
            assert time.monotonic() - started < BOUND_S
            error = json.loads(text)["error"]
            assert status == 503, (target, status, error)
            assert error["code"] in (
                (code,) if code else ("STORE_UNAVAILABLE", "ENGINE_UNAVAILABLE")
            )
            assert fields["retry-after"] == "1"
            assert fields.get("connection", "").lower() != "close"
        assert raw.request("GET", "/ready")[0] == 503
    finally:
        proxy.restore()
    deadline = time.monotonic() + 3 * BOUND_S
    while raw.request("GET", "/ready")[0] != 200:  # the engine recovers on its own
        assert time.monotonic() < deadline, "the server did not recover"
        time.sleep(0.1)
    raw.close()
    assert trader.api.ok("GET", f"/orders/{order['id']}")["price"] == "10.00"  # unchanged
    balances = {b["asset"]: b for b in trader.api.ok("GET", "/balances")}
    assert balances["USDT"]["total"] == "1000.000000"  # no deposit or withdrawal landed
