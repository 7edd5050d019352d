"""Commands handed to the engine on a caller's behalf, each outcome reported once.

`CommandSubmitter.submit(command, action)` runs `command` through the engine and
tells the outcome listener (the composition root's: the API's
`crossbook_orders` counter) what became of it under `action` (place, amend,
cancel, admin): None for done, else the refusal — a `DomainError`,
`EngineOverloadedError` or `EngineUnavailableError`, which it then re-raises
unchanged. Order entry reports through `report` the refusals that happen before
the engine is reached (a wallet that cannot hold), so every outcome of an action
is counted in this one place.

Invariants: one report per `submit`; anything else raised (cancellation, a bug)
is not an outcome and is not reported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from crossbook.domain import Command, DomainError, Event
from crossbook.engine.engine import EngineOverloadedError, EngineUnavailableError

OutcomeListener = Callable[[str, Exception | None], None]  # (action, refusal or None)


class CommandSink(Protocol):
    """The engine as its callers see it (`Engine` satisfies this)."""

    async def submit(self, command: Command) -> list[Event]: ...


class EngineState(Protocol):
    """What health checks and metrics read of the engine (`Engine` satisfies this)."""

    @property
    def available(self) -> bool: ...

    @property
    def queue_depth(self) -> int: ...


def _ignore(action: str, refusal: Exception | None) -> None:
    return None


class CommandSubmitter:
    __slots__ = ("_engine", "_on_outcome")

    def __init__(self, engine: CommandSink, on_outcome: OutcomeListener | None = None) -> None:
        self._engine = engine
        self._on_outcome = on_outcome or _ignore

    @property
    def engine(self) -> CommandSink:
        return self._engine

    async def submit(self, command: Command, action: str) -> list[Event]:
        """The command's committed events; its refusal re-raised after it is reported."""
        try:
            events = await self._engine.submit(command)
        except (DomainError, EngineOverloadedError, EngineUnavailableError) as refusal:
            self._on_outcome(action, refusal)
            raise
        self._on_outcome(action, None)
        return events

    def report(self, action: str, refusal: Exception) -> None:
        """A refusal of `action` before its command reached the engine."""
        self._on_outcome(action, refusal)
