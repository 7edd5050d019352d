"""`crossbook wallet …`: the external wallet service, a process of its own.

Commands:
    crossbook wallet serve    run the wallet service's HTTP API (its own database)

Settings come from `CROSSBOOK_WALLET_*` environment variables (see
`crossbook.wallet_service.settings`); the options here override them. Invalid
settings (e.g. a missing or short service token in production, or fault
injection in production) are reported on stderr with exit status 2.
"""

from __future__ import annotations

from typing import Annotated

import typer

wallet_app = typer.Typer(
    help="The external wallet service: balances behind an authenticated HTTP API.",
    no_args_is_help=True,
)


@wallet_app.command("serve")
def serve(
    host: Annotated[
        str | None, typer.Option("--host", help="Default: settings (127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="Default: settings (8090).")] = None,
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="Default: sqlite:///crossbook-wallet.db."),
    ] = None,
) -> None:
    """Run the wallet service: migrations first, then the API on uvicorn (SIGTERM stops it)."""
    from pydantic import ValidationError  # noqa: PLC0415 - lazy: only this command needs it

    from crossbook.wallet_service import server  # noqa: PLC0415
    from crossbook.wallet_service.settings import load_wallet_settings  # noqa: PLC0415

    try:
        settings = load_wallet_settings(host=host, port=port, database_url=database_url)
    except ValidationError as error:
        typer.echo(f"invalid wallet settings: {error}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(server.run(settings))
