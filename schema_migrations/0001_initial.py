"""Schema v1: devices, card_profiles, ota_sessions, comm_logs, test_results, settings.

The models are a frozen copy, independent of cardlink_lite.models, so that this
script keeps building v1 whatever later versions of the package look like.
"""

import datetime
import uuid

from peewee import (
    BigAutoField,
    BlobField,
    BooleanField,
    CharField,
    DateTimeField,
    DoubleField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)


class DateTimeMs(DateTimeField):
    field_type = "DATETIME_MS"  # DATETIME(3) on MySQL, TIMESTAMP(3) on PostgreSQL


class JsonText(TextField):
    field_type = "JSON_TEXT"  # LONGTEXT on MySQL


def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


class _Base(Model):
    class Meta:
        legacy_table_names = False


class Device(_Base):
    id = CharField(max_length=64, primary_key=True)
    name = CharField(max_length=128, null=True)
    device_type = CharField(max_length=20)
    manufacturer = CharField(max_length=64, null=True)
    model = CharField(max_length=64, null=True)
    firmware_version = CharField(max_length=64, null=True)
    imei = CharField(max_length=20, null=True)
    imsi = CharField(max_length=20, null=True)
    iccid = CharField(max_length=22, null=True)
    connection_settings = JsonText(null=True)
    last_seen = DateTimeMs(null=True)
    is_active = BooleanField(default=True)
    notes = TextField(null=True)
    created_at = DateTimeMs(default=_now)
    updated_at = DateTimeMs(default=_now)

    class Meta:
        table_name = "devices"


class CardProfile(_Base):
    iccid = CharField(max_length=22, primary_key=True)
    imsi = CharField(max_length=20, null=True)
    card_type = CharField(max_length=20, default="UICC")
    atr = CharField(max_length=128, null=True)
    psk_identity = CharField(max_length=128, null=True)
    psk_key_encrypted = BlobField(null=True)
    admin_url = CharField(max_length=255, null=True)
    trigger_config = JsonText(null=True)
    bip_config = JsonText(null=True)
    security_domains = JsonText(null=True)
    notes = TextField(null=True)
    created_at = DateTimeMs(default=_now)
    updated_at = DateTimeMs(default=_now)

    class Meta:
        table_name = "card_profiles"


class OTASession(_Base):
    id = CharField(max_length=36, primary_key=True, default=lambda: str(uuid.uuid4()))
    device = ForeignKeyField(Device, column_name="device_id", null=True,
                             on_delete="SET NULL", index=False)
    card = ForeignKeyField(CardProfile, column_name="card_iccid", null=True,
                           on_delete="SET NULL", index=False)
    session_type = CharField(max_length=32, null=True)
    status = CharField(max_length=20, default="pending")
    started_at = DateTimeMs(null=True)
    ended_at = DateTimeMs(null=True)
    duration_ms = IntegerField(null=True)
    tls_cipher_suite = CharField(max_length=64, null=True)
    tls_psk_identity = CharField(max_length=128, null=True)
    error_code = CharField(max_length=32, null=True)
    error_message = TextField(null=True)
    created_at = DateTimeMs(default=_now)
    updated_at = DateTimeMs(default=_now)

    class Meta:
        table_name = "ota_sessions"


class CommLog(_Base):
    id = BigAutoField()
    session = ForeignKeyField(OTASession, column_name="session_id", on_delete="CASCADE",
                              index=False)
    timestamp = DateTimeMs(default=_now)
    latency_ms = DoubleField(null=True)
    direction = CharField(max_length=10)
    raw_data = TextField()
    decoded_data = TextField(null=True)
    status_word = CharField(max_length=4, null=True)
    status_message = CharField(max_length=128, null=True)

    class Meta:
        table_name = "comm_logs"


class TestResult(_Base):
    id = CharField(max_length=36, primary_key=True)
    run_id = CharField(max_length=64)
    suite_name = CharField(max_length=128)
    test_name = CharField(max_length=512)
    device = ForeignKeyField(Device, column_name="device_id", null=True,
                             on_delete="SET NULL", index=False)
    card = ForeignKeyField(CardProfile, column_name="card_iccid", null=True,
                           on_delete="SET NULL", index=False)
    started_at = DateTimeMs(default=_now)
    ended_at = DateTimeMs(null=True)
    duration_ms = IntegerField(null=True)
    status = CharField(max_length=20)
    error_message = TextField(null=True)
    assertions = JsonText(null=True)
    metadata = JsonText(null=True)
    created_at = DateTimeMs(default=_now)
    updated_at = DateTimeMs(default=_now)

    class Meta:
        table_name = "test_results"


class Setting(_Base):
    key = CharField(max_length=128, primary_key=True)
    value = JsonText(null=True)
    description = CharField(max_length=256, null=True)
    category = CharField(max_length=64, default="general")
    created_at = DateTimeMs(default=_now)
    updated_at = DateTimeMs(default=_now)

    class Meta:
        table_name = "settings"


MODELS = [Device, CardProfile, OTASession, CommLog, TestResult, Setting]

INDEXES = [
    (Device, "idx_device_type", "device_type"),
    (Device, "idx_device_iccid", "iccid"),
    (Device, "idx_device_last_seen", "last_seen"),
    (CardProfile, "idx_card_type", "card_type"),
    (CardProfile, "idx_card_psk_identity", "psk_identity"),
    (OTASession, "idx_session_device", "device"),
    (OTASession, "idx_session_card", "card"),
    (OTASession, "idx_session_status", "status"),
    (OTASession, "idx_session_created", "created_at"),
    (CommLog, "idx_log_session", "session"),
    (CommLog, "idx_log_timestamp", "timestamp"),
    (CommLog, "idx_log_direction", "direction"),
    (TestResult, "idx_test_run", "run_id"),
    (TestResult, "idx_test_suite", "suite_name"),
    (TestResult, "idx_test_status", "status"),
    (TestResult, "idx_test_created", "created_at"),
    (Setting, "idx_setting_category", "category"),
]


for _model, _name, _field in INDEXES:
    _model.add_index(_model.index(getattr(_model, _field), name=_name))


def up(migrator, db):
    with db.bind_ctx(MODELS):
        for model in MODELS:
            model.create_table(safe=False)


def down(migrator, db):
    with db.bind_ctx(MODELS):
        for model in reversed(MODELS):
            model.drop_table(safe=False)
