"""Request bodies and query parameters of the wallet's HTTP API, validated strictly (pydantic).

Every malformed body is a 400 INVALID_REQUEST naming the field: unknown fields
are refused, types are never coerced (an amount is a string of decimal digits,
a user id a JSON integer), amounts are canonical (`"0"` or no leading zero) and
at most 2**63 - 1, keys are 1..200 characters of `[A-Za-z0-9:._-]`, assets 1..16
of `[A-Z0-9]`. The cross-field rules of the protocol's `WalletOp` are checked here
too (a void has a `target_key` and no amount; everything else a positive amount
and no `target_key`; `account` other than available only on debit and credit),
so a valid body always makes a valid `WalletOp`.

Query parameters (`HoldsParams`, of `GET /v1/holds`) are as strict: an unknown
or repeated parameter is refused, numbers are canonical decimal digits (`"0"`
or no leading zero, no sign, at most 2**63 - 1), `limit` 1..`MAX_HOLDS_LIMIT`,
and a cursor is both `after_applied_at_ms` and `after_key` or neither. A
refusal is a 400 INVALID_REQUEST whose `errors` name each parameter (`query`
for a rule between parameters).
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from crossbook.domain.markets import ASSET_CODE_CHARS
from crossbook.domain.units import INT64_MAX
from crossbook.wallet_protocol import (
    DEFAULT_HOLDS_LIMIT,
    MAX_HOLDS_LIMIT,
    MAX_KEY_CHARS,
    HoldsCursor,
    WalletAccount,
    WalletCode,
    WalletOp,
    WalletOpKind,
)
from crossbook.wallet_service.model import HoldsQuery, WalletError

KEY_PATTERN = rf"^[A-Za-z0-9:._-]{{1,{MAX_KEY_CHARS}}}$"
ASSET_PATTERN = rf"^[A-Z0-9]{{1,{ASSET_CODE_CHARS}}}$"
UNITS_PATTERN = r"^(0|[1-9][0-9]{0,18})$"  # at most 19 digits: the range is checked after

Key = Annotated[str, StringConstraints(pattern=KEY_PATTERN)]
Asset = Annotated[str, StringConstraints(pattern=ASSET_PATTERN)]
Units = Annotated[str, StringConstraints(pattern=UNITS_PATTERN)]
Count = Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{0,3}$")]  # range checked after
ACCOUNT_OPS = frozenset({WalletOpKind.DEBIT, WalletOpKind.CREDIT})
M = TypeVar("M", bound=BaseModel)


class OperationBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    key: Key
    op: WalletOpKind
    user_id: Annotated[int, Field(ge=0, le=INT64_MAX)]
    asset: Asset
    amount_units: Units = "0"
    account: WalletAccount = WalletAccount.AVAILABLE
    target_key: Key | None = None

    @model_validator(mode="after")
    def _consistent(self) -> OperationBody:
        amount = int(self.amount_units)
        if amount > INT64_MAX:
            raise ValueError("amount_units must be at most 2**63 - 1")
        if self.op is WalletOpKind.VOID:
            if self.target_key is None:
                raise ValueError("a void needs target_key")
            if amount != 0:
                raise ValueError('a void takes no amount_units (or "0")')
            if self.target_key == self.key:
                raise ValueError("a void cannot target its own key")
        else:
            if amount == 0:
                raise ValueError("amount_units must be positive")
            if self.target_key is not None:
                raise ValueError("target_key is for void only")
        if self.account is not WalletAccount.AVAILABLE and self.op not in ACCOUNT_OPS:
            raise ValueError("account is for debit and credit only")
        return self

    def to_op(self) -> WalletOp:
        return WalletOp(
            key=self.key,
            kind=self.op,
            user_id=self.user_id,
            asset=self.asset,
            amount_units=int(self.amount_units),
            account=self.account,
            target_key=self.target_key,
        )


class HoldsParams(BaseModel):
    """The query of `GET /v1/holds`: every value a string, as a query carries it."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    applied_before_ms: Units | None = None
    applied_after_ms: Units | None = None
    user_id: Units | None = None
    after_applied_at_ms: Units | None = None
    after_key: Key | None = None
    limit: Count | None = None

    @field_validator("applied_before_ms", "applied_after_ms", "user_id", "after_applied_at_ms")
    @classmethod
    def _int64(cls, value: str | None) -> str | None:
        if value is not None and int(value) > INT64_MAX:
            raise ValueError("must be at most 2**63 - 1")
        return value

    @field_validator("limit")
    @classmethod
    def _limit(cls, value: str | None) -> str | None:
        if value is not None and int(value) > MAX_HOLDS_LIMIT:
            raise ValueError(f"must be from 1 to {MAX_HOLDS_LIMIT}")
        return value

    @model_validator(mode="after")
    def _whole_cursor(self) -> HoldsParams:
        if (self.after_applied_at_ms is None) != (self.after_key is None):
            raise ValueError("after_applied_at_ms and after_key go together")
        return self

    def to_query(self) -> HoldsQuery:
        after = None
        if self.after_applied_at_ms is not None and self.after_key is not None:
            after = HoldsCursor(int(self.after_applied_at_ms), self.after_key)
        return HoldsQuery(
            applied_before_ms=_optional_int(self.applied_before_ms),
            applied_after_ms=_optional_int(self.applied_after_ms),
            user_id=_optional_int(self.user_id),
            after=after,
            limit=DEFAULT_HOLDS_LIMIT if self.limit is None else int(self.limit),
        )


def _optional_int(value: str | None) -> int | None:
    return None if value is None else int(value)


def parse_query(model: type[M], items: list[tuple[str, str]]) -> M:
    """The query parameters `items` as `model`, or a 400 INVALID_REQUEST naming each
    parameter that is wrong (a repeated one included)."""
    params: dict[str, str] = {}
    repeated: dict[str, None] = {}  # in the order they came
    for name, value in items:
        if name in params:
            repeated[name] = None
        params[name] = value
    if repeated:
        errors = [{"field": name, "message": "given more than once"} for name in repeated]
        raise WalletError(WalletCode.INVALID_REQUEST, "invalid query parameters", errors=errors)
    try:
        return model.model_validate(params)
    except ValidationError as error:
        raise WalletError(
            WalletCode.INVALID_REQUEST, "invalid query parameters", errors=_errors(error, "query")
        ) from error


def parse(model: type[M], body: bytes) -> M:
    """`body` as `model`, or a 400 INVALID_REQUEST naming what is wrong."""
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise WalletError(WalletCode.INVALID_REQUEST, "the body is not JSON") from error
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        raise WalletError(
            WalletCode.INVALID_REQUEST, "invalid request body", errors=_errors(error)
        ) from error


def _errors(error: ValidationError, whole: str = "body") -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(part) for part in e["loc"]) or whole, "message": e["msg"]}
        for e in error.errors(include_url=False, include_input=False)
    ]
