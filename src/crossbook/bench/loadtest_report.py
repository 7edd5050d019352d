"""Figures of `crossbook loadtest`: latency statistics, CPU use, the server's metrics.

Latency percentiles are exact: every answered measured request's latency is kept
as integer microseconds in an `array('q')` (8 bytes each: 600,000 requests, a
10,000/s minute, is 4.8 MB) and sorted once at the end (nearest-rank
percentiles). That is what an HdrHistogram approximates, without its rounding
and without a dependency (the `hdrhistogram` wheel also requires `setuptools`
and `pbr` at run time). The live p99 uses `CoarseHistogram`, log-linear buckets
within 1.6 %, so the progress line never sorts.

CPU use comes from `/proc` (Linux; absent elsewhere): the whole machine's busy
time, the server process's own (when the loadtest started it), the client
processes' (`time.process_time` in each worker) and PostgreSQL's processes on
this machine (its background processes and the backends of the run's database,
when known); what is left is the kernel
(loopback TCP, I/O), the coordinator, and whatever else ran on the machine.

The server-side breakdown comes from two scrapes of `/metrics` (the difference
covers the measured window and the drain after it): mean time inside the HTTP
middleware for order entry, mean commit time and commands per committed batch.
Bucket-derived percentiles there are upper bounds of Prometheus buckets.
"""

from __future__ import annotations

import math
import os
from array import array
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

SUB_BUCKET_BITS = 6  # 64 sub-buckets per power of two: bucket width ≤ 1/64 of its value
_SUB = 1 << SUB_BUCKET_BITS
PLACE_ROUTE = ("POST", "/api/v1/orders")
CANCEL_ROUTE = ("DELETE", "/api/v1/orders/{order_id}")


class CoarseHistogram:
    """Counts of non-negative integers (µs) in log-linear buckets, for live percentiles."""

    def __init__(self) -> None:
        self.counts: defaultdict[int, int] = defaultdict(int)
        self.total = 0

    @staticmethod
    def bucket(value: int) -> int:
        if value < 2 * _SUB:
            return value
        shift = value.bit_length() - SUB_BUCKET_BITS - 1
        return (shift + 1) * _SUB + (value >> shift) - _SUB

    @staticmethod
    def upper_bound(bucket: int) -> int:
        if bucket < 2 * _SUB:
            return bucket
        shift = bucket // _SUB - 1
        return ((bucket % _SUB + _SUB + 1) << shift) - 1

    def record_many(self, values: array[int]) -> None:
        counts, bucket = self.counts, self.bucket
        for value in values:
            counts[bucket(value)] += 1
        self.total += len(values)

    def percentile(self, q: float) -> int:
        """An upper bound of the q-quantile (nearest rank), 0 when empty."""
        rank = max(1, math.ceil(q * self.total))
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return self.upper_bound(bucket)
        return 0


def latency_ms(samples_us: array[int]) -> dict[str, float | int]:
    """Exact nearest-rank percentiles of the samples, in milliseconds."""
    ordered = sorted(samples_us)
    count = len(ordered)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * count) - 1)] / 1000 if count else 0.0

    return {
        "count": count,
        "mean": (sum(ordered) / count / 1000) if count else 0.0,
        "p50": rank(0.50),
        "p95": rank(0.95),
        "p99": rank(0.99),
        "p999": rank(0.999),
        "max": ordered[-1] / 1000 if count else 0.0,
    }


# -- CPU ------------------------------------------------------------------------------


def _clock_ticks() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):
        return 100


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    machine_busy_s: float | None  # all cores, since boot
    machine_total_s: float | None
    server_s: float | None  # the server process (user + system), when known
    database_s: float | None  # processes named `postgres` on this machine, when any


def cpu_snapshot(server_pid: int | None, database_name: str | None = None) -> CpuSnapshot:
    tick = _clock_ticks()
    busy = total = None
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        total = sum(fields[:8]) / tick  # guest time is already inside user
        busy = total - idle / tick
    except (OSError, ValueError, IndexError):
        pass
    server = None
    if server_pid is not None:
        times = _process_times(server_pid)
        server = None if times is None else times[1] / tick
    database = _database_ticks(database_name)
    return CpuSnapshot(busy, total, server, None if database is None else database / tick)


def _process_times(pid: int | str) -> tuple[str, int] | None:
    """A process's name and its user + system CPU ticks (all its threads), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
        name, after_name = text[text.index("(") + 1 : text.rindex(")")], text.rsplit(")", 1)[1]
        fields = after_name.split()
        return name, int(fields[11]) + int(fields[12])  # utime, stime
    except (OSError, ValueError, IndexError):
        return None


def _database_ticks(database_name: str | None) -> int | None:
    """CPU ticks of the live PostgreSQL processes on this machine: its background
    processes and, given `database_name`, only the backends connected to that
    database (others' work on the same PostgreSQL is left out). Backends that exit
    during the run take their ticks with them: a lower bound."""
    try:
        pids = [entry for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return None
    total, found = 0, False
    for pid in pids:
        times = _process_times(pid)
        if times is None or times[0] != "postgres":
            continue
        if database_name is not None and not _serves(pid, database_name):
            continue
        total, found = total + times[1], True
    return total if found else None


def _serves(pid: str, database_name: str) -> bool:
    """Whether a postgres process is a background one or a backend of `database_name`
    (a backend's title: `postgres: 15/main: USER DATABASE HOST(PORT) STATE`)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            title = cmdline.read().replace(b"\0", b" ").decode(errors="replace").split()
    except OSError:
        return False
    is_backend = any("(" in word and word.endswith(")") for word in title)
    return not is_backend or database_name in title


def cpu_figures(
    before: CpuSnapshot,
    after: CpuSnapshot,
    wall_s: float,
    client_cpu_s: float,
    requests: int,
) -> dict[str, Any]:
    """Cores used over the window by the machine, the server and the client; per request µs."""
    cores = os.cpu_count() or 1
    out: dict[str, Any] = {"cores": cores, "wall_s": round(wall_s, 3)}

    def per_request_us(seconds: float) -> float | None:
        return round(seconds / requests * 1e6, 1) if requests else None

    out["client_cores"] = round(client_cpu_s / wall_s, 2) if wall_s else None
    out["client_us_per_request"] = per_request_us(client_cpu_s)
    machine = None
    if before.machine_busy_s is not None and after.machine_busy_s is not None and wall_s:
        machine = after.machine_busy_s - before.machine_busy_s
        out["machine_cores"] = round(machine / wall_s, 2)
    server = None
    if before.server_s is not None and after.server_s is not None and wall_s:
        server = after.server_s - before.server_s
        out["server_cores"] = round(server / wall_s, 2)
        out["server_us_per_request"] = per_request_us(server)
    database = 0.0
    if before.database_s is not None and after.database_s is not None and wall_s:
        database = max(0.0, after.database_s - before.database_s)
        out["database_cores"] = round(database / wall_s, 2)
        out["database_us_per_request"] = per_request_us(database)
    if machine is not None and server is not None:
        rest = max(0.0, machine - server - client_cpu_s - database)
        out["other_cores"] = round(rest / wall_s, 2)  # kernel, coordinator, anything else
        out["other_us_per_request"] = per_request_us(rest)
    return out


# -- /metrics --------------------------------------------------------------------------

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _delta(
    before: Samples, after: Samples, name: str, **labels: str
) -> tuple[float, dict[str, float]]:
    """The summed difference of every `name` sample whose labels include `labels`,
    and the same per `le` for histogram buckets."""
    total = 0.0
    by_le: defaultdict[str, float] = defaultdict(float)
    for (sample_name, sample_labels), value in after.items():
        if sample_name != name:
            continue
        mapping = dict(sample_labels)
        if any(mapping.get(k) != v for k, v in labels.items()):
            continue
        change = value - before.get((sample_name, sample_labels), 0.0)
        total += change
        if "le" in mapping:
            by_le[mapping["le"]] += change
    return total, dict(by_le)


def _histogram(before: Samples, after: Samples, base: str, **labels: str) -> dict[str, Any]:
    count, _ = _delta(before, after, f"{base}_count", **labels)
    total, _ = _delta(before, after, f"{base}_sum", **labels)
    _, buckets = _delta(before, after, f"{base}_bucket", **labels)
    p99_bound = None
    if count:
        for le in sorted(buckets, key=float):
            if buckets[le] >= 0.99 * count:
                p99_bound = float(le)
                break
    return {"count": int(count), "mean": total / count if count else None, "p99_le": p99_bound}


def server_profile(before: Samples, after: Samples) -> dict[str, Any]:
    """Where the server's time went over the window, from two scrapes."""
    place = _histogram(
        before, after, "crossbook_http_request_duration_seconds",
        method=PLACE_ROUTE[0], route=PLACE_ROUTE[1],
    )  # fmt: skip
    cancel = _histogram(
        before, after, "crossbook_http_request_duration_seconds",
        method=CANCEL_ROUTE[0], route=CANCEL_ROUTE[1],
    )  # fmt: skip
    commit = _histogram(before, after, "crossbook_engine_commit_seconds")
    batch = _histogram(before, after, "crossbook_engine_batch_commands")
    trades, _ = _delta(before, after, "crossbook_trades_total")

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 3)

    return {
        "http_place": {"count": place["count"], "mean_ms": ms(place["mean"]),
                       "p99_le_ms": ms(place["p99_le"])},
        "http_cancel": {"count": cancel["count"], "mean_ms": ms(cancel["mean"]),
                        "p99_le_ms": ms(cancel["p99_le"])},
        "commit": {"batches": commit["count"], "mean_ms": ms(commit["mean"]),
                   "p99_le_ms": ms(commit["p99_le"])},
        "batch_commands_mean": None if batch["mean"] is None else round(batch["mean"], 1),
        "trades_committed": int(trades),
    }  # fmt: skip


def time_split(client_mean_ms: float, profile: dict[str, Any]) -> dict[str, float] | None:
    """The client's mean latency cut at the server's middleware and at the commit.

    Approximate: `outside_server` is the client, the kernel and uvicorn's parsing
    and queueing before the middleware; `commit_wait` the mean batch commit (every
    order waits for its batch's commit); `gateway_and_engine` the rest of the
    server's time (auth, validation, the engine queue, matching, serialisation).
    """
    server_ms = _weighted_mean(profile["http_place"], profile["http_cancel"])
    commit_ms = profile["commit"]["mean_ms"]
    if server_ms is None or commit_ms is None:
        return None
    return {
        "client_mean_ms": round(client_mean_ms, 3),
        "outside_server_ms": round(max(0.0, client_mean_ms - server_ms), 3),
        "server_handler_ms": round(server_ms, 3),
        "commit_wait_ms": round(min(commit_ms, server_ms), 3),
        "gateway_and_engine_ms": round(max(0.0, server_ms - commit_ms), 3),
    }


def _weighted_mean(*routes: dict[str, Any]) -> float | None:
    count = sum(r["count"] for r in routes if r["mean_ms"] is not None)
    if not count:
        return None
    return float(sum(r["count"] * r["mean_ms"] for r in routes if r["mean_ms"] is not None) / count)
