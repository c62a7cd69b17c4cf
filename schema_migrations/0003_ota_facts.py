"""Schema v3: the OTA facts — SCP81/SCP80 session fields, APDU channel/instruction/origin,
imported trace files and SCP80 replay counters.

Frozen like 0001: the new tables are declared here, independent of cardlink_lite.models.
Existing command rows get their logical channel and INS from ``raw_data``, in chunks, with
a progress line per chunk on the ``cardlink_lite.migrations`` logger. ``down()`` drops only
what ``up()`` added: every older column keeps its data.
"""

import datetime
import logging
from collections import defaultdict

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
    Table,
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


logger = logging.getLogger("cardlink_lite.migrations")
BACKFILL_CHUNK = 900  # ids per UPDATE: inside SQLite's oldest variable limit (999)


def _channel(cla):
    # ISO 7816-4 5.4.1 / TS 102 221 10.1.1, frozen here as of this revision.
    if cla == 0xFF:
        return None
    if (cla & 0xF0) == 0xA0:
        return 0
    if cla & 0x40:
        return 4 + (cla & 0x0F)
    return cla & 0x03


def _header(raw):
    if len(raw) < 4 or any(c not in "0123456789ABCDEF" for c in raw[:4]):
        return None
    return _channel(int(raw[0:2], 16)), int(raw[2:4], 16)


def backfill_headers(db, chunk=BACKFILL_CHUNK):
    """Fill channel and INS of command rows that have none; returns how many were filled."""
    if "comm_logs" not in db.get_tables() \
            or "ins" not in {c.name for c in db.get_columns("comm_logs")}:
        return 0  # a dry run on MySQL: the new columns were only planned
    logs = Table("comm_logs", ("id", "direction", "raw_data", "channel", "ins")).bind(db)
    todo = (logs.direction == "command") & logs.ins.is_null()
    total = logs.select().where(todo).count()
    if not total:
        return 0
    logger.info("0003: deriving channel and INS of %d command rows from raw_data", total)
    last, seen, filled = None, 0, 0
    while True:
        query = logs.select(logs.id, logs.raw_data).where(todo)
        if last is not None:
            query = query.where(logs.id > last)
        rows = list(query.order_by(logs.id).limit(chunk).tuples())
        if not rows:
            break
        groups = defaultdict(list)
        for row_id, raw in rows:
            header = _header((raw or "").upper())
            if header is not None:
                groups[header].append(row_id)
        for (channel, ins), ids in groups.items():
            logs.update(channel=channel, ins=ins).where(logs.id.in_(ids)).execute()
            filled += len(ids)
        seen += len(rows)
        last = rows[-1][0]
        logger.info("0003: %d/%d command rows done", seen, total)
    return filled


# Repeatable: cardlink_lite runs it again on `cardlink-db migrate` and on
# `--resolve 0003_ota_facts --as applied`, so a backfill cut short gets finished.
backfill = backfill_headers


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
    backfill_headers(db)


def down(migrator, db):
    ops = [migrator.drop_index("comm_logs", index) for index, _ in LOG_INDEXES]
    ops += [migrator.drop_column("comm_logs", name) for name, _ in _log_columns()]
    ops += [migrator.drop_index("ota_sessions", index) for index, _ in SESSION_INDEXES]
    ops += [migrator.drop_column("ota_sessions", name) for name, _ in SESSION_COLUMNS]
    migrator.migrate(*ops)
    with db.bind_ctx([CardProfile, TraceSource, ReplayCounter]):
        ReplayCounter.drop_table(safe=False)
        TraceSource.drop_table(safe=False)
