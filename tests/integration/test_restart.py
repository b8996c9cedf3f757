"""The 2am runbook is "restart": a restart after production broke serves previous, says degraded.

Each case makes a second search release production — a second model version and an index
version built with it (the first pair stays as previous) — breaks the model in one way, starts a
real ``lookalike serve`` on 127.0.0.1 and asks it what it serves. A second test restarts in the
middle of a model deploy: the model is promoted, its index is not built yet.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from bad_models import copy_model, register_onnx_model
from live import live_server, run_cli
from PIL import Image

from lookalike.registry import Ref, Registry


def _corrupt(models: Registry) -> str:
    v2 = copy_model(models)
    path = models.path(v2) / "model_fp32.onnx"
    data = bytearray(path.read_bytes())
    data[1000:1100] = b"\xff" * 100
    path.write_bytes(bytes(data))
    return "checksum does not match"


def _missing(models: Registry) -> str:
    v2 = copy_model(models)
    (models.path(v2) / "model_fp32.onnx").unlink()
    return "model_fp32.onnx: missing"


def _nan(models: Registry) -> str:
    register_onnx_model(models, "nan")
    return "not finite"


@pytest.mark.parametrize("breakage", [_corrupt, _missing, _nan], ids=["corrupt", "missing", "nan"])
def test_restart_serves_previous_when_production_is_broken(
    fresh_demo_home: Path, demo_images: list[Path], breakage
) -> None:
    home = fresh_demo_home
    models = Registry(home / "models", "model")
    reason = breakage(models)
    # the registry calls, not the gated commands: the release was good, the model broke later
    models.promote("effnet_lite0:2")
    index_v2 = _index_built_with(home, "effnet_lite0:2")
    Registry(home / "index", "index").promote(index_v2)
    assert models.aliases("effnet_lite0") == {"production": "2", "previous": "1"}

    with _server(home) as base:
        health = httpx.get(f"{base}/health", timeout=10).json()
        assert health["status"] == "degraded", health
        assert health["model"]["version"] == "effnet_lite0:1"
        assert health["index"]["version"] == "catalog:1"
        problems = json.dumps(health["problems"])
        assert "search:production" in problems and "effnet_lite0:2" in problems, problems
        assert reason in problems, problems
        _assert_search_serves(base, demo_images, "effnet_lite0:1")


def test_restart_in_the_middle_of_a_model_deploy_keeps_search_answering(
    fresh_demo_home: Path, demo_images: list[Path]
) -> None:
    """`lookalike models promote` passed, the index is not rebuilt yet, the server restarts."""
    home = fresh_demo_home
    models = Registry(home / "models", "model")
    v2 = copy_model(models)
    out = run_cli(home, "models", "promote", str(v2))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "lookalike index build" in out.stdout  # it says what must follow
    assert models.aliases("effnet_lite0")["production"] == "2"
    with _server(home) as base:
        assert httpx.get(f"{base}/ready", timeout=5).status_code == 200
        health = httpx.get(f"{base}/health", timeout=10).json()
        assert health["status"] == "ok", health  # nothing broke: a deploy is under way
        assert health["release"]["members"] == {"model": "effnet_lite0:1", "index": "catalog:1"}
        notes = " ".join(health["release"]["notes"])
        assert "effnet_lite0:2 is production but waits for an index" in notes, notes
        _assert_search_serves(base, demo_images, "effnet_lite0:1")


def _index_built_with(home: Path, model: str) -> Ref:
    """A copy of the production index whose manifest names ``model`` (v2 is a copy of v1, so
    the vectors are the ones it would build)."""
    return copy_model(Registry(home / "index", "index"), "catalog:production", embedder=model)


def _assert_search_serves(base: str, demo_images: list[Path], model: str) -> None:
    with Image.open(demo_images[7]) as im:
        buf = io.BytesIO()
        im.convert("RGB").save(buf, "JPEG", quality=85)
    r = httpx.post(f"{base}/v1/search", files={"image": ("q.jpg", buf.getvalue())}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["model_version"] == model


@contextlib.contextmanager
def _server(home: Path) -> Iterator[str]:
    with live_server(home) as server:
        yield server.base
