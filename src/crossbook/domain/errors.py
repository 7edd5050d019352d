"""Expected rejections of the domain, each with a stable code.

A `DomainError` means "this command is refused and nothing changed". Callers map
the code to a transport status in one place (the API layer). Programmer errors
are not `DomainError`s: they are assertions and crash loudly.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    """Stable rejection codes. Never rename one: clients match on them."""

    INVALID_PRICE = "INVALID_PRICE"
    INVALID_QUANTITY = "INVALID_QUANTITY"
    INVALID_AMOUNT = "INVALID_AMOUNT"
    INVALID_STOP_PRICE = "INVALID_STOP_PRICE"
    INVALID_EXPIRY = "INVALID_EXPIRY"
    INVALID_ORDER = "INVALID_ORDER"
    INVALID_MARKET_SPEC = "INVALID_MARKET_SPEC"
    INVALID_ASSET = "INVALID_ASSET"
    INVALID_USER = "INVALID_USER"
    MIN_NOTIONAL = "MIN_NOTIONAL"
    INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE"
    MARKET_NOT_FOUND = "MARKET_NOT_FOUND"
    MARKET_EXISTS = "MARKET_EXISTS"
    MARKET_HALTED = "MARKET_HALTED"
    ASSET_NOT_FOUND = "ASSET_NOT_FOUND"
    ASSET_EXISTS = "ASSET_EXISTS"
    ORDER_NOT_FOUND = "ORDER_NOT_FOUND"
    ORDER_NOT_AMENDABLE = "ORDER_NOT_AMENDABLE"
    DUPLICATE_CLIENT_ORDER_ID = "DUPLICATE_CLIENT_ORDER_ID"
    POST_ONLY_WOULD_TAKE = "POST_ONLY_WOULD_TAKE"
    STOP_WOULD_TRIGGER = "STOP_WOULD_TRIGGER"
    TOO_MANY_OPEN_ORDERS = "TOO_MANY_OPEN_ORDERS"
    FUNDS_HELD_BY_WALLET = "FUNDS_HELD_BY_WALLET"


class DomainError(Exception):
    """A command was rejected; the domain state is exactly as before the command."""

    def __init__(self, code: ErrorCode, message: str, **details: object) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details: dict[str, object] = details
