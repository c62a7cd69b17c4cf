"""Change events: a process-wide emitter; events are delivered after the commit of the
writes they report, and dropped with them on a rollback (of a savepoint too)."""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ._peewee import watch_savepoints
from .fields import utc_now

__all__ = [
    "DatabaseEvent",
    "DatabaseEventEmitter",
    "EventType",
    "deliver_all",
    "emit_after_commit",
    "get_emitter",
    "new_event",
    "track_savepoints",
]

logger = logging.getLogger("cardlink_lite.events")

WILDCARD = "*"


class EventType(str, enum.Enum):
    DEVICE_CREATED = "device_created"
    DEVICE_UPDATED = "device_updated"
    DEVICE_DELETED = "device_deleted"
    CARD_CREATED = "card_created"
    CARD_UPDATED = "card_updated"
    CARD_DELETED = "card_deleted"
    SESSION_CREATED = "session_created"
    SESSION_UPDATED = "session_updated"
    SESSION_COMPLETED = "session_completed"
    SESSION_DELETED = "session_deleted"
    LOG_CREATED = "log_created"
    LOG_DELETED = "log_deleted"
    TEST_RESULT_CREATED = "test_result_created"
    TEST_RESULT_UPDATED = "test_result_updated"
    TEST_RESULT_DELETED = "test_result_deleted"
    SETTING_UPDATED = "setting_updated"
    SETTING_DELETED = "setting_deleted"

    def __str__(self) -> str:
        return self.value


@dataclass
class DatabaseEvent:
    """One committed change: what happened, to which entity, when (UTC), and a summary."""

    event_type: EventType | str
    entity_type: str
    entity_id: Any
    timestamp: datetime = field(default_factory=utc_now)
    data: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[DatabaseEvent], None]


_MEMBERS = {key.lower(): member for member in EventType for key in (member.value, member.name)}


def _key(event_type) -> EventType | str:
    """An EventType for its member, value or name (any case); other strings as they are."""
    if isinstance(event_type, EventType) or event_type == WILDCARD:
        return event_type
    text = str(event_type)
    return _MEMBERS.get(text.lower(), text)


class DatabaseEventEmitter:
    """Handlers per event type (or ``"*"`` for all); safe to use from many threads."""

    def __init__(self):
        self._handlers: dict[EventType | str, list[Handler]] = {}
        self._lock = threading.Lock()

    def on(self, event_type, handler: Handler) -> Handler:
        """Call ``handler(event)`` for every ``event_type`` event; returns the handler."""
        with self._lock:
            self._handlers.setdefault(_key(event_type), []).append(handler)
        return handler

    def off(self, event_type, handler: Handler | None = None) -> None:
        """Remove ``handler`` (or every handler of ``event_type`` when none is given)."""
        key = _key(event_type)
        with self._lock:
            handlers = self._handlers.get(key)
            if not handlers:
                return
            if handler is None:
                del self._handlers[key]
            elif handler in handlers:
                handlers.remove(handler)

    def clear(self) -> None:
        """Remove every handler."""
        with self._lock:
            self._handlers.clear()

    def has_handlers(self) -> bool:
        with self._lock:
            return any(self._handlers.values())

    def emit(self, event_type, entity_type: str, entity_id: Any,
             data: dict[str, Any] | None = None) -> DatabaseEvent:
        """Build an event and deliver it now (use it only after the change is committed)."""
        event = new_event(event_type, entity_type, entity_id, data)
        self.deliver(event)
        return event

    def deliver(self, event: DatabaseEvent) -> None:
        """Hand ``event`` to its handlers, then the wildcard ones; a failing handler is logged."""
        with self._lock:
            handlers = list(self._handlers.get(_key(event.event_type), ()))
            handlers += self._handlers.get(WILDCARD, ())
        for handler in handlers:
            try:
                handler(event)
            except Exception:
                # A dashboard bug must not undo or interrupt a committed write.
                logger.exception("event handler %r failed on %s", handler, event.event_type)


_emitter = DatabaseEventEmitter()


def get_emitter() -> DatabaseEventEmitter:
    """The process-wide emitter every unit of work delivers to."""
    return _emitter


_local = threading.local()


def _levels(database) -> list[list[DatabaseEvent]]:
    """The events of each savepoint open in this thread's transaction on ``database``,
    outermost first (a new transaction starts with none)."""
    state = _local.__dict__.setdefault("levels", {})
    top = database.top_transaction()
    entry = state.get(id(database))
    if entry is None or entry[0] is not top:
        entry = state[id(database)] = (top, [])
    return entry[1]


def _savepoint_begun(database) -> None:
    _levels(database).append([])


def _savepoint_ended(database, released: bool, reopened: bool) -> None:
    # Released: its events join the enclosing savepoint (or wait for the commit); rolled
    # back: they are dropped, like its writes.
    levels = _levels(database)
    if levels:
        events = levels.pop()
        if released:
            _hand_on(database, events)
        if reopened:
            levels.append([])


def track_savepoints(database) -> None:
    """Let events queued inside a savepoint of ``database`` share its fate (the manager
    calls it on every database it builds)."""
    watch_savepoints(database, _savepoint_begun, _savepoint_ended)


def _hand_on(database, events) -> None:
    # Inside a savepoint: kept with it. Else inside a transaction: delivered after the
    # outermost commit (a rollback drops Peewee's after_commit callbacks). Else now.
    if not database.in_transaction():
        deliver_all(events)
        return
    levels = _levels(database)
    if levels:
        levels[-1].extend(events)
    elif events:
        database.after_commit(lambda: deliver_all(events))


def deliver_all(events) -> None:
    """Deliver committed events in order through the process-wide emitter."""
    for event in events:
        _emitter.deliver(event)


def new_event(event_type, entity_type: str, entity_id: Any,
              data: dict[str, Any] | None = None) -> DatabaseEvent:
    """An event stamped now, its type normalised (member, value or name)."""
    return DatabaseEvent(_key(event_type), entity_type, entity_id, utc_now(), dict(data or {}))


def emit_after_commit(database, event_type, entity_type: str, entity_id: Any,
                      data: dict[str, Any] | None = None) -> None:
    """Emit once the current transaction of ``database`` (in this thread) commits, never if
    the savepoint or transaction around it rolls back. With no transaction: now."""
    database = getattr(database, "obj", None) or database  # a DatabaseProxy: what it points at
    _hand_on(database, [new_event(event_type, entity_type, entity_id, data)])
