"""The one DatabaseProxy every model uses, the current manager, and a streaming helper.
It sits below the models; the manager that binds the proxy lives above them (``manager``).
The proxy points at the database bound in this thread or task (a unit of work, a
``bound_models`` block) if any, else at the process-wide one ``initialize()``/``bind()`` set:
two managers in one process, or one per thread, never write into each other's store."""

from __future__ import annotations

import contextlib
import contextvars
import threading

import peewee

from .errors import ConfigurationError

__all__ = [
    "bind_here",
    "bound_models",
    "database_proxy",
    "get_manager",
    "process_binding",
    "register_default_manager",
    "scoped_connection",
    "set_current_manager",
    "small_page_cache",
]


class _UnboundProxyError(ConfigurationError, AttributeError):
    pass


_here = contextvars.ContextVar("cardlink_lite_database", default=None)
_process_database = None


class _Proxy(peewee.DatabaseProxy):

    # Peewee reads and assigns ``obj`` (initialize(), attribute forwarding, playhouse).
    @property
    def obj(self):
        database = _here.get()
        return _process_database if database is None else database

    @obj.setter
    def obj(self, database):
        global _process_database
        _process_database = database

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

_current = None          # the manager most recently initialised in this process
_current_lock = threading.Lock()
_default_factory = None  # builds a manager from the environment (set by cardlink_lite.manager)


def register_default_manager(factory) -> None:
    """``factory()`` builds the manager :func:`get_manager` uses when none was initialised."""
    global _default_factory
    _default_factory = factory


def set_current_manager(manager) -> None:
    """Make ``manager`` the one :func:`get_manager` returns (done by ``initialize()``)."""
    global _current
    with _current_lock:
        _current = manager


def get_manager():
    """The manager most recently initialised in this process (a default one if none)."""
    global _current
    with _current_lock:
        if _current is None:
            if _default_factory is None:
                raise ConfigurationError(
                    "no database manager yet: call cardlink_lite.init_database(url) first")
            _current = _default_factory()
        manager = _current
    if not manager.is_initialized:
        manager.initialize()
    return manager


def process_binding() -> peewee.Database | None:
    """The database the models use where nothing else is bound (``initialize()``, ``bind()``)."""
    return _process_database


def bind_here(database: peewee.Database | None) -> peewee.Database | None:
    """Point the models at ``database`` in this thread or task only (None: at the process-wide
    binding); returns what was bound here before, to hand back when done."""
    previous = _here.get()
    _here.set(database)
    return previous


@contextlib.contextmanager
def bound_models(database: peewee.Database | None):
    """Point the models at ``database`` meanwhile, in this thread or task only."""
    previous = bind_here(database)
    try:
        yield
    finally:
        bind_here(previous)


@contextlib.contextmanager
def small_page_cache(database, kib: int = 2048):
    """On SQLite, shrink this connection's page cache to ``kib`` KiB meanwhile: a table read
    once end to end gains nothing from the 64 MB cache, yet would fill it."""
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


@contextlib.contextmanager
def scoped_connection(database: peewee.Database):
    """A connection the block opens in this thread is closed at its end (a pool's goes back:
    a thread that ends would keep it checked out); one open before stays open."""
    opened = database.is_closed()
    try:
        yield
    finally:
        if opened and not database.in_transaction():
            with contextlib.suppress(peewee.PeeweeException):
                database.close()
