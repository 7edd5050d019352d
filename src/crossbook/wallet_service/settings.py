"""Settings of the wallet service: one object, read from the environment (`CROSSBOOK_WALLET_…`).

Precedence, highest first: explicit arguments (the CLI's options), environment
variables `CROSSBOOK_WALLET_<FIELD>` (e.g. `CROSSBOOK_WALLET_SERVICE_TOKEN`),
then the defaults below.

Invariants (checked when the settings are built, a `ValueError` otherwise):
- outside `environment = "development"` the service token must be set, at
  least `MIN_SERVICE_TOKEN_CHARS` long, and not the development token: a
  production wallet never accepts a token anyone can read in this file;
- fault injection (`faults_enabled`) is refused in production: it exists for
  tests that need a misbehaving wallet, never for money that is real.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from crossbook.wallet_protocol import DEVELOPMENT_SERVICE_TOKEN, MIN_SERVICE_TOKEN_CHARS

DEFAULT_DATABASE_URL = "sqlite:///crossbook-wallet.db"
DEFAULT_PORT = 8090


class WalletSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CROSSBOOK_WALLET_", extra="forbid", frozen=True)

    environment: Literal["development", "production"] = "development"
    database_url: str = DEFAULT_DATABASE_URL
    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=0, le=65535)
    service_token: SecretStr | None = None
    faults_enabled: bool = False
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_body_bytes: int = Field(16 * 1024, gt=0)

    @model_validator(mode="after")
    def _safe_outside_development(self) -> WalletSettings:
        if self.environment == "development":
            return self
        token = "" if self.service_token is None else self.service_token.get_secret_value()
        if token == DEVELOPMENT_SERVICE_TOKEN or len(token) < MIN_SERVICE_TOKEN_CHARS:
            raise ValueError(
                "CROSSBOOK_WALLET_SERVICE_TOKEN must be set to a token of at least "
                f"{MIN_SERVICE_TOKEN_CHARS} characters outside development"
            )
        if self.faults_enabled:
            raise ValueError("CROSSBOOK_WALLET_FAULTS_ENABLED is refused in production")
        return self

    @property
    def service_token_value(self) -> str:
        if self.service_token is None:
            return DEVELOPMENT_SERVICE_TOKEN  # only reachable in development (validated above)
        return self.service_token.get_secret_value()


def load_wallet_settings(**overrides: Any) -> WalletSettings:
    """The settings, with `overrides` (None values ignored) above every other source."""
    return WalletSettings(**{k: v for k, v in overrides.items() if v is not None})
