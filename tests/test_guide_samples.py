"""The user guide's Python samples, run as written with ``cardlink.database`` -> ``cardlink_lite``.

Lines marked ``# setup`` are what a sample assumes from its context (imports, a manager,
rows it refers to); everything else is the guide's text. DATABASE_URL points at the test
database, so the guide's ``DatabaseManager()`` opens it.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest
from cryptography.fernet import Fernet

from cardlink_lite import (
    CardProfile,
    CardType,
    CommDirection,
    DatabaseManager,
    Device,
    DeviceType,
    SessionStatus,
    TestStatus,
    UnitOfWork,
)


@pytest.fixture(autouse=True, params=["UTC", "America/New_York", "Asia/Tokyo"])
def local_zone(request, monkeypatch):
    """Every sample runs with the machine's clock in three zones: the guide passes local
    ``datetime.now()`` values, which are local time."""
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield request.param
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def guide_env(db_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", Fernet.generate_key().decode())


@pytest.fixture
def manager(guide_env):
    manager = DatabaseManager()
    manager.initialize(check_schema=False)
    manager.create_tables()
    yield manager
    manager.close()


@pytest.fixture
def bench(manager):
    """The Quick Start's phone and card, which the repository samples refer to."""
    with UnitOfWork(manager) as uow:
        uow.devices.create(Device(id="RF8M33XXXXX", device_type=DeviceType.PHONE,
                                  name="Test Phone", manufacturer="Samsung",
                                  model="Galaxy S21", iccid="89011234567890123456"))
        uow.cards.create_with_psk(CardProfile(iccid="8901...", psk_identity="card_001",
                                              admin_url="https://admin.example.com:8443/api"),
                                  b"my_16_byte_psk_key")
    return manager


def test_quick_start(guide_env, capsys):
    from cardlink_lite import (
        CardProfile,
        CardType,
        DatabaseManager,
        Device,
        DeviceType,
        UnitOfWork,
    )

    # 1. Initialize database
    manager = DatabaseManager()
    manager.initialize()
    manager.create_tables()

    # 2. Create a device
    with UnitOfWork(manager) as uow:
        device = Device(
            id="RF8M33XXXXX",
            device_type=DeviceType.PHONE,
            name="Test Phone",
            manufacturer="Samsung",
            model="Galaxy S21",
            imei="123456789012345",
        )
        uow.devices.create(device)
        uow.commit()
        print(f"Created device: {device.id}")

    # 3. Create a card profile
    with UnitOfWork(manager) as uow:
        card = CardProfile(
            iccid="89011234567890123456",
            imsi="310120987654321",
            card_type=CardType.USIM,
            psk_identity="card_001",
            admin_url="https://admin.example.com:8443/api",
        )
        # Store PSK with encryption
        uow.cards.create_with_psk(card, b"my_secret_psk_key_16")
        uow.commit()
        print(f"Created card: {card.iccid}")

    # 4. Query devices
    with UnitOfWork(manager) as uow:
        # Find all phones
        phones = uow.devices.find_phones()
        print(f"Found {len(phones)} phone(s)")

        # Search devices
        results = uow.devices.search("Samsung")
        for device in results:
            print(f"  - {device.name}: {device.model}")

    # 5. Query sessions
    with UnitOfWork(manager) as uow:
        # Get recent sessions
        sessions = uow.sessions.find_by_date_range(
            start=datetime.now() - timedelta(days=7),
            end=datetime.now()
        )
        print(f"Sessions in last 7 days: {len(sessions)}")

        # Get statistics
        stats = uow.sessions.get_statistics(days=30)
        print(f"Success rate: {stats['success_rate']:.1f}%")
        print(f"Avg duration: {stats['avg_duration_ms']:.0f}ms")

    # 6. Export database
    from cardlink_lite import DataExporter, ExportFormat

    with UnitOfWork(manager) as uow:
        exporter = DataExporter(uow)
        data = exporter.export_all(ExportFormat.JSON)

        with open("backup.json", "w") as f:
            f.write(data)
        print("Database exported to backup.json")

    # Cleanup
    manager.close()

    out = capsys.readouterr().out
    assert "Created device: RF8M33XXXXX" in out and "Created card: 89011234567890123456" in out
    assert "Found 1 phone(s)" in out and "  - Test Phone: Galaxy S21" in out
    assert "Sessions in last 7 days: 0" in out
    assert "Success rate: 0.0%" in out and "Avg duration: 0ms" in out
    with open("backup.json") as f:
        backup = f.read()
    assert "RF8M33XXXXX" in backup and "my_secret_psk_key_16" not in backup


def test_base_repository(bench, capsys):
    with UnitOfWork(bench) as uow:  # setup
        repository = uow.devices  # setup
        device1, device2, device3 = (Device(id=f"D{i}", device_type="modem")  # setup
                                     for i in (1, 2, 3))  # setup

        # Common CRUD operations
        device = repository.get_by_id("RF8M33XXXXX")
        all_devices = repository.get_all(limit=100)
        phones = repository.find_by(device_type=DeviceType.PHONE)
        phone = repository.find_one_by(name="Test Phone")

        repository.delete_by_id("RF8M33XXXXX")  # setup: the next lines create it again

        # Create/Update/Delete
        repository.create(device)
        repository.create_all([device1, device2, device3])
        repository.update(device)
        repository.delete(device)
        repository.delete_by_id("RF8M33XXXXX")

        # Utilities
        exists = repository.exists("RF8M33XXXXX")
        count = repository.count()
        count_phones = repository.count_by(device_type=DeviceType.PHONE)

        # Pagination
        page = repository.paginate(
            page=1,
            per_page=20,
            order_by="created_at",
            descending=True
        )
        print(f"Page {page.page} of {page.total_pages}")
        print(f"Total: {page.total_items}")
        for item in page.items:
            print(item)

    assert device.id == phone.id == "RF8M33XXXXX"
    assert [d.id for d in all_devices] == [d.id for d in phones] == ["RF8M33XXXXX"]
    assert (exists, count, count_phones) == (False, 3, 0)
    out = capsys.readouterr().out
    assert "Page 1 of 1" in out and "Total: 3" in out and "id='D2'" in out


def test_device_repository(bench):
    manager = bench  # setup
    with UnitOfWork(manager) as uow:
        # Find by type
        phones = uow.devices.find_phones()
        modems = uow.devices.find_modems()

        # Find active devices
        active = uow.devices.find_active()

        # Find recently seen (within hours)
        recent = uow.devices.find_recent(hours=24)

        # Search (name, ID, IMEI, IMSI)
        results = uow.devices.search("Samsung")

        # Update last seen
        uow.devices.update_last_seen("RF8M33XXXXX")

        # Find by ICCID
        device = uow.devices.find_by_iccid("89011234567890123456")

        # Deactivate
        uow.devices.deactivate("RF8M33XXXXX")
        uow.commit()

    assert [len(x) for x in (phones, modems, active, recent, results)] == [1, 0, 1, 0, 1]
    assert device.id == "RF8M33XXXXX" and device.name == "Test Phone"
    with UnitOfWork(manager) as uow:
        assert uow.devices.find_active() == []
        assert uow.devices.find_recent(hours=1)[0].id == "RF8M33XXXXX"


def test_card_repository(manager, capsys):
    with UnitOfWork(manager) as uow:
        # Create with encrypted PSK
        card = CardProfile(iccid="8901...", psk_identity="card_001")
        uow.cards.create_with_psk(card, b"my_16_byte_psk_key")

        # Get decrypted PSK key
        psk_key = uow.cards.get_psk_key("8901...")
        print(f"PSK Key: {psk_key.hex()}")

        # Update PSK
        uow.cards.update_psk(
            "8901...",
            identity="new_identity",
            key=b"new_psk_key_here"
        )

        # Find by type
        usim_cards = uow.cards.find_by_type(CardType.USIM)

        # Find cards with PSK configured
        cards_with_psk = uow.cards.find_with_psk()

        # Find by admin URL
        cards = uow.cards.find_by_admin_url("https://admin.example.com")

        # Export profile (without key by default)
        profile_dict = uow.cards.export_profile("8901...", include_key=False)

        uow.commit()

    assert f"PSK Key: {b'my_16_byte_psk_key'.hex()}" in capsys.readouterr().out
    assert usim_cards == [] and [c.iccid for c in cards_with_psk] == ["8901..."]
    assert cards == []
    assert profile_dict["psk_identity"] == "new_identity" and "psk_key" not in profile_dict
    with UnitOfWork(manager) as uow:
        assert uow.cards.get_psk_key("8901...") == b"new_psk_key_here"


def test_session_repository(bench, capsys):
    manager = bench  # setup
    with UnitOfWork(manager) as uow:
        # Create session
        session = uow.sessions.create_session(
            device_id="RF8M33XXXXX",
            card_iccid="8901...",
            session_type="profile_download"
        )

        # Start session (sets timestamp)
        uow.sessions.start_session(session.id)

        # Set TLS info
        uow.sessions.set_tls_info(
            session.id,
            cipher="TLS_PSK_WITH_AES_128_CBC_SHA256",
            psk_identity="card_001"
        )

        # Complete session (calculates duration)
        uow.sessions.complete_session(session.id)

        # Or mark as failed
        uow.sessions.fail_session(
            session.id,
            error_code="E001",
            message="Connection timeout"
        )

        # Query sessions
        device_sessions = uow.sessions.find_by_device("RF8M33XXXXX", limit=10)
        card_sessions = uow.sessions.find_by_card("8901...", limit=10)
        active = uow.sessions.find_active()
        failed = uow.sessions.find_by_status(SessionStatus.FAILED)  # noqa: F841

        # Date range
        sessions = uow.sessions.find_by_date_range(
            start=datetime(2024, 11, 1),
            end=datetime(2024, 11, 30)
        )

        # Statistics
        stats = uow.sessions.get_statistics(days=30)
        print(f"Total: {stats['total']}")
        print(f"Success rate: {stats['success_rate']:.1f}%")
        print(f"Avg duration: {stats['avg_duration_ms']:.0f}ms")

        uow.commit()

    assert [s.id for s in device_sessions] == [session.id] == [s.id for s in card_sessions]
    assert active == [] and sessions == []
    assert "Total: 1" in capsys.readouterr().out
    with UnitOfWork(manager) as uow:
        stored = uow.sessions.get(session.id)
        assert stored.tls_cipher_suite == "TLS_PSK_WITH_AES_128_CBC_SHA256"
        assert stored.status in (SessionStatus.COMPLETED, SessionStatus.FAILED)


def test_log_repository(bench, capsys):
    manager = bench  # setup
    with UnitOfWork(manager) as uow:  # setup
        session = uow.sessions.create_session(device_id="RF8M33XXXXX")  # setup

    with UnitOfWork(manager) as uow:
        # Add single log
        uow.logs.add_log(
            session_id=session.id,
            direction=CommDirection.COMMAND,
            raw_data="00A4040008A000000151000000",
            decoded_data="SELECT ISD",
        )

        # Batch logging (high performance)
        logs = [
            (session.id, CommDirection.COMMAND, "00A4...", "SELECT"),
            (session.id, CommDirection.RESPONSE, "9000", "Success"),
        ]
        uow.logs.add_log_batch(logs)
        uow.logs.flush_batch()  # Explicit flush

        # Query logs
        all_logs = uow.logs.find_by_session(session.id)
        commands = uow.logs.find_commands(session.id)
        responses = uow.logs.find_responses(session.id)

        # Find by status word
        success_logs = uow.logs.find_by_status(session.id, "9000")  # noqa: F841

        # Find errors (non-9000)
        errors = uow.logs.find_errors(session.id)

        # Search hex pattern
        select_commands = uow.logs.search_hex("A4", session_id=session.id)

        # Purge old logs (retention policy)
        deleted_count = uow.logs.purge_old(days=90)
        print(f"Deleted {deleted_count} old logs")

        # Export session logs
        log_data = uow.logs.export_session_logs(session.id)

        uow.commit()

    assert (len(all_logs), len(commands), len(responses)) == (3, 2, 1)
    assert len(select_commands) == 2 and errors == []
    assert "Deleted 0 old logs" in capsys.readouterr().out
    assert log_data


def test_test_repository(bench, capsys):
    manager = bench  # setup
    with UnitOfWork(manager) as uow:
        # Create test result
        result = uow.tests.create_result(
            run_id="test_run_001",
            suite_name="integration",
            test_name="test_ota_session",
            device_id="RF8M33XXXXX",
            card_iccid="8901...",
            status=TestStatus.PASSED,
            started_at=datetime.now(),
            ended_at=datetime.now(),
            duration_ms=1500,
            assertions={"connected": True},
            metadata={"env": "staging"}
        )

        # Query results
        run_results = uow.tests.find_by_run("test_run_001")
        suite_results = uow.tests.find_by_suite("integration", limit=50)
        failures = uow.tests.find_failures("test_run_001")

        # Get run summary
        summary = uow.tests.get_run_summary("test_run_001")
        print(f"Passed: {summary['passed']}")
        print(f"Failed: {summary['failed']}")
        print(f"Success rate: {summary['success_rate']:.1f}%")

        # Compare runs (regression detection)
        comparison = uow.tests.compare_runs("run_001", "run_002")
        print(f"New failures: {len(comparison['new_failures'])}")
        print(f"Fixed tests: {len(comparison['fixed'])}")

        # Export JUnit XML
        junit_xml = uow.tests.export_junit_xml("test_run_001")
        with open("results.xml", "w") as f:
            f.write(junit_xml)

        uow.commit()

    out = capsys.readouterr().out
    assert "Passed: 1" in out and "Failed: 0" in out and "Success rate: 100.0%" in out
    assert "New failures: 0" in out and "Fixed tests: 0" in out
    assert [r.id for r in run_results] == [result.id] and failures == []
    assert len(suite_results) == 1 and "test_ota_session" in junit_xml


def test_settings_repository(manager):
    with UnitOfWork(manager) as uow:
        # Get setting with default fallback
        max_sessions = uow.settings.get_value(
            "max_sessions_per_device",
            default=10
        )

        # Set setting
        uow.settings.set_value(
            key="log_retention_days",
            value=90,
            description="Days to retain APDU logs",
            category="retention"
        )

        # Get by category
        retention_settings = uow.settings.get_by_category("retention")

        # Get all settings (merged with defaults)
        all_settings = uow.settings.get_all_settings()

        # Export to YAML
        yaml_str = uow.settings.export_yaml()
        with open("settings.yaml", "w") as f:
            f.write(yaml_str)

        # Import from YAML
        with open("settings.yaml") as f:
            yaml_str = f.read()
        uow.settings.import_yaml(yaml_str)

        # Reset to defaults
        uow.settings.reset_to_defaults(category="retention")

        uow.commit()

    assert max_sessions == 10 and retention_settings == {"log_retention_days": 90}
    assert all_settings["log_retention_days"] == 90 and all_settings["server.port"] == 8443
    with UnitOfWork(manager) as uow:
        assert uow.settings.get_value("log_retention_days") is None
        assert uow.settings.get_value("retention.logs_days") == 30


def test_unit_of_work_context_manager(manager):
    from cardlink_lite import UnitOfWork

    # Context manager (recommended)
    with UnitOfWork(manager) as uow:
        device = Device(id="RF8M...", device_type=DeviceType.PHONE)
        uow.devices.create(device)

        card = CardProfile(iccid="8901...")
        uow.cards.create_with_psk(card, b"psk_key")

        uow.commit()  # Commit transaction
    # Automatic rollback on exception

    with UnitOfWork(manager) as uow:
        assert uow.devices.exists("RF8M...") and uow.cards.get_psk_key("8901...") == b"psk_key"


def test_unit_of_work_manual_management(manager):
    device = Device(id="RF8M...", device_type=DeviceType.PHONE)  # setup

    # Manual management
    uow = UnitOfWork(manager)
    try:
        uow.devices.create(device)
        uow.commit()
    except Exception:
        uow.rollback()
        raise
    finally:
        uow.close()

    with UnitOfWork(manager) as check:
        assert check.devices.exists("RF8M...")


def test_event_system(manager, capsys):
    from cardlink_lite import (
        DatabaseEvent,
        EventType,
        get_emitter,
    )

    # Get global emitter
    emitter = get_emitter()

    # Define event handler
    def on_device_created(event: DatabaseEvent):
        print(f"Device created: {event.entity_id}")
        print(f"Data: {event.data}")

    # Register handler
    emitter.on(EventType.DEVICE_CREATED, on_device_created)

    # Wildcard handler (all events)
    def log_all_events(event: DatabaseEvent):
        print(f"Event: {event.event_type} - {event.entity_type}")

    emitter.on("*", log_all_events)

    try:  # setup: keep the global emitter clean for other tests
        # Now create a device
        with UnitOfWork(manager) as uow:
            device = Device(id="RF8M...", device_type=DeviceType.PHONE)
            uow.devices.create(device)  # Triggers DEVICE_CREATED event
            uow.commit()

        # Unregister handler
        emitter.off(EventType.DEVICE_CREATED, on_device_created)
    finally:  # setup
        emitter.off("*", log_all_events)  # setup

    out = capsys.readouterr().out
    assert out.splitlines() == ["Device created: RF8M...",
                                "Data: {'device_type': 'phone', 'name': None}",
                                "Event: device_created - device"]


def test_best_practices(manager, capsys):
    from cardlink_lite import IntegrityError, NotFoundError

    device = Device(id="RF8M33XXXXX", device_type=DeviceType.PHONE)  # setup
    card = CardProfile(iccid="89011234567890123456")  # setup
    with UnitOfWork(manager) as uow:
        uow.devices.create(device)
        uow.cards.create(card)
        uow.commit()

    with UnitOfWork(manager) as uow:  # setup
        try:
            device = uow.devices.get_by_id("invalid")
        except NotFoundError:
            print("Device not found")
        except IntegrityError as e:
            print(f"Constraint violation: {e}")

        card, psk_key = CardProfile(iccid="8902"), b"0123456789abcdef"  # setup
        # Use repository method
        uow.cards.create_with_psk(card, psk_key)

        session = uow.sessions.create_session(device_id="RF8M33XXXXX")  # setup
        logs = [(session.id, CommDirection.COMMAND, "00A4", None)]  # setup
        # Batch log inserts
        uow.logs.add_log_batch(logs)
        uow.logs.flush_batch()

        page = uow.devices.paginate(page=1, per_page=50)

    assert device is None and page.total == 1
    with UnitOfWork(manager) as uow:
        assert uow.logs.count() == 1 and uow.cards.get_psk_key("8902") == psk_key


def test_advanced_bulk_operations(manager):
    uow = UnitOfWork(manager)  # setup
    # Bulk insert
    devices = [
        Device(id=f"device_{i}", device_type=DeviceType.PHONE)
        for i in range(100)
    ]
    uow.devices.create_all(devices)
    uow.commit()
    uow.close()  # setup

    with UnitOfWork(manager) as check:
        assert check.devices.count() == 100


def test_advanced_queries_in_peewee(manager, capsys):
    # The guide's "Custom Queries" and "Statistics Queries" use SQLAlchemy; with
    # cardlink_lite the same queries are plain Peewee inside the unit of work.
    from peewee import fn

    with UnitOfWork(manager) as uow:
        uow.devices.create_all([Device(id="A", device_type="phone", manufacturer="Samsung"),
                                Device(id="B", device_type="modem")])
        results = list(Device.select().where(
            (Device.device_type == DeviceType.PHONE)
            & (Device.is_active == True)  # noqa: E712 - a SQL comparison
            & (Device.manufacturer ** "%Samsung%")
        ))
        stats = (Device.select(Device.device_type, fn.COUNT(Device.id))
                 .group_by(Device.device_type).order_by(Device.device_type).tuples())
        for device_type, count in stats:
            print(f"{device_type}: {count}")
    assert [d.id for d in results] == ["A"]
    assert capsys.readouterr().out.splitlines() == [f"{DeviceType.MODEM}: 1",
                                                    f"{DeviceType.PHONE}: 1"]

