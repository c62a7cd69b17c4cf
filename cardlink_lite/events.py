"""Change events: a process-wide emitter; units of work deliver their events after commit."""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .fields import utc_now

__all__ = [
    "DatabaseEvent",
    "DatabaseEventEmitter",
    "EventQueue",
    "EventType",
    "deliver_all",
    "emit_after_commit",
    "get_emitter",
    "innermost_queue",
    "new_event",
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


class EventQueue:
    """Events of one unit of work (``owner``), held until its transaction ends. Queues stack
    per thread and database; a commit hands the events to the enclosing queue, else to
    ``database.after_commit``; a rollback drops them."""

    def __init__(self, database, owner=None):
        self.database = _real(database)
        self.owner = owner
        self.events: list[DatabaseEvent] = []
        _queues(self.database).append(self)

    def close(self, commit: bool) -> None:
        events, self.events = self.events, []
        queues = _queues(self.database)
        if self in queues:
            queues.remove(self)
        if commit and events:
            _hand_on(self.database, events)


_local = threading.local()


def _real(database):
    return getattr(database, "obj", None) or database  # a DatabaseProxy: what it points at


def _queues(database) -> list[EventQueue]:
    stacks = getattr(_local, "stacks", None)
    if stacks is None:
        stacks = _local.stacks = {}
    return stacks.setdefault(id(database), [])


def innermost_queue(database) -> EventQueue | None:
    """The innermost queue open on ``database`` in this thread, if any."""
    queues = _queues(_real(database))
    return queues[-1] if queues else None


def _hand_on(database, events) -> None:
    # Committed inside a transaction: to the enclosing unit of work's queue, else delivered
    # after the outermost commit (Peewee's after_commit runs it now outside a transaction).
    queues = _queues(database)
    if queues:
        queues[-1].events.extend(events)
    else:
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
    """Emit once the current transaction of ``database`` (in this thread) commits: for writes
    outside a repository (the APDU writer). With no transaction it is delivered now."""
    _hand_on(_real(database), [new_event(event_type, entity_type, entity_id, data)])
