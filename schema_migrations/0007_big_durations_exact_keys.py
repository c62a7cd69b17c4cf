"""Schema v7: durations as BIGINT, and exact keys on MariaDB that keep their trailing spaces.

- ``ota_sessions.duration_ms`` and ``test_results.duration_ms`` become BIGINT on PostgreSQL
  and MariaDB/MySQL: INTEGER stops at 24.8 days, so a session left open for a month could
  not be timed out. SQLite's INTEGER holds 64 bits already: no change there. Going back
  fails while a stored duration is over INTEGER's range.
- MariaDB 10.2+: the exactly compared columns move from ``utf8mb4_bin`` (PAD SPACE: ``'X '``
  equals ``'X'``) to ``utf8mb4_nopad_bin``, as SQLite and PostgreSQL compare. MySQL and
  older MariaDB have no such collation and keep ``utf8mb4_bin``.
- ``replay_counters.keyset`` and ``tar`` are compared exactly too (on MariaDB/MySQL they
  folded case, so ``KIC=01`` and ``kic=01`` shared a counter there only). Going back fails
  on MariaDB/MySQL while two keys differ only in case or trailing spaces.

``check_down`` finds both before any change (added later; self-contained like the rest).
"""

from peewee import BigIntegerField, IntegerField, MySQLDatabase, PostgresqlDatabase
from playhouse.migrations import MigrationError

NAME = "0007_big_durations_exact_keys"

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
    ("test_runs", "id", 64, False),
    ("test_runs", "suite_name", 128, False),
    ("settings", "key", 128, False),
    ("replay_counters", "card_iccid", 22, False),
    ("replay_counters", "keyset", 32, False),
    ("replay_counters", "tar", 6, False),
]
NEWLY_EXACT = {("replay_counters", "keyset"), ("replay_counters", "tar")}

_FOREIGN_KEYS = """
SELECT k.TABLE_NAME, k.CONSTRAINT_NAME, k.COLUMN_NAME, k.REFERENCED_TABLE_NAME,
       k.REFERENCED_COLUMN_NAME, r.DELETE_RULE, r.UPDATE_RULE
FROM information_schema.KEY_COLUMN_USAGE k
JOIN information_schema.REFERENTIAL_CONSTRAINTS r
  ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME
 AND r.TABLE_NAME = k.TABLE_NAME
WHERE k.TABLE_SCHEMA = DATABASE() AND k.REFERENCED_TABLE_NAME IS NOT NULL
"""


def _durations(migrator, db, field):
    if isinstance(db, MySQLDatabase | PostgresqlDatabase):
        migrator.migrate(*(migrator.alter_column_type(table, "duration_ms", field(null=True))
                           for table in ("ota_sessions", "test_results")))


def _collate(db, up: bool) -> None:
    """Give the exact columns their collation on MySQL (``up``: the NO PAD one where the
    server has it), dropping the foreign keys over them first and putting them back."""
    if not isinstance(db, MySQLDatabase):
        return
    nopad = db.server_version >= (10, 2)  # MariaDB 10.2+; MySQL's versions are below 10
    exact = "utf8mb4_nopad_bin" if up and nopad else "utf8mb4_bin"
    columns = {(table, column) for table, column, _, _ in EXACT_COLUMNS}
    keys = [row for row in db.execute_sql(_FOREIGN_KEYS).fetchall()
            if (row[0], row[2]) in columns or (row[3], row[4]) in columns]
    indexes = {table: _index_names(db, table) for table in {k[0] for k in keys}}
    for table, name, *_ in keys:
        db.execute_sql(f"ALTER TABLE `{table}` DROP FOREIGN KEY `{name}`")
    for table, column, length, null in EXACT_COLUMNS:
        collation = "" if not up and (table, column) in NEWLY_EXACT else \
            f" CHARACTER SET utf8mb4 COLLATE {exact}"
        db.execute_sql(f"ALTER TABLE `{table}` MODIFY `{column}` VARCHAR({length})"
                       f"{collation}{'' if null else ' NOT NULL'}")
    for table, name, column, ref_table, ref_column, on_delete, on_update in keys:
        db.execute_sql(f"ALTER TABLE `{table}` ADD CONSTRAINT `{name}` FOREIGN KEY "
                       f"(`{column}`) REFERENCES `{ref_table}` (`{ref_column}`) "
                       f"ON DELETE {on_delete} ON UPDATE {on_update}")
    for table, before in indexes.items():  # the server may rename the key's index: undo
        for columns, name in _index_names(db, table).items():
            old = before.get(columns)
            if old and old != name:
                db.execute_sql(f"ALTER TABLE `{table}` RENAME INDEX `{name}` TO `{old}`")


def _index_names(db, table) -> dict:
    return {tuple(index.columns): index.name for index in db.get_indexes(table)}


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
    """Refuse, before any change, data down() would fail on: a duration over INTEGER's
    range, two keys that differ only in trailing spaces (or, for keyset and tar, case)."""
    if isinstance(db, MySQLDatabase | PostgresqlDatabase):
        for table in ("ota_sessions", "test_results"):
            row = db.execute_sql(f"SELECT duration_ms FROM {table} WHERE duration_ms > "
                                 "2147483647 OR duration_ms < -2147483648 LIMIT 1").fetchone()
            if row:
                raise MigrationError(
                    f"cannot revert {NAME}: {table}.duration_ms holds {row[0]}, more than "
                    "INTEGER holds; lower it or delete the row first")
    if isinstance(db, MySQLDatabase):
        exact = {(table, column) for table, column, _, _ in EXACT_COLUMNS}

        def collation_of(table, column):
            if (table, column) in NEWLY_EXACT:
                return _table_collation(db, table)
            return "utf8mb4_bin" if (table, column) in exact else None

        _refuse_collisions(db, collation_of)


def up(migrator, db):
    _durations(migrator, db, BigIntegerField)
    _collate(db, up=True)


def down(migrator, db):
    _durations(migrator, db, IntegerField)  # first: it is the step that can fail
    _collate(db, up=False)
