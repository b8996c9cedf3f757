"""A real `lookalike serve --workers 2` on 127.0.0.1 under abuse: limits hold across workers.

One server for the module, with small limits so that a test can exceed them in seconds:

- the per-key limit is shared by both workers (send 2.5 N, at most N + a small slack succeed);
- anonymous clients have their own limit, per client network;
- an empty or garbage key is 401 on /v1/search and on /similar;
- forged events (unknown request ids) are refused and never reach the exported pairs;
- the events route answers 429 past its own rate.

The slack: limits are sliding windows of one minute; if the burst straddles a minute boundary,
the share of the previous minute still counted lets in about N x (seconds past the boundary /
60) more, one or two requests for a burst of a few seconds.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from live import LiveServer, run_cli

from lookalike.core.settings import Settings
from lookalike.jobs.events import EventStore

KEY_LIMIT = 20
ANON_LIMIT = 12
EVENTS_LIMIT = 6
SLACK = 3


def _env() -> dict[str, str]:
    return {
        "LOOKALIKE_EXTENSION__RATE_PER_MINUTE": str(KEY_LIMIT),
        "LOOKALIKE_EXTENSION__ANONYMOUS_PER_MINUTE": str(ANON_LIMIT),
        "LOOKALIKE_EXTENSION__EVENTS_PER_MINUTE": str(EVENTS_LIMIT),
    }


class Server(LiveServer):
    """Two workers with this module's limits."""

    def __init__(self, home: Path, log: Path) -> None:
        super().__init__(home, log, 2, **_env())

    def wait_for_both_workers(self) -> None:
        """/ready answers once one worker is up; poll the unmetered /health until both are."""
        deadline = time.monotonic() + 120
        seen: set[int] = set()
        while time.monotonic() < deadline and len(seen) < 2:
            try:
                r = httpx.get(f"{self.base}/health", timeout=5)
                seen.add(int(r.json()["pid"]))
            except httpx.TransportError:
                pass
        assert len(seen) == 2, f"only worker(s) {seen} answered:\n{self.log.read_text()}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, demo_home: Path) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("abuse") / "home"
    shutil.copytree(demo_home, home)
    srv = Server(home, home.parent / "server.log")
    try:
        srv.wait_ready()
        srv.wait_for_both_workers()
        yield srv
    finally:
        srv.stop()


def _key(home: Path, name: str) -> str:
    """A key made by the real CLI, as an operator would."""
    out = run_cli(home, "keys", "create", name, "--json", check=True, **_env())
    return str(json.loads(out.stdout.strip().splitlines()[-1])["secret"])


def _burst(server: Server, n: int, headers: dict[str, str]) -> tuple[list[int], set[int]]:
    """n similar lookups, each on a new connection: (status codes, worker pids seen)."""
    codes, pids = [], set()
    for _ in range(n):
        r = httpx.get(
            f"{server.base}/v1/items/LK-0002/similar", params={"k": 3}, headers=headers, timeout=30
        )
        codes.append(r.status_code)
        if "x-served-by-pid" in r.headers:
            pids.add(int(r.headers["x-served-by-pid"]))
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "rate_limited"
            assert 1 <= int(r.headers["retry-after"]) <= 120
    return codes, pids


def test_per_key_limit_holds_across_workers(server: Server) -> None:
    secret = _key(server.home, "burst")
    codes, pids = _burst(server, int(2.5 * KEY_LIMIT), {"X-API-Key": secret})
    ok = codes.count(200)
    print(f"\nkey limit {KEY_LIMIT}/min, 2 workers {sorted(pids)}: {ok} of {len(codes)} allowed")
    assert len(pids) == 2, "both workers should have answered"
    assert set(codes) == {200, 429}, codes
    assert KEY_LIMIT <= ok <= KEY_LIMIT + SLACK
    # another key has its own budget
    other = _key(server.home, "other")
    assert _burst(server, 3, {"X-API-Key": other})[0] == [200, 200, 200]


def test_anonymous_limit_holds_per_client(server: Server) -> None:
    codes, pids = _burst(server, int(2.5 * ANON_LIMIT), {})
    ok = codes.count(200)
    print(f"\nanonymous limit {ANON_LIMIT}/min, workers {sorted(pids)}: {ok} of {len(codes)}")
    assert ANON_LIMIT <= ok <= ANON_LIMIT + SLACK
    # an extension origin without a key is refused, not counted as anonymous
    r = httpx.get(
        f"{server.base}/v1/items/LK-0002/similar",
        headers={"Origin": "moz-extension://abc"},
        timeout=10,
    )
    assert r.status_code == 401 and r.json()["error"]["code"] == "api_key_required"
    # the client's address is never written to the shared ledger
    ledger = (server.home / "var" / "access.db").read_bytes()
    assert b"127.0.0.1" not in ledger


@pytest.mark.parametrize("key", ["", "garbage", "lk_000000000000_" + "a" * 43])
def test_an_empty_or_garbage_key_is_401_everywhere(server: Server, demo_images, key) -> None:
    headers = {"X-API-Key": key}
    data = demo_images[0].read_bytes()
    r = httpx.post(
        f"{server.base}/v1/search",
        files={"image": ("q.jpg", io.BytesIO(data), "image/jpeg")},
        headers=headers,
        timeout=30,
    )
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = httpx.get(f"{server.base}/v1/items/LK-0001/similar", headers=headers, timeout=30)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert key == "" or key not in server.log.read_text()


def test_forged_events_are_refused_and_rate_limited(server: Server, tmp_path: Path) -> None:
    secret = _key(server.home, "events")
    headers = {"X-API-Key": secret}
    forged = {
        "events": [
            {
                "type": "click",
                "request_id": f"forged-{i}",
                "item_id": "LK-0003",
                "position": 1,
                "query_item_id": "LK-0001",
                "surface": "similar",
            }
            for i in range(50)
        ]
    }
    codes = []
    for _ in range(EVENTS_LIMIT + 4):
        r = httpx.post(f"{server.base}/v1/events", json=forged, headers=headers, timeout=10)
        codes.append(r.status_code)
        if r.status_code == 422:
            assert r.json()["error"]["code"] == "events_rejected"
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
    print(f"\nforged event posts (limit {EVENTS_LIMIT}/min): {codes}")
    assert set(codes) == {422, 429}, codes
    assert EVENTS_LIMIT <= codes.count(422) <= EVENTS_LIMIT + SLACK

    # a body over the events cap is refused before it is parsed
    big = {"events": forged["events"] * 2, "pad": "x" * 70_000}
    r = httpx.post(f"{server.base}/v1/events", json=big, timeout=10)
    assert r.status_code in (413, 429)

    store = EventStore(Settings(home=server.home).db_url)
    try:
        assert store.count() == 0
        out = tmp_path / "pairs.csv"
        assert store.export_pairs(out) == 0
        assert out.read_text().strip() == "query_item_id,clicked_item_id,clicks"
    finally:
        store.close()


@pytest.mark.postgres
def test_the_ledger_works_on_postgresql(postgres_url: str) -> None:
    """Replicas on several hosts share one PostgreSQL ledger (LOOKALIKE_EXTENSION__LEDGER_URL)."""
    from lookalike.jobs.events import IssuedAnswer
    from lookalike.serve.ledger import AccessLedger

    first, second = AccessLedger(postgres_url), AccessLedger(postgres_url)
    first.create_schema()
    second.create_schema()
    bucket = f"search:test-{time.time_ns()}"
    allowed = [(first if i % 2 else second).hit(bucket, 7) == 0.0 for i in range(15)]
    assert 7 <= sum(allowed) <= 7 + 1 and all(allowed[:7])
    assert first.client_bucket("192.0.2.1") == second.client_bucket("192.0.2.1")
    rid = f"pg-{time.time_ns()}"
    first.issue(IssuedAnswer(rid, "similar", "LK-0001", ("LK-0002", "LK-0003"), time.time()))
    first.issue(IssuedAnswer(rid, "similar", "LK-0001", ("LK-0004",), time.time()))  # replaces
    got = second.issued({rid, "absent"})
    assert list(got) == [rid] and got[rid].item_ids == ("LK-0004",)
