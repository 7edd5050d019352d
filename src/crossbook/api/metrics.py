"""Prometheus metrics of one server, in their own registry (so tests can build many apps).

Names follow Prometheus conventions: base units (seconds), `_total` for counters.
The engine's queue depth and availability are read when scraped, not pushed.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from crossbook.engine.engine import BatchStats

__all__ = ["CONTENT_TYPE", "ApiMetrics"]

_LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.orders = Counter(
            "crossbook_orders",
            "Commands submitted through the API (place, cancel, amend, admin) by engine result",
            ["action", "result"],
            registry=r,
        )
        self.trades = Counter("crossbook_trades", "Trades committed", registry=r)
        self.events = Counter("crossbook_events", "Events committed", registry=r)
        self.queue_depth = Gauge(
            "crossbook_engine_queue_depth", "Commands waiting for the engine", registry=r
        )
        self.engine_available = Gauge(
            "crossbook_engine_available", "1 if the engine takes work", registry=r
        )
        self.batch_commands = Histogram(
            "crossbook_engine_batch_commands",
            "Commands per committed batch",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "crossbook_engine_commit_seconds",
            "Time to commit one batch",
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.http_seconds = Histogram(
            "crossbook_http_request_duration_seconds",
            "HTTP request latency by route",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.ws_connections = Gauge(
            "crossbook_websocket_connections", "Open WebSocket connections", registry=r
        )
        self.ws_disconnects = Counter(
            "crossbook_websocket_disconnects",
            "WebSocket connections closed by the server, by reason",
            ["reason"],
            registry=r,
        )

    def watch_engine(self, queue_depth: Callable[[], int], available: Callable[[], bool]) -> None:
        self.queue_depth.set_function(lambda: float(queue_depth()))
        self.engine_available.set_function(lambda: 1.0 if available() else 0.0)

    def on_batch(self, stats: BatchStats) -> None:
        self.batch_commands.observe(stats.commands)
        self.commit_seconds.observe(stats.commit_ms / 1000)

    def render(self) -> bytes:
        return generate_latest(self.registry)
