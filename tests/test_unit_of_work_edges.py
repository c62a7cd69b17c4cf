"""Issue 10 items 1-7: tracked objects, create() of stored rows, buffered logs in every read,
exact settings, local naive datetimes, create_session(), field limits before SQL."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import peewee
import pytest

from cardlink_lite import (
    DatabaseManager,
    Device,
    DeviceType,
    IntegrityError,
    UnitOfWork,
    ValidationError,
)
from cardlink_lite.fields import EnumField, UUIDStrField
from cardlink_lite.models import ALL_MODELS, CardProfile, OTASession, Setting
from tests.repository_helpers import add_devices, count_queries

pytest_plugins = ["tests.repository_fixtures"]


def _device(manager, device_id) -> Device:
    with UnitOfWork(manager) as uow:
        return uow.devices.get(device_id)


# -- 1. a unit of work saves the changed objects it handed out -----------------------
def test_edits_to_a_loaded_object_are_saved_at_commit(manager):
    add_devices(manager, "RF8M33XXXXX")
    with UnitOfWork(manager) as uow:
        d = uow.devices.get("RF8M33XXXXX")
        d.notes = "x"
    assert _device(manager, "RF8M33XXXXX").notes == "x"

    uow = UnitOfWork(manager)
    uow.devices.find_by(device_type="phone")[0].notes = "from find_by"
    uow.commit()
    uow.close()
    assert _device(manager, "RF8M33XXXXX").notes == "from find_by"


def test_edits_after_create_are_saved_at_commit(manager):
    with UnitOfWork(manager) as uow:
        d = Device(id="D2", device_type=DeviceType.PHONE)
        uow.devices.create(d)
        d.name = "Test Phone"
        uow.commit()
    assert _device(manager, "D2").name == "Test Phone"


def test_only_changed_fields_are_written(manager):
    add_devices(manager, "D1", name="old")
    with UnitOfWork(manager) as uow:
        d = uow.devices.get("D1")
        d.notes = "mine"
        # Another writer renames the device meanwhile (autocommit, another connection).
        other = DatabaseManager(manager.config).initialize(check_schema=False)
        try:
            with UnitOfWork(other) as uow2:
                uow2.devices.get("D1").name = "theirs"
        finally:
            other.close()
            manager.bind()
    got = _device(manager, "D1")
    assert (got.name, got.notes) == ("theirs", "mine")


def test_rolled_back_units_save_nothing(manager):
    add_devices(manager, "D1")
    with pytest.raises(RuntimeError):
        with UnitOfWork(manager) as uow:
            uow.devices.get("D1").notes = "lost"
            raise RuntimeError
    uow = UnitOfWork(manager)
    uow.devices.get("D1").notes = "lost too"
    uow.rollback()
    uow.close()
    assert _device(manager, "D1").notes is None


def test_update_still_saves_and_emits(manager, event_list):
    add_devices(manager, "D1")
    with UnitOfWork(manager) as uow:
        d = uow.devices.get("D1")
        d.notes = "n"
        uow.devices.update(d)
    assert _device(manager, "D1").notes == "n"
    assert [str(e.event_type) for e in event_list].count("device_updated") == 1


# -- 2. create() of an object already stored --------------------------------------
def test_create_of_a_loaded_object_keeps_its_changes(manager):
    add_devices(manager, "D1")
    with UnitOfWork(manager) as uow:
        device = uow.devices.get_by_id("D1")
        device.name = "renamed"
        assert uow.devices.create(device) is device
    assert _device(manager, "D1").name == "renamed"


def test_create_of_an_object_stored_by_an_earlier_unit(manager):
    with UnitOfWork(manager) as uow:
        device = uow.devices.create(Device(id="D3", device_type="phone"))
    device.notes = "later"
    with UnitOfWork(manager) as uow:
        uow.devices.create(device)
    assert _device(manager, "D3").notes == "later"


def test_create_of_a_new_object_with_a_taken_key_still_raises(manager):
    add_devices(manager, "D1")
    with UnitOfWork(manager) as uow:
        with pytest.raises(IntegrityError):
            uow.devices.create(Device(id="D1", device_type="phone"))


# -- 3. every log read sees the rows buffered in this unit of work -----------------
def test_log_reads_flush_buffered_rows_first(manager):
    with UnitOfWork(manager) as uow:
        sid = uow.sessions.create_session().id
    with UnitOfWork(manager) as uow:
        logs = uow.logs
        logs.add_log_batch([(sid, "command", "00A40400")])
        assert logs.count() == 1
        logs.add_log_batch([(sid, "command", "00A40401")])
        assert logs.count_by(direction="command") == 2
        logs.add_log_batch([(sid, "response", "9000")])
        assert len(logs.find_by(session=sid)) == 3
        logs.add_log_batch([(sid, "response", "9001")])
        assert logs.find_one_by(raw_data="9001") is not None
        logs.add_log_batch([(sid, "command", "00B0")])
        assert len(logs.get_all()) == 5
        logs.add_log_batch([(sid, "command", "00B1")])
        assert logs.paginate(1, 10).total == 6
        logs.add_log_batch([(sid, "command", "00B2")])
        assert logs.exists(7) or logs.get_by_id(7) is not None


# -- 4. settings: what is committed, never a cached value ---------------------------
def test_a_setting_read_returns_what_another_manager_committed(manager):
    with UnitOfWork(manager) as uow:
        assert uow.settings.get_value("server.port") == 8443
    other = DatabaseManager(manager.config).initialize(check_schema=False)
    try:
        with UnitOfWork(other) as uow:
            uow.settings.set_value("server.port", 9443)
    finally:
        other.close()
        manager.bind()
    with UnitOfWork(manager) as uow:
        assert uow.settings.get_value("server.port") == 9443
        assert uow.settings.get_all_settings()["server.port"] == 9443


def test_a_setting_read_is_one_indexed_query(manager):
    with UnitOfWork(manager) as uow:
        uow.settings.set_value("server.port", 1)
        with count_queries(manager) as statements:
            assert uow.settings.get_value("server.port") == 1
    assert len(statements) == 1 and "WHERE" in statements[0].upper()


# -- 5. naive datetimes are local time ----------------------------------------------
@pytest.fixture(params=["America/New_York", "Asia/Tokyo", "UTC"])
def local_zone(request, monkeypatch):
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield request.param
    monkeypatch.undo()
    time.tzset()


def test_naive_datetimes_are_local_time(manager, local_zone):
    with UnitOfWork(manager) as uow:
        session = uow.sessions.create_session()
        result = uow.tests.create_result("r1", "suite", "test_a", "passed",
                                         started_at=datetime.now())
    with UnitOfWork(manager) as uow:
        found = uow.sessions.find_by_date_range(start=datetime.now() - timedelta(days=7),
                                                end=datetime.now())
        assert session.id in [s.id for s in found]
        stored = uow.tests.get(result.id).started_at
    assert stored.tzinfo is not None and stored.utcoffset() == timedelta(0)
    assert abs(stored - datetime.now(timezone.utc)) < timedelta(minutes=5)


def test_aware_datetimes_keep_their_instant(manager, local_zone):
    moment = datetime(2024, 11, 29, 10, 0, 0, 123000, tzinfo=timezone(timedelta(hours=5)))
    with UnitOfWork(manager) as uow:
        uow.devices.create(Device(id="D1", device_type="phone", last_seen=moment))
    assert _device(manager, "D1").last_seen == moment
    assert _device(manager, "D1").last_seen.tzinfo is timezone.utc


# -- 6. create_session() ------------------------------------------------------------
def test_create_session_returns_a_unit_of_work_not_yet_entered(manager):
    uow = manager.create_session()
    assert isinstance(uow, UnitOfWork) and not uow.in_transaction
    with uow:
        uow.devices.create(Device(id="D1", device_type="phone"))
    session = manager.create_session()
    session.devices.create(Device(id="D2", device_type="phone"))
    session.commit()
    session.close()
    assert {d.id for d in Device.select()} == {"D1", "D2"}


# -- 7. declared limits hold before any SQL runs, on every backend ------------------
def _limited_fields():
    for model in ALL_MODELS:
        for field in model._meta.sorted_fields:
            if isinstance(field, peewee.CharField) and field.max_length and \
                    not isinstance(field, peewee.ForeignKeyField | EnumField | UUIDStrField):
                yield model, field


@pytest.mark.parametrize("model,field", list(_limited_fields()),
                         ids=lambda v: getattr(v, "name", None) or getattr(v, "__name__", ""))
def test_too_long_values_raise_validation_error_before_sql(manager, model, field):
    with count_queries(manager) as statements, pytest.raises(ValidationError) as info:
        model.insert({field: "x" * (field.max_length + 1)}).execute()
    assert statements == []
    assert field.name in str(info.value) and str(field.max_length) in str(info.value)


def test_a_310_character_admin_url_is_refused_on_every_backend(manager):
    with UnitOfWork(manager) as uow, pytest.raises(ValidationError, match="admin_url"):
        uow.cards.create(CardProfile(iccid="8901", admin_url="https://" + "a" * 302))


@pytest.mark.parametrize("model,name", [(Device, "notes"), (Device, "name"),
                                        (OTASession, "error_message"), (Setting, "description")])
def test_nul_characters_are_refused_before_sql(manager, model, name):
    field = model._meta.fields[name]
    with count_queries(manager) as statements, pytest.raises(ValidationError, match=name):
        model.insert({field: "a\x00b"}).execute()
    assert statements == []


def test_unknown_enum_values_are_refused_before_sql(manager):
    with count_queries(manager) as statements, pytest.raises(ValidationError,
                                                             match="device_type"):
        Device.insert(id="D1", device_type="tablet").execute()
    assert statements == []


def test_naive_extremes_outside_the_c_librarys_range_use_todays_offset(local_zone):
    from cardlink_lite.fields import to_utc_ms

    offset = datetime.now().astimezone().utcoffset()
    latest = datetime(9999, 12, 31, 12, 0, 0)
    assert to_utc_ms(latest) == (latest - offset).replace(tzinfo=timezone.utc)
    if offset <= timedelta(0):
        assert to_utc_ms(datetime(1, 1, 1)).year == 1
