"""The circuit breaker: opens at the threshold, fails fast, probes once, closes or re-opens."""

import pytest

from crossbook.engine.breaker import BreakerState, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now_ms = 1_000_000

    def __call__(self) -> int:
        return self.now_ms


def make_breaker(
    threshold: int = 3, reset_after_ms: int = 5_000
) -> tuple[CircuitBreaker, FakeClock, list[BreakerState]]:
    clock = FakeClock()
    changes: list[BreakerState] = []
    breaker = CircuitBreaker(threshold, reset_after_ms, clock, on_change=changes.append)
    return breaker, clock, changes


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        assert breaker.allow()
        breaker.record_failure()


def test_a_new_breaker_is_closed_and_allows_calls() -> None:
    breaker, _, changes = make_breaker()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 0
    assert all(breaker.allow() for _ in range(10))
    assert changes == []


def test_it_opens_after_exactly_threshold_consecutive_failures() -> None:
    breaker, _, changes = make_breaker(threshold=3)
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 2
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.consecutive_failures == 3
    assert changes == [BreakerState.OPEN]


def test_a_success_in_between_resets_the_count() -> None:
    breaker, _, _ = make_breaker(threshold=3)
    fail(breaker, 2)
    breaker.record_success()
    assert breaker.consecutive_failures == 0
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    fail(breaker, 1)
    assert breaker.state is BreakerState.OPEN


def test_a_threshold_of_one_opens_on_the_first_failure() -> None:
    breaker, _, _ = make_breaker(threshold=1)
    fail(breaker, 1)
    assert breaker.state is BreakerState.OPEN


def test_open_refuses_every_call_until_the_reset_time() -> None:
    breaker, clock, _ = make_breaker(threshold=1, reset_after_ms=5_000)
    fail(breaker, 1)
    assert not breaker.allow()
    clock.now_ms += 4_999
    assert not any(breaker.allow() for _ in range(5))
    assert breaker.state is BreakerState.OPEN


def test_after_the_reset_time_exactly_one_probe_goes_through() -> None:
    breaker, clock, changes = make_breaker(threshold=1, reset_after_ms=5_000)
    fail(breaker, 1)
    clock.now_ms += 5_000
    assert breaker.allow()
    assert breaker.state is BreakerState.HALF_OPEN
    clock.now_ms += 60_000
    assert not any(breaker.allow() for _ in range(5))  # the probe is still in flight
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN]


def test_a_successful_probe_closes_the_breaker() -> None:
    breaker, clock, changes = make_breaker(threshold=2)
    fail(breaker, 2)
    clock.now_ms += 5_000
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 0
    assert all(breaker.allow() for _ in range(3))
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


def test_a_failed_probe_reopens_with_a_fresh_timer() -> None:
    breaker, clock, changes = make_breaker(threshold=2, reset_after_ms=5_000)
    fail(breaker, 2)
    clock.now_ms += 7_000
    assert breaker.allow()
    clock.now_ms += 1_000
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.consecutive_failures == 3
    clock.now_ms += 4_999
    assert not breaker.allow()
    clock.now_ms += 1
    assert breaker.allow()
    assert breaker.state is BreakerState.HALF_OPEN
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN] * 2


def test_a_released_probe_lets_exactly_one_more_probe_through() -> None:
    breaker, clock, _ = make_breaker(threshold=1)
    fail(breaker, 1)
    clock.now_ms += 5_000
    assert breaker.allow()
    breaker.release_probe()
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()


def test_release_probe_does_nothing_outside_half_open() -> None:
    breaker, _, _ = make_breaker(threshold=1)
    breaker.release_probe()
    assert breaker.state is BreakerState.CLOSED
    fail(breaker, 1)
    breaker.release_probe()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()


def test_late_failures_while_open_do_not_extend_the_timer() -> None:
    breaker, clock, changes = make_breaker(threshold=2, reset_after_ms=5_000)
    assert breaker.allow()  # admitted while closed, its failure arrives late
    fail(breaker, 2)
    clock.now_ms += 3_000
    breaker.record_failure()
    assert breaker.consecutive_failures == 3
    clock.now_ms += 2_000
    assert breaker.allow()
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN]


def test_on_change_is_optional_and_default_clock_works() -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_after_ms=60_000)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()


@pytest.mark.parametrize(
    ("threshold", "reset_after_ms"), [(0, 5_000), (-1, 5_000), (1, -1)], ids=str
)
def test_bad_settings_are_refused(threshold: int, reset_after_ms: int) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(threshold, reset_after_ms)
