"""The response envelope of the seed's API, built once, serialised with orjson.

Success: `{"success": true, "data": …, "meta": {"request_id", "timestamp", …}}`.
Failure: `{"success": false, "error": {"code", "message", "details"}, "meta": …}`.
`timestamp` is the server's UTC time in ISO 8601 with milliseconds (`…Z`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from starlette.requests import HTTPConnection
from starlette.responses import Response

from crossbook.api.errors import ApiError
from crossbook.domain import INT64_MAX
from crossbook.engine.clock import WALL_CLOCK

JSON = "application/json"
MAX_DETAIL_DEPTH = 4  # nesting of an error's details
MAX_DETAIL_ITEMS = 100  # entries of one list or object in an error's details
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC with milliseconds: 2025-11-23T10:30:45.123Z."""
    seconds, millis = divmod(ms, 1000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{millis:03d}Z"


def ms_from_iso(text: str) -> int | None:
    """ISO 8601 with a time zone as epoch milliseconds (exact integer arithmetic), or None.

    RFC 3339's lower-case `t` and `z` are accepted as `T` and `Z`."""
    try:
        stamp = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        return None
    return (stamp - _EPOCH) // timedelta(milliseconds=1)


def request_id_of(connection: HTTPConnection) -> str:
    return str(connection.scope.get("state", {}).get("request_id", ""))


def meta(connection: HTTPConnection, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "request_id": request_id_of(connection),
        "timestamp": iso_ms(WALL_CLOCK.now_ms()),
    }
    if extra:
        out.update(extra)
    return out


def success(
    connection: HTTPConnection,
    data: Any,
    *,
    status: int = 200,
    extra_meta: Mapping[str, Any] | None = None,
) -> Response:
    body = {"success": True, "data": data, "meta": meta(connection, extra_meta)}
    return Response(orjson.dumps(body), status_code=status, media_type=JSON)


def failure_body(connection: HTTPConnection, error: ApiError) -> dict[str, Any]:
    details = {str(key): plain_json(value) for key, value in error.details.items()}
    return {
        "success": False,
        "error": {"code": error.code, "message": error.message, "details": details},
        "meta": meta(connection),
    }


def failure(connection: HTTPConnection, error: ApiError) -> Response:
    body = orjson.dumps(failure_body(connection, error))
    return Response(body, status_code=error.status, media_type=JSON, headers=error.headers)


def plain_json(value: object, depth: int = 0) -> object:
    """`value` as JSON that cannot fail to encode: strings, 64-bit integers, booleans,
    None, and lists or objects of those at most `MAX_DETAIL_DEPTH` deep; anything else
    (an integer beyond 64 bits, a float, an object) becomes its text."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        return value if -INT64_MAX - 1 <= value <= INT64_MAX else str(value)
    if depth < MAX_DETAIL_DEPTH and isinstance(value, list | tuple):
        return [plain_json(item, depth + 1) for item in value[:MAX_DETAIL_ITEMS]]
    if depth < MAX_DETAIL_DEPTH and isinstance(value, dict):
        items = list(value.items())[:MAX_DETAIL_ITEMS]
        return {str(key): plain_json(item, depth + 1) for key, item in items}
    return str(value)
