"""API keys and roles, the access policy, the shared ledger and CORS, on a real FastAPI app.

Real SQLite files throughout; the policy is the one ``create_app`` installs (serve/access.py).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from lookalike.core.db import migrate
from lookalike.core.errors import ConfigError, NotFound, Unavailable
from lookalike.core.settings import ExtensionSettings
from lookalike.jobs.events import Event, IssuedAnswer, check_event
from lookalike.serve import auth as auth_module
from lookalike.serve.access import ROUTE_ACCESS, RouteAccess, RouteClass
from lookalike.serve.auth import ApiKeyStore, install_auth
from lookalike.serve.ledger import AccessLedger

EXT = "chrome-extension://abcdefghijklmnopabcdefghijklmnop"
BAD_KEY = "lk_000000000000_" + "a" * 43


@pytest.fixture()
def store(tmp_path: Path) -> ApiKeyStore:
    s = ApiKeyStore(f"sqlite:///{tmp_path / 'var' / 'catalog.db'}")
    s.create_schema()
    return s


@pytest.fixture()
def ledger(tmp_path: Path) -> AccessLedger:
    led = AccessLedger(f"sqlite:///{tmp_path / 'var' / 'access.db'}")
    led.create_schema()
    return led


def make_client(
    store: ApiKeyStore,
    ledger: AccessLedger,
    *,
    client: tuple[str, int] = ("203.0.113.7", 50000),
    **limits: int,
) -> TestClient:
    """An app with one route per class, using the table's real paths where they exist."""
    app = FastAPI()

    @app.post("/v1/search")
    def search(request: Request) -> dict:
        rid = request.headers.get("x-request-id", "rid-1")
        return {"results": [{"item_id": "A"}, {"item_id": "B"}], "request_id": rid}

    @app.get("/v1/items/{item_id}/similar")
    def similar(item_id: str) -> dict:
        return {"results": [{"item_id": "C"}], "request_id": f"sim-{item_id}"}

    @app.get("/v1/categories")
    def categories() -> dict[str, list[str]]:
        return {"categories": []}

    @app.post("/v1/events")
    async def events(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.get("/metrics")
    def metrics() -> dict[str, str]:
        return {"metrics": "yes"}

    settings = ExtensionSettings(origins=[EXT], **{"rate_per_minute": 1000, **limits})
    install_auth(app, store, settings, ledger=ledger)
    return TestClient(app, client=client)


def test_create_list_revoke_and_verify(store: ApiKeyStore, tmp_path: Path) -> None:
    key_id, secret = store.create("alice laptop")
    assert secret.startswith("lk_") and key_id in secret
    assert len(secret) > 40
    # Only the hash is stored: the secret appears nowhere in the database file.
    assert secret.encode() not in (tmp_path / "var" / "catalog.db").read_bytes()

    record = store.verify(secret)
    assert record is not None and record.key_id == key_id and record.name == "alice laptop"
    assert record.role == "extension"
    assert store.verify(secret + "x") is None
    assert store.verify(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert store.verify("not-a-key") is None

    other_id, other_secret = store.create("bob", role="admin")
    assert [(k.key_id, k.role) for k in store.list()] == [
        (key_id, "extension"),
        (other_id, "admin"),
    ]

    revoked = store.revoke(key_id)
    assert revoked.revoked_at is not None and not revoked.active
    assert store.verify(secret) is None
    assert store.verify(other_secret) is not None
    assert store.revoke(key_id).revoked_at == revoked.revoked_at  # revoking twice is harmless
    with pytest.raises(NotFound):
        store.revoke("000000000000")
    with pytest.raises(ConfigError):
        store.create("  ")
    with pytest.raises(ConfigError, match="role"):
        store.create("eve", role="root")


def test_keys_made_before_roles_become_extension_keys(tmp_path: Path) -> None:
    """A database at revision 0001 (no role column) is migrated; its keys keep working."""
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    con.execute(
        "CREATE TABLE api_keys (key_id VARCHAR(32) PRIMARY KEY, name VARCHAR(200) NOT NULL, "
        "secret_sha256 VARCHAR(64) NOT NULL, created_at DATETIME NOT NULL, revoked_at DATETIME)"
    )
    con.commit()
    con.close()
    url = f"sqlite:///{db}"
    migrate(url)
    store = ApiKeyStore(url)
    key_id, secret = store.create("after")
    con = sqlite3.connect(db)
    con.execute(
        "INSERT INTO api_keys (key_id, name, secret_sha256, created_at) "
        "VALUES ('aaaaaaaaaaaa', 'before', 'x', '2026-01-01 00:00:00')"
    )
    con.commit()
    roles = dict(con.execute("SELECT name, role FROM api_keys"))
    con.close()
    assert roles == {"after": "extension", "before": "extension"}
    assert store.verify(secret) is not None


def test_a_key_once_sent_is_always_checked(store: ApiKeyStore, ledger: AccessLedger) -> None:
    _, secret = store.create("ext")
    client = make_client(store, ledger)

    # The same-origin search page sends neither key nor extension origin.
    assert client.post("/v1/search").status_code == 200
    assert client.get("/v1/items/X/similar").status_code == 200
    for path, method in (("/v1/search", "POST"), ("/v1/items/X/similar", "GET")):
        for bad in ("", "   ", "garbage", BAD_KEY):
            r = client.request(method, path, headers={"X-API-Key": bad})
            assert r.status_code == 401, (path, bad)
            assert r.json()["error"]["code"] == "invalid_api_key"
            assert "key" in r.json()["error"]["message"]
        r = client.request(method, path, headers={"Authorization": f"Bearer {BAD_KEY}"})
        assert r.status_code == 401
        assert client.request(method, path, headers={"X-API-Key": secret}).status_code == 200
    # also on cheap public routes
    assert client.get("/v1/categories", headers={"X-API-Key": "nope"}).status_code == 401
    assert client.get("/v1/categories").status_code == 200


def test_extensions_must_send_a_key(store: ApiKeyStore, ledger: AccessLedger) -> None:
    _, secret = store.create("ext")
    client = make_client(store, ledger)
    for origin in (EXT, "moz-extension://1234", "safari-web-extension://x"):
        r = client.post("/v1/search", headers={"Origin": origin})
        assert r.status_code == 401 and r.json()["error"]["code"] == "api_key_required"
    r = client.post("/v1/search", headers={"Origin": EXT, "X-API-Key": secret})
    assert r.status_code == 200


def test_roles_and_classes(store: ApiKeyStore, ledger: AccessLedger) -> None:
    key_id, ext = store.create("ext")
    _, admin = store.create("ops", role="admin")
    _, moderator = store.create("mod", role="moderator")
    client = make_client(store, ledger)
    r = client.get("/v1/auth/check", headers={"X-API-Key": ext})
    assert r.status_code == 200 and r.json() == {
        "key_id": key_id,
        "name": "ext",
        "role": "extension",
    }
    r = client.get("/v1/auth/check")
    assert r.status_code == 401 and r.json()["error"]["code"] == "api_key_required"

    # /metrics is admin: no key from another host is 401, a lesser role 403, admin 200
    assert client.get("/metrics").status_code == 401
    for secret in (ext, moderator):
        r = client.get("/metrics", headers={"X-API-Key": secret})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        assert "admin" in r.json()["error"]["message"]
    assert client.get("/metrics", headers={"X-API-Key": admin}).status_code == 200
    assert client.get("/metrics", headers={"Authorization": f"Bearer {admin}"}).status_code == 200
    # ... and a scrape from this host needs no key
    local = make_client(store, ledger, client=("127.0.0.1", 4000))
    assert local.get("/metrics").status_code == 200
    assert local.get("/metrics", headers={"X-API-Key": ext}).status_code == 403

    store.revoke(key_id)
    r = client.get("/v1/auth/check", headers={"X-API-Key": ext})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_unclassified_routes_are_admin_only(store: ApiKeyStore, ledger: AccessLedger) -> None:
    _, admin = store.create("ops", role="admin")
    _, ext = store.create("ext")
    app = FastAPI()

    @app.get("/v1/forgotten")
    def forgotten() -> dict[str, bool]:
        return {"ok": True}

    install_auth(app, store, ExtensionSettings(), ledger=ledger)
    client = TestClient(app)
    assert "/v1/forgotten" not in ROUTE_ACCESS
    assert client.get("/v1/forgotten").status_code == 401
    assert client.get("/v1/forgotten", headers={"X-API-Key": ext}).status_code == 403
    assert client.get("/v1/forgotten", headers={"X-API-Key": admin}).status_code == 200
    # a path no route serves is still a plain 404
    assert client.get("/nowhere").status_code == 404


def test_route_classes_table_is_well_formed() -> None:
    assert all(isinstance(a, RouteAccess) for a in ROUTE_ACCESS.values())
    assert {a.route_class for a in ROUTE_ACCESS.values()} <= set(RouteClass)
    assert ROUTE_ACCESS["/metrics"].route_class is RouteClass.ADMIN


def test_cors_only_for_configured_extension(store: ApiKeyStore, ledger: AccessLedger) -> None:
    _, secret = store.create("ext")
    client = make_client(store, ledger)
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-api-key",
    }
    ok = client.options("/v1/search", headers={"Origin": EXT, **preflight})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == EXT
    assert "x-api-key" in ok.headers["access-control-allow-headers"].lower()

    other = "chrome-extension://pppppppppppppppppppppppppppppppp"
    bad = client.options("/v1/search", headers={"Origin": other, **preflight})
    assert "access-control-allow-origin" not in bad.headers
    web = client.options("/v1/search", headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in web.headers

    # Errors carry CORS headers too, so the extension can read the message.
    r = client.post("/v1/search", headers={"Origin": EXT})
    assert r.headers["access-control-allow-origin"] == EXT
    r = client.post("/v1/search", headers={"Origin": EXT, "X-API-Key": secret})
    assert r.headers["access-control-allow-origin"] == EXT


def test_rate_limits_answer_429_with_retry_after(store: ApiKeyStore, ledger: AccessLedger) -> None:
    _, secret = store.create("busy")
    _, other = store.create("quiet")
    client = make_client(store, ledger, rate_per_minute=3, anonymous_per_minute=2)
    codes = [client.post("/v1/search", headers={"X-API-Key": secret}).status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    r = client.post("/v1/search", headers={"Origin": EXT, "X-API-Key": secret})
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(r.headers["retry-after"]) <= 120
    assert "retry-after" in r.headers["access-control-expose-headers"].lower()
    # similar counts against the same budget; the limit is per key
    assert client.get("/v1/items/X/similar", headers={"X-API-Key": secret}).status_code == 429
    assert client.post("/v1/search", headers={"X-API-Key": other}).status_code == 200

    # anonymous clients: their own, lower limit, per client network
    codes = [client.post("/v1/search").status_code for _ in range(4)]
    assert codes == [200, 200, 429, 429]
    neighbour = make_client(store, ledger, client=("203.0.113.8", 1), anonymous_per_minute=2)
    assert neighbour.post("/v1/search").status_code == 200
    # cheap routes are not metered
    assert all(client.get("/v1/categories").status_code == 200 for _ in range(5))


def test_events_route_bounds_rate_and_body(store: ApiKeyStore, ledger: AccessLedger) -> None:
    client = make_client(store, ledger, events_per_minute=3, events_max_body_bytes=1024)
    assert client.post("/v1/events", content=b"x" * 1000).json() == {"bytes": 1000}
    r = client.post("/v1/events", content=b"x" * 2000)
    assert r.status_code == 413 and "1024 bytes" in r.json()["error"]["message"]

    def chunks():  # no Content-Length: counted while reading
        for _ in range(5):
            yield b"y" * 400

    assert client.post("/v1/events", content=chunks()).status_code == 413
    r = client.post("/v1/events", content=b"{}")
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1


def test_ledger_is_shared_between_instances(tmp_path: Path) -> None:
    """Two ledgers on one file (two workers) share one limit; a refused hit is not counted."""
    url = f"sqlite:///{tmp_path / 'access.db'}"
    now = [6000.0]  # the start of a window
    first = AccessLedger(url, clock=lambda: now[0])
    second = AccessLedger(url, clock=lambda: now[0])
    first.create_schema()
    second.create_schema()
    allowed = [(first if i % 2 else second).hit("k", 10) == 0.0 for i in range(25)]
    assert sum(allowed) == 10 and all(allowed[:10])
    wait = first.hit("k", 10)
    assert 1.0 <= wait <= 120.0
    # half a window later, half the previous window still counts: 10 * 0.5 = 5 carried
    now[0] += 90.0
    assert sum(first.hit("k", 10) == 0.0 for _ in range(10)) == 5
    # two windows later everything has expired
    now[0] += 120.0
    assert sum(second.hit("k", 10) == 0.0 for _ in range(12)) == 10
    assert first.hit("other", 10) == 0.0


def test_client_buckets_hide_addresses(ledger: AccessLedger) -> None:
    a = ledger.client_bucket("198.51.100.23")
    assert "198.51" not in a and a.startswith("ip:")
    assert a == ledger.client_bucket("198.51.100.23") != ledger.client_bucket("198.51.100.24")
    assert a == ledger.client_bucket("::ffff:198.51.100.23")
    # one IPv6 /64 is one client (a household rotates addresses within it)
    assert ledger.client_bucket("2001:db8:1:2::1") == ledger.client_bucket("2001:db8:1:2:ff::9")
    assert ledger.client_bucket("2001:db8:1:2::1") != ledger.client_bucket("2001:db8:1:3::1")


def test_issued_answers_expire(tmp_path: Path) -> None:
    now = [1000.0]
    led = AccessLedger(f"sqlite:///{tmp_path / 'a.db'}", ttl_seconds=60, clock=lambda: now[0])
    led.create_schema()
    led.issue(IssuedAnswer("r1", "similar", "Q", ("A", "B"), now[0]))
    got = led.issued({"r1", "r2"})
    assert list(got) == ["r1"] and got["r1"].item_ids == ("A", "B")
    assert got["r1"].query_item_id == "Q"
    now[0] += 61
    assert led.issued({"r1"}) == {}
    assert led.purge() == 1


def test_check_event_rules() -> None:
    search = IssuedAnswer("r", "search", None, ("A", "B", "C"), time.time())
    similar = IssuedAnswer("s", "similar", "Q", ("A", "B"), time.time())
    ok = check_event(Event("click", "r", "B", 2), search)
    assert isinstance(ok, Event) and ok.query_item_id is None
    assert "not a search" in str(check_event(Event("click", "x", "B", 2), None))
    assert "not in the results" in str(check_event(Event("click", "r", "Z", 2), search))
    assert "position 2" in str(check_event(Event("click", "r", "B", 1), search))
    # a photo search's id cannot be turned into a training pair
    forged = Event("click", "r", "B", 2, query_item_id="Q", surface="similar")
    assert isinstance(check_event(forged, search), str)
    # a similar answer's query item is the server's, whatever the client says
    filled = check_event(Event("click", "s", "A", 1, surface="similar"), similar)
    assert isinstance(filled, Event) and filled.query_item_id == "Q"
    wrong = Event("click", "s", "A", 1, query_item_id="OTHER", surface="similar")
    assert "query item" in str(check_event(wrong, similar))


def test_an_unreachable_ledger_leaves_search_up(store: ApiKeyStore, caplog) -> None:
    """Rate limits fail open: the search answers and a warning names what was skipped."""
    ledger = AccessLedger("postgresql://nobody@127.0.0.1:1/none")
    client = make_client(store, ledger)
    with caplog.at_level("WARNING", logger="lookalike.serve.access"):
        r = client.post("/v1/search")
    assert r.status_code == 200 and r.json()["results"]
    assert "rate limit not applied" in caplog.text
    assert "could not record an issued answer" in caplog.text


def test_keys_cli_creates_keys_with_roles(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from lookalike.cli.main import app as cli

    monkeypatch.setenv("LOOKALIKE_HOME", str(tmp_path))
    runner = CliRunner()
    made = runner.invoke(cli, ["keys", "create", "ops", "--role", "admin", "--json"])
    assert made.exit_code == 0, made.output
    key = json.loads(made.output.strip().splitlines()[-1])
    assert key["role"] == "admin" and key["secret"].startswith("lk_")
    default = runner.invoke(cli, ["keys", "create", "laptop", "--json"])
    assert json.loads(default.output.strip().splitlines()[-1])["role"] == "extension"
    listed = runner.invoke(cli, ["keys", "list"])
    assert listed.exit_code == 0 and "admin" in listed.output and "extension" in listed.output
    assert key["secret"] not in listed.output
    bad = runner.invoke(cli, ["keys", "create", "eve", "--role", "root"])
    assert bad.exit_code == 2 and "root" in bad.output
    store = ApiKeyStore(f"sqlite:///{tmp_path / 'var' / 'catalog.db'}")
    verified = store.verify(key["secret"])
    assert verified is not None and verified.role == "admin"


def test_a_verified_key_outlives_a_database_outage(tmp_path: Path, monkeypatch) -> None:
    """The database gone: a key this store verified still opens its routes (no revocation can
    be written meanwhile), an unseen or wrong secret gets the 503, and only within the grace."""
    db = tmp_path / "keys.db"
    store = ApiKeyStore(f"sqlite:///{db}")
    store.create_schema()
    _, seen = store.create("seen")
    _, unseen = store.create("unseen")
    revoked_id, revoked = store.create("revoked")
    assert store.verify(seen) is not None and store.verify(revoked) is not None
    store.revoke(revoked_id)
    assert store.verify(revoked) is None  # seen revoked: forgotten, not kept for the outage
    db.rename(tmp_path / "away.db")
    key = store.verify(seen)
    assert key is not None and key.name == "seen"
    for secret in (unseen, revoked, seen[:-4] + "AAAA"):  # a wrong secret of a known key id too
        with pytest.raises(Unavailable):
            store.verify(secret)
    monkeypatch.setattr(auth_module, "KEY_GRACE_SECONDS", 0.0)
    with pytest.raises(Unavailable):
        store.verify(seen)
    (tmp_path / "away.db").rename(db)
    monkeypatch.setattr(auth_module, "KEY_GRACE_SECONDS", 600.0)
    assert store.verify(seen) is not None and store.verify(unseen) is not None
