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
"""

from peewee import BigIntegerField, IntegerField, MySQLDatabase, PostgresqlDatabase

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


def up(migrator, db):
    _durations(migrator, db, BigIntegerField)
    _collate(db, up=True)


def down(migrator, db):
    _durations(migrator, db, IntegerField)  # first: it is the step that can fail
    _collate(db, up=False)
