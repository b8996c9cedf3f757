"""``lookalike extension pack``: a zip of ``extension/`` ready for the Chrome Web Store.

The manifest's version is set from the project version (``lookalike.__version__``); a test-only
``key`` is dropped; ``--api-origin`` narrows ``host_permissions`` to the production API origin.
The zip is deterministic (sorted entries, fixed timestamps), so the same tree packs to the same
bytes.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer
from rich.console import Console

from lookalike import __version__
from lookalike.core.errors import ConfigError

__all__ = ["app", "chrome_version", "find_extension_dir", "pack_extension"]

app = typer.Typer(help="Package the browser extension.", no_args_is_help=True)
console = Console()

# Only what the extension loads at run time goes into the zip.
_PACKED_SUFFIXES = {".js", ".html", ".css", ".png", ".json"}
_ZIP_TIME = (2024, 1, 1, 0, 0, 0)
_REMOTE_SCRIPT = re.compile(r"""<script[^>]+src=["']?(https?:)?//""", re.IGNORECASE)
_REMOTE_IMPORT = re.compile(r"""\bimport\s*(?:[^'"]*from\s*)?\(?\s*["'](https?:)?//""")


def chrome_version(version: str) -> tuple[str, str]:
    """Chrome wants 1-4 dot-separated integers; return (version, version_name)."""
    numbers = re.findall(r"\d+", version.split("+")[0])[:4] or ["0"]
    return ".".join(str(int(n)) for n in numbers), version


def find_extension_dir(start: Path | None = None) -> Path:
    """The ``extension/`` folder of the source tree (searched upwards from ``start``)."""
    here = (start or Path.cwd()).resolve()
    candidates = [here, *here.parents, *Path(__file__).resolve().parents]
    for folder in candidates:
        if (folder / "extension" / "manifest.json").is_file():
            return folder / "extension"
    raise ConfigError("no extension/manifest.json found — run from the repository or pass --source")


def _api_origin_pattern(api_origin: str) -> str:
    parts = urlsplit(api_origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--api-origin must be like https://api.example.com, got {api_origin!r}")
    return f"{parts.scheme}://{parts.hostname}/*"


def pack_extension(
    source: Path, out_dir: Path, *, version: str = __version__, api_origin: str | None = None
) -> Path:
    """Write ``out_dir/lookalike-extension-<version>.zip`` and return its path."""
    manifest = json.loads((source / "manifest.json").read_text(encoding="utf-8"))
    manifest.pop("key", None)
    manifest["version"], manifest["version_name"] = chrome_version(version)
    if api_origin:
        manifest["host_permissions"] = [_api_origin_pattern(api_origin)]
    files = sorted(
        p
        for p in source.rglob("*")
        if p.is_file()
        and p.suffix in _PACKED_SUFFIXES
        and p.name != "manifest.json"
        and not any(part.startswith(".") for part in p.relative_to(source).parts)
    )
    _check(source, manifest, files)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"lookalike-extension-{manifest['version']}.zip"
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        entry = zipfile.ZipInfo("manifest.json", _ZIP_TIME)
        entry.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(entry, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        for path in files:
            entry = zipfile.ZipInfo(path.relative_to(source).as_posix(), _ZIP_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(entry, path.read_bytes())
    tmp.replace(target)
    return target


def _check(source: Path, manifest: dict, files: list[Path]) -> None:
    """Refuse a zip the store would reject or that breaks our rules (no remote code)."""
    if manifest.get("manifest_version") != 3:
        raise ConfigError("extension/manifest.json must be manifest_version 3")
    names = {p.relative_to(source).as_posix() for p in files}
    referenced = [
        manifest.get("background", {}).get("service_worker"),
        manifest.get("side_panel", {}).get("default_path"),
        manifest.get("options_ui", {}).get("page"),
        manifest.get("action", {}).get("default_popup"),
        *manifest.get("icons", {}).values(),
    ]
    missing = [r for r in referenced if r and r not in names]
    if missing:
        raise ConfigError(f"manifest refers to missing files: {', '.join(missing)}")
    for path in files:
        if path.suffix in {".js", ".html"}:
            text = path.read_text(encoding="utf-8")
            if _REMOTE_SCRIPT.search(text) or _REMOTE_IMPORT.search(text):
                raise ConfigError(f"{path.name} loads remote code; MV3 forbids it")


@app.command("pack")
def pack(
    out: Annotated[Path, typer.Option("--out", help="Folder for the zip")] = Path("dist"),
    source: Annotated[
        Path | None, typer.Option("--source", help="The extension folder (default: ./extension)")
    ] = None,
    api_origin: Annotated[
        str | None,
        typer.Option("--api-origin", help="Production API origin; host_permissions become it"),
    ] = None,
) -> None:
    """Build the Chrome Web Store zip, versioned from the project."""
    try:
        folder = source or find_extension_dir()
        target = pack_extension(folder, out, api_origin=api_origin)
    except ConfigError as exc:
        console.print(f"[red]error: {exc.message}[/red]")
        raise typer.Exit(2) from exc
    with zipfile.ZipFile(target) as zf:
        count = len(zf.namelist())
    console.print(f"wrote {target} ({target.stat().st_size // 1024} KiB, {count} files)")
