"""``lookalike keys``: API keys for browser-extension clients (create, list, revoke).

Keys live in the ``api_keys`` table of the catalog database (``Settings.db_url``), stored as
SHA-256 hashes; a secret is printed once, by ``create``.
"""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from lookalike.core.errors import LookalikeError
from lookalike.core.settings import Settings
from lookalike.serve.auth import ApiKeyStore

__all__ = ["app"]

app = typer.Typer(help="API keys for the browser extension.", no_args_is_help=True)
console = Console()


def _store() -> ApiKeyStore:
    store = ApiKeyStore(Settings().db_url)
    store.create_schema()
    return store


@app.command("create")
def create(
    name: str = typer.Argument(..., help="Who or what the key is for, e.g. 'alice-laptop'"),
    as_json: bool = typer.Option(False, "--json", help="Print {key_id, name, secret} as JSON"),
) -> None:
    """Create a key and print its secret (shown this once only)."""
    try:
        key_id, secret = _store().create(name)
    except LookalikeError as exc:
        console.print(f"[red]error: {exc.message}[/red]")
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps({"key_id": key_id, "name": name, "secret": secret}))
        return
    console.print(f"key id: {key_id}")
    typer.echo(f"secret: {secret}")
    console.print(
        "Paste the secret into the extension's options page. It is not stored and cannot be "
        "shown again; revoke with `lookalike keys revoke " + key_id + "`."
    )


@app.command("list")
def list_keys() -> None:
    """List keys (never secrets): id, name, created, revoked."""
    keys = _store().list()
    table = Table(title=f"API keys ({len(keys)})")
    for column in ("key id", "name", "created", "revoked"):
        table.add_column(column)
    for key in keys:
        table.add_row(
            key.key_id,
            key.name,
            key.created_at.strftime("%Y-%m-%d %H:%M UTC"),
            key.revoked_at.strftime("%Y-%m-%d %H:%M UTC") if key.revoked_at else "",
        )
    console.print(table)


@app.command("revoke")
def revoke(key_id: str = typer.Argument(..., help="The key id from `lookalike keys list`")) -> None:
    """Revoke a key: requests with it are refused from now on."""
    try:
        key = _store().revoke(key_id)
    except LookalikeError as exc:
        console.print(f"[red]error: {exc.message}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"revoked {key.key_id} ({key.name})")
