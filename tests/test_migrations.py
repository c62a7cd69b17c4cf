"""Schema versions: playhouse.migrations scripts, dry runs, failures, half-applied state."""

import re
import shutil
import textwrap
from pathlib import Path

import peewee
import pytest

from cardlink_lite import (
    CommLog,
    MigrationError,
    OTASession,
    SchemaVersionMismatch,
    downgrade,
    get_current_revision,
    get_pending_revisions,
    run_migrations,
)
from cardlink_lite import migrations as mig


def schema_dump(manager) -> dict:
    """Tables with their columns, indexes and foreign keys, plus the recorded history."""
    db = manager.database
    dump = {}
    for table in sorted(set(db.get_tables()) - {mig.JOURNAL_TABLE}):
        dump[table] = {
            "columns": sorted((c.name, c.data_type.lower(), c.null) for c in db.get_columns(table)),
            "indexes": sorted((i.name, tuple(i.columns), i.unique) for i in db.get_indexes(table)),
            "fks": sorted((f.column, f.dest_table, f.dest_column)
                          for f in db.get_foreign_keys(table)),
        }
    if isinstance(db, peewee.MySQLDatabase):  # exact comparison lives in the collation
        for table, column, collation in db.execute_sql(_COLLATIONS).fetchall():
            dump.get(table, {}).setdefault("collations", []).append((column, collation))
    if mig.HISTORY_TABLE in dump:
        dump["history"] = mig.get_applied_revisions(manager)
    return dump


_COLLATIONS = """SELECT TABLE_NAME, COLUMN_NAME, COLLATION_NAME FROM information_schema.COLUMNS
WHERE TABLE_SCHEMA = DATABASE() AND COLLATION_NAME IS NOT NULL
ORDER BY TABLE_NAME, COLUMN_NAME"""


def _store_tables(dump):
    return {k: v for k, v in dump.items() if not k.startswith("cardlink_") and k != "history"}


def test_up_down_up_round_trips(empty_manager):
    head = mig.get_head_revision()
    assert get_current_revision(manager=empty_manager) is None
    assert get_pending_revisions(manager=empty_manager)[-1] == head
    assert run_migrations(manager=empty_manager)[-1] == head
    first = schema_dump(empty_manager)
    assert get_pending_revisions(manager=empty_manager) == []
    applied = mig.get_applied_revisions(empty_manager)
    assert downgrade(steps=len(applied), manager=empty_manager) == list(reversed(applied))
    assert _store_tables(schema_dump(empty_manager)) == {}
    run_migrations(manager=empty_manager)
    assert schema_dump(empty_manager) == first


def test_create_tables_matches_migrated_schema(empty_manager, db_url):
    run_migrations(manager=empty_manager)
    migrated = schema_dump(empty_manager)
    empty_manager.drop_tables()
    empty_manager.create_tables()
    assert schema_dump(empty_manager) == migrated
    assert get_pending_revisions(manager=empty_manager) == []


def test_target_revision_and_unknown_target(empty_manager):
    assert run_migrations("0001", manager=empty_manager) == ["0001_initial"]
    with pytest.raises(MigrationError, match="Target revision not found: 'ae1234'"):
        run_migrations("ae1234", manager=empty_manager)


@pytest.mark.parametrize("state", ["empty", "migrated"])
def test_dry_run_changes_nothing(empty_manager, state):
    if state == "migrated":
        run_migrations("0001", manager=empty_manager)
    before = schema_dump(empty_manager)
    statements = mig.plan_sql(manager=empty_manager)
    assert schema_dump(empty_manager) == before
    if state == "empty":
        assert any("CREATE TABLE" in sql and "devices" in sql for sql, _ in statements)


def test_newer_database_is_refused_naming_both_revisions(manager):
    runner = mig._runner(manager)
    runner.History.create(name="9999_from_the_future")
    with pytest.raises(SchemaVersionMismatch) as info:
        manager.initialize()
        mig.check_schema_version(manager)
    assert "9999_from_the_future" in str(info.value) and mig.get_head_revision() in str(info.value)
    with pytest.raises(SchemaVersionMismatch):
        run_migrations(manager=manager)


# Far above any real revision and the README's example, and on columns of its own.
FIXTURE = "8000_test_fixture"


def _migration_dir(tmp_path, body: str, extra: dict | None = None):
    directory = tmp_path / "migs"
    directory.mkdir()
    for path in mig.MIGRATIONS_DIR.glob("[0-9]*.py"):
        shutil.copy(path, directory)
    for name, text in (extra or {}).items():
        (directory / f"{name}.py").write_text(text)
    (directory / f"{FIXTURE}.py").write_text(textwrap.dedent(body))
    return directory


def _readme_example_migration() -> tuple[str, str]:
    """The file name and code of the README's example migration."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    name = re.search(r"`schema_migrations/(\d{4}_\w+)\.py`", readme).group(1)
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    return name, next(code for code in blocks if "def up(migrator, db)" in code)


def test_readme_example_migration_and_the_test_fixture_do_not_collide(manager, tmp_path):
    name, code = _readme_example_migration()
    assert not name.startswith(FIXTURE[:4])
    real = {p.stem[:4] for p in mig.MIGRATIONS_DIR.glob("[0-9]*.py")}
    assert int(name[:4]) > int(max(real)) + 50, f"{name} could become a real migration"
    directory = _migration_dir(tmp_path, FAILING.format(fail_at=3), extra={name: code})
    assert get_pending_revisions(manager=manager, directory=directory) == [name, FIXTURE]
    with pytest.raises(MigrationError, match="deliberate failure after the last operation"):
        run_migrations(manager=manager, directory=directory)


FAILING = """
from peewee import CharField, IntegerField

FAIL_AT = {fail_at}

def up(migrator, db):
    ops = [
        migrator.add_column('devices', 'fixture_note', CharField(max_length=50, null=True)),
        migrator.add_index('devices', ('fixture_note',), False),
        migrator.add_column('card_profiles', 'fixture_slot', IntegerField(null=True)),
    ]
    for n, op in enumerate(ops):
        if n == FAIL_AT:
            raise RuntimeError('deliberate failure before operation %d' % n)
        migrator.migrate(op)
    if FAIL_AT >= len(ops):
        raise RuntimeError('deliberate failure after the last operation')

def down(migrator, db):
    pass
"""


def _fail_migration(manager, tmp_path, fail_at):
    """Run a migration that fails after ``fail_at`` operations; the schema before and after."""
    directory = _migration_dir(tmp_path, FAILING.format(fail_at=fail_at))
    assert get_pending_revisions(manager=manager, directory=directory) == [FIXTURE]
    before = schema_dump(manager)
    with pytest.raises(MigrationError) as info:
        run_migrations(manager=manager, directory=directory)
    assert "deliberate failure" in str(info.value)
    return directory, before, schema_dump(manager)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.parametrize("fail_at", [0, 1, 2, 3])
def test_failed_migration_leaves_schema_and_history_as_before(manager, tmp_path, fail_at):
    _, before, after = _fail_migration(manager, tmp_path, fail_at)
    assert after == before
    assert mig.half_applied(manager) == []


def test_a_migration_failing_before_any_change_is_an_ordinary_failure(manager, tmp_path):
    directory, before, after = _fail_migration(manager, tmp_path, 0)
    assert after == before
    assert mig.half_applied(manager) == []  # MariaDB too: nothing to resolve
    with pytest.raises(MigrationError) as info:
        run_migrations(manager=manager, directory=directory)
    assert "half-applied" not in str(info.value) and "\n" not in str(info.value)
    assert "deliberate failure before operation 0" in str(info.value)


@pytest.mark.parametrize("backend", ["mysql"], indirect=True)
@pytest.mark.parametrize("fail_at", [1, 2, 3])
def test_failed_migration_on_mariadb_is_reported_half_applied(manager, tmp_path, fail_at):
    directory, _, _ = _fail_migration(manager, tmp_path, fail_at)
    # MariaDB commits DDL as it goes: the state is recorded as half-applied.
    entries = mig.half_applied(manager)
    assert [e["name"] for e in entries] == [FIXTURE]
    assert len(entries[0]["operations"]) >= min(fail_at, 3)
    with pytest.raises(MigrationError, match="half-applied"):
        run_migrations(manager=manager, directory=directory)
    mig.resolve_half_applied(FIXTURE, applied=False, manager=manager)
    assert mig.half_applied(manager) == []


def test_migrate_refuses_inside_an_open_transaction(manager):
    with manager.atomic(), pytest.raises(MigrationError, match="open transaction"):
        run_migrations(manager=manager)


REBUILD = """
def up(migrator, db):
    migrator.migrate(migrator.drop_column('ota_sessions', 'error_code'))

def down(migrator, db):
    from peewee import CharField
    migrator.migrate(migrator.add_column('ota_sessions', 'error_code',
                                         CharField(max_length=32, null=True)))
"""


def test_table_rebuild_keeps_child_rows(manager, tmp_path):
    # On SQLite drop_column rebuilds ota_sessions; with foreign keys on inside a
    # transaction that would cascade-delete every comm_logs row.
    session = OTASession.create()
    for _ in range(3):
        CommLog.create(session=session, direction="command", raw_data="00A4")
    directory = _migration_dir(tmp_path, REBUILD)
    run_migrations(manager=manager, directory=directory)
    assert CommLog.select().count() == 3
    cols = {c.name for c in manager.database.get_columns("ota_sessions")}
    assert "error_code" not in cols
    downgrade(manager=manager, directory=directory)
    assert CommLog.select().count() == 3


def _column(manager, table, column):
    """(type, collation) of a column; the collation on MariaDB/MySQL only."""
    db = manager.database
    kind = next(c.data_type.lower() for c in db.get_columns(table) if c.name == column)
    if not isinstance(db, peewee.MySQLDatabase):
        return kind, None
    return kind, db.execute_sql(
        "SELECT COLLATION_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()"
        " AND TABLE_NAME = %s AND COLUMN_NAME = %s", (table, column)).fetchone()[0]


def test_0007_widens_durations_and_makes_keys_exact_keeping_the_data(empty_manager, backend):
    run_migrations("0006", manager=empty_manager)
    db = empty_manager.database
    marks = ", ".join([db.param] * 5)
    db.execute_sql("INSERT INTO ota_sessions (id, status, duration_ms, created_at, updated_at) "
                   f"VALUES ({marks})", ("00000000-0000-4000-8000-000000000001", "timeout",
                                         2_000_000_000, "2026-01-01 10:00:00",
                                         "2026-01-01 10:00:00"))
    db.execute_sql("INSERT INTO devices (id, device_type, is_active, created_at, updated_at) "
                   f"VALUES ({marks})", ("X", "phone", True, "2026-01-01 10:00:00",
                                         "2026-01-01 10:00:00"))
    before = {"sqlite": ("integer", None), "postgresql": ("integer", None),
              "mysql": ("int", "utf8mb4_general_ci")}[backend]
    assert _column(empty_manager, "ota_sessions", "duration_ms")[0] == before[0]
    assert _column(empty_manager, "replay_counters", "keyset")[1] == before[1]

    assert run_migrations(manager=empty_manager)[0] == "0007_big_durations_exact_keys"
    big = "integer" if backend == "sqlite" else "bigint"
    assert _column(empty_manager, "ota_sessions", "duration_ms")[0] == big
    assert _column(empty_manager, "test_results", "duration_ms")[0] == big
    exact = "utf8mb4_nopad_bin" if backend == "mysql" else None
    assert _column(empty_manager, "devices", "id")[1] == exact
    assert _column(empty_manager, "replay_counters", "keyset")[1] == exact
    assert OTASession.get().duration_ms == 2_000_000_000
    OTASession.update(duration_ms=2**40).execute()
    assert OTASession.get().duration_ms == 2**40

    OTASession.update(duration_ms=2_000_000_000).execute()
    assert downgrade(manager=empty_manager) == ["0007_big_durations_exact_keys"]
    assert _column(empty_manager, "ota_sessions", "duration_ms")[0] == before[0]
    assert _column(empty_manager, "devices", "id")[1] == ("utf8mb4_bin" if exact else None)
    assert _column(empty_manager, "replay_counters", "keyset")[1] == before[1]
    assert list(db.execute_sql("SELECT duration_ms FROM ota_sessions")) == [(2_000_000_000,)]
    assert list(db.execute_sql("SELECT id FROM devices")) == [("X",)]
