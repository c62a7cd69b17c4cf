"""Shared data for the export/import, retention and data-CLI tests."""

from __future__ import annotations

import contextlib
import hashlib
import re
import uuid
from datetime import datetime, timedelta, timezone

from peewee import chunked

from cardlink_lite.models import (
    ALL_MODELS,
    CardProfile,
    CommLog,
    Device,
    OTASession,
    Setting,
    TestResult,
)

T0 = datetime(2024, 11, 29, 10, 0, 0, 123000, tzinfo=timezone.utc)
SESSION_A = "11111111-2222-4333-8444-555555555555"
SESSION_B = "66666666-7777-4888-9999-aaaaaaaaaaaa"
TEST_ID = "0f0e0d0c-0b0a-4908-8706-050403020100"
PSK = bytes.fromhex("00112233445566778899aabbccddeeff")


def populate(manager, logs: int = 6, psk: bool = False) -> None:
    """A small store with every table, every enum and nested JSON filled in."""
    manager.bind()
    with manager.atomic():
        Device.create(id="RF8M33XXXXX", name="Galaxy", device_type="phone",
                      manufacturer="Samsung", imei="350000000000001",
                      connection_settings={"adb": {"serial": "RF8M"}, "ports": [1, 2]},
                      last_seen=T0, created_at=T0, updated_at=T0)
        Device.create(id="modem-1", device_type="modem", is_active=False, created_at=T0,
                      updated_at=T0)
        card = CardProfile.create(iccid="89011234567890123456", card_type="USIM",
                                  psk_identity="card_001", trigger_config={"sms": True},
                                  created_at=T0, updated_at=T0)
        if psk:
            from cardlink_lite.crypto import encrypt_psk

            (CardProfile.update(psk_key_encrypted=encrypt_psk(PSK))
             .where(CardProfile.iccid == card.iccid).execute())
        OTASession.create(id=SESSION_A, device="RF8M33XXXXX", card=card.iccid,
                          session_type="profile_download", status="completed",
                          started_at=T0, ended_at=T0 + timedelta(seconds=2), duration_ms=2000,
                          cipher_suite="TLS_PSK_WITH_AES_128_CBC_SHA256",
                          created_at=T0, updated_at=T0)
        OTASession.create(id=SESSION_B, status="failed", error_code="E001",
                          error_message="timeout", created_at=T0, updated_at=T0)
        rows = [
            {"session": SESSION_A if i % 2 == 0 else SESSION_B,
             "timestamp": T0 + timedelta(milliseconds=i),
             "direction": "command" if i % 2 == 0 else "response",
             "raw_data": "00A4040008A000000151000000" if i % 2 == 0 else "9000",
             "status_word": None if i % 2 == 0 else "9000", "latency_ms": 1.25 * i,
             "decoded_data": "SELECT ISD" if i % 2 == 0 else None,
             # as the writer derives them (check reports commands without them)
             "channel": 0 if i % 2 == 0 else None, "ins": 0xA4 if i % 2 == 0 else None}
            for i in range(logs)
        ]
        for chunk in chunked(rows, 100):
            CommLog.insert_many(chunk).execute()
        TestResult.create(id=TEST_ID, run_id="run_001", suite_name="integration",
                          test_name="test_ota_session", device="RF8M33XXXXX",
                          card=card.iccid, status="passed", started_at=T0, ended_at=T0,
                          duration_ms=1500, assertions={"connected": True},
                          metadata={"env": "staging", "nested": {"k": [1, "two", None]}},
                          created_at=T0, updated_at=T0)
        Setting.create(key="log_retention_days", value=90, category="retention",
                       description="Days to retain APDU logs", created_at=T0, updated_at=T0)


def checksums(manager) -> dict[str, str]:
    """A digest of every row of every table, to prove a database did not change."""
    manager.bind()
    manager.ensure_connection()
    digests = {}
    for model in ALL_MODELS:
        pk = model._meta.primary_key
        rows = model.select().order_by(pk).tuples()
        digests[model._meta.table_name] = hashlib.sha256(
            repr([tuple(str(v) for v in row) for row in rows]).encode()).hexdigest()
    return digests


def edited(document: dict) -> dict:
    """An export's mapping to edit: without the closing record (row counts) it promises."""
    return {k: v for k, v in document.items() if k not in ("closing_record", "row_counts")}


def without_timestamp(text: str) -> str:
    """An export with its exported_at line blanked (JSON or YAML)."""
    return re.sub(r"(\"?exported_at\"?: )\S+", r"\1-", text, count=1)


@contextlib.contextmanager
def extra_manager(backend: str, tmp_path, schema: bool = True):
    """Another new database on ``backend`` (dropped afterwards), as an initialised manager."""
    from cardlink_lite import DatabaseConfig, DatabaseManager
    from tests import servers

    name = f"cl_{uuid.uuid4().hex[:12]}"
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/{name}.db"
    else:
        servers.create_database(backend, name)
        url = servers.url(backend, name)
    manager = DatabaseManager(DatabaseConfig(url))
    try:
        manager.initialize(check_schema=False)
        if schema:
            manager.create_tables()
        yield manager
    finally:
        manager.close()
        if backend != "sqlite":
            servers.drop_database(backend, name)
