"""DatabaseManager: connects to the configured backend and binds the models' proxy to it."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from pathlib import Path
from urllib.parse import quote, urlencode

import peewee
from playhouse.pool import MaxConnectionsExceeded, PooledMySQLDatabase, PooledPostgresqlDatabase

from . import migrations
from ._peewee import ConnectedHook, discard_connection, set_field_type
from .config import DatabaseConfig
from .db import (
    bound_models,
    database_proxy,
    get_manager,
    process_binding,
    register_default_manager,
    scoped_connection,
    set_current_manager,
)
from .errors import (
    ConfigurationError,
    ConnectionError,
    DatabaseError,
    first_line,
    translate_error,
)
from .events import track_savepoints
from .fields import APDU_TEXT, DATETIME_MS, EXACT_COLLATION, JSON_TEXT
from .models import ALL_MODELS
from .redaction import install_sql_redaction
from .unit_of_work import UnitOfWork

__all__ = ["DatabaseManager", "get_manager", "init_database"]

logger = logging.getLogger("cardlink_lite")

_FIELD_TYPES = {
    "sqlite": {DATETIME_MS: "DATETIME", JSON_TEXT: "TEXT", APDU_TEXT: "TEXT"},
    "mysql": {DATETIME_MS: "DATETIME(3)", JSON_TEXT: "LONGTEXT", APDU_TEXT: "MEDIUMTEXT",
              EXACT_COLLATION: "CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin"},
    "postgresql": {DATETIME_MS: "TIMESTAMP(3)", JSON_TEXT: "TEXT", APDU_TEXT: "TEXT"},
}
_DRIVERS = {"mysql": "pymysql", "postgresql": "psycopg2"}
_RECONNECT_ATTEMPTS = 4


def init_database(url: str | None = None, **config_options) -> DatabaseManager:
    """Configure, connect and migrate to head in one call; returns the manager."""
    manager = DatabaseManager(DatabaseConfig(url, **config_options))
    manager.initialize(check_schema=False)
    migrations.run_migrations(manager=manager)
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

    def initialize(self, check_schema: bool = True,
                   readonly: bool | None = None) -> DatabaseManager:
        """Open the backend, check it answers, and bind the proxy to it. ``readonly=True``:
        SQLite opens the file with ``mode=ro``; units of work refuse repository writes."""
        if self._database is None:
            if readonly is not None:
                self.config.readonly = bool(readonly)
            install_sql_redaction()
            if self.config.echo:
                _enable_echo()
            database = self._build_database()
            track_savepoints(database)
            self._probe(database)
            if self.config.is_mysql and database.server_version < (10, 2):
                # MySQL and MariaDB before 10.2 have no NO PAD binary collation (schema 0007)
                set_field_type(database, EXACT_COLLATION,
                               "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            self._database = database
            if self.config.slow_query_ms:
                database.query_hooks.append(_slow_query_hook(self.config.slow_query_ms))
        self.bind()
        set_current_manager(self)
        if check_schema:
            # A pooled connection opened here would stay checked out by this thread.
            with scoped_connection(self._database):
                migrations.check_schema_version(self)
        return self

    def bind(self) -> None:
        """Point the models at this manager's database wherever no unit of work (or other
        ``bound_models`` block) of this thread points them elsewhere."""
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
        if process_binding() is database:
            database_proxy.initialize(None)

    def create_tables(self) -> None:
        """Create the newest schema and record every migration as applied."""
        migrations.create_schema(self)

    def drop_tables(self) -> None:
        """Drop every table of the store, migration history included."""
        migrations.drop_schema(self)

    @contextlib.contextmanager
    def atomic(self):
        """A transaction (a savepoint when one is already open); the models use this
        manager's database inside it, in this thread."""
        with bound_models(self.database), self.database.atomic() as transaction:
            yield transaction

    def create_session(self, readonly: bool | None = None) -> UnitOfWork:
        """A unit of work not entered yet (the guide's session): ``with`` it, or
        ``commit()``/``rollback()`` and ``close()`` it yourself."""
        return UnitOfWork(self, readonly=readonly)

    @contextlib.contextmanager
    def session_scope(self):
        """Commit on success, roll back on error; yields the Peewee database."""
        self.ensure_connection()
        with self.atomic():
            yield self.database

    def in_transaction(self) -> bool:
        return self._database is not None and self._database.in_transaction()

    def ensure_connection(self) -> None:
        """Before a unit of work: replace a connection the server dropped, with backoff
        (never inside a transaction: work is never moved to a new connection halfway)."""
        database = self.database
        if database.in_transaction():
            return
        if self.config.is_sqlite:
            database.connect(reuse_if_open=True)
            return
        for attempt in range(_RECONNECT_ATTEMPTS):
            try:
                if database.is_closed():
                    database.connect()
                else:
                    database.execute_sql("SELECT 1").fetchall()
                return
            except (peewee.OperationalError, peewee.InterfaceError) as exc:
                discard_connection(database)
                if attempt == _RECONNECT_ATTEMPTS - 1:
                    raise ConnectionError(
                        f"cannot reach {self.config.safe_url} after {_RECONNECT_ATTEMPTS} "
                        f"attempts ({first_line(exc)}); check that the server is running"
                    ) from exc
                logger.warning("database connection lost; reconnecting (attempt %d)",
                               attempt + 2)
                time.sleep(0.1 * 2 ** attempt)

    def health_check(self) -> dict:
        """Status, backend, redacted URL, schema revision and round-trip time."""
        info = {"backend": self.config.backend_name, "url": self.config.safe_url}
        try:
            self.ensure_connection()
            start = time.perf_counter()
            self.database.execute_sql("SELECT 1").fetchall()
            info["latency_ms"] = round((time.perf_counter() - start) * 1000, 3)
            info["revision"] = migrations.get_current_revision(manager=self)
            info["status"] = "healthy"
        except (DatabaseError, peewee.PeeweeException) as exc:
            info["status"] = "unhealthy"
            info["error"] = first_line(exc).replace(self.config.url, self.config.safe_url)
        return info

    def table_counts(self) -> dict[str, int]:
        """Row count of every table of the store (0 for a missing table)."""
        existing = set(self.database.get_tables())
        return {m._meta.table_name: m.select().count() if m._meta.table_name in existing else 0
                for m in ALL_MODELS}

    def _build_database(self) -> peewee.Database:
        cfg = self.config
        kwargs = cfg.connect_kwargs()
        name = kwargs.pop("database")
        if cfg.is_sqlite:
            return _sqlite_database(name, cfg)
        module = _DRIVERS[cfg.backend]
        try:
            __import__(module)
        except ImportError:
            raise ConfigurationError(
                f"the {cfg.backend_name} driver ({module}) is not installed; "
                f"run: pip install 'cardlink-lite[{cfg.backend}]'"
            ) from None
        pool = {"max_connections": cfg.pool_size + cfg.max_overflow, "timeout": cfg.pool_timeout,
                "stale_timeout": 300, "field_types": _FIELD_TYPES[cfg.backend]}
        kwargs.setdefault("connect_timeout", 10)
        if cfg.is_mysql:
            from pymysql.constants import CLIENT

            # Report rows matched, not rows changed, as SQLite and PostgreSQL do: an
            # update that rewrites the same values still found its row.
            kwargs.setdefault("client_flag", CLIENT.FOUND_ROWS)
            kwargs.setdefault("charset", "utf8mb4")
            if "read_timeout" not in kwargs:
                # PyMySQL's connect_timeout bounds the TCP connect only; the server's greeting
                # is read under read_timeout, forever by default: a server that accepts and
                # never answers hung. The handshake gets connect_timeout, queries no bound.
                kwargs["read_timeout"] = kwargs["connect_timeout"]
                return _UnboundedReadsMySQL(name, **pool, **kwargs)
            return _PooledMySQL(name, **pool, **kwargs)
        return _PooledPostgresql(name, **pool, **kwargs)

    def _probe(self, database: peewee.Database) -> None:
        try:
            database.connect(reuse_if_open=True)
            if not self.config.is_sqlite:
                database.close()
        except peewee.PeeweeException as exc:
            text = first_line(exc)
            password = self.config.connect_kwargs().get("password")
            if password:
                text = text.replace(password, "***")
            hint = (
                "check the path points at a cardlink SQLite file you can read and write"
                if self.config.is_sqlite else
                "check that the server is running and the URL (host, port, user, database "
                "name) is right"
            )
            raise ConnectionError(
                f"unable to connect to database {self.config.safe_url}: {text}; {hint}"
            ) from None


class _Pool:
    """Mixed into Peewee's pools: a full pool raises ConnectionError saying what to change."""

    def connect(self, reuse_if_open=False):
        try:
            return super().connect(reuse_if_open)
        except MaxConnectionsExceeded as exc:
            raise translate_error(exc, "this thread") from None


class _PooledMySQL(_Pool, PooledMySQLDatabase):
    pass


class _UnboundedReadsMySQL(ConnectedHook, _PooledMySQL):
    """Connects with read_timeout = connect_timeout, then lets queries run unbounded."""

    def connected(self, conn) -> None:
        conn._read_timeout = None  # PyMySQL applies it before its next read


class _PooledPostgresql(_Pool, PooledPostgresqlDatabase):
    pass


def _sqlite_database(name: str, cfg) -> peewee.SqliteDatabase:
    memory = name == ":memory:"
    options = dict(cfg.sqlite_uri_options)  # ?mode=ro and the like: SQLite's URI filename
    pragmas = {"foreign_keys": 1, "cache_size": -64000,
               "busy_timeout": int(cfg.busy_timeout * 1000)}
    kwargs = {"check_same_thread": False, "thread_safe": not memory}
    if cfg.readonly and not memory:
        # mode=ro, no pragma that writes (journal_mode), no file created: a store the user
        # may only read (an archive, a read-only mount) works.
        path = Path(name)
        if not path.is_file():
            raise ConfigurationError(
                f"no SQLite database at {str(path)!r}; check the path (a read-only command "
                "never creates one)"
            )
        name = path.resolve().as_uri().replace("file://", "file:", 1)
        options["mode"] = "ro"
    else:
        if not memory and options.get("mode") != "ro":
            _prepare_sqlite_file(Path(name))
        if options:
            name = f"file:{quote(name)}"
        pragmas = {"journal_mode": "memory" if memory else "wal", **pragmas,
                   "synchronous": "normal", "journal_size_limit": 64 * 1024 * 1024}
        kwargs["lock_type"] = "IMMEDIATE"
    if options:
        name = f"{name}?{urlencode(options)}"
        kwargs["uri"] = True
    database = peewee.SqliteDatabase(name, pragmas=pragmas, timeout=cfg.busy_timeout,
                                     field_types=_FIELD_TYPES["sqlite"], **kwargs)
    # SQLite's own LOWER() folds ASCII only: "Über" would not match "über" as on the servers.
    database.register_function(_lower, "lower", 1, deterministic=True)
    return database


def _lower(text):
    return text.lower() if isinstance(text, str) else text


def _prepare_sqlite_file(path: Path) -> None:
    # Create the file 0600 before SQLite opens it: its -wal/-shm copy its mode.
    if path.exists():
        return
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create SQLite database {str(path)!r}: {exc.strerror}; check the "
            "directory exists and is writable"
        ) from None
    # auto_vacuum only takes on a new file, before WAL. Not a per-connection pragma:
    # setting it waits for the write lock, so connecting would block behind any writer.
    with contextlib.closing(sqlite3.connect(str(path), isolation_level=None)) as conn:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode = WAL").fetchall()


def _enable_echo() -> None:
    sql_logger = logging.getLogger("peewee")
    sql_logger.setLevel(logging.DEBUG)
    # Peewee attaches a NullHandler to its logger: that one prints nothing.
    printing = [h for h in sql_logger.handlers if not isinstance(h, logging.NullHandler)]
    if not printing and not logging.getLogger().handlers:
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


register_default_manager(DatabaseManager)
