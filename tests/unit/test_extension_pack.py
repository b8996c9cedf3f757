"""``lookalike extension pack``: a store-ready zip of the real extension/ folder."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest

from lookalike import __version__
from lookalike.cli.extension import chrome_version, find_extension_dir, pack_extension
from lookalike.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_pack_builds_a_store_zip(tmp_path: Path) -> None:
    source = find_extension_dir(REPO)
    target = pack_extension(source, tmp_path, api_origin="https://api.example.com:8443")
    with zipfile.ZipFile(target) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read("manifest.json"))
    assert {"manifest.json", "sw.js", "sidepanel.html", "options.html", "icons/icon128.png"} <= (
        names
    )
    worker = (source / "sw.js").read_text()
    # The module worker only imports small sw-*.js files, all of them packed.
    imports = re.findall(r'from "\./([^"]+)"', worker)
    assert imports and all(i.startswith("sw-") and i in names for i in imports)
    assert manifest["version"] == chrome_version(__version__)[0]
    assert manifest["version_name"] == __version__
    assert manifest["host_permissions"] == ["https://api.example.com/*"]
    assert "key" not in manifest
    assert "<all_urls>" not in json.dumps(manifest)
    assert manifest["background"] == {"service_worker": "sw.js", "type": "module"}
    # Deterministic: packing again gives the same bytes.
    first = target.read_bytes()
    assert pack_extension(source, tmp_path, api_origin="https://api.example.com").read_bytes() == (
        first
    )


def test_pack_drops_a_test_key_and_refuses_remote_code(tmp_path: Path) -> None:
    source = tmp_path / "ext"
    source.mkdir()
    manifest = json.loads((find_extension_dir(REPO) / "manifest.json").read_text())
    for name in ("sw.js", "sidepanel.html", "options.html", "popup.html"):
        (source / name).write_text("<p>ok</p>" if name.endswith("html") else "// ok\n")
    (source / "icons").mkdir()
    for size in manifest["icons"]:
        (source / f"icons/icon{size}.png").write_bytes(b"png")
    manifest["key"] = "MIIB..."
    (source / "manifest.json").write_text(json.dumps(manifest))
    target = pack_extension(source, tmp_path / "out", version="1.2.3.dev4")
    packed = json.loads(zipfile.ZipFile(target).read("manifest.json"))
    assert "key" not in packed and packed["version"] == "1.2.3.4"

    (source / "sidepanel.html").write_text('<script src="https://cdn.example.com/x.js"></script>')
    with pytest.raises(ConfigError, match="remote code"):
        pack_extension(source, tmp_path / "out")


def test_chrome_version() -> None:
    assert chrome_version("0.1.0") == ("0.1.0", "0.1.0")
    assert chrome_version("2.0.0rc1+local") == ("2.0.0.1", "2.0.0rc1+local")
