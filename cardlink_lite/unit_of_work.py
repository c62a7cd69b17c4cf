"""UnitOfWork: one transaction, six repositories sharing it, events delivered after commit."""

from __future__ import annotations

import contextlib
import threading

import peewee

from .db import _discard_connection
from .errors import DatabaseError, translate_error
from .events import DatabaseEvent, _key, get_emitter
from .fields import utc_now

__all__ = ["UnitOfWork", "current_unit_of_work"]

_local = threading.local()


def _stack(database) -> list:
    if isinstance(database, peewee.DatabaseProxy):
        database = database.obj
    stacks = getattr(_local, "stacks", None)
    if stacks is None:
        stacks = _local.stacks = {}
    return stacks.setdefault(id(database), [])


def current_unit_of_work(database) -> UnitOfWork | None:
    """The innermost unit of work open on ``database`` in this thread, if any."""
    stack = _stack(database)
    return stack[-1] if stack else None


class UnitOfWork:
    """A transaction plus the repositories that work inside it.

    ``with UnitOfWork(manager) as uow:`` commits on a clean exit and rolls back on an
    exception; ``commit()``/``rollback()`` may be called inside, and work then continues in
    a new transaction. Without ``with`` the transaction opens on first repository use and
    ends with ``commit()``, ``rollback()`` or ``close()`` (which rolls back what is left);
    after the ``with`` block or ``close()``, repository calls run in autocommit mode.
    A unit of work opened while another transaction is open on the same thread works in a
    savepoint and never commits the outer one; re-entering the same unit of work only
    counts depth. One unit of work belongs to one thread.
    """

    def __init__(self, manager=None):
        if manager is None:
            from .db import get_manager

            manager = get_manager()
        self.manager = manager
        self._repos: dict[str, object] = {}
        self._events: list[DatabaseEvent] = []
        self._txn = None          # peewee _transaction (outermost) or _savepoint (nested)
        self._nested = False
        self._opened_connection = False
        self._depth = 0
        self._thread = None
        self._ended = False       # after `with` or close(): statements run in autocommit

    def __repr__(self) -> str:
        state = "open" if self._txn is not None else "idle"
        return f"<UnitOfWork {state} on {self.manager!r}>"

    @property
    def database(self) -> peewee.Database:
        return self.manager.database

    @property
    def in_transaction(self) -> bool:
        return self._txn is not None

    # -- context manager -----------------------------------------------------
    def __enter__(self) -> UnitOfWork:
        if self._depth == 0 and self._txn is None:
            self._ended = False
            self._begin()
        self._depth += 1
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._depth -= 1
        if self._depth == 0:
            self._ended = True
            if self._txn is not None:
                self._end(commit=exc_type is None, release=True)
        return False

    # -- transaction control ----------------------------------------------------
    def commit(self) -> None:
        """Commit the work so far and deliver its events; later work gets a new transaction."""
        if self._txn is not None:
            self._end(commit=True, release=False)

    def rollback(self) -> None:
        """Discard the work (and the events) since the last commit."""
        if self._txn is not None:
            self._end(commit=False, release=False)

    def close(self) -> None:
        """Roll back anything uncommitted and give the connection back."""
        self._ended = True
        if self._txn is not None:
            self._end(commit=False, release=True)
        elif self._opened_connection:
            self._release_connection()
        self._repos.clear()

    def queue_event(self, event_type, entity_type: str, entity_id, data=None) -> None:
        """Deliver this event once the transaction commits (never if it rolls back)."""
        event = DatabaseEvent(_key(event_type), entity_type, entity_id, utc_now(),
                              dict(data or {}))
        if self._txn is None:
            get_emitter().deliver(event)
        else:
            self._events.append(event)

    def _begin_if_needed(self) -> None:
        if self._txn is None:
            # Used after its end (e.g. a lazy result read after the `with` block): run
            # in autocommit rather than open a transaction nobody will ever end.
            if not self._ended:
                self._begin()
        elif self._thread != threading.get_ident():
            raise DatabaseError(
                "this UnitOfWork was opened in another thread; create one UnitOfWork per "
                "thread (peewee connections and transactions are per thread)"
            )

    def _begin(self) -> None:
        database = self.database
        self.manager.bind()
        if database.in_transaction():
            if isinstance(database.top_transaction(), peewee._manual):
                raise DatabaseError(
                    "cannot open a UnitOfWork inside database.manual_commit(); "
                    "leave the manual block first"
                )
            txn, nested = database.savepoint(), True
            with self._translated():
                txn.__enter__()
        else:
            self._opened_connection = self._opened_connection or database.is_closed()
            self.manager.ensure_connection()
            txn, nested = database.transaction(), False
            with self._translated():
                txn.__enter__()
        self._txn, self._nested = txn, nested
        self._thread = threading.get_ident()
        _stack(database).append(self)

    def _end(self, commit: bool, release: bool) -> None:
        # Rows a repository still buffers (APDU logs) belong to this transaction.
        if commit:
            try:
                self._call_repositories("_flush_pending")
            except BaseException:
                self._end(commit=False, release=release)
                raise
        else:
            self._call_repositories("_discard_pending")
        database, txn, nested = self.database, self._txn, self._nested
        events, self._events = self._events, []
        self._txn = None
        stack = _stack(database)
        if self in stack:
            stack.remove(self)
        try:
            if nested:
                self._end_savepoint(txn, commit, events)
            else:
                self._end_transaction(database, txn, commit, events)
        finally:
            self._transaction_ended()
            if release and not nested and self._opened_connection:
                self._release_connection()

    def _end_savepoint(self, txn, commit: bool, events: list) -> None:
        with self._translated():
            if not commit:
                txn.rollback(begin=False)
                return
            try:
                txn.commit(begin=False)
            except Exception:
                txn.rollback(begin=False)
                raise
        parent = current_unit_of_work(self.database)
        if parent is not None and parent._txn is not None:
            parent._events.extend(events)
        elif events:
            # Inside a bare database.atomic(): wait for that transaction's commit.
            self.database.after_commit(lambda: _deliver(events))

    def _end_transaction(self, database, txn, commit: bool, events: list) -> None:
        if database.top_transaction() is txn:
            database.pop_transaction()
        with self._translated():
            if not commit:
                _rollback_quietly(txn)
                return
            try:
                txn.commit(begin=False)
            except Exception:
                _rollback_quietly(txn)
                raise
        _deliver(events)

    def _transaction_ended(self) -> None:
        self._call_repositories("_transaction_ended")

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

    @contextlib.contextmanager
    def _translated(self):
        try:
            yield
        except peewee.PeeweeException as exc:
            raise translate_error(exc, "transaction") from exc

    # -- repositories ----------------------------------------------------------
    def _repo(self, name: str):
        repo = self._repos.get(name)
        if repo is None:
            from . import repositories

            repo = self._repos[name] = getattr(repositories, name)(self)
        return repo

    @property
    def devices(self):
        return self._repo("DeviceRepository")

    @property
    def cards(self):
        return self._repo("CardRepository")

    @property
    def sessions(self):
        return self._repo("SessionRepository")

    @property
    def logs(self):
        return self._repo("LogRepository")

    @property
    def tests(self):
        return self._repo("TestRepository")

    @property
    def settings(self):
        return self._repo("SettingsRepository")


def _rollback_quietly(txn) -> None:
    try:
        txn.rollback(begin=False)
    except peewee.PeeweeException:
        # The connection died with the transaction; the server has rolled it back.
        # Drop it so the next unit of work (or plain Peewee call) gets a fresh one.
        _discard_connection(txn.db)


def _deliver(events: list) -> None:
    emitter = get_emitter()
    for event in events:
        emitter.deliver(event)

