"""Prometheus metrics of one server, in their own registry (so tests can build many apps).

Names follow Prometheus conventions: base units (seconds), `_total` for counters.
The engine's queue depth and availability are read when scraped, not pushed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from crossbook.api.connections import ConnectionGuard
from crossbook.engine.breaker import BreakerState
from crossbook.engine.engine import BatchStats
from crossbook.engine.hold_reconciler import ReconcileStats
from crossbook.engine.settlement import SettlementStats

__all__ = ["CONTENT_TYPE", "ApiMetrics"]

_LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
_SETTLEMENT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BREAKER_STATE_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


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
        self.settlement_seconds = Histogram(
            "crossbook_settlement_latency_seconds",
            "From a trade's commit to its last wallet leg (remote-wallet mode)",
            buckets=_SETTLEMENT_BUCKETS_S,
            registry=r,
        )
        self.reads_limited = Counter(
            "crossbook_reads_rate_limited",
            "Reads refused by the per-address read rate limit",
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

    def watch_settlements(
        self,
        stats: SettlementStats,
        pending: Callable[[], int],
        breaker: Callable[[], BreakerState],
    ) -> None:
        """Remote-wallet mode: settlement and circuit-breaker figures, read when scraped."""
        r = self.registry
        Gauge(
            "crossbook_settlements_pending",
            "Settlements queued or in progress in this process",
            registry=r,
        ).set_function(lambda: float(pending()))
        Gauge(
            "crossbook_settlement_dead_letters",
            "Settlements in the dead-letter queue (SETTLEMENT_FAILED)",
            registry=r,
        ).set_function(lambda: float(stats.dead_letter_size))
        Gauge(
            "crossbook_wallet_breaker_state",
            "The wallet client's circuit breaker: 0 closed, 1 half-open, 2 open",
            registry=r,
        ).set_function(lambda: float(BREAKER_STATE_VALUE[breaker()]))
        r.register(_SettlementCounters(stats))

    def watch_holds(self, stats: ReconcileStats) -> None:
        """Remote-wallet mode: the hold reconciler's figures, read when scraped."""
        r = self.registry
        Gauge(
            "crossbook_holds_orphaned",
            "Orphaned wallet holds the last reconciliation pass or scan left unvoided",
            registry=r,
        ).set_function(lambda: float(stats.orphaned))
        Gauge(
            "crossbook_hold_reconcile_last_pass_timestamp_seconds",
            "When the last hold reconciliation pass ended (0: none yet)",
            registry=r,
        ).set_function(lambda: (stats.last_pass_at_ms or 0) / 1000)
        Gauge(
            "crossbook_hold_reconcile_last_pass_duration_seconds",
            "How long the last hold reconciliation pass took",
            registry=r,
        ).set_function(lambda: (stats.last_pass_duration_ms or 0) / 1000)
        r.register(_HoldCounters(stats))

    def on_settled(self, latency_ms: int) -> None:
        self.settlement_seconds.observe(latency_ms / 1000)

    def watch_connections(self, guard: ConnectionGuard) -> None:
        """The transport's figures (open, refused by a cap, closed by a read timeout)."""
        r = self.registry
        Gauge(
            "crossbook_connections_open", "Open TCP connections (HTTP and WebSocket)", registry=r
        ).set_function(lambda: float(guard.open_connections))
        r.register(_ConnectionCounters(guard))

    def watch_engine(self, queue_depth: Callable[[], int], available: Callable[[], bool]) -> None:
        self.queue_depth.set_function(lambda: float(queue_depth()))
        self.engine_available.set_function(lambda: 1.0 if available() else 0.0)

    def on_batch(self, stats: BatchStats) -> None:
        self.batch_commands.observe(stats.commands)
        self.commit_seconds.observe(stats.commit_ms / 1000)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ConnectionCounters(Collector):
    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard

    def collect(self) -> Iterator[Metric]:
        for name, text, value in (
            ("connections_refused", "Connections refused by a connection cap", self._guard.refused),
            (
                "connections_timed_out",
                "Connections closed for headers or a body not sent in time",
                self._guard.timed_out,
            ),
        ):
            yield CounterMetricFamily(f"crossbook_{name}", text, value=value)


class _SettlementCounters(Collector):
    """Counters kept by the settlement service, exported as they stand when scraped."""

    def __init__(self, stats: SettlementStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        for name, text, value in (
            ("crossbook_settlements_settled", "Settlements completed", stats.settled),
            ("crossbook_settlement_retries", "Wallet calls retried after a transient failure",
             stats.retries),
            ("crossbook_settlements_dead_lettered", "Settlements put in the dead-letter queue",
             stats.dead_lettered),
            ("crossbook_settlements_replayed", "Dead-lettered settlements replayed",
             stats.replayed),
        ):  # fmt: skip
            yield CounterMetricFamily(name, text, value=value)


class _HoldCounters(Collector):
    """Counters kept by the hold reconciler, exported as they stand when scraped."""

    def __init__(self, stats: ReconcileStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        for name, text, value in (
            ("crossbook_hold_reconcile_passes", "Hold reconciliation passes done", stats.passes),
            ("crossbook_holds_orphaned_found", "Orphaned wallet holds found by passes",
             stats.holds_found),
            ("crossbook_holds_orphaned_voided", "Orphaned wallet holds voided",
             stats.holds_voided),
            ("crossbook_hold_void_failures", "Voids of orphaned holds the engine did not take",
             stats.void_failures),
        ):  # fmt: skip
            yield CounterMetricFamily(name, text, value=value)
