"""The edge's parsers on arbitrary input: a refusal (ApiError or DomainError) or a value
in range, never another exception, and never a value the text does not spell.

These are the functions every request's ids, times, decimals, tokens and WebSocket
messages pass through; an exception other than a refusal is a 500 at the edge.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import ValidationError
from starlette.requests import HTTPConnection

from crossbook.api.app import validation_error
from crossbook.api.auth import TokenCodec
from crossbook.api.envelope import failure_body, ms_from_iso, plain_json
from crossbook.api.errors import ApiError
from crossbook.api.order_requests import amend_command, place_command
from crossbook.api.params import (
    MAX_ECHO_CHARS,
    MAX_EPOCH_MS,
    cursor_id,
    expiry_ms,
    parse_id,
    parse_order_id,
    parse_time_ms,
)
from crossbook.api.schemas import AmendOrderRequest, PlaceOrderRequest
from crossbook.api.ws import _parse as parse_ws_message
from crossbook.domain import Asset, DomainError, MarketSpec
from crossbook.domain.units import INT64_MAX

SPEC = MarketSpec.create(
    Asset.create("BTC", 8),
    Asset.create("USDT", 6),
    tick_size="0.01",
    lot_size="0.0001",
    min_quantity="0.0001",
    max_quantity="1000",
)
DIGITS_NOT_ASCII = st.characters(categories=["Nd", "No"]).filter(lambda c: not c.isascii())
TEXT = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="0123456789.-+eE_ :TZz", max_size=40),
    st.lists(st.one_of(st.sampled_from("0123456789"), DIGITS_NOT_ASCII), max_size=25).map("".join),
)
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=40)
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
ASCII_DIGITS = re.compile(r"[0-9]+")


def refused(call: Any, *args: Any) -> bool:
    """True if `call(*args)` refused; it may also return, but nothing else may happen."""
    try:
        call(*args)
    except (ApiError, DomainError) as error:
        orjson.dumps(plain_json(error.details))  # the refusal itself always encodes
        return True
    return False


@given(TEXT)
@example("\u00b2")
@example("\u0661")
@example("\uff11")
@example("18446744073709551616")
def test_an_id_is_ascii_digits_in_range_or_refused(text: str) -> None:
    for parse in (lambda t: parse_id(t, "X", "id"), parse_order_id):
        try:
            value = parse(text)
        except ApiError:
            continue
        assert ASCII_DIGITS.fullmatch(text) and 0 < value <= INT64_MAX and value == int(text)
    try:
        cursor = cursor_id(text)
    except ApiError:
        return
    assert cursor is not None and ASCII_DIGITS.fullmatch(text) and 0 <= cursor <= INT64_MAX


@given(TEXT)
@example("2025-11-23t10:30:45.123z")
@example("\u0661\u0662")
def test_a_time_is_parsed_or_refused(text: str) -> None:
    try:
        ms = parse_time_ms(text, "start_time")
    except ApiError as error:
        assert len(str(error.details["provided"])) <= MAX_ECHO_CHARS
        return
    assert ms is not None and ms <= MAX_EPOCH_MS
    assert text.isascii()


@given(st.one_of(TEXT, st.integers()))
@example(10**30)
@example(-21298670157160325120)
def test_an_expiry_is_in_range_or_refused(value: str | int) -> None:
    try:
        ms = expiry_ms(value)
    except DomainError as error:
        assert error.code == "INVALID_EXPIRY"
        assert len(str(error.details["provided"])) <= MAX_ECHO_CHARS
        return
    assert 0 < ms <= MAX_EPOCH_MS


@given(TEXT)
def test_iso_times_never_raise(text: str) -> None:
    ms = ms_from_iso(text)
    assert ms is None or isinstance(ms, int)


@given(TEXT, TEXT, TEXT, TEXT)
def test_decimal_fields_of_an_order_are_on_the_grid_or_refused(
    quantity: str, price: str, stop_price: str, quote: str
) -> None:
    for body in (
        {"quantity": quantity, "price": price},
        {"quantity": quantity, "price": price, "stop_price": stop_price, "type": "stop_limit"},
        {"quote_quantity": quote, "type": "market"},
    ):
        try:
            request = PlaceOrderRequest.model_validate(
                {"symbol": "BTC/USDT", "side": "buy", "type": "limit", **body}
            )
        except ValidationError:
            continue
        if not refused(place_command, SPEC, request, 1):
            command = place_command(SPEC, request, 1)
            assert command.quantity_lots >= 0 and command.price_ticks >= 0
    try:
        amend = AmendOrderRequest(quantity=quantity, price=price)
    except ValidationError:
        return
    refused(amend_command, SPEC, amend, 1, 1)


@given(st.dictionaries(st.text(max_size=20), JSON, max_size=8))
def test_any_order_body_is_accepted_or_refused_with_a_field_code(body: dict[str, Any]) -> None:
    try:
        PlaceOrderRequest.model_validate(body)
    except ValidationError as invalid:
        error = validation_error(invalid.errors())
        assert 400 <= error.status < 500
        orjson.dumps(plain_json(error.details))


@given(st.text(max_size=300))
def test_any_token_is_verified_or_refused(token: str) -> None:
    codec = TokenCodec("s" * 32, 60)
    assert refused(codec.verify, token)


@given(st.one_of(st.none(), st.text(max_size=300), JSON.map(json.dumps)))  # any integer size
@example('{"op":"ping","id":' + "[" * 255 + "]" * 255 + "}")
@example('{"op":"ping","id":18446744073709551616}')
def test_any_websocket_message_is_a_request_or_refused(text: str | None) -> None:
    try:
        request = parse_ws_message(text)
    except ApiError:
        return
    assert isinstance(request, dict)
    if "id" in request:
        orjson.dumps(request["id"])  # an id that is kept can be echoed


@given(st.dictionaries(st.text(max_size=10), JSON, max_size=6))
def test_any_error_details_encode(details: dict[str, Any]) -> None:
    connection = HTTPConnection({"type": "http", "state": {"request_id": "r"}})
    orjson.dumps(failure_body(connection, ApiError("INVALID_REQUEST", "x", details=details)))
