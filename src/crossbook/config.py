"""Settings: one object, read from the environment (`CROSSBOOK_…`) and an optional file.

Precedence, highest first: explicit arguments (the CLI's options), environment
variables `CROSSBOOK_<FIELD>` (e.g. `CROSSBOOK_DATABASE_URL`), the TOML file named
by `CROSSBOOK_CONFIG_FILE` (keys are the field names), then the defaults below.

Invariants (checked when the settings are built, a `ValueError` otherwise):
- outside `environment = "development"` the JWT secret must be set, at least
  `MIN_JWT_SECRET_CHARS` long, and not the development secret: a production
  server never runs with a secret anyone can read in this file;
- every limit is positive;
- `/docs`, `/openapi.json` and `/metrics` are served in development and not in
  production unless `docs_enabled` / `metrics_enabled` say otherwise; with
  `metrics_token` set, `/metrics` answers only that bearer token;
- remote-wallet mode (`wallet_url` set): outside development `wallet_token`
  must be set (32+ characters); in development it defaults to the wallet
  service's development token.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from crossbook.wallet_protocol import DEVELOPMENT_SERVICE_TOKEN, MIN_SERVICE_TOKEN_CHARS

DEVELOPMENT_JWT_SECRET = "crossbook-development-secret-not-for-production"
MIN_JWT_SECRET_CHARS = 32
CONFIG_FILE_ENV = "CROSSBOOK_CONFIG_FILE"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CROSSBOOK_", extra="forbid", frozen=True)

    environment: Literal["development", "production"] = "development"
    database_url: str = "sqlite:///crossbook.db"
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = True

    jwt_secret: SecretStr | None = None
    jwt_ttl_s: int = Field(24 * 3600, gt=0)

    # engine (DESIGN rule 7: every queue and batch is bounded)
    batch_max_commands: int = Field(2_000, gt=0)
    queue_capacity: int = Field(20_000, gt=0)
    max_open_orders_per_user: int = Field(1_000, gt=0)
    max_fills_per_order: int = Field(10_000, gt=0)
    commit_deadline_ms: int = Field(1_000, gt=0)  # a commit not done by then fails its batch
    commit_outcome_wait_ms: int = Field(1_000, gt=0)  # then callers hear within this
    database_read_timeout_ms: int = Field(5_000, gt=0)  # a read that has not answered fails

    # gateway
    order_rate_per_s: float = Field(50.0, gt=0)  # per user, token bucket refill (not money)
    order_burst: int = Field(100, gt=0)  # per user, token bucket size
    max_body_bytes: int = Field(64 * 1024, gt=0)
    read_rate_per_s: float = Field(50.0, gt=0)  # per client address: GETs (not /health, /ready)
    read_burst: int = Field(100, gt=0)
    max_connections: int = Field(4_096, gt=0)  # open TCP connections (HTTP and WebSocket)
    max_connections_per_client: int = Field(256, gt=0)  # from one client address
    http_header_timeout_ms: int = Field(10_000, gt=0)  # a request's headers, from its first byte
    http_body_timeout_ms: int = Field(30_000, gt=0)  # its body, from its headers
    ws_max_pending_messages: int = Field(2_000, gt=0)  # per connection, then disconnected
    ws_max_queued_bytes: int = Field(16 * 2**20, gt=0)  # per connection, then disconnected
    ws_max_total_queued_bytes: int = Field(512 * 2**20, gt=0)  # all connections together
    ws_max_subscriptions: int = Field(100, gt=0)  # channels per connection
    ws_ops_per_s: float = Field(10.0, gt=0)  # client messages per connection (then closed)
    ws_ops_burst: int = Field(50, gt=0)
    ws_max_connections_per_client: int = Field(32, gt=0)  # WebSockets from one address
    ws_close_grace_ms: int = Field(1_000, gt=0)  # a dropped connection's close, then abort

    # what the server shows of itself (None: on in development, off in production)
    docs_enabled: bool | None = None  # /docs, /redoc and /openapi.json
    metrics_enabled: bool | None = None  # /metrics
    metrics_token: SecretStr | None = None  # if set, /metrics needs `Authorization: Bearer …`

    # remote-wallet mode: balances live in the wallet service at this URL (off when None)
    wallet_url: str | None = None
    wallet_token: SecretStr | None = None
    wallet_timeout_ms: int = Field(5_000, gt=0)  # per wallet call
    settlement_workers: int = Field(10, gt=0)
    settlement_max_attempts: int = Field(3, gt=0)
    settlement_backoff_ms: int = Field(1_000, gt=0)  # first retry's wait (then doubling)
    settlement_max_backoff_ms: int = Field(30_000, gt=0)
    settlement_queue_capacity: int = Field(10_000, gt=0)
    breaker_failure_threshold: int = Field(5, gt=0)  # consecutive failures that open it
    breaker_reset_ms: int = Field(5_000, gt=0)  # open this long, then one probe
    market_buy_hold_margin_bps: int = Field(500, ge=0, le=10_000)  # slippage held beyond cost
    # the hold reconciler (engine.hold_reconciler): a hold nothing owns is voided once it
    # is this old; it must exceed a wallet call plus a commit (checked below)
    hold_orphan_grace_ms: int = Field(30_000, gt=0)
    hold_reconcile_interval_ms: int = Field(10_000, gt=0)  # between passes (one at start-up)
    hold_reconcile_void: bool = True  # False: passes only report orphans (operators void)

    # fee rates of the markets created on an empty database (decimal strings)
    maker_fee_rate: str = "0.0005"
    taker_fee_rate: str = "0.001"

    @model_validator(mode="after")
    def _secret_is_safe(self) -> Settings:
        if self.environment == "development":
            return self
        secret = "" if self.jwt_secret is None else self.jwt_secret.get_secret_value()
        if secret == DEVELOPMENT_JWT_SECRET or len(secret) < MIN_JWT_SECRET_CHARS:
            raise ValueError(
                "CROSSBOOK_JWT_SECRET must be set to a secret of at least "
                f"{MIN_JWT_SECRET_CHARS} characters outside development"
            )
        return self

    @model_validator(mode="after")
    def _limits_agree(self) -> Settings:
        if not self.ws_max_connections_per_client <= self.max_connections_per_client:
            raise ValueError("ws_max_connections_per_client exceeds max_connections_per_client")
        if not self.max_connections_per_client <= self.max_connections:
            raise ValueError("max_connections_per_client exceeds max_connections")
        if not self.ws_max_queued_bytes <= self.ws_max_total_queued_bytes:
            raise ValueError("ws_max_queued_bytes exceeds ws_max_total_queued_bytes")
        attempt_ms = self.wallet_timeout_ms + self.commit_deadline_ms + self.commit_outcome_wait_ms
        if self.wallet_url is not None and not self.hold_orphan_grace_ms > attempt_ms:
            raise ValueError(
                "hold_orphan_grace_ms must exceed wallet_timeout_ms + commit_deadline_ms"
                f" + commit_outcome_wait_ms ({attempt_ms})"
            )
        return self

    @model_validator(mode="after")
    def _wallet_is_safe(self) -> Settings:
        if self.settlement_backoff_ms > self.settlement_max_backoff_ms:
            raise ValueError("settlement_backoff_ms must not exceed settlement_max_backoff_ms")
        if self.wallet_url is None or self.environment == "development":
            return self
        token = "" if self.wallet_token is None else self.wallet_token.get_secret_value()
        if token == DEVELOPMENT_SERVICE_TOKEN or len(token) < MIN_SERVICE_TOKEN_CHARS:
            raise ValueError(
                "CROSSBOOK_WALLET_TOKEN must be set to the wallet service's token "
                f"(at least {MIN_SERVICE_TOKEN_CHARS} characters) outside development"
            )
        return self

    @property
    def docs_served(self) -> bool:
        return self.environment == "development" if self.docs_enabled is None else self.docs_enabled

    @property
    def metrics_served(self) -> bool:
        if self.metrics_enabled is None:
            return self.environment == "development"
        return self.metrics_enabled

    @property
    def wallet_token_value(self) -> str:
        if self.wallet_token is None:
            return DEVELOPMENT_SERVICE_TOKEN  # only reachable in development (validated above)
        return self.wallet_token.get_secret_value()

    @property
    def jwt_secret_value(self) -> str:
        if self.jwt_secret is None:
            return DEVELOPMENT_JWT_SECRET  # only reachable in development (validated above)
        return self.jwt_secret.get_secret_value()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            path = Path(config_file)
            if not path.is_file():
                raise ValueError(f"{CONFIG_FILE_ENV} names a missing file: {path}")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """The settings, with `overrides` (None values ignored) above every other source."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
