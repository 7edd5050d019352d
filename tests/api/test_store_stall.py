"""A stalled database, as clients see it: order entry answers 503 promptly (not after
the stall), `/ready` says NOT_READY while it lasts, and the server resumes on its own.

The stall is real: another SQLite connection holds `BEGIN IMMEDIATE` on the server's
database file, so the engine's writer cannot take the write lock.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import httpx

from api_support import fresh_market, live_server, new_trader, place

DEADLINE_MS = 300  # the server's commit deadline and outcome wait in this test
BOUND_S = 5.0  # generous bound on "promptly"
READY_POLL_S = 0.05


def test_a_stalled_database_answers_503_and_not_ready_then_recovers(tmp_path: Path) -> None:
    path = tmp_path / "crossbook.db"
    with live_server(
        path, commit_deadline_ms=DEADLINE_MS, commit_outcome_wait_ms=DEADLINE_MS
    ) as server:
        symbol = fresh_market(server)
        trader = new_trader(server, {"USDT": "1000"})
        order = {"side": "buy", "type": "limit", "quantity": "1", "price": "1"}
        with httpx.Client(base_url=server.url, timeout=30) as root:
            assert root.get("/ready").status_code == 200
            holder = sqlite3.connect(path, isolation_level=None)
            try:
                holder.execute("BEGIN IMMEDIATE")  # the stall begins
                started = time.monotonic()
                response = trader.api.request(
                    "POST", "/orders", json=order | {"symbol": symbol, "client_order_id": "stalled"}
                )
                assert time.monotonic() - started < BOUND_S
                assert response.status_code == 503, response.text
                assert response.json()["error"]["code"] == "ENGINE_UNAVAILABLE"
                ready = root.get("/ready")
                assert ready.status_code == 503, ready.text
                assert ready.json()["error"]["code"] == "NOT_READY"
                assert ready.json()["error"]["details"]["engine"] == "unavailable"
            finally:
                holder.execute("ROLLBACK")  # the stall ends
                holder.close()
            deadline = time.monotonic() + BOUND_S
            while root.get("/ready").status_code != 200:
                assert time.monotonic() < deadline, "the server did not resume on its own"
                time.sleep(READY_POLL_S)
        trader.api.fails("GET", "/orders/client/stalled", 404, "ORDER_NOT_FOUND")
        placed = place(trader, symbol, **order, client_order_id="stalled")
        assert placed["order"]["status"] == "open"
