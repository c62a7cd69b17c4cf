"""UnitOfWork: one ``atomic()`` block, six repositories sharing it, events after commit."""

from __future__ import annotations

import contextlib
import threading

import peewee

from ._peewee import discard_connection
from .db import bind_here, get_manager
from .errors import DatabaseError, translate_error
from .events import emit_after_commit
from .repositories import (
    CardRepository,
    CounterRepository,
    DeviceRepository,
    LogRepository,
    SessionRepository,
    SettingsRepository,
    TestRepository,
)

__all__ = ["UnitOfWork", "current_unit_of_work"]


class _Rollback(Exception):
    """Handed to the atomic block's exit to make it roll back."""


_local = threading.local()


def _open_units(database) -> list[UnitOfWork]:
    """The units of work open on ``database`` in this thread, outermost first."""
    database = getattr(database, "obj", None) or database  # a DatabaseProxy: what it points at
    return _local.__dict__.setdefault("open", {}).setdefault(id(database), [])


def current_unit_of_work(database) -> UnitOfWork | None:
    """The innermost unit of work open on ``database`` in this thread, if any."""
    units = _open_units(database)
    return units[-1] if units else None


class UnitOfWork:
    """A transaction (``database.atomic()``) plus the repositories that work inside it:
    ``with`` commits on a clean exit, rolls back on an exception; nested, it is a savepoint.
    Changed objects its repositories handed out are saved at commit (see the README)."""

    def __init__(self, manager=None, readonly: bool | None = None):
        self.manager = manager if manager is not None else get_manager()
        if readonly is None:  # a read-only manager hands out read-only units of work
            readonly = getattr(getattr(self.manager, "config", None), "readonly", False)
        self.readonly = bool(readonly)
        self._repos: dict[type, object] = {}
        self._tracked: dict[int, tuple] = {}   # id(obj) -> (repository, obj) handed out
        self._scope: contextlib.ExitStack | None = None   # holds the open atomic() block
        self._nested = False
        self._deferred = False    # SQLite: begun DEFERRED, no write lock taken yet
        self._changes = 0         # SQLite: the connection's total_changes at begin
        self._opened_connection = False
        self._depth = 0
        self._thread = None
        self._ended = False       # after `with` or close(): statements run in autocommit
        self._outer = None        # what the models used in this thread before it began

    def __repr__(self) -> str:
        state = "open" if self._scope is not None else "idle"
        return f"<UnitOfWork {state} on {self.manager!r}>"

    @property
    def database(self) -> peewee.Database:
        return self.manager.database

    @property
    def in_transaction(self) -> bool:
        return self._scope is not None

    # -- context manager -----------------------------------------------------
    def __enter__(self) -> UnitOfWork:
        if self._depth == 0 and self._scope is None:
            self._ended = False
            self._begin()
        self._depth += 1
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._depth -= 1
        if self._depth == 0:
            self._ended = True
            if self._scope is not None:
                self._end(commit=exc_type is None, release=True)
        return False

    # -- transaction control ----------------------------------------------------
    def commit(self) -> None:
        """Commit the work so far and deliver its events; later work gets a new transaction."""
        if self._scope is not None:
            self._end(commit=True, release=False)

    def rollback(self) -> None:
        """Discard the work (and the events) since the last commit."""
        if self._scope is not None:
            self._end(commit=False, release=False)

    def close(self) -> None:
        """Roll back anything uncommitted and give the connection back."""
        self._ended = True
        if self._scope is not None:
            self._end(commit=False, release=True)
        elif self._opened_connection:
            self._release_connection()
        self._repos.clear()

    def track(self, repository, objs) -> None:
        """Remember objects a repository handed out: changed ones are saved at commit."""
        if self._scope is not None:
            tracked = self._tracked
            for obj in objs:
                tracked[id(obj)] = (repository, obj)

    def _save_tracked(self) -> None:
        for repository, obj in list(self._tracked.values()):
            if obj.is_dirty():
                repository.save_changes(obj)

    def queue_event(self, event_type, entity_type: str, entity_id, data=None) -> None:
        """Deliver this event once the transaction commits (never if it rolls back)."""
        emit_after_commit(self.database, event_type, entity_type, entity_id, data)

    def begin_if_needed(self, write: bool = False) -> None:
        if write and self.readonly:
            raise DatabaseError(
                "this UnitOfWork is read-only (readonly=True); open UnitOfWork(manager) "
                "to write"
            )
        if self._scope is None:
            # Used after its end (e.g. a lazy result read after the `with` block): run
            # in autocommit rather than open a transaction nobody will ever end.
            if not self._ended:
                self._begin(write)
        elif self._thread != threading.get_ident():
            raise DatabaseError(
                "this UnitOfWork was opened in another thread; create one UnitOfWork per "
                "thread (peewee connections and transactions are per thread)"
            )
        elif write and self._deferred:
            self._take_write_lock()

    def _begin(self, write: bool = False) -> None:
        # SQLite: DEFERRED, so reads take no lock; the first write begins IMMEDIATE.
        manager = self.manager
        database = manager.database
        nested = database.in_transaction()
        if not nested and database.is_closed():
            self._opened_connection = True
            manager.ensure_connection()
        options = {}
        self._deferred = False
        sqlite = isinstance(database, peewee.SqliteDatabase)
        if not nested and sqlite:
            options["lock_type"] = "IMMEDIATE" if write else "DEFERRED"
            self._deferred = not write
            self._changes = database.connection().total_changes
        scope = contextlib.ExitStack()
        try:
            try:
                scope.enter_context(database.atomic(**options))
            except (peewee.OperationalError, peewee.InterfaceError):
                if nested or sqlite:
                    raise
                # An open connection the server dropped while idle (restart, timeout,
                # kill): nothing ran in it yet, so a fresh one (with the manager's back-off)
                # is safe. Found by the BEGIN itself, not by a liveness query per unit.
                discard_connection(database)
                manager.ensure_connection()
                scope.enter_context(database.atomic(**options))
        except ValueError:  # Peewee refuses atomic() inside manual_commit()
            raise DatabaseError(
                "cannot open a UnitOfWork inside database.manual_commit(); "
                "leave the manual block first"
            ) from None
        except peewee.PeeweeException as exc:
            raise translate_error(exc, "transaction") from exc
        self._scope, self._nested = scope, nested
        _open_units(database).append(self)
        self._thread = threading.get_ident()
        # Models (obj.save(), Model.update()) use this store here, whatever other managers
        # or threads bind, until it ends: then the enclosing unit of work's again.
        self._outer = bind_here(database)

    def _take_write_lock(self) -> None:
        """SQLite, first write after a DEFERRED begin: if nothing was written yet, begin again
        IMMEDIATE (upgrading in place fails at once if another writer committed meanwhile)."""
        self._deferred = False
        database = self.database
        if database.transaction_depth() != 1 or \
                database.connection().total_changes != self._changes:
            return
        try:
            self._scope.close()
            scope = contextlib.ExitStack()
            scope.enter_context(database.atomic(lock_type="IMMEDIATE"))
        except peewee.PeeweeException as exc:
            raise translate_error(exc, "transaction") from exc
        self._scope = scope

    def _end(self, commit: bool, release: bool) -> None:
        # Rows a repository still buffers (APDU logs) belong to this transaction.
        if commit:
            try:
                self._call_repositories("_flush_pending")
                self._save_tracked()
            except BaseException:
                self._end(commit=False, release=release)
                raise
        else:
            self._call_repositories("_discard_pending")
        if release or not commit:
            self._tracked.clear()
        scope, nested = self._scope, self._nested
        self._scope = None
        units = _open_units(self.database)
        if self in units:
            units.remove(self)
        try:
            self._exit(scope, None if commit else _Rollback(), nested)
        finally:
            bind_here(self._outer)
            if release and not nested and self._opened_connection:
                self._release_connection()

    def _exit(self, scope: contextlib.ExitStack, error, nested: bool) -> None:
        try:
            if error is None:
                scope.close()                          # COMMIT (or RELEASE SAVEPOINT)
            else:
                scope.__exit__(type(error), error, None)  # ROLLBACK (TO SAVEPOINT)
        except peewee.PeeweeException as exc:
            failed_rollback = error is not None or isinstance(exc.__context__,
                                                              peewee.PeeweeException)
            if failed_rollback and not nested:
                # The connection died with the transaction; the server has rolled it back.
                # Drop it so the next unit of work (or plain Peewee call) gets a fresh one.
                discard_connection(self.database)
                if error is not None:
                    return
                exc = exc.__context__
            raise translate_error(exc, "transaction") from exc

    def _call_repositories(self, hook_name: str) -> None:
        for repo in list(self._repos.values()):
            hook = getattr(repo, hook_name, None)
            if hook is not None:
                hook()

    def _release_connection(self) -> None:
        self._opened_connection = False
        database = self.database
        if not database.in_transaction():
            with contextlib.suppress(peewee.PeeweeException):
                database.close()

    # -- repositories, each made on first use -------------------------------------
    def _repo(self, cls):
        repo = self._repos.get(cls)
        if repo is None:
            repo = self._repos[cls] = cls(self)
        return repo

    devices = property(lambda self: self._repo(DeviceRepository))
    cards = property(lambda self: self._repo(CardRepository))
    counters = property(lambda self: self._repo(CounterRepository))
    sessions = property(lambda self: self._repo(SessionRepository))
    logs = property(lambda self: self._repo(LogRepository))
    tests = property(lambda self: self._repo(TestRepository))
    settings = property(lambda self: self._repo(SettingsRepository))
