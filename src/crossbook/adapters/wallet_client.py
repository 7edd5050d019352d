"""`HttpWallet`: the engine's `Wallet` port over the wallet service's HTTP API.

One shared `httpx.AsyncClient` (keep-alive pool of `max_connections`), a bearer
token on every request, and `timeout_ms` for each phase of a call (connect,
read, write, waiting for a pooled connection).

- `POST /v1/operations` applies one idempotent operation (amounts as decimal
  integer strings) and answers `{"success": true, "data": {...receipt}}`;
- `GET /v1/balances/{user_id}` answers `{"success": true, "data": [...]}`;
- errors answer `{"success": false, "error": {"code", "message", "details"}}`.

Error mapping (the port's two kinds, see `crossbook.engine.wallet`):
- 4xx except 408 and 429 → `WalletRejectedError(code, message, details)`: the
  service answered and refused, nothing was applied. A body that is not the
  error envelope gives code `WALLET_PROTOCOL_ERROR`;
- 408, 429, 5xx, any other unexpected status → `WalletUnavailableError`;
- timeouts and transport errors (connect refused, connection reset, the server
  closing the connection mid-answer) → `WalletUnavailableError`;
- a 200 whose body is malformed or does not describe the operation sent →
  `WalletUnavailableError`.

Why ambiguity is transient: once a request may have left, a timeout or a lost
connection says nothing about whether the service applied it, and neither does
an answer we cannot read. Reporting "rejected" could make a caller compensate a
debit that did happen; reporting "unavailable" makes it retry with the same key,
which the service applies at most once (a replay returns the first receipt).

Limits: `timeout_ms` bounds each phase, not the whole call (a server trickling
bytes can exceed it); `max_connections` applies only to the default transport,
not to an injected one; response bodies are read whole (the service is trusted
to answer small JSON documents).
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from crossbook.engine.views import StoredBalance
from crossbook.engine.wallet import (
    WalletOp,
    WalletOpKind,
    WalletReceipt,
    WalletRejectedError,
    WalletUnavailableError,
)

OPERATIONS_PATH = "/v1/operations"
BALANCES_PATH = "/v1/balances/{user_id}"
PROTOCOL_ERROR_CODE = "WALLET_PROTOCOL_ERROR"
TRANSIENT_CLIENT_STATUSES = frozenset({408, 429})
MAX_ERROR_TEXT_CHARS = 200

_UNITS_PATTERN = re.compile(r"[0-9]{1,40}")


class MalformedAnswerError(ValueError):
    """A body that is not what the service's contract says it returns."""


class HttpWallet:
    __slots__ = ("_client",)

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout_ms: int = 5_000,
        max_connections: int = 20,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not token:
            raise ValueError("the wallet token must not be empty")
        if timeout_ms < 1 or max_connections < 1:
            raise ValueError(f"timeout_ms ({timeout_ms}) and max_connections must be positive")
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout_ms / 1_000),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def apply(self, op: WalletOp) -> WalletReceipt:
        what = f"wallet {op.kind} {op.key}"
        response = await self._send(what, "POST", OPERATIONS_PATH, json=operation_body(op))
        try:
            return parse_receipt(success_data(response), op)
        except MalformedAnswerError as exc:
            raise WalletUnavailableError(
                f"{what}: outcome unknown, malformed answer ({exc}); retry with the same key"
            ) from exc

    async def balances(self, user_id: int) -> list[StoredBalance]:
        what = f"wallet balances of user {user_id}"
        response = await self._send(what, "GET", BALANCES_PATH.format(user_id=user_id))
        try:
            return parse_balances(success_data(response), user_id)
        except MalformedAnswerError as exc:
            raise WalletUnavailableError(f"{what}: malformed answer ({exc})") from exc

    async def _send(
        self, what: str, method: str, path: str, json: dict[str, Any] | None = None
    ) -> httpx.Response:
        """The 200 answer; every other outcome raised as the port's errors."""
        try:
            response = await self._client.request(method, path, json=json)
        except httpx.TimeoutException as exc:
            raise WalletUnavailableError(
                f"{what}: timed out, outcome unknown (ambiguous); retry with the same key"
            ) from exc
        except httpx.RequestError as exc:
            raise WalletUnavailableError(
                f"{what}: {type(exc).__name__}, outcome unknown (ambiguous); "
                "retry with the same key"
            ) from exc
        status = response.status_code
        if status == httpx.codes.OK:
            return response
        if 400 <= status < 500 and status not in TRANSIENT_CLIENT_STATUSES:
            raise rejection(response)
        raise WalletUnavailableError(f"{what}: answered HTTP {status}{error_suffix(response)}")


def operation_body(op: WalletOp) -> dict[str, Any]:
    body: dict[str, Any] = {
        "key": op.key,
        "op": op.kind.value,
        "user_id": op.user_id,
        "asset": op.asset,
        "account": op.account.value,
    }
    if op.kind is WalletOpKind.VOID:
        body["target_key"] = op.target_key
    else:
        body["amount_units"] = str(op.amount_units)
    return body


def success_data(response: httpx.Response) -> Any:
    body = json_body(response)
    if not isinstance(body, dict) or body.get("success") is not True or "data" not in body:
        raise MalformedAnswerError("not a success envelope")
    return body["data"]


def parse_receipt(data: Any, op: WalletOp) -> WalletReceipt:
    if not isinstance(data, dict):
        raise MalformedAnswerError("receipt is not an object")
    echoed = {"key": op.key, "op": op.kind.value, "user_id": op.user_id, "asset": op.asset}
    for name, expected in echoed.items():
        if data.get(name) != expected or isinstance(data.get(name), bool):
            raise MalformedAnswerError(f"receipt {name} {data.get(name)!r} != {expected!r}")
    amount_units = parse_units(data.get("amount_units"), "amount_units")
    if op.kind is not WalletOpKind.VOID and amount_units != op.amount_units:
        raise MalformedAnswerError(f"receipt amount_units {amount_units} != {op.amount_units}")
    applied_at_ms = data.get("applied_at_ms")
    if not isinstance(applied_at_ms, int) or isinstance(applied_at_ms, bool) or applied_at_ms < 0:
        raise MalformedAnswerError(f"receipt applied_at_ms {applied_at_ms!r}")
    replayed = data.get("replayed")
    if not isinstance(replayed, bool):
        raise MalformedAnswerError(f"receipt replayed {replayed!r}")
    return WalletReceipt(op.key, amount_units, applied_at_ms, replayed)


def parse_balances(data: Any, user_id: int) -> list[StoredBalance]:
    if not isinstance(data, list):
        raise MalformedAnswerError("balances are not a list")
    balances: dict[str, StoredBalance] = {}
    for item in data:
        if not isinstance(item, dict):
            raise MalformedAnswerError("a balance is not an object")
        asset = item.get("asset")
        if not isinstance(asset, str) or not asset or asset in balances:
            raise MalformedAnswerError(f"balance asset {asset!r} missing or repeated")
        available = parse_units(item.get("available"), f"{asset} available")
        locked = parse_units(item.get("locked"), f"{asset} locked")
        balances[asset] = StoredBalance(user_id, asset, available, locked)
    return [balances[asset] for asset in sorted(balances)]


def parse_units(value: Any, name: str) -> int:
    """A non-negative integer sent as a string of ASCII digits."""
    if not isinstance(value, str) or not _UNITS_PATTERN.fullmatch(value):
        raise MalformedAnswerError(f"{name} {value!r} is not an integer string")
    return int(value)


def rejection(response: httpx.Response) -> WalletRejectedError:
    try:
        code, message, details = error_fields(json_body(response))
    except MalformedAnswerError:
        text = response.text[:MAX_ERROR_TEXT_CHARS]
        return WalletRejectedError(
            PROTOCOL_ERROR_CODE,
            f"HTTP {response.status_code} without an error envelope",
            {"status": response.status_code, "body": text},
        )
    return WalletRejectedError(code, message, details)


def error_suffix(response: httpx.Response) -> str:
    try:
        code, message, _ = error_fields(json_body(response))
    except MalformedAnswerError:
        return ""
    return f" ({code}: {message})"


def error_fields(body: Any) -> tuple[str, str, dict[str, object]]:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        raise MalformedAnswerError("not an error envelope")
    code, message, details = error.get("code"), error.get("message"), error.get("details")
    if not isinstance(code, str) or not code or not isinstance(message, str):
        raise MalformedAnswerError("error without code or message")
    if details is None:
        details = {}
    if not isinstance(details, dict):
        raise MalformedAnswerError("error details are not an object")
    return code, message, details


def json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise MalformedAnswerError("body is not JSON") from exc
