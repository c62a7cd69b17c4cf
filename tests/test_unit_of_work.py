"""UnitOfWork: commit/rollback boundaries, nesting, manual use, threads, event timing."""

from __future__ import annotations

import threading

import pytest

from cardlink_lite import (
    CardProfile,
    DatabaseError,
    Device,
    DeviceType,
    IntegrityError,
    UnitOfWork,
)
from cardlink_lite.repositories import (
    CardRepository,
    DeviceRepository,
    SessionRepository,
    SettingsRepository,
    TestRepository,
)
from cardlink_lite.unit_of_work import current_unit_of_work
from tests.repository_helpers import add_devices, committed_ids

pytest_plugins = ["tests.repository_fixtures"]


def phone(device_id: str) -> Device:
    return Device(id=device_id, device_type=DeviceType.PHONE)


def test_clean_exit_commits_and_exposes_manager(manager):
    with UnitOfWork(manager) as uow:
        assert uow.manager is manager
        assert uow.database is manager.database
        assert uow.in_transaction
        uow.devices.create(phone("D1"))
        assert committed_ids(manager) == set()  # not visible to others before commit
    assert not uow.in_transaction
    assert committed_ids(manager) == {"D1"}


def test_exception_rolls_back_and_is_reraised(manager, events):
    with pytest.raises(RuntimeError, match="boom"):
        with UnitOfWork(manager) as uow:
            uow.devices.create(phone("D1"))
            raise RuntimeError("boom")
    assert committed_ids(manager) == set()
    assert events.events == []


def test_commit_inside_then_failure_keeps_committed_part(manager, events):
    with pytest.raises(RuntimeError):
        with UnitOfWork(manager) as uow:
            uow.devices.create(phone("D1"))
            uow.commit()
            assert events.types() == ["device_created"]
            uow.devices.create(phone("D2"))
            raise RuntimeError("after the commit")
    assert committed_ids(manager) == {"D1"}
    assert [e.entity_id for e in events.events] == ["D1"]


def test_rollback_inside_discards_and_work_continues(manager, events):
    with UnitOfWork(manager) as uow:
        uow.devices.create(phone("D1"))
        uow.rollback()
        assert uow.devices.count() == 0
        uow.devices.create(phone("D2"))
    assert committed_ids(manager) == {"D2"}
    assert [e.entity_id for e in events.events] == ["D2"]


def test_repositories_are_shared_and_typed(manager):
    with UnitOfWork(manager) as uow:
        assert uow.devices is uow.devices
        assert isinstance(uow.devices, DeviceRepository)
        assert isinstance(uow.cards, CardRepository)
        assert isinstance(uow.sessions, SessionRepository)
        assert isinstance(uow.tests, TestRepository)
        assert isinstance(uow.settings, SettingsRepository)
        uow.devices.create(phone("D1"))
        uow.cards.create(CardProfile(iccid="8901"))
        # One transaction: a failure rolls back what both repositories wrote.
        uow.rollback()
        assert uow.devices.count() == 0 and uow.cards.count() == 0


def test_manual_management_sample(manager):
    device = phone("RF8M...")
    uow = UnitOfWork(manager)
    try:
        uow.devices.create(device)
        uow.commit()
    except Exception:
        uow.rollback()
        raise
    finally:
        uow.close()
    assert committed_ids(manager) == {"RF8M..."}
    assert not manager.database.in_transaction()


def test_manual_close_without_commit_rolls_back(manager):
    uow = UnitOfWork(manager)
    uow.devices.create(phone("D1"))
    assert uow.in_transaction  # opened lazily by the first repository call
    uow.close()
    assert not manager.database.in_transaction()
    assert committed_ids(manager) == set()


def test_manual_failure_rolls_back(manager):
    add_devices(manager, "D1")
    uow = UnitOfWork(manager)
    with pytest.raises(IntegrityError, match="duplicate device 'D1'"):
        try:
            uow.devices.create(phone("D2"))
            uow.devices.create(phone("D1"))
            uow.commit()
        except Exception:
            uow.rollback()
            raise
        finally:
            uow.close()
    assert committed_ids(manager) == {"D1"}


def test_nested_unit_of_work_never_commits_the_outer(manager, events):
    with pytest.raises(RuntimeError):
        with UnitOfWork(manager) as outer:
            outer.devices.create(phone("OUTER"))
            with UnitOfWork(manager) as inner:
                inner.devices.create(phone("INNER"))
                inner.commit()                 # a savepoint release, not a COMMIT
                inner.devices.create(phone("INNER2"))
            assert current_unit_of_work(manager.database) is outer
            assert committed_ids(manager) == set()
            assert events.events == []
            raise RuntimeError("outer fails")
    assert committed_ids(manager) == set()
    assert events.events == []


def test_nested_failure_rolls_back_only_the_inner(manager, events):
    with UnitOfWork(manager) as outer:
        outer.devices.create(phone("OUTER"))
        with pytest.raises(ValueError):
            with UnitOfWork(manager) as inner:
                inner.devices.create(phone("INNER"))
                raise ValueError("inner fails")
        with UnitOfWork(manager) as inner:
            inner.devices.create(phone("INNER2"))
        assert outer.devices.count() == 2
    assert committed_ids(manager) == {"OUTER", "INNER2"}
    assert sorted(e.entity_id for e in events.events) == ["INNER2", "OUTER"]


def test_reentering_the_same_unit_of_work_commits_once(manager):
    uow = UnitOfWork(manager)
    with uow:
        with uow:
            uow.devices.create(phone("D1"))
        assert uow.in_transaction
        assert committed_ids(manager) == set()
    assert committed_ids(manager) == {"D1"}


def test_unit_of_work_inside_bare_atomic_waits_for_its_commit(manager, events):
    with manager.atomic():
        with UnitOfWork(manager) as uow:
            uow.devices.create(phone("D1"))
        assert events.events == []
    assert events.types() == ["device_created"]

    events.clear()
    with pytest.raises(KeyError):
        with manager.atomic():
            with UnitOfWork(manager) as uow:
                uow.devices.create(phone("D2"))
            raise KeyError("x")
    assert events.events == []
    assert committed_ids(manager) == {"D1"}


def test_refused_write_leaves_the_transaction_usable(manager):
    add_devices(manager, "D1")
    with UnitOfWork(manager) as uow:
        uow.devices.create(phone("D2"))
        with pytest.raises(IntegrityError) as info:
            uow.devices.create(phone("D1"))
        assert info.value.__cause__ is not None
        uow.devices.create(phone("D3"))  # PostgreSQL would refuse without the savepoint
    assert committed_ids(manager) == {"D1", "D2", "D3"}


def test_default_manager_is_the_current_one(manager):
    with UnitOfWork() as uow:
        assert uow.manager is manager
        uow.devices.create(phone("D1"))
    assert committed_ids(manager) == {"D1"}


def test_reconnects_after_the_connection_was_closed(manager):
    add_devices(manager, "D1")
    manager.database.close()
    with UnitOfWork(manager) as uow:
        assert uow.devices.exists("D1")


def test_unit_of_work_belongs_to_one_thread(manager):
    uow = UnitOfWork(manager)
    uow.devices.count()
    errors = []

    def other():
        try:
            uow.devices.count()
        except DatabaseError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    uow.close()
    assert errors and "one UnitOfWork per thread" in errors[0]


def test_threads_with_their_own_units_of_work(manager, events):
    failures = []

    def work(prefix: str, commit: bool):
        try:
            for i in range(5):
                try:
                    with UnitOfWork(manager) as uow:
                        uow.devices.create(phone(f"{prefix}{i}"))
                        uow.devices.create(phone(f"{prefix}{i}b"))
                        if not commit:
                            raise LookupError("discard")
                except LookupError:
                    pass
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(repr(exc))

    threads = [threading.Thread(target=work, args=(p, p != "N")) for p in "ABN"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    expected = {f"{p}{i}{s}" for p in "AB" for i in range(5) for s in ("", "b")}
    assert committed_ids(manager) == expected
    assert {e.entity_id for e in events.events} == expected
    assert not manager.database.in_transaction()


def test_many_short_lived_threads_do_not_exhaust_the_pool(manager):
    # Each thread's unit of work returns its connection when it ends.
    def work(i):
        with UnitOfWork(manager) as uow:
            uow.devices.create(phone(f"T{i}"))

    for batch in range(4):
        threads = [threading.Thread(target=work, args=(batch * 6 + i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(committed_ids(manager)) == 24


def test_events_are_delivered_outside_the_transaction(manager, events):
    seen = []

    def check(event):
        seen.append((event.entity_id, manager.database.in_transaction(),
                     event.entity_id in committed_ids(manager)))

    from cardlink_lite import get_emitter

    get_emitter().on("device_created", check)
    try:
        with UnitOfWork(manager) as uow:
            uow.devices.create(phone("D1"))
            assert seen == []
    finally:
        get_emitter().off("device_created", check)
    assert seen == [("D1", False, True)]


def test_use_after_the_block_runs_in_autocommit(manager, events):
    with UnitOfWork(manager) as uow:
        uow.devices.create(phone("D1"))
    assert uow.devices.count() == 1              # e.g. a lazy result read after the block
    assert not manager.database.in_transaction()  # no transaction left open behind us
    uow.devices.create(phone("D2"))              # a write commits at once, event at once
    assert committed_ids(manager) == {"D1", "D2"}
    assert [e.entity_id for e in events.events] == ["D1", "D2"]
    uow.close()
    assert uow.devices.exists("D2") and not manager.database.in_transaction()
    with uow:                                    # entering again opens a new transaction
        uow.devices.create(phone("D3"))
        assert uow.in_transaction
    assert committed_ids(manager) == {"D1", "D2", "D3"}


def test_buffered_log_rows_are_written_at_commit_and_dropped_at_rollback(manager):
    from cardlink_lite import CommLog, UnitOfWork

    with UnitOfWork(manager) as uow:
        session = uow.sessions.create_session(session_type="triggered")
        uow.logs.add_log_batch([(session.id, "command", "00A4040000", "SELECT")])
    assert CommLog.select().count() == 1
    with pytest.raises(RuntimeError), UnitOfWork(manager) as uow:
        uow.logs.add_log_batch([(session.id, "response", "9000", "OK")])
        raise RuntimeError("abort")
    with UnitOfWork(manager) as uow:
        uow.logs.add_log_batch([(session.id, "command", "00B0000000", None)])
        uow.rollback()
    assert CommLog.select().count() == 1
