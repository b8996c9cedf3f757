"""A real `lookalike serve --workers 2` on 127.0.0.1: promote and rollback reach every worker,
a burst beyond the concurrency limit gets 503 + Retry-After, and access logs are JSON lines.
"""

from __future__ import annotations

import io
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from live import LiveServer, live_server
from PIL import Image

from lookalike.registry import Ref, Registry

# Polling deadline, not a speed claim: reload_seconds (2 s) + loading the index, with a wide
# margin for a busy 2-core CI box. The measured figure is printed.
AGREE_WITHIN_S = 60.0


@pytest.fixture()
def home(tmp_path: Path, demo_home: Path) -> Path:
    target = tmp_path / "home"
    shutil.copytree(demo_home, target)
    return target


@pytest.fixture()
def two_workers(home: Path, tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(home, workers=2) as server:
        yield server


def _similar(server: LiveServer) -> tuple[int, str]:
    """(worker pid, index version) of one answer, on a new connection each time."""
    r = httpx.get(f"{server.base}/v1/items/LK-0001/similar", params={"k": 3}, timeout=30)
    assert r.status_code == 200, r.text
    return int(r.headers["x-served-by-pid"]), r.json()["index_version"]


def _wait_for_agreement(server: LiveServer, version: str) -> tuple[float, set[int]]:
    """Poll until both workers answered with ``version`` and then 30 answers in a row did.

    Returns (seconds until the last worker switched, pids seen). Once a worker answered with the
    new version it must never answer with the old one again.
    """
    started = time.monotonic()
    switched: dict[int, float] = {}
    seen: set[int] = set()
    in_a_row = 0
    while time.monotonic() - started < AGREE_WITHIN_S:
        pid, answered = _similar(server)
        seen.add(pid)
        if answered == version:
            switched.setdefault(pid, time.monotonic() - started)
            in_a_row += 1
        else:
            assert pid not in switched, f"worker {pid} went back to {answered}"
            in_a_row = 0
        if len(switched) == 2 and in_a_row >= 30:
            return max(switched.values()), seen
    raise AssertionError(f"workers did not agree on {version} within {AGREE_WITHIN_S} s: {seen}")


def test_two_workers_agree_after_promote_and_rollback(two_workers: LiveServer, home: Path) -> None:
    pids = {int(httpx.get(f"{two_workers.base}/health", timeout=5).json()["pid"])}
    for _ in range(200):
        pids.add(_similar(two_workers)[0])
        if len(pids) == 2:
            break
    assert len(pids) == 2, "both workers should answer"

    reg = Registry(home / "index", "index")
    old = reg.resolve("catalog:production")
    with reg.create("catalog", reg.manifest(old) | {"note": "rebuilt copy"}) as w:
        for p in reg.path(old).iterdir():
            if p.name != "manifest.json":
                shutil.copy(p, w.path / p.name)
    reg.promote(w.ref)
    took, seen = _wait_for_agreement(two_workers, str(w.ref))
    assert seen == pids
    print(f"\npromote {old} -> {w.ref}: every worker agreed after {took:.2f} s")

    reg.rollback("catalog")
    took, _ = _wait_for_agreement(two_workers, str(Ref(old.name, old.version)))
    print(f"rollback -> {old}: every worker agreed after {took:.2f} s")

    health = httpx.get(f"{two_workers.base}/health", timeout=5).json()
    assert health["status"] == "ok" and health["reloads"] >= 1

    # one JSON line per request, with the versions; never the API key or image bytes
    secret = "lk_never-log-this-key"
    r = httpx.get(f"{two_workers.base}/health", headers={"X-API-Key": secret}, timeout=5)
    rid = r.headers["x-request-id"]
    time.sleep(0.5)  # let the worker flush its line
    text = two_workers.log.read_text()
    assert secret not in text
    lines = [json.loads(x) for x in text.splitlines() if x.startswith("{")]
    assert any(x["request_id"] == rid and x["route"] == "/health" for x in lines)
    similar = [x for x in lines if x["route"] == "/v1/items/{item_id}/similar"]
    assert similar and all(
        {"request_id", "status", "ms", "model_version", "index_version", "served_by"} <= set(x)
        for x in similar
    )


def _big_jpeg(path: Path) -> bytes:
    with Image.open(path) as im:
        buf = io.BytesIO()
        im.convert("RGB").resize((5792, 8688)).save(buf, "JPEG", quality=85)
        return buf.getvalue()


def test_a_burst_past_the_limit_gets_503_with_retry_after(home, tmp_path, demo_images) -> None:
    # one slot; each search decodes a 50 MP photo (about a second here), so a burst overlaps
    with live_server(home, LOOKALIKE_SERVING__MAX_IN_FLIGHT="1") as server:
        data = _big_jpeg(demo_images[3])
        answers: list[httpx.Response] = []
        lock = threading.Lock()

        def one() -> None:
            r = httpx.post(
                f"{server.base}/v1/search", files={"image": ("q.jpg", data)}, timeout=120
            )
            with lock:
                answers.append(r)

        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(r.status_code for r in answers)
        assert set(codes) == {200, 503}, codes
        for r in answers:
            if r.status_code == 503:
                assert r.headers["retry-after"] == "1"
                assert r.json()["error"]["code"] == "saturated"
        metrics = httpx.get(f"{server.base}/metrics", timeout=5).text
        rejected = [x for x in metrics.splitlines() if x.startswith("lookalike_rejected_total{")]
        assert rejected and float(rejected[0].rsplit(" ", 1)[1]) == codes.count(503)
