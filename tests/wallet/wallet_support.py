"""The wallet service in a process of its own, for tests: `WalletProcess`.

    wallet = WalletProcess("w", "sqlite:////tmp/w.db", log_dir, faults_enabled=True)
    wallet.start()                          # returns once GET /health answers 200
    wallet.apply({"key": "d1", "op": "deposit", "user_id": 1, "asset": "USDT",
                  "amount_units": "100"})   # the receipt (`data`), asserted successful
    wallet.balances(1)                      # {"USDT": (100, 0)}
    wallet.kill(); wallet.restart()         # SIGKILL, then the same port and database
    wallet.stop()                           # SIGTERM, a clean exit within a bound

It runs the venv's console script `crossbook wallet serve` on a free loopback
port, with its settings in `CROSSBOOK_WALLET_*` variables (a random service token
unless one is given; production unless fault injection is on, which production
refuses), its output in a log file of its own per start (`log_tail()` for
failure reports). Waiting is polling with a deadline, never a sleep standing in
for synchronisation: `start` returns the moment /health answers, and fails if
the process exits or the bound passes.

Amounts are exchanged as strings of integers and returned as ints.

Also the operation kinds by their short names (`HOLD`, `DEPOSIT`, ...), for the
tests that write many operations.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import httpx

from crossbook.wallet_protocol import WalletOpKind

HOLD, RELEASE, DEBIT, CREDIT = (
    WalletOpKind.HOLD,
    WalletOpKind.RELEASE,
    WalletOpKind.DEBIT,
    WalletOpKind.CREDIT,
)
DEPOSIT, WITHDRAW, VOID = WalletOpKind.DEPOSIT, WalletOpKind.WITHDRAW, WalletOpKind.VOID

START_TIMEOUT_S = 60.0  # failure bound for `crossbook wallet serve` to answer /health
STOP_TIMEOUT_S = 30.0  # failure bound for the process to exit after a signal
REQUEST_TIMEOUT_S = 30.0  # failure bound for one HTTP request
HEALTH_POLL_S = 0.05  # interval between /health polls (within the bound above)
PORT_ATTEMPTS = 3  # another process may take a free port before the service binds it
LOG_TAIL_LINES = 80
CROSSBOOK = Path(sys.executable).with_name("crossbook")  # the venv's console script


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


WalletFactory = Callable[..., "WalletProcess"]  # (database_url, **options) -> WalletProcess


class WalletProcess:
    """`crossbook wallet serve` on one database; started, stopped, killed by the test."""

    started: ClassVar[list[WalletProcess]] = []  # every wallet process (for failure reports)

    def __init__(
        self,
        name: str,
        database_url: str,
        log_dir: Path,
        *,
        service_token: str | None = None,
        faults_enabled: bool = False,
        environment: str | None = None,
        log_level: str = "info",
    ) -> None:
        self.name = name
        self.database_url = database_url
        self.log_dir = log_dir
        self.service_token = service_token or secrets.token_urlsafe(48)
        self.faults_enabled = faults_enabled
        self.environment = environment or ("development" if faults_enabled else "production")
        self.log_level = log_level
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_paths: list[Path] = []
        self.client = self._new_client()
        WalletProcess.started.append(self)

    # -- the process ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CROSSBOOK_")}
        env.update(
            PYTHONUNBUFFERED="1",
            CROSSBOOK_WALLET_ENVIRONMENT=self.environment,
            CROSSBOOK_WALLET_SERVICE_TOKEN=self.service_token,
            CROSSBOOK_WALLET_FAULTS_ENABLED="true" if self.faults_enabled else "false",
            CROSSBOOK_WALLET_LOG_LEVEL=self.log_level,
        )
        return env

    def _spawn(self) -> Path:
        log_path = self.log_dir / f"{self.name}-{len(self.log_paths) + 1}.log"
        self.log_paths.append(log_path)
        command = [str(CROSSBOOK), "wallet", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--database-url", self.database_url]
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return log_path

    def start(self, *, same_port: bool = False) -> None:
        """Start the process; return once /health answers 200 (bounded). A port taken by
        someone else between choosing and binding it is retried on another port, unless
        `same_port`."""
        assert self.process is None, f"{self.name} is already running"
        for attempt in range(1 if same_port else PORT_ATTEMPTS):
            if attempt:
                self.port = free_port()
            log_path = self._spawn()
            if self._wait_healthy():
                return
            assert self.process is not None
            self.process.wait(STOP_TIMEOUT_S)
            self.process = None
            if "address already in use" not in log_path.read_text(errors="replace").lower():
                break
        raise AssertionError(f"{self.name} exited before it was healthy:\n{self.log_tail()}")

    def run_until_exit(self) -> tuple[int, str]:
        """Start the process expecting it to refuse to run: (exit status, its output)."""
        assert self.process is None, f"{self.name} is already running"
        log_path = self._spawn()
        process, self.process = self.process, None
        assert process is not None
        try:
            code = process.wait(START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)
            raise AssertionError(f"{self.name} kept running:\n{self.log_tail()}") from None
        return code, log_path.read_text(errors="replace")

    def _wait_healthy(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False
                with contextlib.suppress(httpx.TransportError):
                    if client.get(self.url + "/health").status_code == 200:
                        return True
                time.sleep(HEALTH_POLL_S)
        raise AssertionError(f"{self.name}: /health not 200 within {START_TIMEOUT_S} s")

    def stop(self) -> int:
        """SIGTERM; the process must exit cleanly within the bound. Its exit status."""
        if self.process is None:
            return 0
        process, self.process = self.process, None
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)
            raise AssertionError(f"{self.name}: no exit within {STOP_TIMEOUT_S} s") from None
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert code in (0, -signal.SIGTERM), f"{self.name}: exit status {code} after SIGTERM"
        return code

    def kill(self) -> None:
        """SIGKILL: no shutdown, nothing the process could still do."""
        assert self.process is not None, f"{self.name} is not running"
        process, self.process = self.process, None
        process.send_signal(signal.SIGKILL)
        assert process.wait(STOP_TIMEOUT_S) == -signal.SIGKILL

    def restart(self) -> None:
        """Stop it if it runs, then start it again on the same port and database."""
        self.stop()
        self.client.close()
        self.client = self._new_client()
        self.start(same_port=True)

    def close(self) -> None:
        self.stop()
        self.client.close()

    def log_tail(self) -> str:
        lines: list[str] = []
        for path in self.log_paths:
            if path.exists():
                lines += [f"--- {path.name}", *path.read_text(errors="replace").splitlines()]
        return "\n".join(lines[-LOG_TAIL_LINES:])

    # -- HTTP ----------------------------------------------------------------------------------

    def _new_client(self) -> httpx.Client:
        return httpx.Client(
            headers={"Authorization": f"Bearer {self.service_token}"}, timeout=REQUEST_TIMEOUT_S
        )

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request with the service token (pass `headers=` to override it)."""
        return self.client.request(method, self.url + path, **kwargs)

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        """The `data` of a 200 success answer (anything else fails the test)."""
        response = self.request(method, path, **kwargs)
        body = response.json()
        assert response.status_code == 200 and body["success"] is True, (
            f"{method} {path}: {response.status_code} {body}"
        )
        assert set(body) == {"success", "data"}, body
        return body["data"]

    def post(self, op: dict[str, Any]) -> httpx.Response:
        """POST /v1/operations, whatever the answer."""
        return self.request("POST", "/v1/operations", json=op)

    def apply(self, op: dict[str, Any]) -> dict[str, Any]:
        """Apply `op`, which must succeed: its receipt."""
        receipt: dict[str, Any] = self.ok("POST", "/v1/operations", json=op)
        return receipt

    def refused(self, op: dict[str, Any], status: int, code: str) -> dict[str, Any]:
        """POST `op`, which must be refused with this status and code: the `error`."""
        response = self.post(op)
        body = response.json()
        assert (response.status_code, body["success"]) == (status, False), body
        assert body["error"]["code"] == code, body
        assert set(body["error"]) == {"code", "message", "details"}, body
        error: dict[str, Any] = body["error"]
        return error

    def operation(self, key: str) -> dict[str, Any] | None:
        response = self.request("GET", f"/v1/operations/{key}")
        if response.status_code == 404:
            assert response.json()["error"]["code"] == "NOT_FOUND", response.text
            return None
        assert response.status_code == 200, response.text
        record: dict[str, Any] = response.json()["data"]
        return record

    def balances(self, user_id: int) -> dict[str, tuple[int, int]]:
        """asset -> (available, locked) of the user's non-zero balances."""
        rows = self.ok("GET", f"/v1/balances/{user_id}")
        assert [row["asset"] for row in rows] == sorted(row["asset"] for row in rows), rows
        return {row["asset"]: (int(row["available"]), int(row["locked"])) for row in rows}

    def totals(self) -> dict[str, tuple[int, int, int]]:
        """asset -> (total over all accounts, net deposits, in transit)."""
        rows = self.ok("GET", "/v1/totals")
        return {
            row["asset"]: (
                int(row["total_units"]),
                int(row["net_deposits_units"]),
                int(row["in_transit_units"]),
            )
            for row in rows
        }

    def set_faults(self, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Replace the fault rules; the rules in force."""
        data: dict[str, Any] = self.ok("PUT", "/v1/faults", json={"rules": rules})
        return list(data["rules"])

    def clear_faults(self) -> None:
        assert self.ok("DELETE", "/v1/faults") == {"rules": []}

    def faults(self) -> list[dict[str, Any]]:
        return list(self.ok("GET", "/v1/faults")["rules"])
