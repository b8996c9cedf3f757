"""The ``lookalike`` command: composes the sub-apps and runs the demo and the server."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from typer.core import TyperGroup

from lookalike.cli import catalog as catalog_cli
from lookalike.cli import eval as eval_cli
from lookalike.cli import extension as extension_cli
from lookalike.cli import fit as fit_cli
from lookalike.cli import forecast as forecast_cli
from lookalike.cli import index as index_cli
from lookalike.cli import keys as keys_cli
from lookalike.cli import models as models_cli
from lookalike.cli import moderation as moderation_cli
from lookalike.cli import price as price_cli
from lookalike.cli import recs as recs_cli
from lookalike.cli import refresh as refresh_cli
from lookalike.cli import registry as registry_cli
from lookalike.core.errors import LookalikeError
from lookalike.core.settings import Settings
from lookalike.core.textfiles import cannot_write


class _Commands(TyperGroup):
    """The top-level group: a project error that no command caught is one line, exit 1.

    Commands raise what they find wrong as a :class:`LookalikeError` and this is the one place
    that turns it into a message — a bad file handed to any command (``eval retrieval --pairs``
    with the wrong columns, a photo that does not decode, a model that fails its checks) — so a
    user never gets a traceback for their input. Bugs (anything that is not a
    :class:`LookalikeError`) still show theirs — except a write the machine refused (a full
    disk, a read-only folder: ``core.textfiles.cannot_write``) wherever it happens.
    """

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LookalikeError as exc:
            _fail(exc.message)
        except OSError as exc:
            ours = cannot_write(exc, str(exc.filename or "a file"))
            if ours is None:
                raise
            _fail(ours.message)


def _fail(message: str) -> NoReturn:
    Console(stderr=True).print(f"[red]error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(code=1) from None


app = typer.Typer(
    cls=_Commands,
    help="Lookalike: visual search for a fashion-rental catalog.",
    no_args_is_help=True,
)
app.add_typer(models_cli.app, name="models")
app.add_typer(catalog_cli.app, name="catalog")
app.add_typer(index_cli.app, name="index")
app.add_typer(eval_cli.app, name="eval")
app.add_typer(keys_cli.app, name="keys")
app.add_typer(extension_cli.app, name="extension")
app.add_typer(registry_cli.app, name="registry")
app.add_typer(price_cli.app, name="price")
app.add_typer(moderation_cli.app, name="moderation")
app.add_typer(fit_cli.app, name="fit")
app.add_typer(recs_cli.app, name="recs")
app.add_typer(forecast_cli.app, name="forecast")
fit_cli.add_eval_commands(eval_cli.app)
recs_cli.add_eval_commands(eval_cli.app)
forecast_cli.add_eval_commands(eval_cli.app)
app.add_typer(refresh_cli.events_app, name="events")
app.command("refresh")(refresh_cli.refresh_cmd)
app.command("report")(refresh_cli.report_cmd)
console = Console()
DEMO_CATALOG = Path("demo/catalog/items.csv")


@app.callback()
def main(
    home: Path = typer.Option(
        None, envvar="LOOKALIKE_HOME", help="Folder holding models/, index/ and var/"
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if home is not None:
        os.environ["LOOKALIKE_HOME"] = str(home.resolve())


def _say_missing_model(settings: Settings) -> None:
    """One line before serving when the home has no production model: where we looked, the fix.

    The server still starts (``/health`` says "not ready"), but a server run outside the
    checkout usually just looked in the wrong folder.
    """
    from lookalike.registry import Registry

    name = settings.search.model_name
    if "production" in Registry(settings.models_dir, "model").aliases(name):
        return
    source = "LOOKALIKE_HOME" if os.environ.get("LOOKALIKE_HOME") else "the working directory"
    console.print(
        f"[yellow]no production model {name!r} in {settings.models_dir}[/] (home from {source}):"
        " set LOOKALIKE_HOME (or --home) to the folder that holds models/ and index/, or run"
        " `lookalike demo --no-serve` there to build one"
    )


@app.command()
def serve(
    host: str = typer.Option(None, help="Default 127.0.0.1"),
    port: int = typer.Option(None, help="Default 8000"),
    workers: int = typer.Option(1, min=1, max=16),
) -> None:
    """Serve the API and the search page with uvicorn.

    Connection limits come from ``settings.serving`` (``LOOKALIKE_SERVING__*``): a header and a
    body deadline, at most ``max_connections`` per worker (oldest idle closed first), keep-alive,
    header size and backlog; see docs/reliability.md.
    """
    import uvicorn

    from lookalike.serve.limits import raise_open_file_limit

    settings = Settings()
    _say_missing_model(settings)
    serving = settings.serving
    soft, hard = raise_open_file_limit()  # inherited by the worker processes
    console.print(f"open files: {soft} (hard limit {hard})")
    uvicorn.run(
        "lookalike.serve.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_level="info",
        # our own access log (serve.logs) has no client IP and no query string; uvicorn's has both
        access_log=False,
        # h11 plus header/body deadlines and the idle-connection cap (uvicorn has none).
        http="lookalike.serve.limits:GuardedH11Protocol",
        # Past this many connections or tasks uvicorn answers 503 itself; the guard keeps idle
        # connections under max_connections, so only busy ones can reach it.
        limit_concurrency=serving.max_connections + 64,
        timeout_keep_alive=serving.keep_alive_seconds,
        h11_max_incomplete_event_size=serving.max_header_bytes,
        backlog=serving.backlog,
    )


@app.command()
def demo(
    catalog_file: Path = typer.Option(DEMO_CATALOG, "--catalog", help="Catalog CSV/JSONL"),
    serve_after: bool = typer.Option(True, "--serve/--no-serve"),
    host: str = typer.Option(None),
    port: int = typer.Option(None),
) -> None:
    """Build the default model, import and index the demo catalog, then serve the search page.

    Each step is skipped when its result is already there and current.
    """
    from lookalike.catalog import CatalogStore
    from lookalike.registry import Ref, Registry

    settings = Settings()
    models = Registry(settings.models_dir, "model")
    indexes = Registry(settings.index_dir, "index")
    if "production" not in models.aliases(settings.search.model_name):
        console.rule("1/3 building the default model")
        models_cli.build_default_cmd(
            calibration=catalog_file.parent / "images", name=settings.search.model_name
        )
    else:
        console.print(f"model {models.resolve(settings.search.model_name + ':production')} ready")
    console.rule("2/3 importing the catalog")
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    store = CatalogStore.for_settings(settings)
    store.create_schema()
    catalog_cli.import_catalog(catalog_file, images=None, strict=False)
    model_ref = str(models.resolve(Ref(settings.search.model_name, "production")))
    try:
        current = indexes.manifest(Ref(settings.search.index_name, "production"))
        fresh = (
            current.get("catalog_revision") == store.revision()
            and current.get("embedder") == model_ref
        )
    except LookalikeError:
        fresh = False
    if fresh:
        console.print("index is current")
    else:
        console.rule("3/3 indexing the catalog")
        index_cli.build(factory=None, model=None, promote=True)
    store.close()
    if serve_after:
        h, p = host or settings.host, port or settings.port
        console.rule(f"search page: http://{h}:{p}")
        serve(host=h, port=p, workers=1)
