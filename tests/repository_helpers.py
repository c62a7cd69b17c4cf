"""Helpers shared by the repository, unit-of-work and event tests."""

from __future__ import annotations

import contextlib
import threading

from cardlink_lite import Device, DeviceType, UnitOfWork


class EventRecorder:
    """Every event the global emitter delivers while the fixture is active."""

    def __init__(self):
        self.events = []
        self._lock = threading.Lock()

    def __call__(self, event):
        with self._lock:
            self.events.append(event)

    def types(self) -> list[str]:
        return [str(e.event_type) for e in self.events]

    def of(self, event_type) -> list:
        return [e for e in self.events if str(e.event_type) == str(event_type)]

    def clear(self) -> None:
        self.events.clear()


def add_devices(manager, *ids, **fields):
    """Commit devices (phones unless device_type is given) and return their ids."""
    fields.setdefault("device_type", DeviceType.PHONE)
    with UnitOfWork(manager) as uow:
        for device_id in ids:
            uow.devices.create(Device(id=device_id, **fields))
    return list(ids)


def committed_ids(manager, model=Device) -> set:
    """Primary keys as another thread (another connection) sees them: committed rows only."""
    result = {}

    def read():
        with manager.database.connection_context():
            result["ids"] = {row[0] for row in model.select(model._meta.primary_key).tuples()}

    thread = threading.Thread(target=read)
    thread.start()
    thread.join()
    return result["ids"]


@contextlib.contextmanager
def count_queries(manager):
    """The SQL statements executed inside the block."""
    statements: list[str] = []

    def hook(event):
        statements.append(event.sql)

    manager.database.query_hooks.append(hook)
    try:
        yield statements
    finally:
        manager.database.query_hooks.remove(hook)
