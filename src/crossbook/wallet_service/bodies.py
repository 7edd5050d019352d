"""Request bodies of the wallet's HTTP API, validated strictly (pydantic, strict JSON mode).

Every malformed body is a 400 INVALID_REQUEST naming the field: unknown fields
are refused, types are never coerced (an amount is a string of decimal digits,
a user id a JSON integer), amounts are canonical (`"0"` or no leading zero) and
at most 2**63 - 1, keys are 1..200 characters of `[A-Za-z0-9:._-]`, assets 1..16
of `[A-Z0-9]`. The cross-field rules of the protocol's `WalletOp` are checked here
too (a void has a `target_key` and no amount; everything else a positive amount
and no `target_key`; `account` other than available only on debit and credit),
so a valid body always makes a valid `WalletOp`.
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
    model_validator,
)

from crossbook.domain.markets import ASSET_CODE_CHARS
from crossbook.domain.units import INT64_MAX
from crossbook.wallet_protocol import (
    MAX_KEY_CHARS,
    WalletAccount,
    WalletCode,
    WalletOp,
    WalletOpKind,
)
from crossbook.wallet_service.model import WalletError

KEY_PATTERN = rf"^[A-Za-z0-9:._-]{{1,{MAX_KEY_CHARS}}}$"
ASSET_PATTERN = rf"^[A-Z0-9]{{1,{ASSET_CODE_CHARS}}}$"
UNITS_PATTERN = r"^(0|[1-9][0-9]{0,18})$"  # at most 19 digits: the range is checked after

Key = Annotated[str, StringConstraints(pattern=KEY_PATTERN)]
Asset = Annotated[str, StringConstraints(pattern=ASSET_PATTERN)]
Units = Annotated[str, StringConstraints(pattern=UNITS_PATTERN)]
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


def _errors(error: ValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(part) for part in e["loc"]) or "body", "message": e["msg"]}
        for e in error.errors(include_url=False, include_input=False)
    ]
