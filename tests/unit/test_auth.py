"""API keys, rate limit and CORS rules of ``lookalike.serve.auth`` on a real FastAPI app."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lookalike.core.errors import ConfigError, NotFound
from lookalike.serve.auth import ApiKeyStore, RateLimiter, install_auth

EXT = "chrome-extension://abcdefghijklmnopabcdefghijklmnop"


@pytest.fixture()
def store(tmp_path: Path) -> ApiKeyStore:
    s = ApiKeyStore(f"sqlite:///{tmp_path / 'var' / 'catalog.db'}")
    s.create_schema()
    return s


def make_client(store: ApiKeyStore, rate_per_minute: int = 1000) -> TestClient:
    app = FastAPI()

    @app.post("/v1/search")
    def search() -> dict[str, list[str]]:
        return {"results": []}

    @app.get("/v1/categories")
    def categories() -> dict[str, list[str]]:
        return {"categories": []}

    install_auth(app, store, extension_origins=[EXT], rate_per_minute=rate_per_minute)
    return TestClient(app)


def test_create_list_revoke_and_verify(store: ApiKeyStore, tmp_path: Path) -> None:
    key_id, secret = store.create("alice laptop")
    assert secret.startswith("lk_") and key_id in secret
    assert len(secret) > 40
    # Only the hash is stored: the secret appears nowhere in the database file.
    assert secret.encode() not in (tmp_path / "var" / "catalog.db").read_bytes()

    record = store.verify(secret)
    assert record is not None and record.key_id == key_id and record.name == "alice laptop"
    assert store.verify(secret + "x") is None
    assert store.verify(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert store.verify("not-a-key") is None

    other_id, other_secret = store.create("bob")
    assert [k.key_id for k in store.list()] == [key_id, other_id]

    revoked = store.revoke(key_id)
    assert revoked.revoked_at is not None and not revoked.active
    assert store.verify(secret) is None
    assert store.verify(other_secret) is not None
    assert store.revoke(key_id).revoked_at == revoked.revoked_at  # revoking twice is harmless
    with pytest.raises(NotFound):
        store.revoke("000000000000")
    with pytest.raises(ConfigError):
        store.create("  ")


def test_key_rules_on_search(store: ApiKeyStore) -> None:
    _, secret = store.create("ext")
    client = make_client(store)

    # The same-origin search page sends neither key nor extension origin.
    assert client.post("/v1/search").status_code == 200
    # An extension must send a key.
    r = client.post("/v1/search", headers={"Origin": EXT})
    assert r.status_code == 401 and r.json()["error"]["code"] == "api_key_required"
    # A wrong key is refused wherever it comes from.
    r = client.post("/v1/search", headers={"X-API-Key": "lk_000000000000_" + "a" * 43})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = client.post("/v1/search", headers={"Origin": EXT, "X-API-Key": secret})
    assert r.status_code == 200
    # Other paths are not guarded.
    assert client.get("/v1/categories", headers={"Origin": EXT}).status_code == 200


def test_auth_check_names_the_key(store: ApiKeyStore) -> None:
    key_id, secret = store.create("carol")
    client = make_client(store)
    r = client.get("/v1/auth/check", headers={"X-API-Key": secret})
    assert r.status_code == 200 and r.json() == {"key_id": key_id, "name": "carol"}
    assert client.get("/v1/auth/check").json()["error"]["code"] == "api_key_required"
    store.revoke(key_id)
    r = client.get("/v1/auth/check", headers={"X-API-Key": secret})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_cors_only_for_configured_extension(store: ApiKeyStore) -> None:
    _, secret = store.create("ext")
    client = make_client(store)
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


def test_rate_limit_answers_429_with_retry_after(store: ApiKeyStore) -> None:
    _, secret = store.create("busy")
    _, other = store.create("quiet")
    client = make_client(store, rate_per_minute=3)
    codes = [client.post("/v1/search", headers={"X-API-Key": secret}).status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    r = client.post("/v1/search", headers={"Origin": EXT, "X-API-Key": secret})
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(r.headers["retry-after"]) <= 20
    assert "retry-after" in r.headers["access-control-expose-headers"].lower()
    # The limit is per key.
    assert client.post("/v1/search", headers={"X-API-Key": other}).status_code == 200


def test_rate_limiter_refills_over_time() -> None:
    now = [100.0]
    limiter = RateLimiter(60, burst=2, clock=lambda: now[0])
    assert limiter.acquire("k") == 0.0
    assert limiter.acquire("k") == 0.0
    wait = limiter.acquire("k")
    assert wait == pytest.approx(1.0)
    now[0] += 0.5
    assert limiter.acquire("k") == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.acquire("k") == 0.0
    assert limiter.acquire("other") == 0.0
    with pytest.raises(ConfigError):
        RateLimiter(0)


def test_bad_extension_origin_is_a_config_error(store: ApiKeyStore) -> None:
    with pytest.raises(ConfigError):
        install_auth(FastAPI(), store, extension_origins=["https://x.example"], rate_per_minute=5)
