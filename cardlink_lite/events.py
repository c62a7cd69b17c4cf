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
    "EventType",
    "emit_after_commit",
    "get_emitter",
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


def _key(event_type) -> EventType | str:
    """An EventType for its member, value or name (any case); other strings as they are."""
    if isinstance(event_type, EventType) or event_type == WILDCARD:
        return event_type
    text = str(event_type)
    try:
        return EventType(text.lower())
    except ValueError:
        pass
    try:
        return EventType[text.upper()]
    except KeyError:
        return text


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
        event = DatabaseEvent(_key(event_type), entity_type, entity_id, utc_now(),
                              dict(data or {}))
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


def emit_after_commit(database, event_type, entity_type: str, entity_id: Any,
                      data: dict[str, Any] | None = None) -> None:
    """Emit once the current transaction of ``database`` (in this thread) commits.

    For code that writes outside a repository (e.g. the APDU writer): inside an open
    ``UnitOfWork`` the event joins its queue; inside a bare ``database.atomic()`` it waits
    for that transaction's commit (dropped on its rollback); with no transaction it is
    delivered now.
    """
    from .unit_of_work import current_unit_of_work

    uow = current_unit_of_work(database)
    if uow is not None and uow.in_transaction:
        uow.queue_event(event_type, entity_type, entity_id, data)
    elif database.in_transaction():
        database.after_commit(lambda: _emitter.emit(event_type, entity_type, entity_id, data))
    else:
        _emitter.emit(event_type, entity_type, entity_id, data)
