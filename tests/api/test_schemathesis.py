"""The API against its own OpenAPI document: schemathesis, every operation, every check.

A live server (the app `crossbook serve` runs, SQLite in a tmp dir) is seeded with
a funded trader who has a resting order, a filled one, a cancelled one and a
trade. schemathesis loads the server's `/openapi.json` and runs its engine (what
`st run` runs) over every operation: the examples phase, the coverage phase
(boundary values, missing parameters, unexpected methods), fuzzing with positive
and negative data, and stateful sequences along the links it infers from the
document; with every built-in check (`CHECKS`). The whole run is done twice, on a
fresh server each time: with the trader's token and with the admin's (an operation
of the other role answers 403, which every check accepts).

Seeded ids and symbols are offered to the generator as dictionaries for half of
the draws of their parameters (`PARAMETER_DICTIONARIES`), so reads, cancels and
amends reach existing orders and orders reach existing markets; the other half
stays random.

A failure names its check and operation, with curl commands that reproduce it and
the server's answer. Documented behaviour that a check reads as a failure is
excluded by check name and operation, each with its reason (`EXCLUSIONS`); nothing
else is. An operation that could not be tested (a schemathesis error, such as a
failed health check) fails the test too.

Budget: `MAX_EXAMPLES` generated cases per operation and phase, one worker, a fixed
seed, no example database and no schemathesis cache; about 15-20 s per role on a
2-core machine. Generation also draws on values the server answered (ids, times),
so two runs can differ in a rare case, not in what they check. `max_response_time`
is the one check left off: timing belongs to benchmarks, not tests.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import structlog
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.failures import Failure
from schemathesis.engine import events
from schemathesis.engine.recorder import ScenarioRecorder
from schemathesis.generation.case import Case

from crossbook.api.envelope import ms_from_iso
from crossbook.api.params import MAX_EPOCH_MS
from crossbook.bootstrap import configure_logging
from crossbook.domain.units import MAX_DECIMAL_TEXT_CHARS

from api_support import (
    LiveServer,
    Trader,
    admin_api,
    live_server,
    new_trader,
    place,
    settings_for,
)

SEED = 20251123
MAX_EXAMPLES = 25  # per operation and phase
DICTIONARY_PROBABILITY = 0.5
ROLES = ("trader", "admin")
MAX_SHOWN_BODY_CHARS = 600
TRUTHY_QUERY = frozenset({"true", "1", "yes", "on"})  # what FastAPI reads as a true bool


# -- the seeded server -------------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    server: LiveServer
    trader: Trader
    maker: Trader
    order_ids: tuple[str, ...]  # the trader's: resting, filled, cancelled
    client_order_id: str  # the trader's resting order's

    def token(self, role: str) -> str:
        api = self.trader.api if role == "trader" else admin_api(self.server)
        header = str(api.http.headers["authorization"])
        return header.removeprefix("Bearer ")


def seed(server: LiveServer) -> Seeded:
    funds = {"USDT": "1000000", "BTC": "100", "ETH": "1000"}
    maker, trader = new_trader(server, funds), new_trader(server, funds)
    place(maker, "BTC/USDT", side="sell", type="limit", quantity="1", price="50000")
    filled = place(trader, "BTC/USDT", side="buy", type="limit", quantity="0.5", price="50000")
    assert filled["order"]["status"] == "filled" and filled["trades"], filled
    client_order_id = "seed-resting"
    resting = place(
        trader,
        "BTC/USDT",
        side="buy",
        type="limit",
        quantity="0.1",
        price="40000",
        client_order_id=client_order_id,
    )
    cancelled = place(trader, "ETH/USDT", side="sell", type="limit", quantity="1", price="9000")
    trader.api.ok("DELETE", f"/orders/{cancelled['order']['id']}")
    ids = (resting["order"]["id"], filled["order"]["id"], cancelled["order"]["id"])
    return Seeded(server, trader, maker, ids, client_order_id)


@pytest.fixture
def quiet_logs() -> Iterator[None]:
    """The server's structured logs at warning level (500s' tracebacks stay visible)."""
    saved = structlog.get_config()
    configure_logging(settings_for("sqlite://"))  # log_level "warning"
    yield
    structlog.configure(**saved)


@pytest.fixture
def seeded(tmp_path: Path, quiet_logs: None) -> Iterator[Seeded]:
    with live_server(tmp_path / "crossbook.db") as server:
        yield seed(server)


# -- what schemathesis runs --------------------------------------------------------------


def all_check_names() -> list[str]:
    load_all_checks()
    return sorted(name for name in CHECKS.get_all_names() if name != "max_response_time")


def dictionaries(seeded: Seeded) -> dict[str, Any]:
    user_ids = [str(seeded.trader.user_id), str(seeded.maker.user_id), "0"]
    return {
        "symbols": {"values": ["BTC-USDT", "BTC/USDT", "eth_usdt"]},
        "order_ids": {"values": list(seeded.order_ids)},
        "client_order_ids": {"values": [seeded.client_order_id]},
        "user_ids": {"values": user_ids},
        "assets": {"values": ["USDT", "BTC"]},
    }


PARAMETER_DICTIONARIES = {
    "path.symbol": "symbols",
    "query.symbol": "symbols",
    "body.symbol": "symbols",
    "path.order_id": "order_ids",
    "path.client_order_id": "client_order_ids",
    "path.user_id": "user_ids",
    "body.user_id": "user_ids",
    "body.asset": "assets",
}


def config_for(
    seeded: Seeded, role: str, *, seed: int = SEED, max_examples: int = MAX_EXAMPLES
) -> schemathesis.Config:
    parameters = {
        name: {"dictionary": dictionary, "probability": DICTIONARY_PROBABILITY}
        for name, dictionary in PARAMETER_DICTIONARIES.items()
    }
    return schemathesis.Config.from_dict(
        {
            "seed": seed,
            "workers": 1,
            "continue-on-failure": True,
            "request-timeout": 10,
            "cache": {"enabled": False},
            "generation": {"mode": "all", "max-examples": max_examples, "database": "none"},
            "checks": {name: {"enabled": True} for name in all_check_names()},
            "auth": {"openapi": {"HTTPBearer": {"bearer": seeded.token(role)}}},
            "dictionaries": dictionaries(seeded),
            "parameters": parameters,
        }
    )


# -- what counts as a failure ------------------------------------------------------------


@dataclass
class Found:
    """One failure: a check's verdict on one case, with what reproduces it."""

    check: str
    failure: Failure
    case: Case | None
    reproduction: str
    status: int | None
    body: str  # the answer, cut to MAX_SHOWN_BODY_CHARS
    error: dict[str, Any]  # the answer's `error` ({} if it has none)

    @property
    def operation(self) -> str:
        return self.failure.operation or (self.case.operation.label if self.case else "?")

    @property
    def code(self) -> str | None:
        code = self.error.get("code")
        return code if isinstance(code, str) else None

    @property
    def group(self) -> tuple[str, ...]:
        """Failures of one cause: check, operation, verdict and the answer's code and field."""
        details = self.error.get("details")
        field = details.get("field") if isinstance(details, dict) else None
        return (self.operation, self.check, self.failure.title, str(self.status), str(self.code),
                str(field))  # fmt: skip

    def describe(self, cases: int) -> str:
        message = textwrap.indent(self.failure.message.strip(), "    ")
        answer = f"{self.status} {self.body}" if self.status is not None else "no response"
        return (
            f"[{self.check}] {self.operation}: {self.failure.title} ({cases} cases)\n{message}\n"
            f"  reproduce:\n{textwrap.indent(self.reproduction, '    ')}\n"
            f"  answer: {answer}"
        )


def _query(found: Found) -> dict[str, Any]:
    query = found.case.query if found.case is not None else None
    return query if isinstance(query, dict) else {}


def _body(found: Found) -> dict[str, Any]:
    body = found.case.body if found.case is not None else None
    return body if isinstance(body, dict) else {}


def _sends_mine(found: Found) -> bool:
    return str(_query(found).get("mine", "")).lower() in TRUTHY_QUERY


def _public_trades(found: Found) -> bool:
    return not _sends_mine(found)


def _all_markets_trades(found: Found) -> bool:
    details = found.error.get("details")
    refused_field = details.get("field") if isinstance(details, dict) else None
    return refused_field == "symbol" and not _sends_mine(found) and "symbol" not in _query(found)


DECIMAL_FIELDS = frozenset(
    {"price", "stop_price", "quantity", "quote_quantity", "amount", "tick_size", "step_size",
     "min_quantity", "max_quantity", "min_notional", "max_price", "maker_fee_rate",
     "taker_fee_rate"}
)  # fmt: skip
PLAIN_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
CLIENT_ORDER_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
ASSET_CODE = re.compile(r"[A-Za-z0-9]{1,16}")


def _well_formed_expiry(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float) and value.is_integer():  # a JSON Schema integer
        value = int(value)
    if isinstance(value, int):
        return 0 < value <= MAX_EPOCH_MS
    if not isinstance(value, str):
        return value is None
    if value.isascii() and value.isdigit() and len(value) <= 15:
        return 0 < int(value) <= MAX_EPOCH_MS
    ms = ms_from_iso(value)
    return ms is not None and 0 < ms <= MAX_EPOCH_MS


def _well_formed_text(found: Found) -> bool:
    """Every field of the body follows the grammar a document can state: decimals are plain
    and at most MAX_DECIMAL_TEXT_CHARS long, ids and codes use their characters, the expiry
    is in range. What such a body is refused for depends on the market, the book or the
    balances, which no document states."""
    body = _body(found)
    for name, value in body.items():
        if name in DECIMAL_FIELDS and value is not None:
            if not isinstance(value, str) or len(value) > MAX_DECIMAL_TEXT_CHARS:
                return False
            if PLAIN_DECIMAL.fullmatch(value) is None:
                return False
    client_order_id = body.get("client_order_id")
    if client_order_id is not None and not (
        isinstance(client_order_id, str) and CLIENT_ORDER_ID.fullmatch(client_order_id)
    ):
        return False
    for name in ("base", "quote"):
        code = body.get(name)
        if code is not None and not (isinstance(code, str) and ASSET_CODE.fullmatch(code)):
            return False
    return _well_formed_expiry(body.get("expire_at"))


def _amends_something(found: Found) -> bool:
    body = _body(found)
    has_field = body.get("quantity") is not None or body.get("price") is not None
    return has_field and _well_formed_text(found)


def _amend_of_closed_order(found: Found) -> bool:
    return getattr(found.failure, "not_available_with", None) == "PATCH /api/v1/orders/{order_id}"


def _always(_: Found) -> bool:
    return True


@dataclass(frozen=True)
class Exclusion:
    check: str
    operation: str
    reason: str
    codes: frozenset[str] | None = None  # the answer's error codes it covers; None: any answer
    applies: Callable[[Found], bool] = _always

    def covers(self, found: Found) -> bool:
        return (
            self.check == found.check
            and self.operation == found.operation
            and (self.codes is None or found.code in self.codes)
            and self.applies(found)
        )


# Trading rules refused with their documented codes (docs/api.md, Errors) that no OpenAPI
# document can state: the market's grids, price and quantity bounds and minimum notional,
# the fields each order type takes, the book (post-only, stops) and the balances.
ORDER_RULE_CODES = frozenset(
    {"INVALID_PRICE", "INVALID_STOP_PRICE", "INVALID_QUANTITY", "INVALID_AMOUNT",
     "INVALID_EXPIRY", "INVALID_ORDER",
     "MIN_NOTIONAL", "INSUFFICIENT_BALANCE", "POST_ONLY_WOULD_TAKE", "STOP_WOULD_TRIGGER",
     "TOO_MANY_OPEN_ORDERS"}
)  # fmt: skip

EXCLUSIONS = (
    # `GET /trades?symbol=…` is the public trades list (docs/api.md, Authentication); the
    # token is declared because `mine=true` needs it. A request without `mine=true`
    # answered without a token is documented, not ignored auth (nor accepted invalid
    # data); one with `mine=true` must still be 401.
    Exclusion(
        "ignored_auth",
        "GET /api/v1/trades",
        "the public trades list needs no token",
        applies=_public_trades,
    ),
    Exclusion(
        "negative_data_rejection",
        "GET /api/v1/trades",
        "the public trades list needs no token (a missing Authorization is not invalid)",
        applies=_public_trades,
    ),
    # Cancelling is idempotent and a cancelled order stays readable (its status says
    # `cancelled`): `DELETE /orders/{id}` then `GET /orders/{id}` answers 200 by design
    # (docs/api.md, Retries). The check names the DELETE that "freed" the order.
    Exclusion(
        "use_after_free",
        "DELETE /api/v1/orders/{order_id}",
        "a cancelled order stays readable",
    ),
    Exclusion(
        "use_after_free",
        "DELETE /api/v1/orders/client/{client_order_id}",
        "a cancelled order stays readable by its client order id",
    ),
    # An order that closed at once (a market order, an IOC) exists and is readable, but
    # an amend of an order no longer open is 404 ORDER_NOT_FOUND (docs/api.md, Errors).
    Exclusion(
        "ensure_resource_availability",
        "POST /api/v1/orders",
        "an amend of a closed order is ORDER_NOT_FOUND",
        frozenset({"ORDER_NOT_FOUND"}),
        _amend_of_closed_order,
    ),
    # Schema-valid requests refused by a trading rule (ORDER_RULE_CODES), only when every
    # field follows the grammar the document can state (`_well_formed_text`): a refusal
    # of a malformed decimal, id, asset code or expiry stays a failure.
    Exclusion(
        "positive_data_acceptance",
        "POST /api/v1/orders",
        "the order breaks a rule of its market, type, book or balance",
        ORDER_RULE_CODES,
        _well_formed_text,
    ),
    Exclusion(
        "positive_data_acceptance",
        "PATCH /api/v1/orders/{order_id}",
        "the amend breaks a rule of its market or balance, or changes nothing",
        ORDER_RULE_CODES,
        _amends_something,
    ),
    Exclusion(
        "positive_data_acceptance",
        "POST /api/v1/admin/deposits",
        "the amount is off its asset's decimals, zero or out of range",
        frozenset({"INVALID_AMOUNT"}),
        _well_formed_text,
    ),
    Exclusion(
        "positive_data_acceptance",
        "POST /api/v1/admin/withdrawals",
        "the amount is off its asset's decimals, zero, or above the available balance",
        frozenset({"INVALID_AMOUNT", "INSUFFICIENT_BALANCE"}),
        _well_formed_text,
    ),
    # A market's rules must fit each other and its assets' decimals; an existing asset
    # keeps its decimals and a new one needs them (docs/api.md, POST /admin/markets).
    Exclusion(
        "positive_data_acceptance",
        "POST /api/v1/admin/markets",
        "the market's rules do not fit each other or its assets",
        frozenset({"INVALID_MARKET_SPEC", "INVALID_ASSET"}),
        _well_formed_text,
    ),
    # Market trades need `symbol` unless `mine=true` (docs/api.md, Errors: INVALID_REQUEST).
    Exclusion(
        "positive_data_acceptance",
        "GET /api/v1/trades",
        "market trades need a symbol (or mine=true)",
        frozenset({"INVALID_REQUEST"}),
        _all_markets_trades,
    ),
)


def excluded(found: Found) -> bool:
    return any(rule.covers(found) for rule in EXCLUSIONS)


def _answer(recorder: ScenarioRecorder, case_id: str) -> tuple[int | None, str, dict[str, Any]]:
    interaction = recorder.interactions.get(case_id)
    response = None if interaction is None else interaction.response
    if response is None:
        return None, "", {}
    text = response.content.decode("utf-8", "replace") if response.content else ""
    try:
        error = json.loads(text).get("error")
    except (ValueError, AttributeError):
        error = None
    if len(text) > MAX_SHOWN_BODY_CHARS:
        text = text[:MAX_SHOWN_BODY_CHARS] + "…"
    return response.status_code, text, error if isinstance(error, dict) else {}


def failures_in(recorder: ScenarioRecorder) -> Iterator[Found]:
    for case_id, nodes in recorder.checks.items():
        for node in nodes:
            if node.failure_info is None:
                continue
            info = node.failure_info
            failing_id = info.failure.case_id or case_id
            case_node = recorder.cases.get(failing_id)
            steps = "\n".join(step.curl for step in info.steps) or info.code_sample
            status, body, error = _answer(recorder, failing_id)
            case = None if case_node is None else case_node.value
            yield Found(node.name, info.failure, case, steps, status, body, error)


@dataclass
class Outcome:
    failures: dict[tuple[str, ...], list[Found]]  # by cause (`Found.group`), first found first
    excluded: dict[tuple[str, ...], list[Found]]
    errors: list[str]
    phases: list[str]  # each phase's name and status


def run_schemathesis(schema: Any) -> Outcome:
    outcome = Outcome({}, {}, [], [])
    seen: set[tuple[str, str, Failure]] = set()  # a failure is recorded again when replayed

    def record(found: Found) -> None:
        key = (found.check, found.reproduction, found.failure)
        if key not in seen:
            seen.add(key)
            kept = outcome.excluded if excluded(found) else outcome.failures
            kept.setdefault(found.group, []).append(found)

    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.PhaseFinished):
            skipped = event.phase.skip_reason
            outcome.phases.append(
                f"{event.phase.name.value}: {skipped.value if skipped else event.status}"
            )
        elif isinstance(event, events.ScenarioFinished):
            for found in failures_in(event.recorder):
                record(found)
        elif isinstance(event, events.NonFatalError):
            outcome.errors.append(f"{event.label}: {event.info.title}\n{event.info.message}")
        elif isinstance(event, events.FatalError):
            raise event.exception
        elif isinstance(event, events.EngineFinished):
            for failure in event.failures:
                record(Found("run", failure, None, "", None, "", {}))
    return outcome


def report(role: str, outcome: Outcome) -> str:
    lines = [
        f"schemathesis with the {role}'s token: {len(outcome.failures)} distinct failures,"
        f" {len(outcome.errors)} errors; phases: {', '.join(outcome.phases)}"
    ]
    for group in sorted(outcome.failures):
        found = outcome.failures[group]
        lines.append(found[0].describe(len(found)))
    lines += [f"[error] {error}" for error in outcome.errors]
    lines += [
        f"excluded: [{found[0].check}] {found[0].operation} {found[0].status} {found[0].code}"
        f" ({len(found)} cases)"
        for group, found in sorted(outcome.excluded.items())
    ]
    return "\n\n".join(lines)


@pytest.mark.parametrize("role", ROLES)
def test_every_operation_passes_every_schemathesis_check(seeded: Seeded, role: str) -> None:
    schema = schemathesis.openapi.from_url(
        f"{seeded.server.url}/openapi.json", config=config_for(seeded, role)
    )
    outcome = run_schemathesis(schema)
    if outcome.failures or outcome.errors:
        pytest.fail(report(role, outcome), pytrace=False)
