"""``lookalike keys``: API keys and their roles (create, list, revoke).

Keys live in the ``api_keys`` table of the catalog database (``Settings.db_url``), stored as
SHA-256 hashes; a secret is printed once, by ``create``. A key's role decides which route classes
it may call (``serve/access.py``): ``extension`` (the browser extension; the default),
``moderator`` or ``admin`` (e.g. ``/metrics`` from another host).
"""

from __future__ import annotations

import json
from enum import StrEnum

import typer
from rich.console import Console
from rich.table import Table

from lookalike.core.errors import LookalikeError
from lookalike.core.settings import Settings
from lookalike.serve.auth import ApiKeyStore

__all__ = ["app"]

app = typer.Typer(help="API keys (extension, moderator, admin).", no_args_is_help=True)
console = Console()


class KeyRole(StrEnum):
    extension = "extension"
    moderator = "moderator"
    admin = "admin"


def _store() -> ApiKeyStore:
    store = ApiKeyStore(Settings().db_url)
    store.create_schema()
    return store


@app.command("create")
def create(
    name: str = typer.Argument(..., help="Who or what the key is for, e.g. 'alice-laptop'"),
    role: KeyRole = typer.Option(KeyRole.extension, "--role", help="What the key may call"),
    as_json: bool = typer.Option(
        False, "--json", help="Print {key_id, name, role, secret} as JSON"
    ),
) -> None:
    """Create a key and print its secret (shown this once only)."""
    try:
        key_id, secret = _store().create(name, role.value)
    except LookalikeError as exc:
        console.print(f"[red]error: {exc.message}[/red]")
        raise typer.Exit(2) from exc
    if as_json:
        payload = {"key_id": key_id, "name": name, "role": role.value, "secret": secret}
        typer.echo(json.dumps(payload))
        return
    console.print(f"key id: {key_id} (role {role.value})")
    typer.echo(f"secret: {secret}")
    console.print(
        "Paste the secret into the extension's options page. It is not stored and cannot be "
        "shown again; revoke with `lookalike keys revoke " + key_id + "`."
    )


@app.command("list")
def list_keys() -> None:
    """List keys (never secrets): id, name, role, created, revoked."""
    keys = _store().list()
    table = Table(title=f"API keys ({len(keys)})")
    for column in ("key id", "name", "role", "created", "revoked"):
        table.add_column(column)
    for key in keys:
        table.add_row(
            key.key_id,
            key.name,
            key.role,
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
