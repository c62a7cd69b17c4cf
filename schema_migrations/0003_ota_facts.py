"""Schema v3: the OTA facts — SCP81/SCP80 session fields, APDU channel/instruction/origin,
imported trace files and SCP80 replay counters.

Frozen like 0001: the new tables are declared here, independent of cardlink_lite.models.
"""

import datetime

from peewee import (
    AutoField,
    BigIntegerField,
    CharField,
    DateTimeField,
    DoubleField,
    ForeignKeyField,
    IntegerField,
    Model,
    SmallIntegerField,
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


class CardProfile(_Base):
    iccid = CharField(max_length=22, primary_key=True)

    class Meta:
        table_name = "card_profiles"


class TraceSource(_Base):
    id = AutoField()
    path = CharField(max_length=512)
    format = CharField(max_length=32)
    sha256 = CharField(max_length=64, unique=True)
    size_bytes = BigIntegerField(null=True)
    imported_at = DateTimeMs(default=_now)
    summary = JsonText(null=True)

    class Meta:
        table_name = "trace_sources"


class ReplayCounter(_Base):
    id = AutoField()
    card = ForeignKeyField(CardProfile, column_name="card_iccid", on_delete="CASCADE",
                           index=False)
    keyset = CharField(max_length=32)
    tar = CharField(max_length=6)
    counter = BigIntegerField(default=0)
    updated_at = DateTimeMs(default=_now)

    class Meta:
        table_name = "replay_counters"


ReplayCounter.add_index(ReplayCounter.index(ReplayCounter.card, ReplayCounter.keyset,
                                            ReplayCounter.tar, name="idx_counter_key",
                                            unique=True))

SESSION_COLUMNS = [
    ("trigger", CharField(max_length=16, null=True)),
    ("tls_version", CharField(max_length=16, null=True)),
    ("tls_handshake_ms", DoubleField(null=True)),
    ("tls_alert_code", SmallIntegerField(null=True)),
    ("tls_alert", CharField(max_length=64, null=True)),
    ("admin_script_status", CharField(max_length=32, null=True)),
    ("tar", CharField(max_length=6, null=True)),
    ("spi", CharField(max_length=4, null=True)),
    ("kic", CharField(max_length=2, null=True)),
    ("kid", CharField(max_length=2, null=True)),
    ("counter", BigIntegerField(null=True)),
    ("por_status", CharField(max_length=32, null=True)),
]
SESSION_INDEXES = [("idx_session_trigger", "trigger"), ("idx_session_por_status", "por_status")]


def _log_columns():
    return [
        ("channel", SmallIntegerField(null=True)),
        ("ins", SmallIntegerField(null=True)),
        ("source_id", IntegerField(null=True)),
    ]


LOG_INDEXES = [("idx_log_ins", "ins"), ("idx_log_source", "source_id")]


def up(migrator, db):
    with db.bind_ctx([CardProfile, TraceSource, ReplayCounter]):
        TraceSource.create_table(safe=False)
        ReplayCounter.create_table(safe=False)
    ops = [migrator.add_column("ota_sessions", name, field) for name, field in SESSION_COLUMNS]
    ops += [migrator.add_index("ota_sessions", (column,), False, name=index)
            for index, column in SESSION_INDEXES]
    ops += [migrator.add_column("comm_logs", name, field) for name, field in _log_columns()]
    ops += [migrator.add_index("comm_logs", (column,), False, name=index)
            for index, column in LOG_INDEXES]
    migrator.migrate(*ops)


def down(migrator, db):
    ops = [migrator.drop_index("comm_logs", index) for index, _ in LOG_INDEXES]
    ops += [migrator.drop_column("comm_logs", name) for name, _ in _log_columns()]
    ops += [migrator.drop_index("ota_sessions", index) for index, _ in SESSION_INDEXES]
    ops += [migrator.drop_column("ota_sessions", name) for name, _ in SESSION_COLUMNS]
    migrator.migrate(*ops)
    with db.bind_ctx([CardProfile, TraceSource, ReplayCounter]):
        ReplayCounter.drop_table(safe=False)
        TraceSource.drop_table(safe=False)
