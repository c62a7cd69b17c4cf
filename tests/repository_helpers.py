"""Fixtures shared by the repository, unit-of-work and event tests (import them by name)."""

from __future__ import annotations

import threading

import pytest
from cryptography.fernet import Fernet

from cardlink_lite import Device, DeviceType, UnitOfWork
from cardlink_lite.events import get_emitter


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


@pytest.fixture
def events():
    recorder = EventRecorder()
    get_emitter().on("*", recorder)
    yield recorder
    get_emitter().off("*", recorder)


@pytest.fixture
def fernet_key(monkeypatch) -> str:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", key)
    return key


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
