"""Load and connections against a real `lookalike serve` on 127.0.0.1.

- A burst of 64 concurrent searches: every answer is 200 or a 503 ``saturated`` that came back
  fast (compared with the measured service time, not with a fixed number), and /health answers
  during the burst.
- A few thousand idle sockets: the worker closes the oldest idle ones past ``max_connections``,
  and /health and a search still answer.
- Slowloris: a client that sends its headers (or body) byte by byte is cut off with 408.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import resource
import select
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest
from live import LiveServer

from lookalike.serve.limits import Admission

BURST = 64


class Server(LiveServer):
    """One `lookalike serve` worker with ``env`` on top of ours."""

    def __init__(self, home: Path, log: Path, **env: str) -> None:
        # 64 searches from one address is the point here, not the per-client rate limit
        limits = {
            "LOOKALIKE_EXTENSION__ANONYMOUS_PER_MINUTE": "1000000",
            "LOOKALIKE_EXTENSION__RATE_PER_MINUTE": "1000000",
        }
        super().__init__(home, log, 1, **{**limits, **env})


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, demo_home: Path) -> Path:
    target = tmp_path_factory.mktemp("load") / "home"
    shutil.copytree(demo_home, target)
    return target


def _start(home: Path, log: Path, **env: str) -> Server:
    server = Server(home, log, **env)
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="module")
def busy_server(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """8 slots and a short queue (2, 20 ms) so that a burst of 64 must be shed; a long header
    timeout so that idle sockets are closed by the connection cap (300), not by the timer."""
    server = _start(
        home,
        tmp_path_factory.mktemp("busy") / "server.log",
        LOOKALIKE_SERVING__MAX_IN_FLIGHT="8",
        LOOKALIKE_SERVING__QUEUE_SIZE="2",
        LOOKALIKE_SERVING__QUEUE_BUDGET_MS="20",
        LOOKALIKE_SERVING__MAX_CONNECTIONS="300",
        LOOKALIKE_SERVING__HEADER_TIMEOUT_SECONDS="120",
        LOOKALIKE_SERVING__KEEP_ALIVE_SECONDS="120",
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def strict_server(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = _start(
        home,
        tmp_path_factory.mktemp("strict") / "server.log",
        LOOKALIKE_SERVING__HEADER_TIMEOUT_SECONDS="1",
        LOOKALIKE_SERVING__BODY_TIMEOUT_SECONDS="2",
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def photo(demo_images: list[Path]) -> bytes:
    return demo_images[0].read_bytes()


def _search(
    base: str, photo: bytes, client: httpx.Client | None = None
) -> tuple[int, float, httpx.Response]:
    """(status, seconds, response) of one search; the clock starts at the request, not at
    building a client (an httpx.Client costs milliseconds of GIL time on its own)."""
    if client is None:
        with httpx.Client(timeout=60) as own:
            return _search(base, photo, own)
    started = time.perf_counter()
    r = client.post(f"{base}/v1/search", files={"image": ("q.jpg", photo)})
    return r.status_code, time.perf_counter() - started, r


def _rejected(base: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("lookalike_rejected_total{")
    )


def _multipart(photo: bytes) -> tuple[bytes, bytes]:
    boundary = b"lookalike-load-test"
    body = (
        b"--" + boundary + b"\r\n"
        b'Content-Disposition: form-data; name="image"; filename="q.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + photo + b"\r\n--" + boundary + b"--\r\n"
    )
    return b"multipart/form-data; boundary=" + boundary, body


class RawRequest:
    """A prepared HTTP/1.1 request sent on a socket opened in advance.

    64 httpx clients in 64 threads spend most of a burst waiting for this process's GIL; a
    prepared request costs one sendall and a few recv calls, so the clock measures the server.
    """

    def __init__(self, port: int, method: str, path: str, body: bytes = b"", ctype: bytes = b""):
        # keep-alive: a 503 sent before the body was read leaves the server draining it; with
        # Connection: close it would close on unread data, and the reset could eat the answer
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
        if body:
            head += b"Content-Type: " + ctype + f"\r\nContent-Length: {len(body)}\r\n".encode()
        self.data = head + b"\r\n" + body
        self.port = port

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=60)

    def send(self, sock: socket.socket) -> tuple[int, float, dict[str, str], bytes]:
        """(status, seconds, headers, body) of one request and its answer."""
        started = time.perf_counter()
        sock.sendall(self.data)
        raw = b""
        while b"\r\n\r\n" not in raw:
            chunk = sock.recv(65536)
            assert chunk, f"the server closed without an answer: {raw[:200]!r}"
            raw += chunk
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        while len(body) < int(headers.get("content-length", "0")):
            chunk = sock.recv(65536)
            assert chunk, "the server closed in the middle of an answer"
            body += chunk
        took = time.perf_counter() - started
        return int(lines[0].split()[1]), took, headers, body


def test_a_burst_of_64_searches_is_shed_fast_and_health_answers(busy_server, photo) -> None:
    base = busy_server.base
    ctype, body = _multipart(photo)
    # several crops and garments: a heavier search, so that its service time stands well clear
    # of the refusals even on a loaded machine
    heavy = "/v1/search?crops=multi&per_garment=true&k=100"
    search = RawRequest(busy_server.port, "POST", heavy, body, ctype)
    health_request = RawRequest(busy_server.port, "GET", "/health")
    # the service time of one search, alone, on this machine right now
    for _ in range(2):  # warm-up
        with search.connect() as sock:
            assert search.send(sock)[0] == 200
    alone_runs = []
    for _ in range(5):
        with search.connect() as sock:
            alone_runs.append(search.send(sock)[1])
    alone = statistics.median(alone_runs)
    rejected_before = _rejected(base)

    answers: list[tuple[int, float, dict[str, str], bytes]] = []
    health: list[tuple[int, float]] = []
    lock = threading.Lock()
    start = threading.Barrier(BURST + 1)
    burst_done = threading.Event()

    def one() -> None:
        with search.connect() as sock:
            start.wait()
            answer = search.send(sock)
        with lock:
            answers.append(answer)

    def poll_health() -> None:
        start.wait()
        while not burst_done.is_set():
            with health_request.connect() as sock:
                code, took, _, _ = health_request.send(sock)
            with lock:
                health.append((code, took))
            time.sleep(0.01)

    threads = [threading.Thread(target=one) for _ in range(BURST)]
    poller = threading.Thread(target=poll_health)
    for t in [*threads, poller]:
        t.start()
    for t in threads:
        t.join()
    burst_done.set()
    poller.join()

    codes = [a[0] for a in answers]
    ok = sorted(a[1] for a in answers if a[0] == 200)
    shed = sorted(a[1] for a in answers if a[0] == 503)
    print(
        f"\nalone: {alone * 1000:.0f} ms; burst of {BURST}: {len(ok)} x 200 "
        f"(median {statistics.median(ok) * 1000:.0f} ms), {len(shed)} x 503 "
        f"(median {statistics.median(shed or [0]) * 1000:.0f} ms, "
        f"max {max(shed, default=0) * 1000:.0f} ms); /health x{len(health)} "
        f"(max {max(s for _, s in health) * 1000:.0f} ms)"
    )
    assert set(codes) <= {200, 503}, codes
    assert ok, "some searches must be served"
    assert shed, "8 slots + 2 queued cannot take 64 at once: the rest must be shed"
    for code, _, headers, raw in answers:
        if code == 503:
            assert headers["retry-after"] == "1"
            assert json.loads(raw)["error"]["code"] == "saturated"
    # Shed at the door: a refusal costs far less than a search. Before admission, 503s waited
    # behind queued searches and took longer than the searches themselves (p95 5-6 s).
    assert statistics.median(shed) < 0.5 * statistics.median(ok)
    assert max(shed) < statistics.median(ok)
    # cheap routes never wait behind searches
    assert health and all(code == 200 for code, _ in health)
    assert max(s for _, s in health) < statistics.median(ok)
    assert _rejected(base) - rejected_before == len(shed)


def _raise_own_nofile(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard, max(soft, wanted)) if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.setblocking(False)  # a socket with a timeout would wait in recv; select() stops at 1024
    try:
        return sock.recv(1) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def test_thousands_of_idle_sockets_do_not_lock_out_health_or_search(busy_server, photo) -> None:
    base = busy_server.base
    soft = _raise_own_nofile(4000)
    count = min(3000, soft - 200)  # bounded, and leaves this process files for its own client
    assert count > 600, f"this test needs a few thousand sockets; RLIMIT_NOFILE soft is {soft}"
    sockets: list[socket.socket] = []
    try:
        t0 = time.monotonic()
        for _ in range(count):
            sockets.append(socket.create_connection(("127.0.0.1", busy_server.port), timeout=10))
        opened_in = time.monotonic() - t0
        # The server is still reachable: a new connection, /health and a search.
        assert httpx.get(f"{base}/health", timeout=30).status_code == 200
        assert _search(base, photo)[0] == 200
        # ...because it closed the oldest idle sockets past max_connections (300), not because
        # a timer fired (the header timeout is 120 s here).
        deadline = time.monotonic() + 30  # polling deadline, not a speed claim
        closed = 0
        while time.monotonic() < deadline:
            closed = sum(_closed_by_peer(s) for s in sockets)
            if closed >= count - 300:
                break
            time.sleep(0.2)
        print(f"\n{count} idle sockets opened in {opened_in:.1f} s, {closed} closed by the server")
        assert closed >= count - 300
        assert not _closed_by_peer(sockets[-1]), "the newest connections are kept"
    finally:
        for s in sockets:
            s.close()
    assert httpx.get(f"{base}/health", timeout=30).status_code == 200


def _dribble(sock: socket.socket, data: bytes, pause: float) -> tuple[int, bytes]:
    """Send ``data`` a byte at a time; stop when the server answers or closes.

    Returns (bytes sent, what the server sent back).
    """
    sent = 0
    for byte in data:
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:
            break
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            break
        sent += 1
        time.sleep(pause)
    sock.settimeout(10)
    reply = b""
    try:
        while chunk := sock.recv(4096):
            reply += chunk
    except OSError:
        pass
    return sent, reply


def test_slowloris_headers_and_bodies_are_cut_off(strict_server, photo) -> None:
    port = strict_server.port
    # headers byte by byte: 200 bytes at 20 per second would take 10 s; the deadline is 1 s
    head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 150 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sent, reply = _dribble(sock, head, 0.05)
    print(f"\nslow headers: cut off after {sent} of {len(head)} bytes: {reply[:40]!r}")
    assert sent < len(head)
    assert reply.startswith(b"HTTP/1.1 408")

    # a body byte by byte: the head and the multipart preamble arrive at once, the photo
    # dribbles; the body deadline is 2 s
    ctype, body = _multipart(photo)
    preamble = body.index(photo)
    start = (
        b"POST /v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
        + ctype
        + b"\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[:preamble]
    )
    rest = body[preamble:]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(start)
        sent, reply = _dribble(sock, rest[:400], 0.05)
    print(f"slow body: cut off after {sent} of {len(rest)} bytes: {reply[:40]!r}")
    assert sent < 400
    assert reply.startswith(b"HTTP/1.1 408")

    # a socket that connects and sends nothing is closed too
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.settimeout(10)
        assert sock.recv(1) == b""

    # and the server still serves
    assert httpx.get(f"{strict_server.base}/health", timeout=10).status_code == 200
    assert _search(strict_server.base, photo)[0] == 200


LOCUSTFILE = Path(__file__).resolve().parents[2] / "benchmarks" / "locustfile.py"


def _locust(host: str, *args: str, records: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "LOOKALIKE_LOCUST_RATE": "2"}
    if records is not None:
        env["LOOKALIKE_LOCUST_RECORDS"] = str(records)
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", host, *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def test_the_locust_mix_runs_short_headless_and_only_bounded(strict_server, tmp_path) -> None:
    """The short version of the load run (CI); the long ones are benchmarks/bench_load.py and
    benchmarks/soak.py."""
    # never imported here: locust monkey-patches the process (gevent) when imported
    if importlib.util.find_spec("locust") is None:
        pytest.skip("locust is not installed: the `bench` extra installs it")
    records = tmp_path / "records.csv"
    done = _locust(
        strict_server.base,
        *("--headless", "-u", "6", "-r", "6", "-t", "8s", "--only-summary"),
        records=records,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split(",") for line in records.read_text().splitlines()[1:]]
    seen = {name for _, name, _, _ in rows}
    assert {"/v1/search", "/v1/items/{id}/image", "/health"} <= seen, seen
    statuses = {int(status) for _, _, status, _ in rows}
    assert statuses <= {200, 304, 503}, statuses
    assert 200 in statuses
    # bounded: another host, no run time or no --headless are refused before any request
    for args, host in (
        (("--headless", "-u", "1", "-t", "2s"), "http://example.com"),
        (("--headless", "-u", "1"), strict_server.base),
        (("-u", "1", "-t", "2s"), strict_server.base),
    ):
        refused = _locust(host, *args)
        assert refused.returncode != 0, (args, host)


# -- Admission in process: a tiny real ASGI app behind the real middleware --------------------
def _gated_app(release: asyncio.Event, started: list[str]) -> Admission:
    async def app(scope, receive, send) -> None:  # noqa: ANN001 - ASGI signature
        started.append(scope["path"])
        if scope["path"] == "/v1/search":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return Admission(app, max_in_flight=1, queue_size=1, queue_budget_ms=5000, threads=7)


def _run_in_own_loop(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """``asyncio.run(main())`` in a thread of its own: whatever loop another test left behind
    in the main thread, this scenario gets a fresh one (and its own anyio thread limiter)."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "the scenario did not finish in 120 s"
    if errors:
        raise errors[0]


def test_admission_queues_a_few_refuses_the_rest_and_never_gates_cheap_routes() -> None:
    async def scenario() -> None:
        release = asyncio.Event()
        started: list[str] = []
        gate = _gated_app(release, started)
        transport = httpx.ASGITransport(app=gate)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            first = asyncio.create_task(client.post("/v1/search"))
            while gate.in_flight < 1:
                await asyncio.sleep(0.001)
            second = asyncio.create_task(client.post("/v1/search"))
            while gate.waiting < 1:
                await asyncio.sleep(0.001)
            third = await client.post("/v1/search")  # slot taken, queue full: refused now
            assert third.status_code == 503
            assert third.headers["retry-after"] == "1"
            assert third.json()["error"]["code"] == "saturated"
            similar = await client.get("/v1/items/LK-1/similar")  # the same class of route
            assert similar.status_code == 503
            health = await client.get("/health")  # cheap: never waits behind searches
            assert health.status_code == 200
            assert started == ["/v1/search", "/health"]  # refused ones never reached the app
            release.set()
            assert (await first).status_code == 200
            assert (await second).status_code == 200  # it got the slot handed over
            assert gate.in_flight == 0 and gate.waiting == 0
            assert anyio.to_thread.current_default_thread_limiter().total_tokens == 7

    _run_in_own_loop(scenario)


def test_admission_refuses_a_queued_request_when_its_budget_runs_out() -> None:
    async def scenario() -> None:
        release = asyncio.Event()
        started: list[str] = []
        rejected: list[str] = []
        gate = _gated_app(release, started)
        gate.budget_s = 0.05
        gate.on_reject = rejected.append
        transport = httpx.ASGITransport(app=gate)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            first = asyncio.create_task(client.post("/v1/search"))
            while gate.in_flight < 1:
                await asyncio.sleep(0.001)
            queued = await client.post("/v1/search")
            assert queued.status_code == 503 and queued.json()["error"]["code"] == "saturated"
            assert gate.waiting == 0, "a refused waiter leaves the queue"
            release.set()
            assert (await first).status_code == 200
            assert gate.in_flight == 0
            assert (await client.post("/v1/search")).status_code == 200
        assert rejected == ["/v1/search"]

    _run_in_own_loop(scenario)
