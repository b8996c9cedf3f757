"""One database layer: one URL normaliser, one engine per process and URL, migrations.

Every part that keeps rows (the catalog, feedback events, API keys, the report) gets its engine
here, so they all wait, fail and recover the same way::

    engine = get_engine(settings.db_url, settings.db)   # cached; nothing connects yet
    migrate(settings.db_url, settings.db)               # Alembic to head, idempotent
    database_problem(settings.db_url)                   # None, or why /health is degraded

Why each bound exists (the database under faults):

- PostgreSQL stopped: a new connection fails within ``connect_timeout_s``; pooled connections
  are pre-pinged, so the call after a restart reconnects instead of failing.
- PostgreSQL frozen (the process is alive but silent): the server cannot cancel anything, so
  the client gives up on its own after ``statement_timeout_s + connect_timeout_s`` and drops
  the connection; waiting for a pooled connection is bounded by ``pool_timeout_s``.
- A statement that runs too long is cancelled by the server (``statement_timeout``).

Driver errors that mean "the database cannot answer now" become ``Unavailable`` (503) inside
the engine itself (a ``handle_error`` hook and the pool), whoever runs the statement; a value
the driver refuses (a NUL byte in text on PostgreSQL) becomes ``InvalidInput``. Messages carry
a short reason, never SQL text, host names, file paths or parameters. ``translate_errors()``
maps what is left (missing tables, other SQLAlchemy errors) for a caller that wants it.

Engines of in-memory SQLite URLs are not shared: each call gets its own private database, as
each store always had.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.pool import QueuePool, StaticPool

from lookalike.core.errors import (
    ConfigError,
    InvalidInput,
    LookalikeError,
    Unavailable,
    short_reason,
)
from lookalike.core.settings import DatabaseSettings

__all__ = [
    "MIGRATIONS_DIR",
    "VERSION_TABLE",
    "database_problem",
    "dispose_engines",
    "get_engine",
    "migrate",
    "normalise_url",
    "translate_errors",
]

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Prefixed like our tables, so the service can share one PostgreSQL database with others.
VERSION_TABLE = "lookalike_schema_version"
# Any constant: two processes migrating the same PostgreSQL database queue on this lock.
_MIGRATION_LOCK_KEY = 0x6C6B_6462  # "lkdb"
_RETRY = "retry shortly"

_engines: dict[tuple[str, DatabaseSettings], Engine] = {}
_engines_lock = threading.Lock()
_migrate_lock = threading.Lock()


# ---- URLs -----------------------------------------------------------------------------------


def _parse(url: str | URL) -> URL:
    if isinstance(url, URL):
        return url
    try:
        return make_url(url.strip())
    except (sa.exc.ArgumentError, ValueError) as exc:
        scheme = url.strip().split(":", 1)[0][:30]
        raise ConfigError(
            f"not a database URL (scheme {scheme!r}): use postgresql://user@host/db or "
            "sqlite:///path/to/catalog.db in LOOKALIKE_DATABASE_URL"
        ) from exc


def _is_memory(parsed: URL) -> bool:
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


def normalise_url(url: str | URL) -> str:
    """The one spelling of ``url`` that engines are keyed by (password kept).

    ``postgres://`` and ``postgresql://`` mean psycopg 3 (the driver we ship), a SQLite path
    becomes absolute (``~`` expanded), and both spellings of an in-memory SQLite database
    become ``sqlite://``. An explicit driver (``postgresql+psycopg2://``) is left as given.
    """
    parsed = _parse(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif parsed.get_backend_name() == "sqlite":
        if _is_memory(parsed):
            return "sqlite://"  # (URL.set(database=None) would keep the old value)
        assert parsed.database is not None
        path = Path(parsed.database).expanduser().absolute()
        parsed = parsed.set(database=str(path))
    return parsed.render_as_string(hide_password=False)


# ---- error translation ----------------------------------------------------------------------

# A SQLite file overwritten or corrupted under a running server: sqlite3.DatabaseError, not an
# OperationalError, yet the same for every caller as a database that went away.
_DAMAGED = ("file is not a database", "database disk image is malformed")
# (words in the driver's message, the reason we show). First match wins; no match -> generic.
_REASONS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("refused",), "connection refused"),
    (("no answer within",), "the server stopped answering"),
    (("timeout expired", "timed out", "wait timeout"), "no answer within the connect timeout"),
    (
        ("could not translate host", "name or service not known", "nodename nor servname"),
        "the host name does not resolve",
    ),
    (
        ("password authentication", "authentication failed", "no pg_hba.conf"),
        "authentication failed (check the user and password in the URL)",
    ),
    (("does not exist",), "the database named in the URL does not exist"),
    (
        ("starting up", "shutting down", "not yet accepting", "in recovery mode"),
        "the server is starting up or shutting down",
    ),
    (
        (
            "terminating connection",
            "server closed the connection",
            "connection is closed",
            "consuming input failed",
            "connection is lost",
            "the connection is closed",
            "sending query failed",
            "broken pipe",
            "connection reset",
            "eof detected",
        ),
        "the connection was lost",
    ),
    (
        ("too many clients", "too many connections", "remaining connection slots"),
        "the server has no free connection slots",
    ),
    (("database is locked", "database table is locked"), "the database is locked by a writer"),
    (
        ("unable to open database", "readonly database", "disk i/o error", "disk is full"),
        "the database file cannot be opened or written",
    ),
    (
        _DAMAGED,
        "the database file is damaged or is not a database (restore it from a backup)",
    ),
)


def _reason(orig: BaseException) -> str:
    text = str(orig).lower()
    for words, reason in _REASONS:
        if any(w in text for w in words):
            return reason
    return "connection failed"


def _unavailable(reason: str) -> Unavailable:
    return Unavailable(f"the database is unreachable: {reason} — {_RETRY}", code="db_unavailable")


def _translate(exc: BaseException) -> LookalikeError | None:
    """Our error for a driver/SQLAlchemy error that is about reachability or a bad value."""
    if isinstance(exc, sa.exc.TimeoutError):  # the pool: every connection is in use
        return _unavailable("no free connection in the pool (the database is slow or stuck)")
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    sqlstate = getattr(orig, "sqlstate", None) or ""
    if sqlstate == "57014":  # query_canceled: our statement_timeout
        return _unavailable("a statement ran past the statement timeout")
    if isinstance(exc, sa.exc.DataError) or sqlstate.startswith("22"):
        text = str(orig).lower()
        what = "text may not contain NUL (0x00) bytes" if "nul" in text else "malformed value"
        return InvalidInput(f"the database refused a value: {what}", code="invalid_value")
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return _unavailable(_reason(orig))
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        text = str(orig).lower()
        if "no such table" in text:
            return None  # a schema problem: the caller names the fix
        return _unavailable(_reason(orig))
    if sqlstate.startswith(("08", "53", "57P")):  # connection, resources, operator intervention
        return _unavailable(_reason(orig))
    if isinstance(exc, sa.exc.DatabaseError) and any(w in str(orig).lower() for w in _DAMAGED):
        return _unavailable(_reason(orig))
    return None


def _missing_table(exc: BaseException) -> bool:
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    return "no such table" in str(orig) or getattr(orig, "sqlstate", None) == "42P01"


@contextlib.contextmanager
def translate_errors(
    what: str = "the database",
    missing_tables: str = "the database tables are missing: run `lookalike catalog import FILE`",
) -> Iterator[None]:
    """Turn any SQLAlchemy error raised inside into the project's tree (``raise ... from``).

    Unreachable -> ``Unavailable``; refused value -> ``InvalidInput``; a missing table ->
    ``ConfigError(missing_tables)``; anything else -> ``LookalikeError`` with the first line of
    the driver's message (the full error, without parameters, goes to the log).
    """
    try:
        yield
    except LookalikeError:
        raise
    except sa.exc.SQLAlchemyError as exc:
        ours = _translate(exc)
        if ours is not None:
            raise ours from exc
        if _missing_table(exc):
            raise ConfigError(missing_tables) from exc
        orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
        log.warning("%s error: %s", what, exc)
        # The driver's own first line (a constraint, a trigger's message); never the SQL that
        # SQLAlchemy appends, nor PostgreSQL's DETAIL lines with the row's values.
        raise LookalikeError(f"{what} error: {short_reason(orig, 200)}") from exc


# ---- engines --------------------------------------------------------------------------------


class _BoundedQueuePool(QueuePool):
    """A ``QueuePool`` whose "all connections busy" wait ends in ``Unavailable``."""

    def _do_get(self) -> Any:
        try:
            return super()._do_get()
        except sa.exc.TimeoutError as exc:
            raise _unavailable(
                "no free connection in the pool (the database is slow or stuck)"
            ) from exc


# SQLAlchemy names a pool's logger after its class: this one sits under ``lookalike``, whose
# INFO lines the CLI shows, and pool housekeeping ("Pool disposed") is not news for a user.
logging.getLogger(f"{__name__}.{_BoundedQueuePool.__name__}").setLevel(logging.WARNING)


@functools.cache
def _bounded_psycopg_class() -> type:
    """A psycopg connection whose every wait on the server has a deadline.

    psycopg waits for a silent server forever; a frozen server also cannot run its own
    statement_timeout. Past the deadline the connection is closed (so SQLAlchemy discards it
    and the pool reconnects) and OperationalError is raised.
    """
    import psycopg

    class BoundedConnection(psycopg.Connection):  # type: ignore[type-arg]
        lookalike_wait_s: float | None = None

        def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
            limit = self.lookalike_wait_s if timeout is None else timeout
            try:
                return super().wait(gen, interval=interval, timeout=limit)
            except psycopg.errors._WaitTimeout as exc:  # psycopg's own deadline
                if timeout is not None:
                    raise
                with contextlib.suppress(Exception):
                    self.close()
                raise psycopg.OperationalError(
                    f"no answer within {limit:.0f} s from the database server"
                ) from exc

    return BoundedConnection


def _postgres_engine(parsed: URL, opts: DatabaseSettings) -> Engine:
    connect_args: dict[str, Any] = {"application_name": "lookalike"}
    if "connect_timeout" not in parsed.query:
        # libpq counts whole seconds and psycopg refuses less than 2.
        connect_args["connect_timeout"] = max(2, math.ceil(opts.connect_timeout_s))
    statement = f"-c statement_timeout={int(opts.statement_timeout_s * 1000)}"
    given = parsed.query.get("options")
    connect_args["options"] = f"{given} {statement}" if isinstance(given, str) else statement
    engine = sa.create_engine(
        parsed,
        poolclass=_BoundedQueuePool,
        pool_pre_ping=True,
        pool_timeout=opts.pool_timeout_s,
        pool_size=opts.pool_size,
        max_overflow=opts.max_overflow,
        connect_args=connect_args,
        hide_parameters=True,
    )
    wait_s = opts.statement_timeout_s + opts.connect_timeout_s
    if parsed.get_driver_name() == "psycopg":

        @event.listens_for(engine, "do_connect")
        def _bounded_connect(_dialect: Any, _rec: Any, cargs: Any, cparams: Any) -> Any:
            conn = _bounded_psycopg_class().connect(*cargs, **cparams)
            conn.lookalike_wait_s = wait_s
            return conn

    return engine


def _sqlite_engine(parsed: URL, opts: DatabaseSettings) -> Engine:
    memory = _is_memory(parsed)
    if memory:
        engine = sa.create_engine(
            parsed,
            poolclass=StaticPool,
            connect_args={"check_same_thread": False},
            hide_parameters=True,
        )
    else:
        assert parsed.database is not None
        try:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot make the folder of the SQLite database: {exc.strerror} — check "
                "LOOKALIKE_HOME or LOOKALIKE_DATABASE_URL"
            ) from exc
        engine = sa.create_engine(
            parsed,
            poolclass=_BoundedQueuePool,
            pool_timeout=opts.pool_timeout_s,
            pool_size=opts.pool_size,
            max_overflow=opts.max_overflow,
            connect_args={"timeout": opts.sqlite_busy_timeout_s, "check_same_thread": False},
            hide_parameters=True,
        )

    path = Path(parsed.database or "")  # unused for an in-memory database
    existed = [False]  # has this engine ever opened the file? Then it must not make one.

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        if not memory:
            # WAL lets the server read while an import writes.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()
        if not memory:
            record.info["file_id"] = opened = _file_id(path)
            existed[0] = existed[0] or opened is not None

    if not memory:

        @event.listens_for(engine, "do_connect")
        def _no_new_file(_dialect: Any, _record: Any, _cargs: Any, _cparams: Any) -> None:
            if existed[0] and _file_id(path) is None:
                raise _gone()

        @event.listens_for(engine, "checkout")
        def _same_file(_dbapi_conn: Any, record: Any, _proxy: Any) -> None:
            _check_same_file(path, record.info.get("file_id"))

    return engine


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _check_same_file(path: Path, opened: tuple[int, int] | None) -> None:
    """Before a pooled SQLite connection is used: is its file still the one at ``path``?

    A connection keeps the file it opened, so a database deleted while the server runs still
    answers — and every write (a moderator's decision, an import) lands in a file that is gone
    once the server stops. Deleted or moved away: refuse (503, the same for reads and writes)
    instead of writing into it or creating an empty database in its place; the message says
    what to do. Replaced by another file (a backup moved into place): this connection is
    dropped and the pool opens the new file.
    """
    if opened is None:
        return
    now = _file_id(path)
    if now == opened:
        return
    if now is None:
        raise _gone()
    raise sa.exc.DisconnectionError("the SQLite database file was replaced")


def _gone() -> Unavailable:
    # A new connection would make an empty database in its place: refused as well.
    return _unavailable(
        "the SQLite database file was deleted or moved while the server ran; nothing is "
        "read or written until it is back (restore it, or restart to start a new one)"
    )


def _build_engine(key: str, opts: DatabaseSettings) -> Engine:
    parsed = make_url(key)
    try:
        if parsed.get_backend_name() == "sqlite":
            engine = _sqlite_engine(parsed, opts)
        else:
            engine = _postgres_engine(parsed, opts)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise ConfigError(
            f"cannot use database driver {parsed.drivername!r}: {type(exc).__name__} — for "
            "PostgreSQL install lookalike[postgres] and use postgresql://user@host/db"
        ) from exc

    @event.listens_for(engine, "handle_error")
    def _our_errors(context: Any) -> BaseException | None:
        return _translate(context.sqlalchemy_exception or context.original_exception)

    return engine


def get_engine(url: str | URL, options: DatabaseSettings | None = None) -> Engine:
    """The process's engine for ``url`` (normalised), built on first use; never connects.

    ``options`` default to ``DatabaseSettings()``; pass ``settings.db`` to honour
    ``LOOKALIKE_DB__*``. Raises ``ConfigError`` for a malformed URL or a missing driver.
    """
    opts = options if options is not None else DatabaseSettings()
    key = normalise_url(url)
    if _is_memory(make_url(key)):
        return _build_engine(key, opts)
    with _engines_lock:
        engine = _engines.get((key, opts))
        if engine is None:
            engine = _engines[(key, opts)] = _build_engine(key, opts)
        return engine


def dispose_engines(*, close: bool = True) -> None:
    """Forget every cached engine and close its pooled connections.

    For tests, and for a forked child: call it there with ``close=False`` so the parent's
    connections are dropped without being shut.
    """
    with _engines_lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        engine.dispose(close=close)


def database_problem(url: str | URL, options: DatabaseSettings | None = None) -> str | None:
    """None when ``SELECT 1`` answers, else a one-line reason (for /health). Never raises."""
    try:
        with translate_errors(), get_engine(url, options).connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except LookalikeError as exc:
        return exc.message
    return None


# ---- migrations -----------------------------------------------------------------------------


def _alembic_config() -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    config.attributes["version_table"] = VERSION_TABLE
    return config


@functools.cache
def _head() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None, "the migrations folder has no revisions"
    return head


def _current(conn: sa.Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


@contextlib.contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    database = engine.url.database
    if not database:  # in memory: one process by definition
        yield
        return
    with open(f"{database}.migrate-lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def migrate(url: str | URL, options: DatabaseSettings | None = None) -> str:
    """Bring the database at ``url`` to the newest schema; returns the head revision.

    Idempotent and cheap when already at head (one small read). Safe for processes starting at
    once: PostgreSQL migrations queue on an advisory lock, SQLite ones on a file lock. A
    database made by the old ``create_all`` calls (any subset of the tables) is adopted: the
    first revision creates only the tables that are missing, then records itself.
    """
    # Alembic's INFO lines (plugins, "Context impl") are noise under the CLI's INFO logging;
    # the one line that matters ("database schema at N") is ours.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from alembic import command

    engine = get_engine(url, options)
    head = _head()
    with translate_errors("the database"):
        with engine.connect() as conn:
            if _current(conn) == head:
                return head
        with _migrate_lock, contextlib.ExitStack() as stack:
            if engine.dialect.name == "sqlite":
                stack.enter_context(_sqlite_file_lock(engine))
            conn = stack.enter_context(engine.connect())
            if engine.dialect.name == "postgresql":
                # Held until commit; whoever waited finds the schema at head and does nothing.
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))
            config = _alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
            conn.commit()
            log.info("database schema at %s", head)
    return head
