"""The retry policy: exponential backoff with equal jitter, validated fields."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crossbook.engine.retry import RetryPolicy


class ExtremeRandom(random.Random):
    """Always draws the lowest (or highest) value of the range."""

    def __init__(self, highest: bool) -> None:
        super().__init__(0)
        self.highest = highest

    def randint(self, a: int, b: int) -> int:
        return b if self.highest else a


def test_defaults() -> None:
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.initial_backoff_ms, policy.max_backoff_ms) == (
        3,
        1_000,
        30_000,
    )


def test_caps_double_from_initial_up_to_max() -> None:
    policy = RetryPolicy(max_attempts=10, initial_backoff_ms=1_000, max_backoff_ms=30_000)
    caps = [policy.cap_ms(attempt) for attempt in range(1, 9)]
    assert caps == [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]
    assert policy.cap_ms(10_000) == 30_000


def test_every_attempt_waits_between_half_the_cap_and_the_cap() -> None:
    policy = RetryPolicy(max_attempts=10, initial_backoff_ms=1_000, max_backoff_ms=30_000)
    lowest = [policy.backoff_ms(a, ExtremeRandom(highest=False)) for a in range(1, 8)]
    highest = [policy.backoff_ms(a, ExtremeRandom(highest=True)) for a in range(1, 8)]
    assert lowest == [500, 1_000, 2_000, 4_000, 8_000, 15_000, 15_000]
    assert highest == [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]


def test_an_odd_cap_never_waits_below_half_of_it() -> None:
    policy = RetryPolicy(initial_backoff_ms=3, max_backoff_ms=3)
    assert policy.backoff_ms(1, ExtremeRandom(highest=False)) == 2
    assert policy.backoff_ms(1, ExtremeRandom(highest=True)) == 3


def test_a_one_ms_backoff_is_never_zero() -> None:
    policy = RetryPolicy(initial_backoff_ms=1, max_backoff_ms=1)
    assert policy.backoff_ms(1, ExtremeRandom(highest=False)) == 1


def test_the_same_seed_gives_the_same_waits() -> None:
    policy = RetryPolicy(max_attempts=6)
    first = [policy.backoff_ms(a, random.Random(7)) for a in range(1, 7)]
    second = [policy.backoff_ms(a, random.Random(7)) for a in range(1, 7)]
    assert first == second


@given(
    initial_backoff_ms=st.integers(1, 100_000),
    extra_ms=st.integers(0, 1_000_000),
    attempt=st.integers(1, 200),
    seed=st.integers(0, 2**32),
)
def test_backoff_is_within_half_cap_and_cap_and_never_above_max(
    initial_backoff_ms: int, extra_ms: int, attempt: int, seed: int
) -> None:
    policy = RetryPolicy(
        max_attempts=attempt,
        initial_backoff_ms=initial_backoff_ms,
        max_backoff_ms=initial_backoff_ms + extra_ms,
    )
    cap = min(initial_backoff_ms * 2 ** (attempt - 1), policy.max_backoff_ms)
    assert policy.cap_ms(attempt) == cap
    wait = policy.backoff_ms(attempt, random.Random(seed))
    assert isinstance(wait, int)
    assert cap <= 2 * wait
    assert wait <= cap <= policy.max_backoff_ms
    assert wait >= 1


@pytest.mark.parametrize(
    "fields",
    [
        {"max_attempts": 0},
        {"max_attempts": -1},
        {"initial_backoff_ms": 0},
        {"max_backoff_ms": 0},
        {"initial_backoff_ms": -5},
        {"initial_backoff_ms": 2_000, "max_backoff_ms": 1_000},
        {"initial_backoff_ms": 1.5},
        {"max_attempts": True},
        {"max_backoff_ms": "30000"},
    ],
    ids=str,
)
def test_bad_values_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempts_are_one_based(attempt: int) -> None:
    with pytest.raises(ValueError):
        RetryPolicy().backoff_ms(attempt, random.Random(0))


def test_the_policy_is_frozen() -> None:
    policy = RetryPolicy()
    with pytest.raises(AttributeError):
        policy.max_attempts = 5  # type: ignore[misc]
