"""The event emitter: registration, wildcard, failing handlers, threads, after-commit delivery."""

from __future__ import annotations

import logging
import threading
from datetime import datetime

import pytest

import cardlink_lite
from cardlink_lite import (
    ApduLogWriter,
    CardProfile,
    DatabaseEvent,
    DatabaseEventEmitter,
    Device,
    DeviceType,
    EventType,
    UnitOfWork,
    get_emitter,
)
from cardlink_lite.events import emit_after_commit
from tests.repository_helpers import committed_ids

pytest_plugins = ["tests.repository_fixtures"]


def test_event_types_of_the_guide():
    for name in ("DEVICE_CREATED", "DEVICE_UPDATED", "DEVICE_DELETED", "CARD_CREATED",
                 "CARD_UPDATED", "CARD_DELETED", "SESSION_CREATED", "SESSION_UPDATED",
                 "SESSION_COMPLETED", "LOG_CREATED", "TEST_RESULT_CREATED", "SETTING_UPDATED"):
        assert EventType[name].value == name.lower()
    assert get_emitter() is get_emitter() is cardlink_lite.get_emitter()


def test_on_off_and_wildcard():
    emitter = DatabaseEventEmitter()
    got = []
    specific = emitter.on(EventType.DEVICE_CREATED, lambda e: got.append(("specific", e)))
    emitter.on("*", lambda e: got.append(("any", e.event_type)))
    event = emitter.emit(EventType.DEVICE_CREATED, "device", "D1", {"name": "x"})
    assert isinstance(event, DatabaseEvent) and isinstance(event.timestamp, datetime)
    assert event.timestamp.tzinfo is not None
    assert [g[0] for g in got] == ["specific", "any"]
    assert got[0][1].data == {"name": "x"} and got[0][1].entity_type == "device"
    got.clear()
    emitter.emit("card_created", "card", "C1")               # value spelling
    assert got == [("any", EventType.CARD_CREATED)]
    got.clear()
    emitter.off("DEVICE_CREATED", specific)                   # name spelling
    emitter.emit(EventType.DEVICE_CREATED, "device", "D1")
    assert [g[0] for g in got] == ["any"]
    emitter.off("*")
    emitter.off("never-registered", specific)                 # harmless
    got.clear()
    emitter.emit(EventType.DEVICE_CREATED, "device", "D1")
    assert got == [] and not emitter.has_handlers()


def test_custom_event_names_still_work():
    emitter = DatabaseEventEmitter()
    got = []
    emitter.on("lab.custom", got.append)
    emitter.emit("lab.custom", "lab", 1)
    assert got[0].event_type == "lab.custom"


def test_failing_handler_is_logged_and_others_still_run(caplog):
    emitter = DatabaseEventEmitter()
    got = []

    def broken(event):
        raise RuntimeError("dashboard is down")

    emitter.on("*", broken)
    emitter.on("*", got.append)
    with caplog.at_level(logging.ERROR, logger="cardlink_lite.events"):
        emitter.emit(EventType.LOG_CREATED, "log", None, {"count": 3})
    assert len(got) == 1
    assert "dashboard is down" in caplog.text and "log_created" in caplog.text


def test_failing_handler_does_not_break_the_write(manager, caplog):
    def broken(event):
        raise RuntimeError("handler bug")

    get_emitter().on(EventType.DEVICE_CREATED, broken)
    try:
        with caplog.at_level(logging.ERROR, logger="cardlink_lite.events"):
            with UnitOfWork(manager) as uow:
                uow.devices.create(Device(id="D1", device_type=DeviceType.PHONE))
    finally:
        get_emitter().off(EventType.DEVICE_CREATED, broken)
    assert committed_ids(manager) == {"D1"}
    assert "handler bug" in caplog.text


def test_concurrent_registration_and_emission():
    emitter = DatabaseEventEmitter()
    counts = []
    lock = threading.Lock()

    def handler(event):
        with lock:
            counts.append(1)

    def register():
        for _ in range(200):
            emitter.on("device_created", handler)
            emitter.off("device_created", handler)

    def emit():
        for _ in range(200):
            emitter.emit("device_created", "device", "x")

    threads = [threading.Thread(target=f) for f in (register, register, emit, emit)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not emitter.has_handlers()
    assert len(counts) <= 400


def test_every_change_emits_after_commit_only(manager, events, fernet_key):
    with UnitOfWork(manager) as uow:
        uow.devices.create(Device(id="D1", device_type=DeviceType.PHONE))
        uow.cards.create_with_psk(CardProfile(iccid="8901"), b"secret-psk")
        uow.settings.set_value("a", 1)
        assert events.events == []
    assert events.types() == ["device_created", "card_created", "setting_updated"]
    assert [e.entity_type for e in events.events] == ["device", "card", "setting"]
    assert all(b"secret" not in repr(e).encode() for e in events.events)
    events.clear()
    with pytest.raises(ZeroDivisionError):
        with UnitOfWork(manager) as uow:
            uow.devices.deactivate("D1")
            uow.cards.delete_by_id("8901")
            raise ZeroDivisionError("abort")
    assert events.events == []


def test_events_of_a_rolled_back_nested_unit_of_work_are_dropped(manager, events):
    with UnitOfWork(manager) as outer:
        outer.devices.create(Device(id="A", device_type="phone"))
        try:
            with UnitOfWork(manager) as inner:
                inner.devices.create(Device(id="B", device_type="phone"))
                raise RuntimeError
        except RuntimeError:
            pass
    assert [e.entity_id for e in events.events] == ["A"]


def test_emit_after_commit_helper(manager, events):
    database = manager.database
    emit_after_commit(database, EventType.LOG_CREATED, "log", None, {"count": 1})
    assert len(events.events) == 1                          # no transaction: now

    with UnitOfWork(manager):
        emit_after_commit(database, EventType.LOG_CREATED, "log", "s1", {"count": 2})
        emit_after_commit(cardlink_lite.database_proxy, "log_created", "log", "s1",
                          {"count": 3})
        assert len(events.events) == 1
    assert [e.data["count"] for e in events.events] == [1, 2, 3]

    with manager.atomic():                                  # a bare transaction
        emit_after_commit(database, EventType.LOG_CREATED, "log", "s2", {"count": 4})
        assert len(events.events) == 3
    assert events.events[-1].data == {"count": 4}

    with pytest.raises(RuntimeError):
        with manager.atomic():
            emit_after_commit(database, EventType.LOG_CREATED, "log", "s3", {"count": 5})
            raise RuntimeError
    with pytest.raises(RuntimeError):
        with UnitOfWork(manager):
            emit_after_commit(database, EventType.LOG_CREATED, "log", "s3", {"count": 6})
            raise RuntimeError
    assert len(events.events) == 4


def test_events_of_a_unit_of_work_inside_a_rolled_back_savepoint_are_dropped(manager, events):
    with manager.atomic():
        with pytest.raises(RuntimeError), manager.atomic():
            with UnitOfWork(manager) as uow:
                uow.devices.create(Device(id="GHOST", device_type="phone"))
            raise RuntimeError("a later step failed")
        with UnitOfWork(manager) as uow:
            uow.devices.create(Device(id="KEPT", device_type="phone"))
    with UnitOfWork(manager) as outer:
        with pytest.raises(RuntimeError), manager.atomic():
            with UnitOfWork(manager) as inner:
                inner.devices.create(Device(id="GHOST2", device_type="phone"))
            outer.devices.create(Device(id="GHOST3", device_type="phone"))
            raise RuntimeError
    assert committed_ids(manager) == {"KEPT"}
    assert [e.entity_id for e in events.events] == ["KEPT"]


def test_events_follow_savepoints_rolled_back_or_released_inside_the_block(manager, events):
    with manager.atomic():
        with manager.atomic() as savepoint:
            emit_after_commit(manager.database, EventType.LOG_CREATED, "log", "dropped")
            savepoint.rollback()                    # the block goes on, a new savepoint
            emit_after_commit(manager.database, EventType.LOG_CREATED, "log", "released")
            savepoint.commit()
            emit_after_commit(manager.database, EventType.LOG_CREATED, "log", "kept")
        assert events.events == []
    assert [e.entity_id for e in events.events] == ["released", "kept"]


def test_log_events_of_a_writer_flushed_in_a_rolled_back_savepoint_are_dropped(manager,
                                                                              events):
    with UnitOfWork(manager) as uow:
        session = uow.sessions.create_session(session_type="x")
    events.clear()
    writer = ApduLogWriter(manager, session_id=session.id, flush_interval=None)
    with manager.atomic():
        with pytest.raises(RuntimeError), manager.atomic():
            writer.command("00A40400")
            writer.flush()
            raise RuntimeError
    writer.close()
    assert events.events == []
    assert manager.database.execute_sql("SELECT COUNT(*) FROM comm_logs").fetchone()[0] == 0
