"""Schema v5: test runs as records, and identifiers compared exactly on MariaDB/MySQL.

- ``test_runs``: one row per run (how it ended, counts, context, labels), backfilled from
  the run ids already in ``test_results`` (their ending is ``unknown``).
- ``test_results.attempts`` and ``test_results.session_id`` (the OTA session a test drove).
- MySQL/MariaDB: identifier and name columns get the binary collation ``utf8mb4_bin``, so
  ``test_case[a]`` and ``test_case[A]`` (device ids, ICCIDs, PSK identities, setting keys,
  run ids, suite and test names) are different, as they are on SQLite and PostgreSQL.

The models are a frozen copy, independent of cardlink_lite.models. ``check_down`` (added
later, self-contained like the rest) refuses, before any change, keys that would collide
once MySQL/MariaDB compare them case-insensitively again.
"""

import datetime

from peewee import (
    SQL,
    Case,
    CharField,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    Model,
    MySQLDatabase,
    NodeList,
    SmallIntegerField,
    SqliteDatabase,
    TextField,
    fn,
)
from playhouse.migrations import MigrationError

NAME = "0005_test_runs"

EXACT = "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
# (table, column, VARCHAR length, nullable): the exactly compared columns.
EXACT_COLUMNS = [
    ("devices", "id", 64, False),
    ("devices", "iccid", 22, True),
    ("card_profiles", "iccid", 22, False),
    ("card_profiles", "psk_identity", 128, True),
    ("ota_sessions", "device_id", 64, True),
    ("ota_sessions", "card_iccid", 22, True),
    ("ota_sessions", "tls_psk_identity", 128, True),
    ("test_results", "run_id", 64, False),
    ("test_results", "suite_name", 128, False),
    ("test_results", "test_name", 512, False),
    ("test_results", "device_id", 64, True),
    ("test_results", "card_iccid", 22, True),
    ("settings", "key", 128, False),
    ("replay_counters", "card_iccid", 22, False),
]


class DateTimeMs(DateTimeField):
    field_type = "DATETIME_MS"


class JsonText(TextField):
    field_type = "JSON_TEXT"


class ExactChar(CharField):
    def ddl_datatype(self, ctx):
        sql = super().ddl_datatype(ctx)
        collation = ctx.state.field_types.get("EXACT_COLLATION") if ctx else None
        return NodeList((sql, SQL(collation))) if collation else sql


def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


class TestRun(Model):
    id = ExactChar(max_length=64, primary_key=True)
    suite_name = ExactChar(max_length=128)
    started_at = DateTimeMs(default=_now)
    finished_at = DateTimeMs(null=True)
    ending = CharField(max_length=20, default="unfinished")
    exit_status = IntegerField(null=True)
    selection = CharField(max_length=255, null=True)
    total = IntegerField(default=0)
    passed = IntegerField(default=0)
    failed = IntegerField(default=0)
    skipped = IntegerField(default=0)
    error = IntegerField(default=0)
    context = JsonText(null=True)
    labels = JsonText(null=True)
    created_at = DateTimeMs(default=_now)
    updated_at = DateTimeMs(default=_now)

    class Meta:
        table_name = "test_runs"
        indexes = ()


class OTASession(Model):
    id = CharField(max_length=36, primary_key=True)

    class Meta:
        table_name = "ota_sessions"


class TestResult(Model):
    id = CharField(max_length=36, primary_key=True)
    run_id = CharField(max_length=64)
    suite_name = CharField(max_length=128)
    started_at = DateTimeMs()
    ended_at = DateTimeMs(null=True)
    status = CharField(max_length=20)

    class Meta:
        table_name = "test_results"


TestRun.add_index(TestRun.index(TestRun.suite_name, TestRun.started_at,
                                name="idx_run_suite_started"))


_FOREIGN_KEYS = """
SELECT k.TABLE_NAME, k.CONSTRAINT_NAME, k.COLUMN_NAME, k.REFERENCED_TABLE_NAME,
       k.REFERENCED_COLUMN_NAME, r.DELETE_RULE, r.UPDATE_RULE
FROM information_schema.KEY_COLUMN_USAGE k
JOIN information_schema.REFERENTIAL_CONSTRAINTS r
  ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME
 AND r.TABLE_NAME = k.TABLE_NAME
WHERE k.TABLE_SCHEMA = DATABASE() AND k.REFERENCED_TABLE_NAME IS NOT NULL
"""


def _collate(db, exact: bool) -> None:
    """Set (or take back) the binary collation of the identifier columns on MySQL.

    MariaDB refuses to change a column a foreign key uses, so those constraints are
    dropped first and put back unchanged (same name, same rules) afterwards.
    """
    if not isinstance(db, MySQLDatabase):
        return
    columns = {(table, column) for table, column, _, _ in EXACT_COLUMNS}
    existing = set(db.get_tables())
    keys = [row for row in db.execute_sql(_FOREIGN_KEYS).fetchall()
            if (row[0], row[2]) in columns or (row[3], row[4]) in columns]
    indexes = {table: _index_names(db, table) for table in {k[0] for k in keys}}
    for table, name, *_ in keys:
        db.execute_sql(f"ALTER TABLE `{table}` DROP FOREIGN KEY `{name}`")
    for table, column, length, null in EXACT_COLUMNS:
        if table not in existing:
            continue
        collation = f" {EXACT}" if exact else ""
        db.execute_sql(f"ALTER TABLE `{table}` MODIFY `{column}` VARCHAR({length})"
                       f"{collation}{'' if null else ' NOT NULL'}")
    for table, name, column, ref_table, ref_column, on_delete, on_update in keys:
        db.execute_sql(f"ALTER TABLE `{table}` ADD CONSTRAINT `{name}` FOREIGN KEY "
                       f"(`{column}`) REFERENCES `{ref_table}` (`{ref_column}`) "
                       f"ON DELETE {on_delete} ON UPDATE {on_update}")
    for table, before in indexes.items():  # the server may rename the key's index: undo
        after = _index_names(db, table)
        for columns, name in after.items():
            old = before.get(columns)
            if old and old != name:
                db.execute_sql(f"ALTER TABLE `{table}` RENAME INDEX `{name}` TO `{old}`")


def _index_names(db, table) -> dict:
    return {tuple(index.columns): index.name for index in db.get_indexes(table)}


def _count(status):
    return fn.SUM(Case(None, [(TestResult.status == status, 1)], 0))


_UNIQUE_KEYS = """
SELECT TABLE_NAME, INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS
WHERE TABLE_SCHEMA = DATABASE() AND NON_UNIQUE = 0 ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX
"""


def _short(value: str) -> str:
    return repr(value) if len(value) <= 40 else f"{value[:40]!r}... ({len(value):,} long)"


def _table_collation(db, table) -> str:
    return db.execute_sql("SELECT TABLE_COLLATION FROM information_schema.TABLES WHERE "
                          "TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s", (table,)).fetchone()[0]


def _refuse_collisions(db, collation_of) -> None:
    """Refuse when a unique key would hold one value twice once its columns compare under
    ``collation_of(table, column)`` (None: as now)."""
    keys = {}
    for table, index, column in db.execute_sql(_UNIQUE_KEYS).fetchall():
        keys.setdefault((table, index), []).append(column)
    for (table, _index), columns in sorted(keys.items()):
        collations = [collation_of(table, column) for column in columns]
        if not any(collations):
            continue
        key = f"CAST(CONCAT_WS(' / ', {', '.join(f'`{c}`' for c in columns)}) AS BINARY)"
        group = ", ".join(f"CONVERT(`{c}` USING {x.split('_')[0]}) COLLATE {x}" if x else f"`{c}`"
                          for c, x in zip(columns, collations, strict=True))
        row = db.execute_sql(
            f"SELECT MIN({key}), MAX({key}) FROM `{table}` WHERE "
            f"{' AND '.join(f'`{c}` IS NOT NULL' for c in columns)} "
            f"GROUP BY {group} HAVING COUNT(*) > 1 LIMIT 1").fetchone()
        if row:
            first, second = (bytes(v).decode("utf-8", "replace") for v in row)
            raise MigrationError(
                f"cannot revert {NAME}: {table} keys {_short(first)} and {_short(second)} "
                f"would be one key under {', '.join(sorted({x for x in collations if x}))}; "
                "rename or delete one of them first")


def check_down(db):
    """Refuse, before any change, keys down() would make collide: the identifier columns go
    back to the table's collation (case-insensitive), and so do their unique keys."""
    if isinstance(db, MySQLDatabase):
        # keyset and tar (exact from 0007 on) compare as their table does by then too.
        back = {(table, column) for table, column, _, _ in EXACT_COLUMNS} | {
            ("replay_counters", "keyset"), ("replay_counters", "tar")}
        _refuse_collisions(db, lambda table, column: _table_collation(db, table)
                           if (table, column) in back else None)


def up(migrator, db):
    _collate(db, exact=True)
    with db.bind_ctx([TestRun, TestResult, OTASession]):
        TestRun.create_table(safe=False)
        session = ForeignKeyField(OTASession, field=OTASession.id, null=True,
                                  on_delete="SET NULL", index=False)
        migrator.migrate(
            migrator.add_column("test_results", "attempts", SmallIntegerField(null=True)),
            migrator.add_column("test_results", "session_id", session),
            migrator.add_index("test_results", ("session_id",), False, name="idx_test_session"),
        )
        backfill = (TestResult
                    .select(TestResult.run_id, fn.MIN(TestResult.suite_name),
                            fn.MIN(TestResult.started_at), fn.MAX(TestResult.ended_at),
                            SQL("'unknown'"), fn.COUNT(TestResult.id),
                            *[_count(s) for s in ("passed", "failed", "skipped", "error")],
                            fn.MIN(TestResult.started_at), fn.MIN(TestResult.started_at))
                    .group_by(TestResult.run_id))
        TestRun.insert_from(backfill, [
            TestRun.id, TestRun.suite_name, TestRun.started_at, TestRun.finished_at,
            TestRun.ending, TestRun.total, TestRun.passed, TestRun.failed, TestRun.skipped,
            TestRun.error, TestRun.created_at, TestRun.updated_at,
        ]).execute()


def down(migrator, db):
    with db.bind_ctx([TestRun]):
        if isinstance(db, MySQLDatabase):  # its index is needed while the constraint stands
            migrator.migrate(migrator.drop_foreign_key_constraint("test_results", "session_id"))
        # SQLite cannot drop a column a foreign key names: rebuild the table without both.
        legacy = {"legacy": True} if isinstance(db, SqliteDatabase) else {}
        migrator.migrate(
            migrator.drop_index("test_results", "idx_test_session"),
            migrator.drop_column("test_results", "session_id", **legacy),
            migrator.drop_column("test_results", "attempts", **legacy),
        )
        TestRun.drop_table(safe=False)
    _collate(db, exact=False)
