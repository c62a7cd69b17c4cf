"""The one DatabaseProxy every model uses, and DatabaseManager that binds it to a backend."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path

import peewee
from playhouse.pool import PooledMySQLDatabase, PooledPostgresqlDatabase

from .config import DatabaseConfig
from .errors import ConfigurationError, ConnectionError, DatabaseError, first_line
from .fields import DATETIME_MS, JSON_TEXT
from .redaction import install_sql_redaction

__all__ = [
    "DatabaseManager",
    "bound_models",
    "database_proxy",
    "get_manager",
    "init_database",
    "max_rows_per_statement",
    "small_page_cache",
]

logger = logging.getLogger("cardlink_lite")

_FIELD_TYPES = {
    "sqlite": {DATETIME_MS: "DATETIME", JSON_TEXT: "TEXT"},
    "mysql": {DATETIME_MS: "DATETIME(3)", JSON_TEXT: "LONGTEXT"},
    "postgresql": {DATETIME_MS: "TIMESTAMP(3)", JSON_TEXT: "TEXT"},
}
_DRIVERS = {"mysql": ("pymysql", "mysql"), "postgresql": ("psycopg2", "postgresql")}
_RECONNECT_ATTEMPTS = 4
_SQLITE_SAFE_VARIABLES = 999    # SQLite < 3.32, and the floor when the limit is unknown
_SERVER_VARIABLES = 20000       # MariaDB/PostgreSQL take far more; this keeps packets modest
_STREAM_CACHE_KIB = 2048        # SQLite page cache while streaming a whole table out


class _UnboundProxyError(ConfigurationError, AttributeError):
    pass


class _Proxy(peewee.DatabaseProxy):

    def __getattr__(self, attr):
        if self.obj is None:
            if attr.startswith("_"):
                raise AttributeError(attr)
            raise _UnboundProxyError(
                "no database is bound yet: call DatabaseManager(config).initialize() "
                "or cardlink_lite.init_database(url) before using the models"
            )
        return getattr(self.obj, attr)


database_proxy = _Proxy()

_current: DatabaseManager | None = None
_current_lock = threading.Lock()


def get_manager() -> DatabaseManager:
    """The manager most recently initialised in this process (a default one if none)."""
    global _current
    with _current_lock:
        if _current is None:
            _current = DatabaseManager()
    if not _current.is_initialized:
        _current.initialize()
    return _current


def init_database(url: str | None = None, **config_options) -> DatabaseManager:
    """Configure, connect and migrate to head in one call; returns the manager."""
    from .migrations import run_migrations

    manager = DatabaseManager(DatabaseConfig(url, **config_options))
    manager.initialize(check_schema=False)
    run_migrations(manager=manager)
    return manager


class DatabaseManager:
    """Connects to the configured backend and binds ``database_proxy`` to it."""

    def __init__(self, config: DatabaseConfig | str | None = None):
        if config is None or isinstance(config, str):
            config = DatabaseConfig(config)
        self.config = config
        self._database: peewee.Database | None = None

    def __repr__(self) -> str:
        return f"DatabaseManager({self.config.safe_url!r})"

    # -- lifecycle -------------------------------------------------------
    @property
    def is_initialized(self) -> bool:
        return self._database is not None

    @property
    def database(self) -> peewee.Database:
        """The Peewee database this manager owns (initialising it on first use)."""
        if self._database is None:
            self.initialize()
        return self._database

    @property
    def backend(self) -> str:
        return self.config.backend

    def initialize(self, check_schema: bool = True) -> DatabaseManager:
        """Open the backend, check it answers, and bind the proxy to it."""
        global _current
        if self._database is None:
            install_sql_redaction()
            if self.config.echo:
                _enable_echo()
            database = self._build_database()
            self._probe(database)
            self._database = database
            if self.config.slow_query_ms:
                database.query_hooks.append(_slow_query_hook(self.config.slow_query_ms))
        self.bind()
        with _current_lock:
            _current = self
        if check_schema:
            from .migrations import check_schema_version

            check_schema_version(self)
        return self

    def bind(self) -> None:
        """Point the models at this manager's database (after another manager was used)."""
        if database_proxy.obj is not self._database:
            database_proxy.initialize(self._database)

    def close(self) -> None:
        """Close every connection this manager opened."""
        database = self._database
        if database is None:
            return
        with contextlib.suppress(peewee.PeeweeException):
            if not database.in_transaction():
                database.close()
        if hasattr(database, "close_all"):
            database.close_all()
        self._database = None
        if database_proxy.obj is database:
            database_proxy.initialize(None)

    # -- schema ----------------------------------------------------------
    def create_tables(self) -> None:
        """Create the newest schema and record every migration as applied."""
        from .migrations import create_schema

        create_schema(self)

    def drop_tables(self) -> None:
        """Drop every table of the store, migration history included."""
        from .migrations import drop_schema

        drop_schema(self)

    # -- transactions ----------------------------------------------------
    def atomic(self):
        """A transaction (a savepoint when one is already open)."""
        self.bind()
        return self.database.atomic()

    @contextlib.contextmanager
    def session_scope(self):
        """Commit on success, roll back on error; yields the Peewee database."""
        self.ensure_connection()
        with self.atomic():
            yield self.database

    def in_transaction(self) -> bool:
        return self._database is not None and self._database.in_transaction()

    def ensure_connection(self) -> None:
        """Before a unit of work: replace a connection the server dropped, with backoff.

        Never called inside a transaction, so work is never silently moved to a
        new connection halfway.
        """
        database = self.database
        self.bind()
        if database.in_transaction():
            return
        if self.config.is_sqlite:
            database.connect(reuse_if_open=True)
            return
        delay = 0.1
        for attempt in range(_RECONNECT_ATTEMPTS):
            try:
                if not database.is_closed():
                    database.execute_sql("SELECT 1").fetchall()
                    return
                database.connect()
                return
            except (peewee.OperationalError, peewee.InterfaceError) as exc:
                _discard_connection(database)
                if attempt == _RECONNECT_ATTEMPTS - 1:
                    raise ConnectionError(
                        f"cannot reach {self.config.safe_url} after {_RECONNECT_ATTEMPTS} "
                        f"attempts ({first_line(exc)}); check that the server is running"
                    ) from exc
                logger.warning("database connection lost; reconnecting (attempt %d)",
                               attempt + 2)
                time.sleep(delay)
                delay *= 2

    # -- information -----------------------------------------------------
    def health_check(self) -> dict:
        """Status, backend, redacted URL, schema revision and round-trip time."""
        from .migrations import get_current_revision

        info = {"backend": self.config.backend_name, "url": self.config.safe_url}
        try:
            self.ensure_connection()
            start = time.perf_counter()
            self.database.execute_sql("SELECT 1").fetchall()
            info["latency_ms"] = round((time.perf_counter() - start) * 1000, 3)
            info["revision"] = get_current_revision(manager=self)
            info["status"] = "healthy"
        except (DatabaseError, peewee.PeeweeException) as exc:
            info["status"] = "unhealthy"
            info["error"] = first_line(exc).replace(self.config.url, self.config.safe_url)
        return info

    def table_counts(self) -> dict[str, int]:
        """Row count of every table of the store (0 for a missing table)."""
        from .models import ALL_MODELS

        existing = set(self.database.get_tables())
        return {
            m._meta.table_name: (m.select().count() if m._meta.table_name in existing else 0)
            for m in ALL_MODELS
        }

    # -- internals -------------------------------------------------------
    def _build_database(self) -> peewee.Database:
        cfg = self.config
        kwargs = cfg.connect_kwargs()
        name = kwargs.pop("database")
        field_types = _FIELD_TYPES[cfg.backend]
        if cfg.is_sqlite:
            memory = name == ":memory:"
            if not memory:
                _prepare_sqlite_file(Path(name))
            kwargs.setdefault("check_same_thread", False)
            return peewee.SqliteDatabase(
                name,
                pragmas={
                    "journal_mode": "memory" if memory else "wal",
                    "foreign_keys": 1,
                    "synchronous": "normal",
                    "cache_size": -64000,
                    "busy_timeout": int(cfg.busy_timeout * 1000),
                    "journal_size_limit": 64 * 1024 * 1024,
                },
                timeout=cfg.busy_timeout,
                lock_type="IMMEDIATE",
                thread_safe=not memory,
                field_types=field_types,
                **kwargs,
            )
        module, extra = _DRIVERS[cfg.backend]
        try:
            __import__(module)
        except ImportError:
            raise ConfigurationError(
                f"the {cfg.backend_name} driver ({module}) is not installed; "
                f"run: pip install 'cardlink-lite[{extra}]'"
            ) from None
        pool = {
            "max_connections": cfg.pool_size + cfg.max_overflow,
            "timeout": cfg.pool_timeout,
            "stale_timeout": 300,
            "field_types": field_types,
        }
        if cfg.is_mysql:
            from pymysql.constants import CLIENT

            # Report rows matched, not rows changed, as SQLite and PostgreSQL do: an
            # update that rewrites the same values still found its row.
            kwargs.setdefault("client_flag", CLIENT.FOUND_ROWS)
            kwargs.setdefault("charset", "utf8mb4")
            kwargs.setdefault("connect_timeout", 10)
            return PooledMySQLDatabase(name, **pool, **kwargs)
        kwargs.setdefault("connect_timeout", 10)
        return PooledPostgresqlDatabase(name, **pool, **kwargs)

    def _probe(self, database: peewee.Database) -> None:
        try:
            database.connect(reuse_if_open=True)
            if not self.config.is_sqlite:
                database.close()
        except peewee.PeeweeException as exc:
            text = first_line(exc)
            pw = self.config.connect_kwargs().get("password")
            if pw:
                text = text.replace(pw, "***")
            hint = (
                "check the path points at a cardlink SQLite file you can read and write"
                if self.config.is_sqlite else
                "check that the server is running and the URL (host, port, user, database "
                "name) is right"
            )
            raise ConnectionError(
                f"unable to connect to database {self.config.safe_url}: {text}; {hint}"
            ) from None


def _prepare_sqlite_file(path: Path) -> None:
    # Create the file 0600 before SQLite opens it: its -wal/-shm copy its mode.
    if not path.exists():
        try:
            if not path.parent.exists():
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.close(fd)
            _init_sqlite_file(path)
        except FileExistsError:
            pass
        except OSError as exc:
            raise ConfigurationError(
                f"cannot create SQLite database {str(path)!r}: {exc.strerror}; check the "
                "directory exists and is writable"
            ) from None


def _init_sqlite_file(path: Path) -> None:
    # auto_vacuum only takes on a new file, before WAL. Not a per-connection pragma:
    # setting it waits for the write lock, so connecting would block behind any writer.
    import sqlite3

    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode = WAL").fetchall()
    finally:
        conn.close()


def _discard_connection(database: peewee.Database) -> None:
    conn = database._state.conn
    if conn is not None and hasattr(database, "_in_use"):
        # A pooled connection: drop it instead of handing it back to the pool.
        database._in_use.pop(database.conn_key(conn), None)
        with contextlib.suppress(Exception):
            conn.close()
    database._state.reset()





def bound_models(database: peewee.Database, models):
    """Bind ``models`` to ``database`` meanwhile, unless the proxy already points there.

    Binding is class-wide (other threads see it), so it only happens when needed, e.g.
    for a second manager in the same process.
    """
    if database_proxy.obj is database:
        return contextlib.nullcontext()
    return database.bind_ctx(models)


def max_rows_per_statement(database, columns: int, cap: int = 1000) -> int:
    """How many rows of ``columns`` values one multi-row statement may bind (at most
    ``cap``): within SQLite's own variable limit, or a generous server default."""
    if isinstance(database, peewee.DatabaseProxy):
        database = database.obj
    if isinstance(database, peewee.SqliteDatabase):
        import sqlite3

        variables = _SQLITE_SAFE_VARIABLES
        conn = database.connection()
        if hasattr(conn, "getlimit"):  # Python >= 3.11
            variables = max(variables, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
    else:
        variables = _SERVER_VARIABLES
    return max(1, min(cap, variables // max(1, columns)))


@contextlib.contextmanager
def small_page_cache(database, kib: int = _STREAM_CACHE_KIB):
    """On SQLite, shrink this connection's page cache to ``kib`` KiB meanwhile.

    A table read once from end to end gains nothing from the 64 MB cache the manager
    gives each connection, yet would fill it: that is most of an export's memory. The
    previous size comes back afterwards (also when an iterator using this is closed).
    Other backends: nothing to do.
    """
    if not isinstance(database, peewee.SqliteDatabase):
        yield
        return
    conn = database.connection()
    previous = conn.execute("PRAGMA cache_size").fetchone()[0]
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    current = -previous * 1024 if previous < 0 else previous * page
    if current <= kib * 1024:
        yield
        return
    conn.execute(f"PRAGMA cache_size = {-int(kib)}")
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # the connection may be closed by now
            conn.execute(f"PRAGMA cache_size = {int(previous)}")


def _enable_echo() -> None:
    sql_logger = logging.getLogger("peewee")
    sql_logger.setLevel(logging.DEBUG)
    if not sql_logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("SQL: %(message)s"))
        sql_logger.addHandler(handler)


def _slow_query_hook(threshold_ms: float):
    slow = logging.getLogger("cardlink_lite.slow_query")

    def hook(event) -> None:
        elapsed = event.duration * 1000
        if elapsed >= threshold_ms:
            slow.warning("slow query (%.1f ms): %s", elapsed, event.sql)

    return hook
