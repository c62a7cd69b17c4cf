"""DeviceRepository: type/activity/recency lookups, escaped search, ICCID, discovery."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from cardlink_lite import Device, DeviceType, UnitOfWork, ValidationError
from cardlink_lite.repositories import DeviceMatches
from tests.repository_helpers import add_devices, committed_ids

pytest_plugins = ["tests.repository_fixtures"]


def _ids(rows) -> list[str]:
    return [d.id for d in rows]


@pytest.fixture
def bench(manager):
    """A phone, a modem and an inactive phone with searchable details."""
    with UnitOfWork(manager) as uow:
        uow.devices.create_all([
            Device(id="RF8M33XXXXX", device_type=DeviceType.PHONE, name="Test Phone",
                   manufacturer="Samsung", model="Galaxy S21", imei="123456789012345",
                   imsi="310120987654321", iccid="89011234567890123456"),
            Device(id="MODEM-01", device_type=DeviceType.MODEM, name="Quectel 100%_ready",
                   manufacturer="Quectel", model="EC25", iccid="89019999"),
            Device(id="OLD-PHONE", device_type=DeviceType.PHONE, name="old\\phone",
                   manufacturer="samsung", is_active=False),
        ])
    return manager


def test_find_by_type(bench):
    with UnitOfWork(bench) as uow:
        assert _ids(uow.devices.find_phones()) == ["OLD-PHONE", "RF8M33XXXXX"]
        assert _ids(uow.devices.find_modems()) == ["MODEM-01"]
        assert _ids(uow.devices.find_by_type("modem")) == ["MODEM-01"]
        with pytest.raises(ValidationError, match="phone, modem"):
            uow.devices.find_by_type("toaster")


def test_find_active(bench):
    with UnitOfWork(bench) as uow:
        assert _ids(uow.devices.find_active()) == ["MODEM-01", "RF8M33XXXXX"]


def test_find_recent(bench):
    now = datetime.now(timezone.utc)
    with UnitOfWork(bench) as uow:
        assert uow.devices.find_recent() == []       # nobody seen yet
        uow.devices.update_last_seen("RF8M33XXXXX")
        uow.devices.update_last_seen("MODEM-01", when=now - timedelta(hours=30))
        assert _ids(uow.devices.find_recent(hours=24)) == ["RF8M33XXXXX"]
        assert _ids(uow.devices.find_recent(hours=48)) == ["RF8M33XXXXX", "MODEM-01"]
        for bad in (-1, "24", None):
            with pytest.raises(ValidationError, match="hours"):
                uow.devices.find_recent(hours=bad)


_SEARCHES = [
    ("samsung", ["OLD-PHONE", "RF8M33XXXXX"]),         # manufacturer, any case
    ("GALAXY", ["RF8M33XXXXX"]),                        # model
    ("rf8m", ["RF8M33XXXXX"]),                          # id
    ("9012345", ["RF8M33XXXXX"]),                       # IMEI
    ("3101209", ["RF8M33XXXXX"]),                       # IMSI
    ("89019999", ["MODEM-01"]),                         # ICCID
    ("%", ["MODEM-01"]),                                # a literal percent sign
    ("_", ["MODEM-01"]),                                # a literal underscore
    ("0%_r", ["MODEM-01"]),
    ("\\", ["OLD-PHONE"]),                              # a literal backslash
    ("nothing-like-this", []),
    ("", ["MODEM-01", "OLD-PHONE", "RF8M33XXXXX"]),
]


def test_search(bench):
    with UnitOfWork(bench) as uow:
        for text, expected in _SEARCHES:
            assert _ids(uow.devices.search(text)) == expected, text


def test_search_rejects_non_text(bench):
    with UnitOfWork(bench) as uow:
        with pytest.raises(ValidationError, match="string"):
            uow.devices.search(None)


def test_find_by_iccid_serves_list_and_single_use(bench):
    add_devices(bench, "SECOND", iccid="89011234567890123456")
    with UnitOfWork(bench) as uow:
        uow.devices.update_last_seen("SECOND")
        found = uow.devices.find_by_iccid("89011234567890123456")
        assert isinstance(found, list) and isinstance(found, DeviceMatches)
        assert _ids(found) == ["SECOND", "RF8M33XXXXX"]   # most recently seen first
        assert found.id == "SECOND" and found.first.id == "SECOND"
        device = uow.devices.find_by_iccid("89019999")      # the guide's single use
        assert device.name == "Quectel 100%_ready" and len(device) == 1
        missing = uow.devices.find_by_iccid("0000")
        assert missing == [] and not missing and missing.first is None
        with pytest.raises(AttributeError, match="no device holds this ICCID"):
            _ = missing.name


def test_update_last_seen_and_deactivate(bench, events):
    with UnitOfWork(bench) as uow:
        assert uow.devices.update_last_seen("RF8M33XXXXX") is True
        assert uow.devices.update_last_seen("ghost") is False
        assert uow.devices.deactivate("RF8M33XXXXX") is True
        assert uow.devices.deactivate("ghost") is False
        device = uow.devices.get("RF8M33XXXXX")
        assert device.is_active is False
        assert device.last_seen > datetime.now(timezone.utc) - timedelta(minutes=1)
        assert device.updated_at >= device.created_at
        assert uow.devices.activate("RF8M33XXXXX") is True
    updated = events.of("device_updated")
    assert [e.data for e in updated][1:] == [{"is_active": False}, {"is_active": True}]
    assert "last_seen" in updated[0].data


def test_register_creates_then_updates(manager, events):
    with UnitOfWork(manager) as uow:
        device = uow.devices.register("RF8M-NEW", device_type="phone", model="Pixel 8")
        assert device.last_seen is not None and device.is_active
        uow.devices.deactivate("RF8M-NEW")
        again = uow.devices.register("RF8M-NEW", firmware_version="14")
        assert again.model == "Pixel 8" and again.firmware_version == "14"
        assert again.is_active and again.last_seen >= device.last_seen
        with pytest.raises(ValidationError, match="pass device_type="):
            uow.devices.register("RF8M-OTHER")
        with pytest.raises(ValidationError, match="has no field 'colour'"):
            uow.devices.register("RF8M-NEW", colour="blue")
        with pytest.raises(ValidationError, match="device id is required"):
            uow.devices.register("", device_type="phone")
    assert committed_ids(manager) == {"RF8M-NEW"}
    assert events.types()[0] == "device_created" and events.types()[-1] == "device_updated"


def test_rollback_in_the_middle(bench):
    with UnitOfWork(bench) as uow:
        uow.devices.deactivate("RF8M33XXXXX")
        uow.devices.register("NEW", device_type="modem")
        uow.rollback()
        assert _ids(uow.devices.find_active()) == ["MODEM-01", "RF8M33XXXXX"]
    assert committed_ids(bench) == {"RF8M33XXXXX", "MODEM-01", "OLD-PHONE"}


def test_a_refused_register_leaves_the_unit_of_work_committable(manager):
    with UnitOfWork(manager) as uow:
        uow.devices.register("RF8M-NEW", device_type="phone", name="Bench phone")
    with UnitOfWork(manager) as uow:
        uow.devices.create(Device(id="OTHER", device_type="modem"))
        with pytest.raises(ValidationError, match="name must be at most"):
            uow.devices.register("RF8M-NEW", name="n" * 300)
    assert committed_ids(manager) == {"RF8M-NEW", "OTHER"}
    with UnitOfWork(manager) as uow:
        assert uow.devices.get("RF8M-NEW").name == "Bench phone"


def test_is_active_takes_a_bool_not_text(manager):
    with UnitOfWork(manager) as uow:
        for bad in ("false", "no", 2):
            with pytest.raises(ValidationError) as caught:
                uow.devices.create(Device(id=f"D-{bad}", device_type="phone", is_active=bad))
            assert str(caught.value) == f"is_active must be True or False; got {bad!r}"
        with pytest.raises(ValidationError, match="is_active must be True or False"):
            uow.devices.create_all([Device(id="D-bulk", device_type="phone", is_active="0")])
        uow.devices.create(Device(id="D-0", device_type="phone", is_active=0))
        uow.devices.create(Device(id="D-1", device_type="phone", is_active=1))
        uow.devices.create(Device(id="D-False", device_type="phone", is_active=False))
    assert committed_ids(manager) == {"D-0", "D-1", "D-False"}
    with UnitOfWork(manager) as uow:
        assert _ids(uow.devices.find_active()) == ["D-1"]
        assert uow.devices.get("D-0").is_active is False


def test_search_folds_the_case_of_non_ascii_text(manager, backend):
    with UnitOfWork(manager) as uow:
        uow.devices.create(Device(id="D1", device_type="phone", name="Über Phone"))
        uow.devices.create(Device(id="D2", device_type="modem", name="ÉCRAN modem"))
    with UnitOfWork(manager) as uow:
        for text in ("Über", "über", "ÜBER", "über phone"):
            assert _ids(uow.devices.search(text)) == ["D1"]
        assert _ids(uow.devices.search("écran")) == ["D2"]
        # MariaDB's collation also ignores accents (see the README); the others do not.
        assert _ids(uow.devices.search("uber")) == (["D1"] if backend == "mysql" else [])
        assert _ids(uow.devices.search("ü")) == ["D1"]
