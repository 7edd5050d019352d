"""`crossbook loadtest --flood` runs end to end in both modes: a server it starts, a
small book, a short quiet phase and a short flood phase, a JSON report with every
figure the benchmark prints. No timing is asserted (DESIGN §4): the figures are a
benchmark's, not a test's; only that they are there and add up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

RUN_TIMEOUT_S = 240
PHASE_KEYS = {"phase", "round", "order_entry", "health", "server"}
LATENCY_KEYS = {"count", "mean", "p50", "p95", "p99", "p999", "max"}


@pytest.mark.parametrize(
    ("mode", "connections", "attack_keys"),
    [
        ("reads", "4", {"requests_sent", "answered", "answers_by_status", "answers_per_s"}),
        ("ws-snapshots", "2", {"frames_sent", "frames_per_s"}),
    ],
)
def test_a_short_flood_reports_each_phase(
    tmp_path: Path, mode: str, connections: str, attack_keys: set[str]
) -> None:
    command = [
        sys.executable, "-m", "crossbook", "loadtest", "--serve", "--flood", mode,
        "--database-url", f"sqlite:///{tmp_path / 'flood.db'}",
        "--flood-connections", connections, "--book-levels", "60", "--flood-depth", "20",
        "--rate", "10", "--duration", "1.5", "--warmup", "0.5", "--probe-rate", "4", "--json",
    ]  # fmt: skip
    done = subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)

    assert report["mode"] == mode
    assert report["symbol"] == "BTC/USDT"
    assert report["server"]["started_by_loadtest"] is True
    assert report["book"]["placed"] + sum(report["book"]["refused"].values()) == 60
    assert report["snapshot_cost"]["levels"] == report["book"]["placed"]
    assert report["read_cost"]["status"] == 200
    assert report["order_entry"]["source_address"] != report["flood"]["source_address"]

    quiet, flood = report["phases"]
    assert (quiet["phase"], flood["phase"]) == ("quiet", "flood")
    assert set(quiet) >= PHASE_KEYS and "attack" not in quiet
    assert PHASE_KEYS | {"attack", "recovery_s"} <= set(flood)
    for phase in report["phases"]:
        entry = phase["order_entry"]
        assert entry["scheduled"] == 15  # 1.5 s at 10/s after the warm-up
        assert entry["ok"] + sum(entry["errors"].values()) == entry["scheduled"]
        assert set(entry["latency_ms"]) == LATENCY_KEYS
        assert entry["latency_ms"]["count"] == entry["answered"]
        bounded = entry["latency_ms_unanswered_at_timeout"]
        assert bounded["count"] == entry["answered"] + entry["unanswered"]
        health = phase["health"]
        assert health["probes"] == 6
        assert sum(health["by_code"].values()) == health["probes"]
        assert set(phase["server"]["rss_mb"]) == {"start", "peak", "end"}
        assert all(v is not None for v in phase["server"]["rss_mb"].values())
    attack = flood["attack"]
    assert attack_keys <= set(attack)
    assert {"connections_opened", "closed_by_server", "closed_at_s", "client_cores"} <= set(attack)
    assert attack["connections_opened"] >= int(connections)

    summary = report["summary"]
    assert {"quiet", "flood", "flood_over_quiet"} <= set(summary)
    assert {"order_entry_latency_ms_p99", "health_unanswered", "server_rss_mb_peak"} <= set(
        summary["flood"]
    )
