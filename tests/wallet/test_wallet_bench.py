"""`crossbook bench wallet` runs end to end (a smoke test: it asserts no figure)."""

from __future__ import annotations

import json

import structlog
from typer.testing import CliRunner

from crossbook.cli import app


def test_bench_wallet_reports_a_rate_per_run_and_their_median() -> None:
    saved = structlog.get_config()
    try:
        result = CliRunner().invoke(
            app,
            ["bench", "wallet", "--database", "sqlite", "--operations", "40", "--runs", "2",
             "--clients", "4", "--json"],
        )  # fmt: skip
    finally:
        structlog.configure(**saved)
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)["sqlite"]
    rates = figures["operations_per_s"]
    assert len(rates["runs"]) == 2 and all(rate > 0 for rate in rates["runs"])
    assert min(rates["runs"]) <= rates["median"] <= max(rates["runs"])
    assert (figures["operations"], figures["clients"]) == (40, 4)
