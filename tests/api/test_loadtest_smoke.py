"""`crossbook loadtest` runs end to end: a server it starts, a short low-rate run, a
JSON report whose integrity check passed. No timing is asserted (DESIGN §4): the
figures are a benchmark's, not a test's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RUN_TIMEOUT_S = 180


def test_a_short_loadtest_reports_its_figures_and_passes_integrity(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "crossbook", "loadtest", "--serve",
        "--database-url", f"sqlite:///{tmp_path / 'loadtest.db'}",
        "--rate", "20", "--duration", "2", "--warmup", "0.5", "--users", "3",
        "--connections", "4", "--profile", "--json",
    ]  # fmt: skip
    done = subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)

    requests = report["requests"]
    assert requests["scheduled"] == 40  # 2 s at 20/s after the warm-up
    assert requests["ok"] + sum(requests["errors"].values()) == requests["scheduled"]
    assert set(requests["by_kind"]) <= {"limit", "market", "cancel"}
    assert set(report["latency_ms"]) == {"count", "mean", "p50", "p95", "p99", "p999", "max"}
    assert report["latency_ms"]["count"] == requests["answered"]
    assert report["trades"]["executed"] == report["trades"]["in_responses"] or requests["errors"]
    assert report["symbol"].endswith("/USDT")
    assert report["server"]["started_by_loadtest"] is True

    integrity = report["integrity"]
    assert integrity["passed"] is True, integrity
    assert set(integrity["conservation"]) == {report["symbol"].split("/")[0], "USDT"}
    assert integrity["book"]["crossed"] is False
    assert {"cpu", "server", "time_split"} <= set(report["profile"])
