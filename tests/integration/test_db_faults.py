"""The database under faults, on a real PostgreSQL cluster of this module's own.

The cluster is started with ``scripts/start_postgres.sh`` into a temp folder (never the shared
test server, which other tests use at the same time), then stopped, started again and frozen
(``SIGSTOP`` on the postmaster and its children) under open stores. Expected: construction never
connects, every call fails with a clean ``Unavailable`` within the configured timeouts while the
database is away, and works again once it is back, with no restart of the store.
Also here: migrations on PostgreSQL (empty, twice, adopting ``create_all``, two processes at
once) and values the driver refuses (a NUL byte).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from lookalike.catalog import CatalogStore
from lookalike.catalog.schema import metadata as catalog_metadata
from lookalike.core.db import VERSION_TABLE, database_problem, get_engine, migrate
from lookalike.core.errors import InvalidInput, NotFound, Unavailable
from lookalike.core.settings import DatabaseSettings
from lookalike.jobs.events import Event, EventStore
from lookalike.serve.auth import ApiKeyStore

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[2]
START_POSTGRES = REPO / "scripts" / "start_postgres.sh"
# Small bounds so that the worst case (pre-ping on a frozen server, then a reconnect) is seconds.
FAST = DatabaseSettings(connect_timeout_s=2, statement_timeout_s=2, pool_timeout_s=2)
# Pre-ping waits statement + connect (4 s), the reconnect waits connect (2 s): 6 s, plus slack
# for a 2-core box shared with other test runs.
FROZEN_BOUND_S = 15.0
LEAKS = ("127.0.0.1", "SELECT", "INSERT", "catalog_", "api_keys", "search_events", "[SQL", "/tmp")


def _bin_dir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(candidates[-1]).parent if candidates else None


@dataclass
class Cluster:
    """A throwaway PostgreSQL server that the tests may stop, start and freeze."""

    url: str
    folder: Path
    bin: Path

    def _as_owner(self, *args: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if os.getuid() == 0 else list(args)

    def stop(self) -> None:
        cmd = self._as_owner(str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"))
        subprocess.run([*cmd, "-m", "fast", "-w", "stop"], check=True, capture_output=True)

    def start(self) -> None:
        port = make_url(self.url).port
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {self.folder} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        cmd = self._as_owner(str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"))
        log = str(self.folder / "server.log")
        subprocess.run(
            [*cmd, "-l", log, "-w", "-t", "60", "-o", options, "start"],
            check=True,
            capture_output=True,
        )

    def pids(self) -> list[int]:
        """The postmaster and every child it has."""
        first = (self.folder / "data" / "postmaster.pid").read_text().splitlines()[0]
        postmaster = int(first)
        children = []
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == postmaster:
                children.append(int(Path(stat).parent.name))
        return [postmaster, *children]

    def signal_all(self, sig: signal.Signals) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def new_database(self) -> str:
        name = f"lk_fault_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(self.url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        # The README's spelling: plain postgresql://, normalised by core.db.
        plain = make_url(self.url).set(drivername="postgresql", database=name)
        return plain.render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    bin_dir = _bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (no pg_ctl): apt-get install postgresql")
    folder = Path(tempfile.mkdtemp(prefix="lookalike-pg-faults-"))
    os.chmod(folder, 0o755)  # the postgres user must reach the cluster folder inside
    target = folder / "cluster"
    result = subprocess.run(
        [str(START_POSTGRES), str(target)], capture_output=True, text=True, timeout=180
    )
    match = re.search(r"^export LOOKALIKE_TEST_POSTGRES_URL=(\S+)$", result.stdout, re.M)
    if result.returncode != 0 or match is None:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL:\n{result.stdout}\n{result.stderr}")
    found = Cluster(match.group(1), target, bin_dir)
    try:
        yield found
    finally:
        found.signal_all(signal.SIGCONT)
        subprocess.run([str(START_POSTGRES), "stop", str(target)], capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture()
def url(cluster: Cluster) -> str:
    return cluster.new_database()


def _fails_cleanly(call: Callable[[], object], within_s: float) -> Unavailable:
    started = time.monotonic()
    with pytest.raises(Unavailable) as info:
        call()
    took = time.monotonic() - started
    assert took < within_s, f"took {took:.1f} s"
    message = info.value.message
    assert message.startswith("the database is unreachable: ")
    assert message.endswith("retry shortly")
    for leak in LEAKS:
        assert leak not in message, message
    return info.value


def _stores(url: str, tmp_path: Path) -> tuple[CatalogStore, ApiKeyStore, EventStore]:
    catalog = CatalogStore(url, tmp_path / "media", db=FAST)
    catalog.create_schema()
    return catalog, ApiKeyStore(url), EventStore(url)


def test_stopped_database_fails_fast_and_recovers(cluster: Cluster, url: str, tmp_path) -> None:
    catalog, keys, events = _stores(url, tmp_path)
    key_id, _ = keys.create("before")
    events.add_batch([Event("impression", "r1", "LK-1", 1)])
    assert catalog.count_items() == 0 and events.count() == 1

    cluster.stop()
    try:
        calls = [catalog.count_items, catalog.revision, keys.list, events.count]
        for call in calls:
            _fails_cleanly(call, within_s=10)
        assert "connection refused" in (database_problem(url, FAST) or "")
    finally:
        cluster.start()

    # Same store objects, no restart: pre-ping drops the dead connections.
    assert catalog.count_items() == 0
    assert [k.key_id for k in keys.list()] == [key_id]
    assert events.count() == 1
    assert database_problem(url, FAST) is None


def test_frozen_database_fails_within_the_timeouts(cluster: Cluster, url: str, tmp_path) -> None:
    catalog, keys, _ = _stores(url, tmp_path)
    assert catalog.count_items() == 0  # a pooled connection now exists
    cluster.signal_all(signal.SIGSTOP)
    try:
        _fails_cleanly(catalog.count_items, within_s=FROZEN_BOUND_S)
        _fails_cleanly(catalog.revision, within_s=FROZEN_BOUND_S)
        started = time.monotonic()
        assert database_problem(url, FAST) is not None
        assert time.monotonic() - started < FROZEN_BOUND_S
    finally:
        cluster.signal_all(signal.SIGCONT)
    assert catalog.count_items() == 0
    assert keys.list() == []


def test_stores_made_while_it_is_down_work_once_it_is_up(
    cluster: Cluster, url: str, tmp_path
) -> None:
    cluster.stop()
    try:
        catalog = CatalogStore(url, tmp_path / "media", db=FAST)  # no connection: no error
        keys, events = ApiKeyStore(url), EventStore(url)
        _fails_cleanly(catalog.create_schema, within_s=10)
        _fails_cleanly(keys.create_schema, within_s=10)
    finally:
        cluster.start()
    catalog.create_schema()
    events.create_schema()
    assert catalog.count_items() == 0 and events.count() == 0
    assert keys.create("after")[0] in {k.key_id for k in keys.list()}


def test_a_nul_byte_is_not_found_or_invalid_never_sql(url: str, tmp_path) -> None:
    catalog, keys, events = _stores(url, tmp_path)
    with pytest.raises(NotFound) as missing:
        catalog.get_item("LK\x000001")
    assert "SELECT" not in missing.value.message
    assert catalog.get_items(["\x00", "also\x00"]) == {}
    with pytest.raises(InvalidInput) as refused:
        events.add_batch([Event("click", "req\x00", "LK-1", 1)])
    assert "NUL" in refused.value.message
    with pytest.raises(InvalidInput) as refused:
        keys.revoke("\x00")
    for leak in LEAKS:
        assert leak not in refused.value.message
    assert events.count() == 0  # and the connection is still good


def _tables(url: str) -> set[str]:
    return set(sa.inspect(get_engine(url)).get_table_names())


def test_migrate_on_postgres_empty_twice_and_adopting_create_all(
    cluster: Cluster, tmp_path
) -> None:
    fresh = cluster.new_database()
    head = migrate(fresh)
    assert migrate(fresh) == head
    # the same migrations give the same tables on SQLite and on PostgreSQL
    lite = f"sqlite:///{tmp_path / 'same.db'}"
    assert migrate(lite) == head
    expected = _tables(lite)
    assert {"catalog_items", "catalog_images", "catalog_state", "search_events", "api_keys"} | {
        "moderation_posts",
        "moderation_decisions",
        "moderation_accounts",
        "rentals",
        "shopper_events",
        VERSION_TABLE,
    } <= expected
    assert _tables(fresh) == expected

    old = cluster.new_database()
    legacy = sa.create_engine(old.replace("postgresql://", "postgresql+psycopg://", 1))
    catalog_metadata.create_all(legacy)
    with legacy.begin() as conn:
        conn.execute(sa.text("INSERT INTO catalog_state (key, value) VALUES ('revision', 3)"))
    legacy.dispose()
    store = CatalogStore(old, tmp_path / "media")
    store.create_schema()
    assert store.revision() == 3
    assert _tables(old) == expected


def test_processes_starting_at_once_migrate_postgres_once(cluster: Cluster) -> None:
    url = cluster.new_database()
    code = f"from lookalike.core.db import migrate; print(migrate({url!r}))"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outs = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert [p.returncode for p in procs] == [0, 0, 0] and len(outs) == 1
    with get_engine(url).connect() as conn:
        assert list(conn.scalars(sa.text(f"SELECT version_num FROM {VERSION_TABLE}"))) == [*outs]


def test_the_server_survives_the_database(
    cluster: Cluster, url: str, tmp_path: Path, built_models: Path, demo_catalog: Path
) -> None:
    """A real `lookalike serve` on PostgreSQL: stopped while serving → 503s with a clean
    message and /health degraded (never 500, never a hang); back → answers again, no restart;
    down at start → the server starts, says why, and becomes ready when the database returns."""
    import csv

    import httpx
    from live import LiveServer, live_server, run_cli

    home = tmp_path / "home"
    shutil.copytree(built_models, home / "models")
    with open(demo_catalog / "items.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:60]
    feed = tmp_path / "items.csv"
    with open(feed, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    env = {
        "LOOKALIKE_DATABASE_URL": url,
        "LOOKALIKE_DB__CONNECT_TIMEOUT_S": "2",
        "LOOKALIKE_DB__STATEMENT_TIMEOUT_S": "2",
        "LOOKALIKE_DB__POOL_TIMEOUT_S": "2",
        "LOOKALIKE_SERVING__RELOAD_SECONDS": "1",
        "LOOKALIKE_SEARCH__TORCH_FALLBACK": "false",
    }
    run_cli(home, "catalog", "import", str(feed), "--images", str(demo_catalog), check=True, **env)
    run_cli(home, "index", "build", check=True, **env)
    photo = (demo_catalog / rows[3]["image"]).read_bytes()

    def search(base: str) -> httpx.Response:
        return httpx.post(f"{base}/v1/search", files={"image": ("q.jpg", photo)}, timeout=30)

    def eventually_ok(base: str) -> None:
        """Ready, the database reachable again, and a search that no longer says otherwise."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready = httpx.get(f"{base}/ready", timeout=5)
            if ready.status_code == 200 and ready.json()["database"] is None:
                answer = search(base)
                if answer.status_code == 200 and not answer.json()["fallback"]:
                    return
            time.sleep(0.5)
        raise AssertionError("the server did not recover after the database came back")

    from lookalike.serve.auth import ApiKeyStore

    keys = ApiKeyStore(url)
    _, used = keys.create("extension-used-before")
    _, unused = keys.create("extension-never-used")

    def auth(base: str, secret: str) -> httpx.Response:
        return httpx.get(f"{base}/v1/auth/check", headers={"X-API-Key": secret}, timeout=30)

    with live_server(home, **env) as server:
        assert search(server.base).status_code == 200
        assert auth(server.base, used).status_code == 200
        cluster.stop()
        try:
            # past the catalog view's revision check (every 1 s): search must not need it
            time.sleep(1.5)
            started = time.monotonic()
            r = search(server.base)
            assert time.monotonic() - started < FROZEN_BOUND_S
            # Search answers from the catalog rows it holds in memory (refreshed with the index).
            assert r.status_code == 200 and r.json()["results"], r.text
            assert "catalog database unreachable" in (r.json()["fallback"] or ""), r.text
            # ... and so do the found items' pages and photos (the same rows)
            found = r.json()["results"][0]
            item = httpx.get(f"{server.base}/v1/items/{found['item_id']}", timeout=30)
            assert item.status_code == 200 and item.json()["title"] == found["title"], item.text
            photo_of = httpx.get(f"{server.base}{found['image_url']}", timeout=30)
            assert photo_of.status_code == 200 and photo_of.content[:2] == b"\xff\xd8"
            assert httpx.get(f"{server.base}/items/{found['item_id']}").status_code == 200
            # a key this worker verified keeps working; one it never saw cannot be checked
            assert auth(server.base, used).status_code == 200
            refused = auth(server.base, unused)
            assert refused.status_code == 503 and refused.headers.get("retry-after")
            cats = httpx.get(f"{server.base}/v1/categories", timeout=30)
            assert cats.status_code == 200 and cats.json()["categories"], cats.text
            # an item it does not hold cannot be told apart from one the database has: 503
            other = httpx.get(f"{server.base}/v1/items/not-held-{uuid.uuid4().hex}", timeout=30)
            assert other.status_code == 503 and other.headers.get("retry-after"), other.text
            message = other.json()["error"]["message"]
            assert "database is unreachable" in message, message
            for leak in LEAKS:
                assert leak not in message, message
            health = httpx.get(f"{server.base}/health", timeout=30)
            assert health.status_code == 200
            body = health.json()
            assert body["status"] == "degraded" and body["database"]["ok"] is False, body
            # still ready: search answers, and every worker shares the database, so taking
            # them out of rotation would make this an outage; the body says what is wrong
            ready = httpx.get(f"{server.base}/ready", timeout=30)
            assert ready.status_code == 200, ready.text
            assert ready.json()["status"] == "degraded" and ready.json()["database"]
        finally:
            cluster.start()
        eventually_ok(server.base)

    cluster.stop()
    server = LiveServer(home, tmp_path / "down-at-start.log", **env)
    try:
        deadline = time.monotonic() + 120
        health = None
        while time.monotonic() < deadline:
            assert server.proc.poll() is None, server.log.read_text()  # it did not exit
            try:
                health = httpx.get(f"{server.base}/health", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.3)
        assert health is not None and health.status_code == 200, server.log.read_text()
        assert health.json()["database"]["ok"] is False
        assert httpx.get(f"{server.base}/ready", timeout=10).status_code == 503
        assert "Traceback" not in server.log.read_text()
        cluster.start()
        eventually_ok(server.base)
    finally:
        cluster.start() if not (cluster.folder / "data" / "postmaster.pid").exists() else None
        server.stop()
