"""The one database layer on SQLite: URL spelling, one engine per URL, migrations, errors.

PostgreSQL (stopped, frozen, NUL bytes, migrations there) is in
``tests/integration/test_db_faults.py``; the whole server on it in ``test_postgres_server.py``.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from lookalike.catalog import CatalogStore
from lookalike.catalog.rental_store import metadata as rental_metadata
from lookalike.catalog.schema import metadata as catalog_metadata
from lookalike.core.db import (
    VERSION_TABLE,
    database_problem,
    dispose_engines,
    get_engine,
    migrate,
    normalise_url,
)
from lookalike.core.errors import ConfigError, NotFound, Unavailable
from lookalike.core.settings import DatabaseSettings, Settings
from lookalike.jobs.events import EventStore, search_events
from lookalike.moderation.store import _metadata as moderation_metadata
from lookalike.serve.auth import ApiKeyStore, _api_keys

ALL_TABLES = {
    "api_keys",
    "catalog_images",
    "catalog_items",
    "catalog_state",
    "search_events",
    # moderation (0003)
    "ingest_cursors",
    "moderation_accounts",
    "moderation_decisions",
    "moderation_posts",
    "moderation_scores",
    "moderation_sessions",
    # rentals (0004)
    "rentals",
    "shopper_events",
    VERSION_TABLE,
}


def _tables(url: str) -> set[str]:
    return set(sa.inspect(get_engine(url)).get_table_names())


def _version_rows(url: str) -> list[str]:
    with get_engine(url).connect() as conn:
        return list(conn.scalars(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")))


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:pw@db.example:5433/lk", "postgresql+psycopg://u:pw@db.example:5433/lk"),
        ("postgres://u@db/lk", "postgresql+psycopg://u@db/lk"),
        ("postgresql+psycopg://u@db/lk", "postgresql+psycopg://u@db/lk"),
        # An explicit driver is the caller's choice.
        ("postgresql+psycopg2://u@db/lk", "postgresql+psycopg2://u@db/lk"),
        ("postgresql://u@db/lk?sslmode=require", "postgresql+psycopg://u@db/lk?sslmode=require"),
        ("  postgresql://u@db/lk \n", "postgresql+psycopg://u@db/lk"),
        ("sqlite://", "sqlite://"),
        ("sqlite:///:memory:", "sqlite://"),
        ("sqlite:////var/lk/catalog.db", "sqlite:////var/lk/catalog.db"),
    ],
)
def test_url_normalisation(given: str, expected: str) -> None:
    assert normalise_url(given) == expected


def test_relative_and_home_sqlite_paths_become_absolute(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "me"))
    assert normalise_url("sqlite:///var/c.db") == f"sqlite:///{tmp_path / 'var' / 'c.db'}"
    assert normalise_url("sqlite:///~/c.db") == f"sqlite:///{tmp_path / 'me' / 'c.db'}"


@pytest.mark.parametrize("bad", ["", "not a url", "://nothing", "mysql+nodriver://u@h/db"])
def test_a_bad_url_is_a_config_error_without_the_password(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        get_engine(bad.replace("u@", "u:s3cret@"))
    assert "s3cret" not in info.value.message


def test_one_engine_per_url_and_settings(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'one.db'}"
    engine = get_engine(url)
    assert get_engine("sqlite:///one.db") is engine  # another spelling of the same file
    assert get_engine(url, DatabaseSettings()) is engine
    assert get_engine(url, DatabaseSettings(pool_timeout_s=1)) is not engine
    # The stores share it.
    assert CatalogStore(url, tmp_path / "media")._engine is engine
    assert EventStore(url)._engine is engine
    assert ApiKeyStore(url)._engine is engine
    # A memory database is private to its engine, as each store's always was.
    assert get_engine("sqlite://") is not get_engine("sqlite://")
    dispose_engines()
    assert get_engine(url) is not engine


def test_settings_carry_the_timeouts(monkeypatch) -> None:
    monkeypatch.setenv("LOOKALIKE_DB__STATEMENT_TIMEOUT_S", "3.5")
    monkeypatch.setenv("LOOKALIKE_DB__CONNECT_TIMEOUT_S", "2")
    db = Settings().db
    assert (db.statement_timeout_s, db.connect_timeout_s) == (3.5, 2.0)
    assert hash(db) == hash(DatabaseSettings(statement_timeout_s=3.5, connect_timeout_s=2))


def test_migrate_an_empty_database_twice(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    head = migrate(url)
    assert _tables(url) == ALL_TABLES
    assert _version_rows(url) == [head]
    assert migrate(url) == head  # idempotent: nothing created twice, one version row
    assert _version_rows(url) == [head]


def test_migrated_schema_is_what_the_stores_define(tmp_path: Path) -> None:
    """The migrations and the live table definitions must not drift apart."""
    url = f"sqlite:///{tmp_path / 'drift.db'}"
    migrate(url)
    live = sa.MetaData()
    for table in (
        *catalog_metadata.tables.values(),
        search_events,
        _api_keys,
        *moderation_metadata.tables.values(),
        *rental_metadata.tables.values(),
    ):
        table.to_metadata(live)
    with get_engine(url).connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        diff = compare_metadata(context, live)
    assert diff == []


def test_migrate_adopts_a_database_made_by_create_all(tmp_path: Path) -> None:
    """Before migrations each store ran its own create_all: any subset of tables may exist."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = sa.create_engine(url)
    catalog_metadata.create_all(old)
    with old.begin() as conn:
        conn.execute(sa.text("INSERT INTO catalog_state (key, value) VALUES ('revision', 7)"))
    old.dispose()
    assert VERSION_TABLE not in _tables(url)

    store = CatalogStore(url, tmp_path / "media")
    store.create_schema()
    assert _tables(url) == ALL_TABLES
    assert store.revision() == 7  # the old rows are kept
    assert len(_version_rows(url)) == 1
    # The stores that had no tables there work at once.
    EventStore(url).create_schema()
    assert EventStore(url).count() == 0
    assert ApiKeyStore(url).list() == []


def test_processes_starting_at_once_migrate_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'race.db'}"
    code = f"from lookalike.core.db import migrate; print(migrate({url!r}))"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert len(set(outs)) == 1
    assert _version_rows(url) == [outs[0]]
    assert _tables(url) == ALL_TABLES


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again on exit: nothing listens there


def test_a_database_that_is_down_gives_a_clean_503_and_no_error_at_construction(
    tmp_path: Path,
) -> None:
    url = f"postgresql://lk:s3cret@127.0.0.1:{_closed_port()}/lookalike"
    opts = DatabaseSettings(connect_timeout_s=2)
    # Construction never connects.
    catalog = CatalogStore(url, tmp_path / "media", db=opts)
    keys, events = ApiKeyStore(url), EventStore(url)
    calls = [catalog.count_items, catalog.create_schema, keys.list, events.count]
    for call in calls:
        started = time.monotonic()
        with pytest.raises(Unavailable) as info:
            call()
        assert time.monotonic() - started < 5
        message = info.value.message
        assert message.startswith("the database is unreachable: connection refused")
        assert message.endswith("retry shortly")
        for leak in ("127.0.0.1", "s3cret", "lk:", "SELECT", "catalog_", "api_keys", "[SQL"):
            assert leak not in message
        assert info.value.status == 503
    problem = database_problem(url, opts)
    assert problem is not None and "connection refused" in problem


def test_database_problem_is_none_when_it_answers(tmp_path: Path) -> None:
    assert database_problem(f"sqlite:///{tmp_path / 'ok.db'}") is None


def test_an_unopenable_sqlite_file_is_unavailable_without_its_path(tmp_path: Path) -> None:
    folder = tmp_path / "is-a-dir.db"
    folder.mkdir()
    problem = database_problem(f"sqlite:///{folder}")
    assert problem is not None and "cannot be opened" in problem
    assert str(tmp_path) not in problem


def test_a_sqlite_folder_that_cannot_be_made_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError) as info:
        get_engine(f"sqlite:///{tmp_path / 'file' / 'sub' / 'c.db'}")
    assert str(tmp_path) not in info.value.message


def test_a_nul_byte_in_an_item_id_is_not_found(tmp_path: Path) -> None:
    store = CatalogStore(f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "media")
    store.create_schema()
    with pytest.raises(NotFound):
        store.get_item("LK-\x00")
    assert store.get_items(["\x00"]) == {}
    with pytest.raises(NotFound):
        store.delete_item("\x00")


def test_a_sqlite_file_gone_or_replaced_under_an_engine(tmp_path: Path) -> None:
    """Gone: refused (503) on every use, and no empty database is made at the path; moved
    back: used again; replaced by another file: the pool drops its connections to the old one."""
    import sqlite3

    db = tmp_path / "x.db"
    engine = get_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (a INTEGER)"))
        conn.execute(sa.text("INSERT INTO t VALUES (1)"))
    with engine.begin() as conn:  # checkpoint, so the file alone holds the row
        conn.execute(sa.text("PRAGMA wal_checkpoint(TRUNCATE)"))
    db.rename(tmp_path / "away.db")
    for _ in range(3):  # the refused connection is dropped; its replacement must not be made
        with pytest.raises(Unavailable, match="deleted or moved while the server ran"):
            with engine.begin() as conn:
                conn.execute(sa.text("INSERT INTO t VALUES (2)"))
        assert not db.exists()
    (tmp_path / "away.db").rename(db)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar() == 1
    for side in ("-wal", "-shm"):  # another database moved into place, as from a backup
        (tmp_path / f"x.db{side}").unlink(missing_ok=True)
    other = sqlite3.connect(tmp_path / "other.db")
    other.execute("CREATE TABLE t (a INTEGER)")
    other.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(10)])
    other.commit()
    other.close()
    (tmp_path / "other.db").replace(db)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar() == 10


def test_a_sqlite_file_damaged_under_an_engine_is_unavailable(tmp_path: Path) -> None:
    """Overwritten with junk (a bad restore, a disk fault) while the server runs: a 503 that
    says so, for reads and writes, never a 500; /health names it; a good file back: used."""
    db = tmp_path / "x.db"
    engine = get_engine(f"sqlite:///{db}")
    store = CatalogStore(f"sqlite:///{db}", tmp_path / "media")
    store.create_schema()
    assert store.count_items() == 0
    good = tmp_path / "good.db"
    with engine.begin() as conn:
        conn.execute(sa.text("PRAGMA wal_checkpoint(TRUNCATE)"))
    good.write_bytes(db.read_bytes())
    for side in ("-wal", "-shm"):
        (tmp_path / f"x.db{side}").unlink(missing_ok=True)
    junk = tmp_path / "junk"
    junk.write_bytes(b"this is not a database at all " * 200)
    junk.replace(db)
    for call in (store.count_items, store.revision, lambda: store.delete_item("LK-1")):
        with pytest.raises(Unavailable) as info:
            call()
        assert info.value.status == 503 and "damaged" in info.value.message
        assert str(tmp_path) not in info.value.message
    problem = database_problem(f"sqlite:///{db}")
    assert problem is not None and "damaged" in problem
    good.replace(db)
    assert store.count_items() == 0
