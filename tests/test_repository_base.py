"""BaseRepository: the generic CRUD set, counting, pagination and error translation."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from cardlink_lite import (
    CommDirection,
    CommLog,
    Device,
    DeviceType,
    IntegrityError,
    NotFoundError,
    OTASession,
    Page,
    UnitOfWork,
    ValidationError,
)
from cardlink_lite.repositories import BaseRepository
from tests.repository_helpers import add_devices, committed_ids

pytest_plugins = ["tests.repository_fixtures"]


class _LogRows(BaseRepository):
    model = CommLog
    entity_type = "log"
    bulk_event = True


def phone(device_id: str, **fields) -> Device:
    return Device(id=device_id, device_type=DeviceType.PHONE, **fields)


def test_empty_table(manager):
    with UnitOfWork(manager) as uow:
        repo = uow.devices
        assert repo.get_by_id("nope") is None
        assert repo.get_all() == [] and repo.get_all(limit=5) == []
        assert repo.find_by(name="x") == [] and repo.find_one_by(name="x") is None
        assert repo.count() == 0 and repo.count_by(device_type="phone") == 0
        assert repo.exists("nope") is False
        assert repo.delete_by_id("nope") is False
        page = repo.paginate()
        assert (page.items, page.total, page.pages, page.total_items, page.total_pages) == (
            [], 0, 0, 0, 0)
        with pytest.raises(NotFoundError, match="device 'nope' not found"):
            repo.get("nope")


@pytest.mark.parametrize("repo_name", ["sessions", "tests"])
def test_an_id_that_is_not_a_uuid_finds_no_row(manager, repo_name):
    # As for devices: no row has that key (the README: get_by_id returns None).
    with UnitOfWork(manager) as uow:
        repo = getattr(uow, repo_name)
        kept = (uow.sessions.create_session() if repo_name == "sessions" else
                uow.tests.create_result(run_id="r", suite_name="s", test_name="t",
                                        status="passed"))
        for bad in ("invalid", "", 12, kept.id + "\n"):
            assert repo.get_by_id(bad) is None
            assert repo.exists(bad) is False
            assert repo.delete_by_id(bad) is False
        with pytest.raises(NotFoundError, match="not found"):
            repo.get("invalid")
        if repo_name == "sessions":  # what changes a session still says what is wrong
            with pytest.raises(ValidationError, match="UUID"):
                repo.complete_session("invalid")
        assert repo.exists(kept.id) and repo.count() == 1
    with UnitOfWork(manager) as uow:
        assert getattr(uow, repo_name).get_by_id(kept.id).id == kept.id


def test_crud_round_trip(manager, events):
    with UnitOfWork(manager) as uow:
        repo = uow.devices
        created = repo.create(phone("D1", name="One"))
        assert created.id == "D1"
        assert repo.get_by_id("D1").name == "One"
        assert repo.exists("D1")
        created.name = "Renamed"
        repo.update(created)
        assert repo.get("D1").name == "Renamed"
        assert repo.delete(created) is True
        assert repo.get_by_id("D1") is None
        repo.create(id="D2", device_type="modem")  # keyword form
        assert repo.delete_by_id("D2") is True
    assert events.types() == ["device_created", "device_updated", "device_deleted",
                              "device_created", "device_deleted"]
    assert events.events[0].data == {"device_type": "phone", "name": "One"}


def test_find_by_and_count_by(manager):
    add_devices(manager, "P1", "P2", name="same")
    add_devices(manager, "M1", device_type=DeviceType.MODEM)
    with UnitOfWork(manager) as uow:
        repo = uow.devices
        assert [d.id for d in repo.find_by(device_type=DeviceType.PHONE)] == ["P1", "P2"]
        assert [d.id for d in repo.find_by(device_type="MODEM")] == ["M1"]   # name or value
        assert [d.id for d in repo.find_by(name=None)] == ["M1"]             # None -> IS NULL
        assert [d.id for d in repo.find_by(id=["P2", "M1"])] == ["M1", "P2"]  # list -> IN
        assert repo.find_one_by(name="same").id == "P1"
        assert repo.count() == 3
        assert repo.count_by(device_type="phone", name="same") == 2
        assert [d.id for d in repo.get_all(limit=2)] == ["M1", "P1"]


def test_unknown_field_names_the_field(manager):
    with UnitOfWork(manager) as uow:
        for call in (lambda: uow.devices.find_by(nmae="x"),
                     lambda: uow.devices.find_one_by(nmae="x"),
                     lambda: uow.devices.count_by(nmae="x"),
                     lambda: uow.devices.paginate(order_by="nmae")):
            with pytest.raises(ValidationError, match="Device has no field 'nmae'") as info:
                call()
            assert "device_type" in str(info.value)     # lists the known fields
            assert info.value.problems == ["nmae"]


def test_unknown_enum_value_is_refused(manager):
    with UnitOfWork(manager) as uow:
        with pytest.raises(ValidationError, match="device_type must be one of phone, modem"):
            uow.devices.find_by(device_type="toaster")
        with pytest.raises(ValidationError, match="toaster"):
            uow.devices.create(Device(id="X", device_type="toaster"))


@pytest.mark.parametrize("repo_name", ["logs", "counters"])
def test_an_integer_key_beyond_64_bits_finds_no_row(manager, repo_name):
    # SQLite's driver raised a bare OverflowError; the servers found nothing.
    with UnitOfWork(manager) as uow:
        repo = getattr(uow, repo_name)
        for bad in (2**63, -2**63 - 1, 2**70):
            assert repo.get_by_id(bad) is None
            assert repo.exists(bad) is False
            assert repo.delete_by_id(bad) is False
        assert repo.get_by_id(2**63 - 1) is None and repo.exists(-2**63) is False


def test_integer_beyond_64_bits_is_refused_naming_the_field(manager):
    # SQLite's driver raised a bare OverflowError here; the servers quietly matched nothing.
    with UnitOfWork(manager) as uow:
        for call in (lambda: uow.sessions.find_by(duration_ms=2**64),
                     lambda: uow.sessions.find_one_by(duration_ms=-2**70),
                     lambda: uow.sessions.count_by(duration_ms=[1, 2**64])):
            with pytest.raises(ValidationError, match="duration_ms must be a 64-bit") as info:
                call()
            assert info.value.problems == ["duration_ms"]
        assert uow.sessions.find_by(duration_ms=[2**63 - 1, -2**63]) == []


def test_aliases_and_foreign_key_names_are_fields(manager):
    add_devices(manager, "D1")
    with UnitOfWork(manager) as uow:
        sessions = BaseRepository(uow)
        sessions.model, sessions.entity_type = OTASession, "session"
        sessions.create(OTASession(device_id="D1", cipher_suite="TLS_PSK"))
        assert sessions.count_by(device_id="D1") == 1
        assert sessions.count_by(device="D1") == 1
        assert sessions.count_by(cipher_suite="TLS_PSK") == 1


def test_duplicate_key_is_an_integrity_error_naming_it(manager):
    add_devices(manager, "RF8M33XXXXX")
    with UnitOfWork(manager) as uow:
        with pytest.raises(IntegrityError, match="duplicate device 'RF8M33XXXXX'") as info:
            uow.devices.create(phone("RF8M33XXXXX"))
        assert info.value.__cause__ is not None


def test_create_rejects_other_types(manager):
    with UnitOfWork(manager) as uow:
        with pytest.raises(ValidationError, match="expected a Device"):
            uow.devices.create(object())
        with pytest.raises(ValidationError, match="not both"):
            uow.devices.create(phone("A"), name="x")


def test_update_of_a_missing_row(manager):
    with UnitOfWork(manager) as uow:
        with pytest.raises(NotFoundError, match="device 'ghost' not found"):
            uow.devices.update(phone("ghost"))


def test_create_all_is_one_atomic_bulk_insert(manager, events):
    devices = [phone(f"device_{i:03d}") for i in range(300)]
    with UnitOfWork(manager) as uow:
        queries = []
        manager.database.query_hooks.append(lambda e: queries.append(e.sql))
        try:
            assert uow.devices.create_all(devices) is not None
        finally:
            manager.database.query_hooks.pop()
        inserts = [q for q in queries if q.lstrip().upper().startswith("INSERT")]
        assert 1 <= len(inserts) <= 5      # multi-row INSERTs, not 300
    assert len(committed_ids(manager)) == 300
    assert len(events.of("device_created")) == 300

    # One bad row: nothing of the batch is kept, and the transaction stays usable.
    with UnitOfWork(manager) as uow:
        with pytest.raises(IntegrityError):
            uow.devices.create_all([phone("new_1"), phone("device_000")])
        assert uow.devices.count() == 300
    assert uow.devices.create_all([]) == []


def test_create_all_auto_increment_rows_emit_one_event(manager, events):
    add_devices(manager, "D1")
    with UnitOfWork(manager) as uow:
        session = OTASession(device_id="D1")
        logs = _LogRows(uow)
        with uow.database.atomic():
            session.save(force_insert=True)
        logs.create_all([CommLog(session=session.id, direction=CommDirection.COMMAND,
                                 raw_data=f"00A4{i:04X}") for i in range(50)])
        assert logs.count() == 50
    assert events.of("log_created")[0].data == {"count": 50}
    assert len(events.of("log_created")) == 1


def test_paginate(manager):
    add_devices(manager, *[f"D{i:02d}" for i in range(45)])
    with UnitOfWork(manager) as uow:
        page = uow.devices.paginate(page=2, per_page=20)
        assert isinstance(page, Page)
        assert [d.id for d in page.items] == [f"D{i:02d}" for i in range(20, 40)]
        assert (page.total, page.page, page.per_page, page.pages) == (45, 2, 20, 3)
        assert page.has_next and page.has_prev and len(page) == 20
        last = uow.devices.paginate(page=3, per_page=20, order_by="id", descending=True)
        assert [d.id for d in last] == ["D04", "D03", "D02", "D01", "D00"]
        assert uow.devices.paginate(page=9).items == []
        # Equal sort keys: the primary key breaks ties, so pages never overlap.
        seen = [d.id for p in (1, 2, 3) for d in uow.devices.paginate(
            page=p, per_page=20, order_by="device_type")]
        assert sorted(seen) == [f"D{i:02d}" for i in range(45)]
        for bad in ({"page": 0}, {"per_page": 0}, {"page": "1"}):
            with pytest.raises(ValidationError, match="must be an integer from 1 to"):
                uow.devices.paginate(**bad)
        with pytest.raises(ValidationError, match="limit"):
            uow.devices.get_all(limit=-1)


def test_paginate_orders_each_way_asked_for(manager):
    # Each order is its own statement: asking one way, then another, gives each its order.
    add_devices(manager, "D1", "D2", "D3")
    with UnitOfWork(manager) as uow:
        def ids(**order):
            return [d.id for d in uow.devices.paginate(per_page=2, **order)]

        assert ids(order_by="id") == ["D1", "D2"]
        assert ids(order_by="id", descending=True) == ["D3", "D2"]
        assert ids(order_by="-id") == ["D3", "D2"]
        assert ids(order_by="-id", descending=True) == ["D1", "D2"]
        assert ids(order_by=Device.id, descending=True) == ["D3", "D2"]
        assert ids() == ["D1", "D2"]


def test_paginate_puts_null_below_every_value_on_every_backend(manager):
    # As SQLite and MariaDB sort it: never-seen devices last when newest first, first when
    # oldest first (PostgreSQL alone sorted NULL above every value).
    now = datetime.now(timezone.utc)
    with UnitOfWork(manager) as uow:
        uow.devices.create_all([phone("never"), phone("now", last_seen=now), phone("never_too"),
                                phone("hour_ago", last_seen=now - timedelta(hours=1))])
    with UnitOfWork(manager) as uow:
        def ids(**order):
            return [d.id for d in uow.devices.paginate(per_page=10, **order)]

        newest_first = ["now", "hour_ago", "never", "never_too"]
        assert ids(order_by="last_seen", descending=True) == newest_first
        assert ids(order_by="-last_seen") == newest_first
        assert ids(order_by="last_seen") == ["never", "never_too", "hour_ago", "now"]
        assert ids(order_by="-last_seen", descending=True) == ids(order_by="last_seen")
        assert [d.id for d in uow.devices.paginate(page=1, per_page=2, order_by="last_seen",
                                                   descending=True)] == ["now", "hour_ago"]


def test_rollback_in_the_middle(manager, events):
    add_devices(manager, "KEEP")
    events.clear()
    with UnitOfWork(manager) as uow:
        uow.devices.delete_by_id("KEEP")
        uow.devices.create(phone("GONE"))
        uow.rollback()
        assert uow.devices.exists("KEEP") and not uow.devices.exists("GONE")
        uow.devices.create(phone("AFTER"))
    assert committed_ids(manager) == {"KEEP", "AFTER"}
    assert [e.entity_id for e in events.events] == ["AFTER"]


def test_out_of_range_limits_and_pages_are_one_clear_error(manager):
    add_devices(manager, "KEPT")
    with UnitOfWork(manager) as uow:
        uow.devices.create(Device(id="NEW", device_type="phone"))
        for call, message in [
            (lambda: uow.devices.get_all(limit=2**63),
             "limit must be an integer from 0 to 9,223,372,036,854,775,807; got "),
            (lambda: uow.devices.paginate(page=2**62, per_page=20),
             "page must be an integer from 1 to 461,168,601,842,738,790; got "),
            (lambda: uow.devices.paginate(per_page=2**64), "per_page must be an integer from 1"),
            (lambda: uow.devices.find_recent(hours=1e9),
             "hours must be a number from 0 to 8,760,000 (1000 years); got 1000000000.0"),
            (lambda: uow.sessions.find_by_status("pending", limit=2**63), "limit must be"),
            (lambda: uow.sessions.get_statistics(days=10**9), "days must be an integer from 0 to"),
        ]:
            with pytest.raises(ValidationError) as caught:
                call()
            assert str(caught.value).startswith(message)
        assert len(uow.devices.get_all(limit=2**63 - 1)) == 2    # the largest limit works
        assert uow.devices.paginate(page=2**63 // 20, per_page=20).items == []
        assert uow.devices.find_recent(hours=24 * 365 * 1000) == []
    assert committed_ids(manager) == {"KEPT", "NEW"}        # the unit of work went on
