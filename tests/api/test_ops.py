"""Operations and the gateway: health, readiness, metrics, request ids, body limits,
unknown routes and methods, and the OpenAPI document.

`/health`, `/ready`, `/metrics`, `/openapi.json` and `/docs` live outside `/api/v1`,
so these tests use a plain HTTP client of the server's root.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from prometheus_client.parser import text_string_to_metric_families

from api_support import Api, LiveServer, admin_api, fresh_market, live_server, new_trader, place

GENERATED_REQUEST_ID = re.compile(r"req_[0-9a-f]{16}")
CONVERTOR = re.compile(r"\{(\w+):\w+\}")


@pytest.fixture
def root(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def envelope(response: httpx.Response, status: int) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert response.status_code == status, (response.status_code, body)
    assert body["meta"]["request_id"] == response.headers["x-request-id"]
    return body


def error_code(response: httpx.Response, status: int) -> str:
    body = envelope(response, status)
    assert body["success"] is False
    assert set(body["error"]) == {"code", "message", "details"}
    return str(body["error"]["code"])


# -- health and readiness ----------------------------------------------------------------


def test_health_answers_ok(root: httpx.Client) -> None:
    body = envelope(root.get("/health"), 200)
    assert body["success"] is True
    assert body["data"]["status"] == "ok"


def test_ready_checks_the_engine_and_the_database(root: httpx.Client) -> None:
    body = envelope(root.get("/ready"), 200)
    assert body["data"] == {"status": "ready", "checks": {"engine": "ok", "database": "ok"}}


# -- metrics -----------------------------------------------------------------------------


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def value(
    scraped: list[tuple[str, dict[str, str], float]], name: str, **labels: str
) -> float | None:
    for sample_name, sample_labels, sample_value in scraped:
        if sample_name == name and labels.items() <= sample_labels.items():
            return sample_value
    return None


def test_metrics_are_prometheus_text_with_the_engine_and_gateway_series(
    server: LiveServer, root: httpx.Client
) -> None:
    symbol = fresh_market(server)
    base = symbol.split("/")[0]
    seller = new_trader(server, {base: "1"})
    buyer = new_trader(server, {"USDT": "1000"})
    place(seller, symbol, side="sell", type="limit", quantity="1", price="100")
    place(buyer, symbol, side="buy", type="market", quantity="1")

    response = root.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    scraped = samples(response.text)

    placed = value(scraped, "crossbook_orders_total", action="place", result="ok")
    assert placed is not None and placed >= 2
    trades = value(scraped, "crossbook_trades_total")
    assert trades is not None and trades >= 1
    assert value(scraped, "crossbook_engine_queue_depth") is not None
    batches = value(scraped, "crossbook_engine_batch_commands_count")
    assert batches is not None and batches >= 1
    commits = value(scraped, "crossbook_engine_commit_seconds_count")
    assert commits is not None and commits >= 1
    assert value(scraped, "crossbook_websocket_connections") is not None

    latency = "crossbook_http_request_duration_seconds_count"
    posted = value(scraped, latency, method="POST", route="/api/v1/orders", status="201")
    assert posted is not None and posted >= 2
    # a path with an id is labelled by its template, so label values stay bounded
    token_route = "/api/v1/admin/users/{user_id}/tokens"
    assert value(scraped, latency, method="POST", route=token_route, status="201") is not None
    routes = {labels["route"] for name, labels, _ in scraped if name == latency}
    assert not any(re.search(r"/\d", route) for route in routes), routes


# -- request ids -------------------------------------------------------------------------


def test_a_valid_client_request_id_is_echoed(root: httpx.Client) -> None:
    request_id = "client-42.retry:1_A"
    response = root.get("/health", headers={"X-Request-ID": request_id})
    assert response.headers["x-request-id"] == request_id
    assert envelope(response, 200)["meta"]["request_id"] == request_id


def test_a_client_request_id_is_echoed_on_errors_too(root: httpx.Client) -> None:
    response = root.get("/api/v1/nowhere", headers={"X-Request-ID": "trace-7"})
    assert response.headers["x-request-id"] == "trace-7"
    assert envelope(response, 404)["meta"]["request_id"] == "trace-7"


@pytest.mark.parametrize(
    "request_id", ["x" * 200, "x" * 129, "has spaces", "semi;colon", ""], ids=repr
)
def test_an_invalid_client_request_id_is_replaced(root: httpx.Client, request_id: str) -> None:
    response = root.get("/health", headers={"X-Request-ID": request_id})
    replaced = response.headers["x-request-id"]
    assert GENERATED_REQUEST_ID.fullmatch(replaced), replaced
    assert envelope(response, 200)["meta"]["request_id"] == replaced


def test_a_request_without_an_id_gets_a_generated_one(root: httpx.Client) -> None:
    first = root.get("/health").headers["x-request-id"]
    second = root.get("/health").headers["x-request-id"]
    assert GENERATED_REQUEST_ID.fullmatch(first) and GENERATED_REQUEST_ID.fullmatch(second)
    assert first != second


# -- body size ---------------------------------------------------------------------------


def padded_user_body(size: int) -> bytes:
    """A valid create-user JSON body of exactly `size` bytes (trailing whitespace)."""
    body = b'{"name": "padded"}'
    assert len(body) <= size
    return body + b" " * (size - len(body))


def chunks(body: bytes, size: int = 4096) -> Iterator[bytes]:
    """The body as a stream: httpx sends it chunked, without Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def user_count(server: LiveServer) -> int:
    return len(admin_api(server).ok("GET", "/admin/users", params={"limit": 1000}))


def test_a_body_of_exactly_the_limit_is_accepted(server: LiveServer) -> None:
    admin = admin_api(server)
    body = padded_user_body(server.settings.max_body_bytes)
    headers = {"content-type": "application/json"}
    assert admin.ok("POST", "/admin/users", 201, content=body, headers=headers)["name"] == "padded"


def test_a_declared_body_over_the_limit_is_refused(server: LiveServer) -> None:
    limit = server.settings.max_body_bytes
    before = user_count(server)
    error = admin_api(server).fails(
        "POST",
        "/admin/users",
        413,
        "PAYLOAD_TOO_LARGE",
        content=padded_user_body(limit + 1),
        headers={"content-type": "application/json"},
    )
    assert error["details"] == {"max_bytes": limit}
    assert user_count(server) == before


def test_a_streamed_body_over_the_limit_is_refused(server: LiveServer) -> None:
    limit = server.settings.max_body_bytes
    before = user_count(server)
    request = admin_api(server).http.build_request(
        "POST",
        "/admin/users",
        content=chunks(padded_user_body(limit + 1)),
        headers={"content-type": "application/json"},
    )
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    response = admin_api(server).http.send(request)
    assert error_code(response, 413) == "PAYLOAD_TOO_LARGE"
    assert response.json()["error"]["details"] == {"max_bytes": limit}
    assert user_count(server) == before


def test_a_streamed_body_within_the_limit_is_accepted(server: LiveServer) -> None:
    admin = admin_api(server)
    request = admin.http.build_request(
        "POST",
        "/admin/users",
        content=chunks(padded_user_body(server.settings.max_body_bytes), size=1000),
        headers={"content-type": "application/json"},
    )
    assert "content-length" not in request.headers
    response = admin.http.send(request)
    assert envelope(response, 201)["data"]["name"] == "padded"


# -- unknown routes and methods ----------------------------------------------------------


@pytest.mark.parametrize("path", ["/nowhere", "/api/v1/nowhere", "/api/v2/orders"])
def test_an_unknown_route_is_a_not_found_envelope(root: httpx.Client, path: str) -> None:
    assert error_code(root.get(path), 404) == "NOT_FOUND"


@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", "/health"), ("POST", "/ready"), ("POST", "/metrics"), ("PUT", "/api/v1/orders")],
)
def test_a_wrong_method_is_a_method_not_allowed_envelope(
    root: httpx.Client, method: str, path: str
) -> None:
    assert error_code(root.request(method, path), 405) == "METHOD_NOT_ALLOWED"


def test_an_unknown_route_needs_no_token_to_be_reported(server: LiveServer) -> None:
    Api(server).fails("GET", "/admin/nowhere", 404, "NOT_FOUND")


# -- OpenAPI and docs --------------------------------------------------------------------


def served_operations(server: LiveServer) -> set[tuple[str, str]]:
    """(path, method) of every HTTP route the running app serves (docs pages excepted),
    paths as OpenAPI writes them (`{symbol:path}` is `{symbol}`)."""
    app = server.server.config.app
    assert isinstance(app, FastAPI)
    return {
        (CONVERTOR.sub(r"{\1}", context.path), method.lower())
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute) and context.path is not None
        for method in context.methods or ()
    }


def test_openapi_lists_every_route(server: LiveServer, root: httpx.Client) -> None:
    document = root.get("/openapi.json").json()
    listed = {
        (path, method)
        for path, operations in document["paths"].items()
        for method in operations
        if method in {"get", "post", "put", "patch", "delete"}
    }
    served = served_operations(server)
    assert {("/api/v1/orders", "post"), ("/api/v1/admin/markets/{symbol}/halt", "post")} <= served
    assert served <= listed, served - listed
    paths = {path for path, _ in listed}
    assert {"/health", "/ready", "/metrics"} <= paths
    assert all(p.startswith("/api/v1/") for p in paths - {"/health", "/ready", "/metrics"})
    assert {
        "/api/v1/orders",
        "/api/v1/orders/{order_id}",
        "/api/v1/markets",
        "/api/v1/balances",
        "/api/v1/admin/users",
        "/api/v1/admin/deposits",
        "/api/v1/admin/withdrawals",
        "/api/v1/admin/markets",
    } <= paths


def test_openapi_documents_the_error_envelope_on_the_order_routes(root: httpx.Client) -> None:
    document = root.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert set(schemas["ErrorEnvelope"]["properties"]) == {"success", "error", "meta"}
    assert set(schemas["ErrorBody"]["properties"]) == {"code", "message", "details"}

    error_ref = "#/components/schemas/ErrorEnvelope"
    expected = {
        ("/api/v1/orders", "post"): {"400", "401", "404", "409", "429"},
        ("/api/v1/orders", "get"): {"400", "401"},
        ("/api/v1/orders/{order_id}", "get"): {"401", "404"},
        ("/api/v1/orders/{order_id}", "delete"): {"401", "404"},
        ("/api/v1/orders/{order_id}", "patch"): {"400", "401", "404", "409"},
    }
    for (path, method), statuses in expected.items():
        responses = document["paths"][path][method]["responses"]
        assert statuses <= set(responses), (path, method, set(responses))
        for status in statuses:
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": error_ref}, (path, method, status, schema)


def test_docs_serve_html(root: httpx.Client) -> None:
    response = root.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in response.text
    assert "/openapi.json" in response.text


# -- what production shows of itself --------------------------------------------------

PRODUCTION_SECRET = "a-production-secret-of-at-least-32-chars!"
METRICS_TOKEN = "metrics-token-for-the-scraper"


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    path = tmp_path_factory.mktemp("production") / "crossbook.db"
    with live_server(path, environment="production", jwt_secret=PRODUCTION_SECRET) as running:
        yield running


def test_production_serves_no_docs_and_no_metrics_by_default(production: LiveServer) -> None:
    with httpx.Client(base_url=production.url, timeout=10) as client:
        for path in ("/docs", "/redoc", "/openapi.json", "/metrics"):
            assert error_code(client.get(path), 404) == "NOT_FOUND", path
        assert envelope(client.get("/health"), 200)["data"]["status"] == "ok"


def test_metrics_behind_a_token_answer_only_that_token(tmp_path: Path) -> None:
    settings = {"environment": "production", "jwt_secret": PRODUCTION_SECRET}
    settings |= {"metrics_enabled": True, "metrics_token": METRICS_TOKEN}
    with (
        live_server(tmp_path / "db.sqlite", **settings) as running,
        httpx.Client(base_url=running.url, timeout=10) as client,
    ):
        assert error_code(client.get("/metrics"), 401) == "UNAUTHORIZED"
        wrong = {"Authorization": "Bearer not-the-token"}
        assert error_code(client.get("/metrics", headers=wrong), 401) == "UNAUTHORIZED"
        right = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        scraped = client.get("/metrics", headers=right)
        assert scraped.status_code == 200 and "crossbook_" in scraped.text
