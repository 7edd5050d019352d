"""Engine states reach clients as documented: overloaded → 429, unavailable → 503.

The app runs in-process (httpx's ASGI transport) on a real runtime whose engine
is swapped, under its order-entry service too, for a fake that refuses, which is
how these states arise (a full queue, a failed commit): the commit-failure path
itself is covered end to end by tests/engine and tests/recovery.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import httpx
import pytest

from crossbook.api.app import attach, create_app
from crossbook.api.auth import Principal, Role
from crossbook.bootstrap import api_options, counted_outcomes, open_runtime
from crossbook.domain import Command, Event
from crossbook.engine.engine import EngineOverloadedError, EngineUnavailableError
from crossbook.engine.order_entry import EmbeddedFunding, OrderEntry
from crossbook.engine.read_model.open_orders import OpenOrderIndex
from crossbook.engine.submission import CommandSubmitter

from api_support import settings_for


class RefusingEngine:
    def __init__(self, error: Exception) -> None:
        self.error = error
        self.submitted: list[Command] = []

    @property
    def available(self) -> bool:
        return not isinstance(self.error, EngineUnavailableError)

    @property
    def queue_depth(self) -> int:
        return 0

    async def submit(self, command: Command) -> list[Event]:
        self.submitted.append(command)
        raise self.error


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (EngineOverloadedError("full"), 429, "ENGINE_OVERLOADED"),
        (EngineUnavailableError("commit failed"), 503, "ENGINE_UNAVAILABLE"),
    ],
)
def test_engine_refusals_map_to_status_and_retry_after(
    tmp_path: Path, error: Exception, status: int, code: str
) -> None:
    async def scenario() -> None:
        settings = settings_for(f"sqlite:///{tmp_path / 'db.sqlite'}")
        async with open_runtime(settings) as runtime:
            engine = RefusingEngine(error)
            submitter = CommandSubmitter(engine, counted_outcomes(runtime.metrics))
            orders = OrderEntry(submitter, EmbeddedFunding(), OpenOrderIndex(), runtime.store.reads)
            context = dataclasses.replace(
                runtime.context, engine=engine, orders=orders, commands=submitter
            )
            app = create_app(api_options(settings), runtime.metrics)
            attach(app, context, runtime.hub)
            user = await runtime.store.users.create_user("trader", 0)
            context.auth.user_created(user.user_id)
            token = context.auth.tokens.issue(Principal(Role.TRADER, user.user_id))
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                body = {
                    "symbol": "BTC/USDT",
                    "side": "buy",
                    "type": "limit",
                    "quantity": "1",
                    "price": "1",
                }
                response = await client.post(
                    "/api/v1/orders", json=body, headers={"Authorization": f"Bearer {token}"}
                )
                ready = await client.get("/ready")
            assert response.status_code == status
            assert response.json()["error"]["code"] == code
            assert response.headers["retry-after"] == "1"
            assert len(engine.submitted) == 1
            assert ready.status_code == (503 if status == 503 else 200)

    asyncio.run(scenario())
