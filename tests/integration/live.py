"""Real processes for integration tests: the `lookalike` CLI and a live `lookalike serve`.

    with live_server(home, workers=2, LOOKALIKE_SERVING__RELOAD_SECONDS="1") as server:
        httpx.get(f"{server.base}/health")

The server listens on 127.0.0.1 on a free port, logs to a file (a pipe nobody drains could
fill and block it), and is stopped (terminate, then kill) when the block ends.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from lookalike.core.settings import Settings
from lookalike.lifecycle import Kind, promote, rollback
from lookalike.registry import Ref
from lookalike.serve.auth import ApiKeyStore

__all__ = [
    "LOOKALIKE",
    "LiveServer",
    "api_key",
    "free_port",
    "live_server",
    "run_cli",
    "swap_then_roll_back",
    "wait_for_version",
]

LOOKALIKE = [sys.executable, "-m", "lookalike.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(
    home: Path, *args: str, check: bool = False, timeout: float = 600, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``lookalike ARGS`` with ``LOOKALIKE_HOME=home`` (wide, so tables do not wrap)."""
    full_env = {**os.environ, "LOOKALIKE_HOME": str(home), "COLUMNS": "200", **env}
    proc = subprocess.run(
        [*LOOKALIKE, *args], env=full_env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"lookalike {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


class LiveServer:
    """A started ``lookalike serve`` (see :func:`live_server`)."""

    def __init__(
        self, home: Path, log: Path, workers: int = 1, prefix: Sequence[str] = (), **env: str
    ) -> None:
        """``prefix`` runs the server under another command (e.g. ``prlimit --as=N --``)."""
        self.home = home
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._out = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*prefix, *LOOKALIKE, "serve", "--port", str(self.port), "--workers", str(workers)],
            env={**os.environ, "LOOKALIKE_HOME": str(home), **env},
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 120) -> LiveServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.base}/ready", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server did not become ready:\n{self.log.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._out.close()


@contextmanager
def live_server(
    home: Path, workers: int = 1, prefix: Sequence[str] = (), **env: str
) -> Iterator[LiveServer]:
    server = LiveServer(home, home.parent / f"server-{free_port()}.log", workers, prefix, **env)
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def api_key(home: Path, name: str = "tester", role: str = "extension") -> str:
    """A new API key of ``role`` in ``home``'s access database (created when missing)."""
    store = ApiKeyStore(Settings(home=home).db_url)
    store.create_schema()
    return store.create(name, role=role)[1]


def wait_for_version(ask: Callable[[], httpx.Response], version: str, timeout: float = 30) -> dict:
    """Poll ``ask()`` until a 200 answer says ``model_version == version``; that answer."""
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        r = ask()
        body = r.json()
        if r.status_code == 200 and body.get("model_version") == version:
            return body
        time.sleep(0.3)
    raise AssertionError(f"server never served {version}: {body}")


def swap_then_roll_back(
    server: LiveServer,
    kind: Kind,
    first: Ref,
    second: Ref,
    ask: Callable[[], httpx.Response],
) -> None:
    """With ``first`` in production: promote ``second`` and see the live server answer with it
    (hot reload, no restart), roll back and see ``first`` again, in the answers and /health."""
    assert promote(kind, "model", second).status == "promoted"
    wait_for_version(ask, str(second))
    rollback(kind, "model")
    wait_for_version(ask, str(first))
    health = httpx.get(f"{server.base}/health").json()
    assert health["products"][kind.product]["versions"] == {"model": str(first)}
