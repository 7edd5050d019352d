"""Fault injection for tests: the wallet misbehaves on purpose, a bounded number of times.

Only a service started with `faults_enabled` (refused in production) has the
`/v1/faults` routes. `PUT` replaces the rules, `DELETE` clears them, `GET` shows
what is left. Each `POST /v1/operations` that passed validation takes the first
rule that matches it (its op kind is in `ops`, if given; its key contains
`key_contains`, if given) and still has a count left, and consumes one count:

- `error_500`: answer 500 WALLET_FAULT without applying anything;
- `delay`: wait `delay_ms`, then apply and answer as usual;
- `drop_after_apply`: apply and commit, then drop the connection without a
  complete response (the client sees the headers and then the connection close);
- `reject`: answer 422 INJECTED_REJECTION without applying anything.

Known limits: counts are per process (a restart forgets the rules); rules are
matched in order, first match wins; at most `MAX_RULES` rules.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from crossbook.wallet_protocol import WalletOpKind

MAX_RULES = 100
MAX_COUNT = 1_000_000
MAX_DELAY_MS = 60_000


class FaultMode(enum.StrEnum):
    ERROR_500 = "error_500"
    DELAY = "delay"
    DROP_AFTER_APPLY = "drop_after_apply"
    REJECT = "reject"


class FaultRuleBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    mode: FaultMode
    count: Annotated[int, Field(ge=1, le=MAX_COUNT)]
    ops: Annotated[list[WalletOpKind], Field(min_length=1)] | None = None
    key_contains: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    delay_ms: Annotated[int, Field(ge=0, le=MAX_DELAY_MS)] | None = None

    @model_validator(mode="after")
    def _delay_only_for_delay(self) -> FaultRuleBody:
        if (self.mode is FaultMode.DELAY) != (self.delay_ms is not None):
            raise ValueError("delay_ms is required by mode delay and refused by the others")
        return self


class FaultsBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    rules: Annotated[list[FaultRuleBody], Field(max_length=MAX_RULES)]


@dataclass(slots=True)
class FaultRule:
    mode: FaultMode
    remaining: int
    ops: frozenset[WalletOpKind] | None
    key_contains: str | None
    delay_ms: int

    def matches(self, kind: WalletOpKind, key: str) -> bool:
        return (
            self.remaining > 0
            and (self.ops is None or kind in self.ops)
            and (self.key_contains is None or self.key_contains in key)
        )

    def view(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "remaining": self.remaining,
            "ops": None if self.ops is None else sorted(op.value for op in self.ops),
            "key_contains": self.key_contains,
            "delay_ms": self.delay_ms if self.mode is FaultMode.DELAY else None,
        }


class Faults:
    """The rules in force (the event loop is the only caller: no lock needed)."""

    def __init__(self) -> None:
        self.rules: list[FaultRule] = []

    def replace(self, body: FaultsBody) -> None:
        self.rules = [
            FaultRule(
                rule.mode,
                rule.count,
                None if rule.ops is None else frozenset(rule.ops),
                rule.key_contains,
                rule.delay_ms or 0,
            )
            for rule in body.rules
        ]

    def clear(self) -> None:
        self.rules = []

    def take(self, kind: WalletOpKind, key: str) -> FaultRule | None:
        """The first rule matching this operation, one of its counts consumed; or None."""
        for rule in self.rules:
            if rule.matches(kind, key):
                rule.remaining -= 1
                return rule
        return None

    def view(self) -> list[dict[str, Any]]:
        return [rule.view() for rule in self.rules]
