"""Issue 10 items 8-9 (SQLite): reads never wait for a writer; a read-only store is read
with mode=ro and never converted."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from cardlink_lite import (
    ConfigurationError,
    DatabaseConfig,
    DatabaseError,
    DatabaseManager,
    Device,
    UnitOfWork,
)
from tests.repository_helpers import add_devices


@pytest.fixture
def store(tmp_path):
    """A SQLite store with one device; its URL."""
    url = f"sqlite:///{tmp_path}/store.db"
    manager = DatabaseManager(url).initialize(check_schema=False)
    manager.create_tables()
    add_devices(manager, "D1")
    manager.close()
    return url, tmp_path / "store.db"


@pytest.fixture
def writer_holds_the_lock(store):
    """Another connection inside BEGIN IMMEDIATE (a bench process writing)."""
    blocker = sqlite3.connect(store[1], isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    blocker.execute("UPDATE devices SET notes = 'busy'")
    yield blocker
    blocker.execute("ROLLBACK")
    blocker.close()


def _manager(url, **options):
    # A short busy timeout: a read that needed the write lock fails at once, not in 30 s.
    return DatabaseManager(DatabaseConfig(url, busy_timeout=0.2, **options)).initialize()


def _statements(manager) -> list[str]:
    seen: list[str] = []
    manager.database.connection().set_trace_callback(seen.append)
    return seen


def test_units_of_work_that_only_read_do_not_wait_for_a_writer(store, writer_holds_the_lock):
    manager = _manager(store[0])
    try:
        with UnitOfWork(manager) as uow:
            assert [d.id for d in uow.devices.get_all()] == ["D1"]
            assert uow.devices.get("D1").notes is None      # the last committed value
        with UnitOfWork(manager, readonly=True) as uow:
            assert uow.devices.count() == 1
        uow = manager.create_session()                       # without `with`
        assert uow.devices.find_by(id="D1")[0].id == "D1"
        uow.commit()
        uow.close()
    finally:
        manager.close()


def test_a_writer_still_begins_immediate(store):
    manager = _manager(store[0])
    try:
        seen = _statements(manager)
        with UnitOfWork(manager) as uow:
            uow.devices.count()
        assert "BEGIN DEFERRED" in seen and "BEGIN IMMEDIATE" not in seen
        seen.clear()
        with UnitOfWork(manager) as uow:
            uow.devices.get("D1")                              # read first ...
            uow.devices.create(Device(id="D2", device_type="phone"))   # ... then write
        begins = [s for s in seen if s.startswith("BEGIN")]
        assert begins == ["BEGIN DEFERRED", "BEGIN IMMEDIATE"]
        first_insert = next(i for i, s in enumerate(seen) if s.startswith("INSERT"))
        assert seen.index("BEGIN IMMEDIATE") < first_insert
    finally:
        manager.close()


def test_a_writer_waits_for_the_lock_then_writes(store):
    blocker = sqlite3.connect(store[1], isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    manager = DatabaseManager(store[0]).initialize()
    done = threading.Event()
    errors = []

    def write():
        try:
            with UnitOfWork(manager) as uow:
                uow.devices.get("D1")
                uow.devices.create(Device(id="D9", device_type="phone"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=write)
    thread.start()
    assert not done.wait(0.3)           # it waits for the lock (busy timeout 30 s) ...
    blocker.execute("COMMIT")           # ... and writes once the other writer is done
    thread.join(30)
    blocker.close()
    manager.close()
    assert errors == []
    assert sqlite3.connect(store[1]).execute(
        "SELECT COUNT(*) FROM devices WHERE id = 'D9'").fetchone()[0] == 1


def test_a_readonly_unit_of_work_refuses_writes(store):
    manager = _manager(store[0])
    try:
        with UnitOfWork(manager, readonly=True) as uow:
            with pytest.raises(DatabaseError, match="read-only"):
                uow.devices.create(Device(id="D2", device_type="phone"))
    finally:
        manager.close()


def test_readonly_manager_opens_the_file_read_only_and_never_converts_it(store):
    url, path = store
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0] == "delete"
    conn.close()
    for manager in (DatabaseManager(DatabaseConfig(url, readonly=True)).initialize(),
                    DatabaseManager(url).initialize(readonly=True)):
        try:
            assert "mode=ro" in manager.database.database
            with UnitOfWork(manager) as uow:
                assert uow.devices.get("D1").id == "D1"
            with pytest.raises(DatabaseError):
                with UnitOfWork(manager, readonly=False) as uow:
                    uow.devices.create(Device(id="D2", device_type="phone"))
        finally:
            manager.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert conn.execute("SELECT COUNT(*) FROM devices").fetchone()[0] == 1
    conn.close()


def test_readonly_manager_never_writes_an_empty_file_or_creates_a_missing_one(tmp_path):
    empty = tmp_path / "empty.db"
    empty.touch()
    manager = DatabaseManager(DatabaseConfig(f"sqlite:///{empty}", readonly=True))
    manager.initialize(check_schema=False)
    assert manager.database.get_tables() == []
    manager.close()
    assert empty.stat().st_size == 0
    missing = tmp_path / "missing.db"
    with pytest.raises(ConfigurationError, match="no SQLite database"):
        DatabaseManager(DatabaseConfig(f"sqlite:///{missing}", readonly=True)).initialize()
    assert not missing.exists()
