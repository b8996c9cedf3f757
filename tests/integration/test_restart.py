"""The 2am runbook is "restart": a restart after production broke serves previous, says degraded.

Each case makes a second version of the model production (the first stays as previous, and the
demo index is built with it), breaks production in one way, starts a real ``lookalike serve``
on 127.0.0.1 and asks it what it serves.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from bad_models import copy_model, register_onnx_model
from PIL import Image

from lookalike.registry import Registry

LOOKALIKE = [sys.executable, "-m", "lookalike.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    models.promote("effnet_lite0:2")  # the registry call, not the gated command: it broke later
    assert models.aliases("effnet_lite0") == {"production": "2", "previous": "1"}

    port = _free_port()
    env = {**os.environ, "LOOKALIKE_HOME": str(home)}
    log_path = home.parent / "server.log"  # a file, not a pipe: nobody drains a pipe here
    log_file = open(log_path, "w")  # noqa: SIM115 - closed in the finally below
    server = subprocess.Popen(
        [*LOOKALIKE, "serve", "--port", str(port)],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise AssertionError(f"server exited:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        else:
            raise AssertionError(f"server not ready on the previous model:\n{log_path.read_text()}")
        health = httpx.get(f"{base}/health", timeout=10).json()
        assert health["status"] == "degraded", health
        assert health["model"]["version"] == "effnet_lite0:1"
        problems = json.dumps(health["problems"])
        assert "effnet_lite0:production" in problems and reason in problems, problems

        with Image.open(demo_images[7]) as im:
            buf = io.BytesIO()
            im.convert("RGB").save(buf, "JPEG", quality=85)
        r = httpx.post(f"{base}/v1/search", files={"image": ("q.jpg", buf.getvalue())}, timeout=60)
        assert r.status_code == 200, r.text
        assert "effnet_lite0:1" in r.text
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log_file.close()
