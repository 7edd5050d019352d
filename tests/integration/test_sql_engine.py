"""The engine loop on the real store: commit-before-ack, and recovery after a failed commit.

Callers submit concurrently; every acknowledged command's events must be in the
database when the caller hears back, a commit that fails (injected once) must
be answered with `EngineUnavailableError` and recovered from on the same store,
and at the end the stored state must equal the engine's exchange.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from sql_store_support import SETUP, Collector, Driver, FixedClock, expected_state, query

from crossbook.adapters.sql import SqlStore
from crossbook.adapters.sql.postgres import PostgresWriter
from crossbook.adapters.sql.rows import BatchRows
from crossbook.adapters.sql.sqlite import SqliteWriter
from crossbook.domain import DomainError, Tick
from crossbook.engine.engine import Engine, EngineLimits, EngineUnavailableError


def test_engine_commits_before_ack_and_recovers_on_the_same_store(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures = {"left": 0}

    def failing(original: Callable[..., Any]) -> Callable[..., Any]:
        def write_projections(writer: object, rows: BatchRows) -> Any:
            if failures["left"]:
                failures["left"] -= 1
                raise ConnectionError("database went away")
            return original(writer, rows)

        return write_projections

    monkeypatch.setattr(
        PostgresWriter, "write_projections", failing(PostgresWriter.write_projections)
    )
    monkeypatch.setattr(SqliteWriter, "write_projections", failing(SqliteWriter.write_projections))

    async def scenario() -> None:
        store = await SqlStore.open(database_url)
        publisher = Collector()
        engine = Engine(store, publisher, FixedClock(), EngineLimits(batch_max_commands=50))
        await engine.start()
        try:
            for command in SETUP:
                await engine.submit(command)
            commands = Driver(seed=61)  # draws commands from the engine's live exchange

            async def submit_many(count: int) -> tuple[int, int]:
                acked = unavailable = 0
                for _ in range(count):
                    commands.exchange = engine.exchange  # replaced when the engine recovers
                    command = commands.random_command()
                    if isinstance(command, Tick):
                        continue  # time is the engine's (its clock stands still here)
                    try:
                        events = await engine.submit(command)
                    except DomainError:
                        continue
                    except EngineUnavailableError:
                        unavailable += 1
                        await asyncio.sleep(0.01)
                        continue
                    acked += 1
                    if events and acked % 10 == 0:
                        (stored,) = await query(
                            database_url,
                            f"SELECT count(*) FROM events WHERE seq = {events[-1].seq}",
                        )
                        assert stored == (1,)  # durable before the caller heard back
                return acked, unavailable

            first = await asyncio.gather(*(submit_many(30) for _ in range(6)))
            failures["left"] = 1
            second = await asyncio.gather(*(submit_many(30) for _ in range(6)))
            assert sum(acked for acked, _ in first + second) > 100
            assert sum(unavailable for _, unavailable in second) >= 1
            assert engine.recoveries == 2  # the start, then the failed commit
            state = await store.load_state()
            assert state == expected_state(engine.exchange)
            assert publisher.events[-1].seq == engine.exchange.seq
        finally:
            await engine.stop()
            await store.close()

    asyncio.run(scenario())
