"""Start-up and logging: demo users, JSON request logs carrying the request id."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import structlog

from crossbook.api.app import attach, create_app
from crossbook.bootstrap import DEMO_USERS, api_options, configure_logging, open_runtime

from api_support import settings_for


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def test_demo_creates_funded_users_once(tmp_path: Path) -> None:
    settings = settings_for(f"sqlite:///{tmp_path / 'demo.db'}")

    async def boot() -> list[tuple[str | None, dict[str, int]]]:
        async with open_runtime(settings, demo=True) as runtime:
            users = await runtime.store.users.list_users()
            return [
                (
                    u.name,
                    {
                        b.asset: b.available
                        for b in await runtime.store.reads.list_balances(u.user_id)
                    },
                )
                for u in users
            ]

    first = asyncio.run(boot())
    assert [name for name, _ in first] == list(DEMO_USERS)
    assert all(funds["USDT"] == 1_000_000 * 10**6 for _, funds in first)
    assert asyncio.run(boot()) == first  # a second start adds no users and no funds


def test_requests_are_logged_as_json_with_their_request_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    settings = settings_for(f"sqlite:///{tmp_path / 'log.db'}", log_level="info", log_json=True)
    configure_logging(settings)

    async def call() -> httpx.Response:
        async with open_runtime(settings) as runtime:
            app = create_app(api_options(settings), runtime.metrics)
            attach(app, runtime.context, runtime.hub)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.get("/api/v1/markets", headers={"X-Request-ID": "trace-42"})

    response = asyncio.run(call())
    assert response.headers["x-request-id"] == "trace-42"
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    http = [line for line in lines if line.get("event") == "http"]
    assert http == [
        {
            "event": "http",
            "method": "GET",
            "route": "/api/v1/markets",
            "path": "/api/v1/markets",
            "status": 200,
            "ms": http[0]["ms"],
            "request_id": "trace-42",
            "level": "info",
            "timestamp": http[0]["timestamp"],
        }
    ]
