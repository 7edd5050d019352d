"""Ids, times and echoes of request parameters: the edge's one reading of digits.

Ids and epoch milliseconds are ASCII digits only. `str.isdigit()` is also true
of "²", "١" and "１", and `int()` reads the last two as 1, so a check built on
it either crashes (`int("²")`) or lets another spelling alias a real id; every
parser here matches `[0-9]` instead.

Invariants:
- an id is 1 to 19 ASCII digits with a value in 1..2⁶³−1 (BIGINT), or refused;
- a time is epoch milliseconds (1 to 15 ASCII digits) or an RFC 3339 date-time
  (its offset required), read within year 1..9999, or refused;
- a refusal echoes what it refused as a string of at most `MAX_ECHO_CHARS`, so
  no error body can fail to serialise (orjson refuses integers beyond 64 bits)
  or grow with the input.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Query
from pydantic import BeforeValidator

from crossbook.api.envelope import ms_from_iso
from crossbook.api.errors import ApiCode, ApiError
from crossbook.domain import INT64_MAX, DomainError, ErrorCode
from crossbook.engine.ports import MAX_READ_LIMIT

MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
MIN_EPOCH_MS = -62_135_596_800_000  # 0001-01-01T00:00:00.000Z
MAX_ECHO_CHARS = 64
ID_PATTERN = r"^[0-9]{1,19}$"
CURSOR_PATTERN = ID_PATTERN
EPOCH_MS_PATTERN = r"^[0-9]{1,15}$"
POSITIVE_EPOCH_MS_PATTERN = r"^[0-9]{0,14}[1-9][0-9]{0,14}$"  # with maxLength 15
MAX_TIME_CHARS = 40
# a time in a request: epoch milliseconds, or an RFC 3339 date-time (offset required)
TIME_SCHEMA: dict[str, object] = {
    "anyOf": [
        {"type": "string", "pattern": EPOCH_MS_PATTERN},
        {"type": "string", "format": "date-time", "maxLength": MAX_TIME_CHARS},
    ]
}
SYMBOL_PATTERN = r"^[A-Za-z0-9]{1,16}[/_-][A-Za-z0-9]{1,16}$"
_ID = re.compile(r"[0-9]{1,19}")
_EPOCH_MS = re.compile(r"[0-9]{1,15}")
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_CURSOR = re.compile(r"[0-9]{1,19}")
_QUERY_INTEGER = re.compile(r"[0-9]{1,20}")
DEFAULT_PAGE_LIMIT = 100
TIME_DESCRIPTION = "epoch milliseconds or an RFC 3339 date-time, inclusive"


def _ascii_integer(value: object) -> object:
    """Query integers are ASCII digits: pydantic's lax integers would also read "+5",
    " 5", "5.0" and "1_0", which the OpenAPI document's `integer` does not allow."""
    if isinstance(value, str) and not _QUERY_INTEGER.fullmatch(value):
        raise ValueError("must be a whole number written in ASCII digits")
    return value


ASCII_INTEGER = BeforeValidator(_ascii_integer)  # in the `Annotated` of an integer parameter


PageLimit = Annotated[
    int,
    Query(ge=1, le=MAX_READ_LIMIT, description=f"page size, 1 to {MAX_READ_LIMIT}"),
    ASCII_INTEGER,
]
IdCursor = Annotated[
    str | None,
    Query(pattern=CURSOR_PATTERN, description="a keyset cursor: an id (0 to 2^63-1)"),
]
TimeBound = Annotated[
    str | None,
    Query(max_length=MAX_TIME_CHARS, description=TIME_DESCRIPTION, json_schema_extra=TIME_SCHEMA),
]
SymbolQuery = Annotated[
    str | None, Query(pattern=SYMBOL_PATTERN, max_length=33, examples=["BTC-USDT"])
]


def cursor_id(text: str | None) -> int | None:
    """A keyset cursor: any 1 to 19 ASCII digits, capped at the largest id (a cursor
    beyond every id selects everything below it, as it would in the database)."""
    if text is None:
        return None
    if _CURSOR.fullmatch(text) is None:
        raise ApiError(
            ApiCode.INVALID_REQUEST,
            "a cursor is an id of 1 to 19 digits",
            details={"provided": echo(text)},
        )
    return min(int(text), INT64_MAX)


def echo(value: object) -> str:
    """What a refusal shows of the refused value: text, cut to `MAX_ECHO_CHARS`."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= MAX_ECHO_CHARS else text[: MAX_ECHO_CHARS - 1] + "…"


def is_id(text: str) -> bool:
    return _ID.fullmatch(text) is not None and 0 < int(text) <= INT64_MAX


def parse_id(text: str, code: str, what: str) -> int:
    """A positive 64-bit id from a path, a query or a body; anything else is `code`."""
    if not is_id(text):
        raise ApiError(
            code, f"{what} must be a positive integer id", details={"provided": echo(text)}
        )
    return int(text)


def parse_order_id(text: str) -> int:
    """Order ids in paths: a malformed one names no order, so it is ORDER_NOT_FOUND."""
    if not is_id(text):
        raise ApiError(ErrorCode.ORDER_NOT_FOUND, "no such order", details={"order_id": echo(text)})
    return int(text)


def parse_time_ms(text: str | None, field: str) -> int | None:
    """Epoch milliseconds, or ISO 8601 with a zone (`2025-11-23T10:30:45.123Z`)."""
    if text is None:
        return None
    ms = _time_ms(text)
    if ms is None:
        raise ApiError(
            ApiCode.INVALID_REQUEST,
            f"{field} must be epoch milliseconds or an RFC 3339 date-time",
            details={"field": field, "provided": echo(text)},
        )
    return ms


def expiry_ms(value: str | int) -> int:
    """A GTD expiry: epoch milliseconds (a number or digits, 1 to `MAX_EPOCH_MS`), or an
    RFC 3339 date-time (one past year 9999 in UTC is read as `MAX_EPOCH_MS`)."""
    if isinstance(value, int):  # the request schema is strict: never a bool here
        ms: int | None = value if 0 < value <= MAX_EPOCH_MS else None
    elif _EPOCH_MS.fullmatch(value):
        ms = int(value) if 0 < int(value) <= MAX_EPOCH_MS else None
    else:
        ms = _date_time_ms(value)
    if ms is None:
        raise DomainError(
            ErrorCode.INVALID_EXPIRY,
            "expire_at must be epoch milliseconds (1 to 9999-12-31) or an RFC 3339 date-time",
            field="expire_at",
            provided=echo(value),
        )
    return ms


def _time_ms(text: str) -> int | None:
    return int(text) if _EPOCH_MS.fullmatch(text) else _date_time_ms(text)


def _date_time_ms(text: str) -> int | None:
    """An RFC 3339 date-time as epoch ms within year 1 to 9999 (a time beyond either
    end, which only an offset can reach, is read as that end), or None."""
    if _RFC3339.fullmatch(text) is None:
        return None
    ms = ms_from_iso(text)
    return None if ms is None else min(max(ms, MIN_EPOCH_MS), MAX_EPOCH_MS)
