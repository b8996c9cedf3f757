"""Every route of the real app has an access class, and the class is enforced on it.

The routes are read from ``create_app(...).routes`` (every APIRoute, Route and Mount, included
routers opened up), so a route added without an entry in ``serve/access.py``'s ``ROUTE_ACCESS``
fails here. Each route is then called without a key, with a garbage key, with a key of too low a
role and with a key of the right role.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.routing import Mount

from lookalike.core.settings import Settings
from lookalike.serve.access import ADMITS, ROLES, ROUTE_ACCESS, RouteClass, flat_routes
from lookalike.serve.app import create_app
from lookalike.serve.auth import ApiKeyStore

# A role each class does not admit, for the wrong-role call (None: every role is admitted).
_TOO_LOW = {
    RouteClass.PUBLIC: None,
    RouteClass.EXTENSION: None,
    RouteClass.MODERATOR: "extension",
    RouteClass.ADMIN: "moderator",
}
_RIGHT = {
    RouteClass.PUBLIC: "extension",
    RouteClass.EXTENSION: "extension",
    RouteClass.MODERATOR: "moderator",
    RouteClass.ADMIN: "admin",
}


@pytest.fixture(scope="module")
def app_and_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict]]:
    # An empty home: no model is needed to check who may call what (search answers 503).
    home = tmp_path_factory.mktemp("routes-home")
    settings = Settings(home=home)
    store = ApiKeyStore(settings.db_url)
    store.create_schema()
    keys = {role: store.create(f"{role}-key", role=role)[1] for role in ROLES}
    with TestClient(create_app(settings)) as client:
        yield client, keys


def _routes(client: TestClient) -> list[tuple[str, str]]:
    """(path template, method) for every route of the app."""
    found = []
    for path, route in flat_routes(client.app.routes):  # type: ignore[attr-defined]
        if isinstance(route, Mount):
            found.append((path, "GET"))
            continue
        methods = sorted(getattr(route, "methods", None) or {"GET"})
        found.extend((path, m) for m in methods if m not in ("HEAD", "OPTIONS"))
    return found


def _concrete(path: str) -> str:
    if path == "/static":
        return "/static/app.js"
    return re.sub(r"\{[^}]+\}", "LK-0001", path)


def test_every_route_has_a_class(app_and_keys) -> None:
    client, _ = app_and_keys
    routes = _routes(client)
    paths = {p for p, _ in routes}
    missing = sorted(paths - set(ROUTE_ACCESS))
    assert not missing, f"add these routes to ROUTE_ACCESS in lookalike/serve/access.py: {missing}"
    # ... and the table names no route that is gone
    stale = sorted(set(ROUTE_ACCESS) - paths)
    assert not stale, f"ROUTE_ACCESS names routes the app does not have: {stale}"
    # the ones this issue is about are all there
    for path in ("/v1/search", "/v1/items/{item_id}/similar", "/v1/events", "/metrics", "/"):
        assert path in paths


def test_each_class_is_enforced(app_and_keys) -> None:
    client, keys = app_and_keys
    checked: dict[RouteClass, int] = {}
    for path, method in _routes(client):
        route_class = ROUTE_ACCESS[path].route_class
        url = _concrete(path)
        where = f"{method} {path}"
        anonymous = client.request(method, url)
        if route_class is RouteClass.PUBLIC:
            assert anonymous.status_code not in (401, 403), where
        else:
            assert anonymous.status_code == 401, where
            assert anonymous.json()["error"]["code"] == "api_key_required", where
        garbage = client.request(method, url, headers={"X-API-Key": "garbage"})
        assert garbage.status_code == 401, where
        assert garbage.json()["error"]["code"] == "invalid_api_key", where
        low = _TOO_LOW[route_class]
        if low is not None:
            assert low not in ADMITS[route_class]
            r = client.request(method, url, headers={"X-API-Key": keys[low]})
            assert r.status_code == 403, where
            assert r.json()["error"]["code"] == "forbidden", where
        right = client.request(method, url, headers={"X-API-Key": keys[_RIGHT[route_class]]})
        assert right.status_code not in (401, 403), (where, right.text)
        checked[route_class] = checked.get(route_class, 0) + 1
    # the app has routes of every class it declares except moderator (the moderation issue)
    assert {RouteClass.PUBLIC, RouteClass.EXTENSION, RouteClass.ADMIN} <= set(checked)


def test_metrics_scrape_from_this_host_needs_no_key(app_and_keys, tmp_path: Path) -> None:
    client, keys = app_and_keys
    local = TestClient(client.app, client=("127.0.0.1", 9000))  # type: ignore[arg-type]
    assert local.get("/metrics").status_code == 200
    assert local.get("/metrics", headers={"X-API-Key": keys["extension"]}).status_code == 403
    assert client.get("/metrics").status_code == 401
