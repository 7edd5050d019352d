"""A circuit breaker: stop calling a dependency that keeps failing, probe it later.

States:
- CLOSED: every call is allowed; consecutive failures are counted and the
  breaker opens when they reach `failure_threshold`.
- OPEN: every call is refused until `reset_after_ms` has passed since it opened;
  the next `allow()` after that moves it to HALF_OPEN and admits one probe.
- HALF_OPEN: exactly one probe is in flight; every other call is refused. A
  success closes the breaker, a failure re-opens it with a fresh timer.

Invariants: at most one probe is in flight at a time; `consecutive_failures` is
0 right after any success; `on_change` is called once per actual state change,
with the new state, after the breaker has changed.

Limits: pure bookkeeping, no I/O, no locks. It is meant for one asyncio event
loop (or one thread). Outcomes are not tied to the call that was admitted: the
late result of a call admitted while CLOSED counts like the probe's would (a
late success closes, a late failure re-opens). A probe that ends with no
verdict (cancelled, or a bug) must give its slot back with `release_probe()`,
otherwise the breaker refuses everything until a result is recorded.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

DEFAULT_FAILURE_THRESHOLD = 5
DEFAULT_RESET_AFTER_MS = 5_000


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class CircuitBreaker:
    __slots__ = (
        "_clock",
        "_consecutive_failures",
        "_failure_threshold",
        "_on_change",
        "_opened_at_ms",
        "_probe_in_flight",
        "_reset_after_ms",
        "_state",
    )

    def __init__(
        self,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        reset_after_ms: int = DEFAULT_RESET_AFTER_MS,
        clock: Callable[[], int] = monotonic_ms,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold}")
        if reset_after_ms < 0:
            raise ValueError(f"reset_after_ms must not be negative, got {reset_after_ms}")
        self._failure_threshold = failure_threshold
        self._reset_after_ms = reset_after_ms
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._consecutive_failures = 0
        self._opened_at_ms = 0
        self._probe_in_flight = False

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive_failures

    def allow(self) -> bool:
        """True if a call may go ahead now (in HALF_OPEN: if it is the one probe)."""
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN:
            if self._clock() - self._opened_at_ms < self._reset_after_ms:
                return False
            self._probe_in_flight = True
            self._change_to(BreakerState.HALF_OPEN)
            return True
        if self._probe_in_flight:
            return False
        self._probe_in_flight = True
        return True

    def record_success(self) -> None:
        """The dependency answered: close the breaker and forget past failures."""
        self._consecutive_failures = 0
        self._probe_in_flight = False
        self._change_to(BreakerState.CLOSED)

    def record_failure(self) -> None:
        """The dependency failed: count it; open at the threshold or after a failed probe."""
        self._consecutive_failures += 1
        probe_failed = self._state is BreakerState.HALF_OPEN
        threshold_reached = (
            self._state is BreakerState.CLOSED
            and self._consecutive_failures >= self._failure_threshold
        )
        if probe_failed or threshold_reached:
            self._open()

    def release_probe(self) -> None:
        """The probe ended without a verdict: let the next `allow()` send another one."""
        if self._state is BreakerState.HALF_OPEN:
            self._probe_in_flight = False

    def _open(self) -> None:
        self._opened_at_ms = self._clock()
        self._probe_in_flight = False
        self._change_to(BreakerState.OPEN)

    def _change_to(self, state: BreakerState) -> None:
        if state is self._state:
            return
        self._state = state
        if self._on_change is not None:
            self._on_change(state)
