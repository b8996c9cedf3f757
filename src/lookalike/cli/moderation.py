"""``lookalike moderation``: import and ingest posts, moderator accounts, exports.

The pre-filter's commands (``eval``, ``score``, ``train``) live in :mod:`lookalike.cli.prefilter`
and are added to this app there.

* ``import JSONL --images DIR``: a post export (one JSON object a line) plus its photos
* ``ingest --hashtag TAG [--tagged] [--api-base URL] [--max-pages N]``: the Instagram Graph API,
  token from ``LOOKALIKE_INSTAGRAM_TOKEN``, business account id from ``--user-id`` or
  ``LOOKALIKE_INSTAGRAM_USER_ID``; resumes from the stored cursor
* ``users create USERNAME --role moderator|admin``: password from a hidden prompt or
  ``--password-stdin``
* ``export-pairs OUT.csv``: approved posts and their chosen dress, in ``lookalike eval
  retrieval``'s pairs.csv format (item_id, person, product)
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from lookalike.cli import prefilter
from lookalike.core.errors import NotFound
from lookalike.core.settings import Settings
from lookalike.core.textfiles import output_file
from lookalike.moderation.posts import ImportResult

if TYPE_CHECKING:
    from lookalike.moderation.store import ModerationStore

__all__ = ["app", "post_media_dir"]

app = typer.Typer(
    help="Instagram posts, the pre-filter and the moderator queue.", no_args_is_help=True
)
prefilter.add_commands(app)

console = Console()
err = Console(stderr=True)


def post_media_dir(settings: Settings) -> Path:
    """Where the stored copies of post photos live (normalised JPEGs named by hash)."""
    return settings.var_dir / "moderation" / "media"


def _store(settings: Settings) -> ModerationStore:
    from lookalike.moderation.store import ModerationStore

    store = ModerationStore.from_settings(settings)
    store.create_schema()
    return store


def _print_result(result: ImportResult, what: str) -> None:
    console.print(
        f"{what}: {result.added} added, {result.duplicates} already known, "
        f"{result.rejected} rejected"
    )
    for reason in result.reasons[:20]:
        console.print(f"  rejected: {reason}")
    if len(result.reasons) > 20:
        console.print(f"  … and {len(result.reasons) - 20} more")


@app.command("import")
def import_cmd(
    jsonl: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="posts, one JSON a line")
    ],
    images: Annotated[
        Path | None, typer.Option("--images", exists=True, file_okay=False, help="photo folder")
    ] = None,
    download: Annotated[
        bool, typer.Option("--download/--no-download", help="fetch image_url photos over HTTP(S)")
    ] = False,
) -> None:
    """Import a JSONL post export; re-importing adds nothing, unreadable photos are rejected."""
    from lookalike.moderation.importer import import_jsonl
    from lookalike.moderation.instagram import download as fetch_url

    settings = Settings()
    result = import_jsonl(
        _store(settings),
        jsonl,
        images,
        post_media_dir(settings),
        fetch=fetch_url if download else None,
    )
    _print_result(result, str(jsonl))


@app.command("ingest")
def ingest_cmd(
    hashtag: Annotated[
        list[str] | None, typer.Option("--hashtag", help="hashtag to crawl (repeatable)")
    ] = None,
    tagged: Annotated[
        bool, typer.Option("--tagged", help="also the media the business account is tagged in")
    ] = False,
    user_id: Annotated[
        str | None,
        typer.Option("--user-id", help="IG business account id (or $LOOKALIKE_INSTAGRAM_USER_ID)"),
    ] = None,
    api_base: Annotated[str | None, typer.Option("--api-base", help="Graph API base URL")] = None,
    max_pages: Annotated[
        int | None, typer.Option("--max-pages", min=1, help="stop after N pages (resumable)")
    ] = None,
    max_retries: Annotated[
        int, typer.Option("--max-retries", min=0, help="rate-limit retries")
    ] = 5,
    backoff: Annotated[
        float, typer.Option("--backoff", min=0.0, help="first back-off wait in seconds")
    ] = 2.0,
) -> None:
    """Ingest posts from the Instagram Graph API (token from $LOOKALIKE_INSTAGRAM_TOKEN)."""
    from lookalike.moderation import instagram as ig

    if not hashtag and not tagged:
        err.print("[red]error:[/red] give --hashtag TAG and/or --tagged")
        raise typer.Exit(code=2)
    settings = Settings()
    client = ig.GraphClient(
        token=ig.token_from_env(),
        user_id=user_id or os.environ.get(ig.USER_ID_ENV, ""),
        api_base=api_base or ig.DEFAULT_API_BASE,
        max_retries=max_retries,
        backoff_s=backoff,
    )
    store = _store(settings)
    crawls = [ig.hashtag_edge(client, tag, store) for tag in hashtag or []]
    if tagged:
        crawls.append(ig.tagged_edge(client))
    for crawl in crawls:
        result = ig.ingest(client, crawl, store, post_media_dir(settings), max_pages=max_pages)
        state = "to the end" if result.finished else "stopped; the next run resumes"
        console.print(
            f"{crawl.source}: {result.pages} pages, {result.media} media "
            f"({'resumed' if result.resumed_from else 'from the newest'}, {state})"
        )
        _print_result(result.imported, crawl.source)


users = typer.Typer(help="Moderator and admin accounts.", no_args_is_help=True)
app.add_typer(users, name="users")


@users.command("create")
def users_create(
    username: Annotated[str, typer.Argument(help="login name")],
    role: Annotated[str, typer.Option("--role", help="moderator | admin")] = "moderator",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from standard input")
    ] = False,
) -> None:
    """Create an account; the password is prompted for (hidden) or read from stdin."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    account = _store(Settings()).create_account(username, password, role)
    console.print(f"created {account.role} {account.username}")


@app.command("export-pairs")
def export_pairs(
    out: Annotated[Path, typer.Argument(dir_okay=False, help="pairs.csv to write")],
    root: Annotated[
        Path | None,
        typer.Option("--root", file_okay=False, help="write paths relative to this folder"),
    ] = None,
) -> None:
    """Approved posts with their chosen dress as consumer-to-shop pairs (item_id, person,
    product): the format ``lookalike eval retrieval --pairs OUT --root ROOT`` reads."""
    from lookalike.catalog.store import CatalogStore

    settings = Settings()
    pairs = _store(settings).approved_pairs()
    catalog = CatalogStore.for_settings(settings)
    items = catalog.get_items(sorted({item for _, item in pairs}))
    base = (root or Path.cwd()).resolve()

    def rel(path: Path) -> str:
        path = path.resolve()
        return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)

    rows, skipped = [], []
    for photo, item_id in pairs:
        item = items.get(item_id)
        if item is None or not item.images:
            skipped.append(item_id)
            continue
        rows.append((item_id, rel(photo), rel(catalog.media_path(item.images[0]))))
    with output_file(out) as fh:
        writer = csv.writer(fh)
        writer.writerow(["item_id", "person", "product"])
        writer.writerows(rows)
    console.print(f"wrote {len(rows)} pairs to {out} (paths relative to {base})")
    if skipped:
        console.print(
            f"skipped {len(skipped)} approved posts whose item has no photo: "
            f"{', '.join(sorted(set(skipped))[:10])}"
        )
    if not rows and pairs:
        raise NotFound("no approved post's item is in the catalog")
