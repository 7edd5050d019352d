"""Settings (environment, config file, the production secret rule), the JWT codec and
the per-user rate limiter, without a server. The limiter runs on a fake clock."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from crossbook.api.auth import Principal, Role, TokenCodec, bearer_token
from crossbook.api.errors import ApiCode, ApiError
from crossbook.api.rate_limit import RateLimiter, retry_after_header
from crossbook.config import (
    CONFIG_FILE_ENV,
    DEVELOPMENT_JWT_SECRET,
    MIN_JWT_SECRET_CHARS,
    load_settings,
)

GOOD_SECRET = "s" * MIN_JWT_SECRET_CHARS


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CROSSBOOK_ variable of the machine running the tests leaks into these."""
    for name in list(os.environ):
        if name.startswith("CROSSBOOK_"):
            monkeypatch.delenv(name)


# -- settings ----------------------------------------------------------------------------


def test_development_needs_no_secret_and_uses_the_development_one() -> None:
    settings = load_settings()
    assert settings.environment == "development"
    assert settings.jwt_secret is None
    assert settings.jwt_secret_value == DEVELOPMENT_JWT_SECRET


def test_production_without_a_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="CROSSBOOK_JWT_SECRET"):
        load_settings(environment="production")


def test_production_with_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="CROSSBOOK_JWT_SECRET"):
        load_settings(environment="production", jwt_secret="s" * (MIN_JWT_SECRET_CHARS - 1))


def test_production_with_the_development_secret_is_refused() -> None:
    assert len(DEVELOPMENT_JWT_SECRET) >= MIN_JWT_SECRET_CHARS  # refused for what it is
    with pytest.raises(ValueError, match="CROSSBOOK_JWT_SECRET"):
        load_settings(environment="production", jwt_secret=DEVELOPMENT_JWT_SECRET)


def test_production_with_a_long_enough_secret_works() -> None:
    settings = load_settings(environment="production", jwt_secret=GOOD_SECRET)
    assert settings.jwt_secret_value == GOOD_SECRET
    assert GOOD_SECRET not in repr(settings)  # a SecretStr is never printed


def test_the_production_rule_holds_for_secrets_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CROSSBOOK_ENVIRONMENT", "production")
    with pytest.raises(ValueError, match="CROSSBOOK_JWT_SECRET"):
        load_settings()
    monkeypatch.setenv("CROSSBOOK_JWT_SECRET", GOOD_SECRET)
    assert load_settings().jwt_secret_value == GOOD_SECRET


def test_crossbook_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROSSBOOK_DATABASE_URL", "sqlite:///from-env.db")
    monkeypatch.setenv("CROSSBOOK_PORT", "9123")
    monkeypatch.setenv("CROSSBOOK_ORDER_BURST", "7")
    monkeypatch.setenv("CROSSBOOK_LOG_JSON", "false")
    settings = load_settings()
    assert settings.database_url == "sqlite:///from-env.db"
    assert settings.port == 9123
    assert settings.order_burst == 7
    assert settings.log_json is False


def test_an_invalid_environment_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROSSBOOK_MAX_BODY_BYTES", "0")  # every limit is positive
    with pytest.raises(ValueError, match="max_body_bytes"):
        load_settings()


def test_explicit_arguments_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROSSBOOK_PORT", "9123")
    assert load_settings(port=7000).port == 7000
    assert load_settings(port=None).port == 9123  # None means "not given"


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "crossbook.toml"
    path.write_text(text)
    return path


def test_the_config_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write_config(tmp_path, 'port = 9200\nmax_body_bytes = 1024\nhost = "0.0.0.0"\n')
    monkeypatch.setenv(CONFIG_FILE_ENV, str(path))
    settings = load_settings()
    assert (settings.port, settings.max_body_bytes, settings.host) == (9200, 1024, "0.0.0.0")


def test_the_environment_overrides_the_config_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write_config(tmp_path, "port = 9200\nmax_body_bytes = 1024\n")
    monkeypatch.setenv(CONFIG_FILE_ENV, str(path))
    monkeypatch.setenv("CROSSBOOK_PORT", "9300")
    settings = load_settings()
    assert settings.port == 9300  # from the environment
    assert settings.max_body_bytes == 1024  # from the file


def test_an_unknown_key_in_the_config_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(CONFIG_FILE_ENV, str(write_config(tmp_path, "prot = 9200\n")))
    with pytest.raises(ValueError, match="prot"):
        load_settings()


def test_a_missing_config_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CONFIG_FILE_ENV, str(tmp_path / "absent.toml"))
    with pytest.raises(ValueError, match="missing file"):
        load_settings()


# -- tokens ------------------------------------------------------------------------------


def test_a_trader_token_round_trips_with_its_expiry() -> None:
    codec = TokenCodec(GOOD_SECRET, ttl_s=60)
    now_s = int(time.time())
    token = codec.issue(Principal(Role.TRADER, 42), now_s=now_s)
    assert codec.verify(token) == Principal(Role.TRADER, 42, now_s + 60)


def test_an_admin_token_round_trips_with_its_expiry() -> None:
    codec = TokenCodec(GOOD_SECRET, ttl_s=60)
    now_s = int(time.time())
    token = codec.issue(Principal(Role.ADMIN, None), now_s=now_s)
    assert codec.verify(token) == Principal(Role.ADMIN, None, now_s + 60)


def unauthorized(error: pytest.ExceptionInfo[ApiError]) -> None:
    assert error.value.code == ApiCode.UNAUTHORIZED
    assert error.value.status == 401
    assert error.value.headers == {"WWW-Authenticate": "Bearer"}


def test_a_token_of_another_secret_is_refused() -> None:
    token = TokenCodec("o" * MIN_JWT_SECRET_CHARS, ttl_s=60).issue(Principal(Role.TRADER, 1))
    with pytest.raises(ApiError) as error:
        TokenCodec(GOOD_SECRET, ttl_s=60).verify(token)
    unauthorized(error)


def test_an_expired_token_is_refused() -> None:
    codec = TokenCodec(GOOD_SECRET, ttl_s=60)
    token = codec.issue(Principal(Role.TRADER, 1), ttl_s=10, now_s=1_000_000)
    with pytest.raises(ApiError, match="expired") as error:
        codec.verify(token)
    unauthorized(error)


def test_an_overlong_token_is_refused_unparsed() -> None:
    with pytest.raises(ApiError, match="too long") as error:
        TokenCodec(GOOD_SECRET, ttl_s=60).verify("x" * 5_000)
    unauthorized(error)


def test_the_bearer_scheme_is_required() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    for header in (None, "", "Basic abc", "Bearer", "Bearer   ", "abc"):
        with pytest.raises(ApiError) as error:
            bearer_token(header)
        unauthorized(error)


# -- rate limiter ------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1_000.0

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


def test_a_new_user_may_spend_the_whole_burst_at_once() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_s=2.0, burst=3, clock_s=clock)
    assert [limiter.take(1) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take(1) == pytest.approx(0.5)  # one token at 2/s


def test_the_wait_is_the_time_until_the_next_token() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_s=4.0, burst=1, clock_s=clock)
    assert limiter.take(1) == 0.0
    assert limiter.take(1) == pytest.approx(0.25)
    clock.advance(0.1)
    assert limiter.take(1) == pytest.approx(0.15)  # a refusal spends nothing
    clock.advance(0.15)
    assert limiter.take(1) == 0.0


def test_tokens_refill_at_the_rate_up_to_the_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_s=2.0, burst=3, clock_s=clock)
    for _ in range(3):
        limiter.take(1)
    clock.advance(1.0)  # two tokens back
    assert [limiter.take(1) for _ in range(2)] == [0.0, 0.0]
    assert limiter.take(1) > 0
    clock.advance(3600.0)  # a long idle time refills only up to the burst
    assert [limiter.take(1) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take(1) > 0


def test_users_have_separate_buckets() -> None:
    limiter = RateLimiter(rate_per_s=1.0, burst=1, clock_s=FakeClock())
    assert limiter.take(1) == 0.0
    assert limiter.take(1) > 0
    assert limiter.take(2) == 0.0


def test_at_most_max_users_buckets_are_kept_least_recently_used_first_out() -> None:
    limiter = RateLimiter(rate_per_s=0.001, burst=1, max_users=2, clock_s=FakeClock())
    for user in (1, 2):
        assert limiter.take(user) == 0.0  # both buckets empty now
    assert limiter.take(1) > 0  # user 1 is now the most recently used
    assert limiter.take(3) == 0.0  # a third user: user 2's bucket is dropped
    assert limiter.take(1) > 0  # user 1's empty bucket was kept
    assert limiter.take(2) == 0.0  # user 2 starts again with a full bucket (the known leak)


def test_many_users_keep_the_bound() -> None:
    limiter = RateLimiter(rate_per_s=0.001, burst=1, max_users=100, clock_s=FakeClock())
    for user in range(1, 1_001):
        assert limiter.take(user) == 0.0
    assert all(limiter.take(user) > 0 for user in range(901, 1_001))  # the last 100 are kept
    assert limiter.take(1) == 0.0  # the first was dropped long ago


@pytest.mark.parametrize(
    ("wait_s", "header"), [(0.001, "1"), (0.5, "1"), (1.0, "1"), (1.01, "2"), (99.2, "100")]
)
def test_retry_after_is_whole_seconds_at_least_one(wait_s: float, header: str) -> None:
    assert retry_after_header(wait_s) == header
