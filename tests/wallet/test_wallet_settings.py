"""`WalletSettings`: safe outside development, read from CROSSBOOK_WALLET_* variables."""

from __future__ import annotations

import pytest

from crossbook.wallet_protocol import DEVELOPMENT_SERVICE_TOKEN, MIN_SERVICE_TOKEN_CHARS
from crossbook.wallet_service.settings import WalletSettings, load_wallet_settings

GOOD_TOKEN = "t" * MIN_SERVICE_TOKEN_CHARS


@pytest.fixture(autouse=True)
def no_wallet_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in WalletSettings.model_fields:
        monkeypatch.delenv(f"CROSSBOOK_WALLET_{name.upper()}", raising=False)


def test_development_defaults() -> None:
    settings = WalletSettings()
    assert settings.environment == "development"
    assert settings.service_token_value == DEVELOPMENT_SERVICE_TOKEN
    assert (settings.host, settings.port) == ("127.0.0.1", 8090)
    assert settings.database_url == "sqlite:///crossbook-wallet.db"
    assert settings.faults_enabled is False
    assert WalletSettings(faults_enabled=True).faults_enabled is True


@pytest.mark.parametrize(
    "token", [None, "", "x" * (MIN_SERVICE_TOKEN_CHARS - 1), DEVELOPMENT_SERVICE_TOKEN]
)
def test_production_needs_a_real_token(token: str | None) -> None:
    with pytest.raises(ValueError, match="SERVICE_TOKEN"):
        WalletSettings(environment="production", service_token=token)


def test_production_refuses_faults() -> None:
    with pytest.raises(ValueError, match="FAULTS_ENABLED"):
        WalletSettings(environment="production", service_token=GOOD_TOKEN, faults_enabled=True)
    settings = WalletSettings(environment="production", service_token=GOOD_TOKEN)
    assert settings.service_token_value == GOOD_TOKEN
    assert GOOD_TOKEN not in repr(settings)  # a secret is never printed


def test_environment_variables_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROSSBOOK_WALLET_ENVIRONMENT", "production")
    monkeypatch.setenv("CROSSBOOK_WALLET_SERVICE_TOKEN", GOOD_TOKEN)
    monkeypatch.setenv("CROSSBOOK_WALLET_PORT", "9191")
    settings = load_wallet_settings(port=None, database_url="sqlite:///other.db")
    assert (settings.environment, settings.port) == ("production", 9191)
    assert settings.database_url == "sqlite:///other.db"
    monkeypatch.setenv("CROSSBOOK_WALLET_FAULTS_ENABLED", "true")
    with pytest.raises(ValueError, match="FAULTS_ENABLED"):
        load_wallet_settings()
