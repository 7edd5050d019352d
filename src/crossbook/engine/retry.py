"""How often and how long to wait before retrying a transient failure.

`backoff_ms(attempt, rng)` is the wait after failed attempt number `attempt`
(1-based): the exponential cap `initial_backoff_ms * 2**(attempt - 1)`, bounded
by `max_backoff_ms`, with "equal jitter": half of the cap is fixed and the other
half uniformly random, so the wait is always in [cap / 2, cap] (never zero, so
callers back off; spread out, so they do not retry in lock-step).

Invariants: every field is a positive int and `initial_backoff_ms <= max_backoff_ms`
(checked on construction); waits are ints, never above `max_backoff_ms`.

Limits: the policy only computes waits; the caller sleeps, counts attempts
against `max_attempts` and owns the random source (seed it for replayable tests).
"""

from __future__ import annotations

import random
from dataclasses import dataclass


def _require_positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be positive, got {value}")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    initial_backoff_ms: int = 1_000
    max_backoff_ms: int = 30_000

    def __post_init__(self) -> None:
        _require_positive_int("max_attempts", self.max_attempts)
        _require_positive_int("initial_backoff_ms", self.initial_backoff_ms)
        _require_positive_int("max_backoff_ms", self.max_backoff_ms)
        if self.initial_backoff_ms > self.max_backoff_ms:
            raise ValueError(
                f"initial_backoff_ms ({self.initial_backoff_ms}) must not exceed "
                f"max_backoff_ms ({self.max_backoff_ms})"
            )

    def cap_ms(self, attempt: int) -> int:
        """The un-jittered wait after failed attempt `attempt` (1-based)."""
        if attempt < 1:
            raise ValueError(f"attempt is 1-based, got {attempt}")
        # past this many doublings the cap is max_backoff_ms anyway (keeps the int small)
        doublings = min(attempt - 1, self.max_backoff_ms.bit_length())
        return min(self.initial_backoff_ms << doublings, self.max_backoff_ms)

    def backoff_ms(self, attempt: int, rng: random.Random) -> int:
        """The wait after failed attempt `attempt` (1-based), in [cap / 2, cap]."""
        cap = self.cap_ms(attempt)
        jitter_span = cap // 2
        return cap - jitter_span + rng.randint(0, jitter_span)
