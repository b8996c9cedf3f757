"""The whole server on a real PostgreSQL, with the README's plain ``postgresql://`` URL.

Every step is the real CLI in a subprocess (import, index build, key, serve, report) with only
``LOOKALIKE_DATABASE_URL`` pointing at a fresh database on the test server; the HTTP calls go to
a real uvicorn on 127.0.0.1. The catalog, API keys and events must all land in PostgreSQL (no
SQLite catalog file appears), and a NUL byte in an item id must not reach the SQL layer.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from live import live_server
from sqlalchemy.engine import make_url

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[2]
DEMO_CSV = REPO / "demo" / "catalog" / "items.csv"
LOOKALIKE = [sys.executable, "-m", "lookalike.cli"]


@pytest.fixture()
def plain_url(postgres_url: str) -> Iterator[str]:
    """A fresh database on the test server, spelled ``postgresql://`` as the README does."""
    server = make_url(postgres_url)
    name = f"lk_server_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    plain = server.set(drivername="postgresql", database=name)
    try:
        yield plain.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def _count(url: str, table: str) -> int:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            return int(conn.scalar(sa.text(f"SELECT count(*) FROM {table}")) or 0)
    finally:
        engine.dispose()


def test_whole_server_on_postgres(tmp_path: Path, built_models: Path, plain_url: str) -> None:
    home = tmp_path / "home"
    shutil.copytree(built_models, home / "models")
    env = {
        **os.environ,
        "LOOKALIKE_HOME": str(home),
        "LOOKALIKE_DATABASE_URL": plain_url,
        "COLUMNS": "200",
    }

    def cli(*args: str) -> str:
        proc = subprocess.run(
            [*LOOKALIKE, *args], env=env, capture_output=True, text=True, timeout=900
        )
        assert proc.returncode == 0, f"lookalike {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    cli("catalog", "import", str(DEMO_CSV))
    items = _count(plain_url, "catalog_items")
    assert items == len(DEMO_CSV.read_text().strip().splitlines()) - 1
    cli("index", "build")
    key = json.loads(cli("keys", "create", "pg-test", "--json"))
    assert _count(plain_url, "api_keys") == 1

    with live_server(home, LOOKALIKE_DATABASE_URL=plain_url) as server:
        base = server.base
        photo = sorted((DEMO_CSV.parent / "images").glob("*.jpg"))[0]
        upload = {"image": (photo.name, photo.read_bytes(), "image/jpeg")}
        r = httpx.post(f"{base}/v1/search", files=upload, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        first = body["results"][0]["item_id"]

        r = httpx.get(f"{base}/v1/items/{first}", timeout=10)
        assert r.status_code == 200 and r.json()["item_id"] == first

        # A NUL byte never reaches the driver: 404 (or 400), and no SQL in the body.
        r = httpx.get(f"{base}/v1/items/%00", timeout=10)
        assert r.status_code in (400, 404), r.text
        assert "SELECT" not in r.text and "catalog_items" not in r.text

        headers = {"X-API-Key": key["secret"]}
        r = httpx.get(f"{base}/v1/auth/check", headers=headers, timeout=10)
        assert r.status_code == 200 and r.json()["key_id"] == key["key_id"]
        r = httpx.post(f"{base}/v1/search", files=upload, headers=headers, timeout=60)
        assert r.status_code == 200, r.text
        keyed = r.json()
        r = httpx.get(f"{base}/v1/auth/check", headers={"X-API-Key": "lk_bad"}, timeout=10)
        assert r.status_code == 401

        event = {
            "type": "impression",
            "request_id": keyed["request_id"],
            "item_id": keyed["results"][0]["item_id"],
            "position": 1,
        }
        r = httpx.post(f"{base}/v1/events", json={"events": [event]}, timeout=10)
        assert r.status_code == 202, r.text
        assert r.json()["accepted"] == 1
        assert _count(plain_url, "search_events") == 1
        assert httpx.get(f"{base}/health", timeout=10).status_code == 200

    report = tmp_path / "report.html"
    cli("report", "--out", str(report))
    page = report.read_text("utf-8")
    # Read from PostgreSQL: the one-item category is listed as thin, feedback is not "unavailable".
    assert "Body" in page
    assert "feedback events unavailable" not in page
    # Nothing fell back to the default SQLite catalog under home.
    assert not (home / "var" / "catalog.db").exists()
