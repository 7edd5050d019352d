"""Admin commands of the CLI: they talk to a running server's `/api/v1/admin` API.

Money and markets change only inside the server's engine (the single writer),
so these commands never open the database themselves. They sign a short-lived
admin token with the configured JWT secret (`CROSSBOOK_JWT_SECRET`, the same
settings the server reads) and call the server at `--url`.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import httpx
import orjson
import typer

from crossbook.api.auth import Principal, Role, TokenCodec
from crossbook.config import load_settings

ADMIN_TOKEN_TTL_S = 300
TIMEOUT_S = 10.0

UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="The server (default: http://<host>:<port> from the settings)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the server's data as JSON.")]

user_app = typer.Typer(help="Users (through a running server).", no_args_is_help=True)
market_app = typer.Typer(help="Markets (through a running server).", no_args_is_help=True)
settlement_app = typer.Typer(
    help="Remote-wallet settlements and their dead-letter queue (through a running server).",
    no_args_is_help=True,
)
holds_app = typer.Typer(
    help="Remote-wallet holds that nothing on the exchange owns (through a running server).",
    no_args_is_help=True,
)


def _call(url: str | None, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """The `data` of a successful answer (a refusal exits 1, no server exits 2)."""
    return _envelope(url, method, path, body)["data"]


def _envelope(
    url: str | None, method: str, path: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    settings = load_settings()
    base = url or f"http://{settings.host}:{settings.port}"
    codec = TokenCodec(settings.jwt_secret_value, settings.jwt_ttl_s)
    token = codec.issue(Principal(Role.ADMIN, None), ttl_s=ADMIN_TOKEN_TTL_S)
    try:
        response = httpx.request(
            method,
            f"{base.rstrip('/')}/api/v1/admin{path}",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=TIMEOUT_S,
        )
    except httpx.HTTPError as error:
        typer.echo(f"cannot reach the server at {base}: {error}", err=True)
        raise typer.Exit(2) from None
    payload = response.json()
    if not payload.get("success"):
        refusal = payload.get("error", {})
        typer.echo(f"{refusal.get('code')}: {refusal.get('message')}", err=True)
        raise typer.Exit(1)
    envelope: dict[str, Any] = payload
    return envelope


def _show(data: Any, as_json: bool, text: str) -> None:
    typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() if as_json else text)


@user_app.command("create")
def user_create(
    name: Annotated[str | None, typer.Argument(help="A display name.")] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a user; prints its id."""
    data = _call(url, "POST", "/users", {"name": name})
    _show(data, as_json, data["id"])


@user_app.command("list")
def user_list(url: UrlOption = None, as_json: JsonOption = False) -> None:
    """List the first users by id."""
    data = _call(url, "GET", "/users")
    _show(data, as_json, "\n".join(f"{u['id']}\t{u['name'] or ''}" for u in data))


def deposit(
    user_id: Annotated[int, typer.Argument(min=0, help="User id (0 = fee account).")],
    asset: Annotated[str, typer.Argument(help="Asset code, e.g. USDT.")],
    amount: Annotated[str, typer.Argument(help="Decimal amount, e.g. 1000.00.")],
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Credit a user's available balance."""
    _transfer("/deposits", user_id, asset, amount, url, as_json)


def withdraw(
    user_id: Annotated[int, typer.Argument(min=0)],
    asset: Annotated[str, typer.Argument()],
    amount: Annotated[str, typer.Argument()],
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Debit a user's available balance."""
    _transfer("/withdrawals", user_id, asset, amount, url, as_json)


def _transfer(
    path: str, user_id: int, asset: str, amount: str, url: str | None, as_json: bool
) -> None:
    data = _call(url, "POST", path, {"user_id": user_id, "asset": asset, "amount": amount})
    _show(data, as_json, f"{data['asset']} available {data['balance']['available']}")


@market_app.command("create")
def market_create(
    base: Annotated[str, typer.Argument()],
    quote: Annotated[str, typer.Argument()],
    tick_size: Annotated[str, typer.Option("--tick-size")],
    step_size: Annotated[str, typer.Option("--step-size")],
    min_quantity: Annotated[str, typer.Option("--min-quantity")],
    max_quantity: Annotated[str, typer.Option("--max-quantity")],
    base_decimals: Annotated[int | None, typer.Option("--base-decimals")] = None,
    quote_decimals: Annotated[int | None, typer.Option("--quote-decimals")] = None,
    min_notional: Annotated[str, typer.Option("--min-notional")] = "0",
    maker_fee_rate: Annotated[str | None, typer.Option("--maker-fee-rate")] = None,
    taker_fee_rate: Annotated[str | None, typer.Option("--taker-fee-rate")] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a market (and its assets, given their decimals, if new)."""
    body = {
        "base": base,
        "quote": quote,
        "base_decimals": base_decimals,
        "quote_decimals": quote_decimals,
        "tick_size": tick_size,
        "step_size": step_size,
        "min_quantity": min_quantity,
        "max_quantity": max_quantity,
        "min_notional": min_notional,
        "maker_fee_rate": maker_fee_rate,
        "taker_fee_rate": taker_fee_rate,
    }
    data = _call(url, "POST", "/markets", body)
    _show(data, as_json, f"{data['symbol']} {data['status']}")


@market_app.command("halt")
def market_halt(
    symbol: Annotated[str, typer.Argument()], url: UrlOption = None, as_json: JsonOption = False
) -> None:
    """Halt trading on a market."""
    data = _call(url, "POST", f"/markets/{symbol}/halt")
    _show(data, as_json, f"{data['symbol']} {data['status']}")


@market_app.command("resume")
def market_resume(
    symbol: Annotated[str, typer.Argument()], url: UrlOption = None, as_json: JsonOption = False
) -> None:
    """Resume trading on a market."""
    data = _call(url, "POST", f"/markets/{symbol}/resume")
    _show(data, as_json, f"{data['symbol']} {data['status']}")


def token(
    user_id: Annotated[int | None, typer.Argument(min=1, help="The trader's user id.")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="An admin token instead.")] = False,
    ttl_s: Annotated[int | None, typer.Option("--ttl", min=1, help="Seconds valid.")] = None,
) -> None:
    """Mint a JWT with the configured secret (local: no server needed)."""
    if admin == (user_id is not None):
        typer.echo("give a USER_ID or --admin (not both)", err=True)
        raise typer.Exit(2)
    settings = load_settings()
    codec = TokenCodec(settings.jwt_secret_value, settings.jwt_ttl_s)
    principal = Principal(Role.ADMIN, None) if admin else Principal(Role.TRADER, user_id)
    typer.echo(codec.issue(principal, ttl_s=ttl_s))


def _settlement_line(s: dict[str, Any]) -> str:
    trade = f"trade {s['trade_id']}" if s["trade_id"] else s["kind"]
    when = s["failed_at"] or s["settled_at"] or s["created_at"]
    return (
        f"{s['id']}\t{trade}\t{s['status']}\tattempts={s['attempts']}\t{when}\t{s['reason'] or ''}"
    )


@settlement_app.command("list")
def settlement_list(
    status: Annotated[
        str, typer.Option(help="SETTLEMENT_FAILED (the dead-letter queue), PENDING or SETTLED.")
    ] = "SETTLEMENT_FAILED",
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """List settlements: by default the dead-letter queue, with why each failed."""
    data = _call(url, "GET", f"/settlements?status={status.upper()}&limit={limit}")
    _show(data, as_json, "\n".join(_settlement_line(s) for s in data) or "(none)")


@settlement_app.command("show")
def settlement_show(
    settlement_id: Annotated[int, typer.Argument(min=1)],
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """One settlement with the state of each wallet leg."""
    data = _call(url, "GET", f"/settlements/{settlement_id}")
    legs = "\n".join(
        f"  {leg['name']}\t{leg['op']} {leg['amount']} {leg['asset']} ({leg['account']})"
        f"\tuser {leg['user_id']}\t{leg['state']} g{leg['generation']}"
        for leg in data["legs"]
    )
    _show(data, as_json, f"{_settlement_line(data)}\n{legs}")


@settlement_app.command("replay")
def settlement_replay(
    settlement_id: Annotated[int | None, typer.Argument(min=1, help="One settlement.")] = None,
    replay_all: Annotated[
        bool, typer.Option("--all", help="Every settlement in the dead-letter queue.")
    ] = False,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Replay dead-lettered settlements: back to PENDING, settled by the workers."""
    if replay_all == (settlement_id is not None):
        typer.echo("give a SETTLEMENT_ID or --all (not both)", err=True)
        raise typer.Exit(2)
    if replay_all:
        data = _call(url, "POST", "/settlements/replay")
        _show(data, as_json, f"replayed {len(data['replayed'])}: {' '.join(data['replayed'])}")
        return
    data = _call(url, "POST", f"/settlements/{settlement_id}/replay")
    _show(data, as_json, _settlement_line(data))


def _hold_line(h: dict[str, Any]) -> str:
    return (
        f"{h['key']}\tuser {h['user_id']}\t{h['amount']} {h['asset']}"
        f"\t{h['applied_at']}\tage {h['age_ms']} ms"
    )


@holds_app.command("orphaned")
def holds_orphaned(url: UrlOption = None, as_json: JsonOption = False) -> None:
    """List the wallet holds nothing owns (oldest first); nothing is voided."""
    envelope = _envelope(url, "GET", "/holds/orphaned")
    data, complete = envelope["data"], envelope["meta"]["complete"]
    lines = [_hold_line(h) for h in data] or ["(none)"]
    if not complete:
        lines.append("(incomplete: the scan stopped at its bound; more may follow)")
    _show({"holds": data, "complete": complete}, as_json, "\n".join(lines))


@holds_app.command("void")
def holds_void(
    key: Annotated[str, typer.Argument(help="The hold's key, as listed (hold:<hex>).")],
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Void one orphaned hold: the wallet then releases its funds."""
    data = _call(url, "POST", f"/holds/{quote(key, safe='')}/void")
    _show(data, as_json, f"voided {_hold_line(data)}")


@holds_app.command("void-orphaned")
def holds_void_orphaned(url: UrlOption = None, as_json: JsonOption = False) -> None:
    """Run a reconciliation pass that voids every orphaned hold."""
    data = _call(url, "POST", "/holds/void-orphaned")
    more = "" if data["complete"] else " (incomplete: run it again)"
    _show(data, as_json, f"found {data['found']}, voided {data['voided']}{more}")


@holds_app.command("status")
def holds_status(url: UrlOption = None, as_json: JsonOption = False) -> None:
    """The hold reconciler's figures since the server started."""
    data = _call(url, "GET", "/holds/reconciliation")
    _show(data, as_json, "\n".join(f"{name}\t{value}" for name, value in data.items()))
