"""Migrations killed or failing halfway: what the journal (MariaDB) and the transaction
(SQLite, PostgreSQL) leave, resolving it, re-running repeatable backfills, and downgrades
the stored data would make fail, refused before any change."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import peewee
import pytest
from click.testing import CliRunner

from cardlink_lite import DatabaseManager, run_migrations
from cardlink_lite import migrations as mig
from cardlink_lite.cli import cli
from cardlink_lite.maintenance import check_database
from tests.test_migrations import schema_dump

SESSION = "00000000-0000-4000-8000-000000000001"
COMMANDS = ["00A40400", "80E60C00", "01B00000", "C3F24000"]
HEADERS = [(0, 0xA4), (0, 0xE6), (1, 0xB0), (7, 0xF2)]

# A child process that migrates to head and kills itself with SIGKILL right after the
# first statement of 0003's header backfill (all of 0003's DDL is done by then).
_KILLED_CHILD = textwrap.dedent("""
    import os, signal, sys
    from cardlink_lite import DatabaseManager, run_migrations
    manager = DatabaseManager(sys.argv[1]).initialize(check_schema=False)
    def kill(event):
        if event.sql.lstrip().upper().startswith(("UPDATE `COMM_LOGS`", 'UPDATE "COMM_LOGS"')):
            os.kill(os.getpid(), signal.SIGKILL)
    manager.database.query_hooks.append(kill)
    run_migrations(manager=manager)
""")


def _store_at_0002(manager, copies=3) -> None:
    """A 0002 store with command rows (written by SQL: the models are newer)."""
    run_migrations("0002", manager=manager)
    db, p = manager.database, manager.database.param
    db.execute_sql(f"INSERT INTO ota_sessions (id, status, created_at, updated_at) "
                   f"VALUES ({p}, {p}, {p}, {p})",
                   (SESSION, "completed", "2026-01-01 10:00:00", "2026-01-01 10:00:00"))
    for raw in COMMANDS * copies:
        db.execute_sql(f"INSERT INTO comm_logs (session_id, timestamp, direction, raw_data) "
                       f"VALUES ({p}, {p}, {p}, {p})",
                       (SESSION, "2026-01-01 10:00:00", "command", raw))


def _headers(manager) -> list:
    return [tuple(r) for r in manager.database.execute_sql(
        "SELECT channel, ins FROM comm_logs WHERE direction = 'command' ORDER BY id")]


def _kill_mid_backfill(url: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run([sys.executable, "-c", _KILLED_CHILD, url], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def _ddl(statements) -> list[str]:
    return [sql for sql, _ in statements if not re.match(r"\s*(INSERT|UPDATE|DELETE)\b", sql)
            and mig.HISTORY_TABLE not in sql]


def test_a_migration_killed_mid_backfill_is_journaled_or_rolled_back(empty_manager, db_url,
                                                                     backend):
    manager = empty_manager
    _store_at_0002(manager)
    planned = _ddl(mig.plan_sql("0003", manager=manager))
    manager.close()
    _kill_mid_backfill(db_url)
    manager = DatabaseManager(db_url).initialize(check_schema=False)
    try:
        entries = mig.half_applied(manager)
        if backend != "mysql":  # one transaction: as if it never started
            assert entries == []
            assert mig.get_current_revision(manager) == "0002_comm_log_session_time"
            assert "trace_sources" not in manager.database.get_tables()
            run_migrations(manager=manager)
        else:  # DDL committed as it went: every statement of it is listed, kill or not
            assert [(e["name"], e["direction"], e["error"]) for e in entries] == [
                ("0003_ota_facts", "up", None)]
            assert entries[0]["operations"] == planned
            status = CliRunner().invoke(cli, ["--database", db_url, "status"])
            assert ("HALF-APPLIED: 0003_ota_facts (up) started "
                    in status.output and f"; {len(planned)} statements committed:"
                    in status.output), status.output
            mig.resolve_half_applied("0003_ota_facts", applied=True, manager=manager)
            assert _headers(manager) == HEADERS * 3  # --as applied finished the backfill
            run_migrations(manager=manager)
        assert _headers(manager) == HEADERS * 3
        assert mig.get_pending_revisions(manager) == []
        assert check_database(manager)["ok"]
    finally:
        manager.close()


def test_check_reports_unfilled_headers_and_migrate_fills_them(manager, db_url):
    # A store whose 0003 backfill never finished (as --as applied left it before).
    _store_at_0002(manager, copies=1)
    run_migrations(manager=manager)
    manager.database.execute_sql("UPDATE comm_logs SET channel = NULL, ins = NULL")
    manager.close()
    runner = CliRunner()
    bad = runner.invoke(cli, ["--database", db_url, "check"])
    assert bad.exit_code == 1
    assert [line for line in bad.stdout.splitlines() if line.startswith("PROBLEM")] == [
        "PROBLEM: 4 command rows in logs have no channel and INS though their raw_data has "
        "a header (0003's backfill did not finish); fill them with: cardlink-db migrate"]
    migrate = runner.invoke(cli, ["--database", db_url, "migrate"])
    assert migrate.exit_code == 0, migrate.output
    assert "Filled 4 rows left by 0003_ota_facts" in migrate.stdout
    again = runner.invoke(cli, ["--database", db_url, "check"])
    assert again.exit_code == 0, again.output
    manager.bind()
    assert _headers(manager) == HEADERS


# -- downgrades that the stored data would make fail: refused before any change --------
def _insert(manager, table: str, **values) -> None:
    db = manager.database
    columns = ", ".join(db.get_sql_context().sql(peewee.Entity(c)).query()[0] for c in values)
    marks = ", ".join([db.param] * len(values))
    db.execute_sql(f"INSERT INTO {table} ({columns}) VALUES ({marks})", tuple(values.values()))


def _device(manager, device_id: str) -> None:
    _insert(manager, "devices", id=device_id, device_type="phone", is_active=True,
            created_at="2026-01-01 10:00:00", updated_at="2026-01-01 10:00:00")


def _refused_downgrade(manager, db_url, revision: str, flag: str = "--yes") -> str:
    """``migrate --revision`` back to ``revision``: its one error line; nothing changed."""
    before = schema_dump(manager)
    manager.close()
    result = CliRunner().invoke(cli, ["--database", db_url, "migrate", "--revision", revision,
                                      flag])
    assert result.exit_code == 1, result.output
    manager.bind()
    assert schema_dump(manager) == before
    assert mig.half_applied(manager) == []
    assert "Traceback" not in result.output
    return result.stderr.strip().splitlines()[-1]


def test_a_duration_over_integer_range_refuses_going_back_before_0007(manager, db_url,
                                                                        backend):
    _insert(manager, "ota_sessions", id=SESSION, status="timeout", duration_ms=3_000_000_000,
            created_at="2026-01-01 10:00:00", updated_at="2026-01-01 10:00:00")
    if backend == "sqlite":  # INTEGER holds 64 bits there: 0007 changed nothing to go back
        assert mig.downgrade(manager=manager) == ["0007_big_durations_exact_keys"]
        return
    for flag in ("--dry-run", "--yes"):  # a dry run makes the same check
        assert _refused_downgrade(manager, db_url, "0006", flag) == (
            "Error: cannot revert 0007_big_durations_exact_keys: ota_sessions.duration_ms "
            "holds 3000000000, more than INTEGER holds; lower it or delete the row first")


@pytest.mark.parametrize("backend", ["mysql"], indirect=True)
def test_keys_that_would_collide_refuse_the_downgrade_naming_table_and_values(manager,
                                                                               db_url):
    _device(manager, "X")
    _device(manager, "X ")  # the same key under 0006's PAD SPACE collation
    assert _refused_downgrade(manager, db_url, "0006") == (
        "Error: cannot revert 0007_big_durations_exact_keys: devices keys 'X' and 'X ' would "
        "be one key under utf8mb4_bin; rename or delete one of them first")
    manager.database.execute_sql("DELETE FROM devices WHERE id = 'X '")
    _insert(manager, "card_profiles", iccid="8901", card_type="USIM",
            created_at="2026-01-01 10:00:00", updated_at="2026-01-01 10:00:00")
    for keyset in ("KIC", "kic"):  # one counter once keyset folds case again
        _insert(manager, "replay_counters", card_iccid="8901", keyset=keyset, tar="B00001",
                counter=1, updated_at="2026-01-01 10:00:00")
    assert _refused_downgrade(manager, db_url, "0006") == (
        "Error: cannot revert 0007_big_durations_exact_keys: replay_counters keys "
        "'8901 / KIC / B00001' and '8901 / kic / B00001' would be one key under utf8mb4_bin, "
        "utf8mb4_general_ci; rename or delete one of them first")
    manager.database.execute_sql("DELETE FROM replay_counters WHERE keyset = 'kic'")
    _device(manager, "x" * 50)
    _device(manager, "X" * 50)  # the same key once 0005's down compares case-insensitively
    line = _refused_downgrade(manager, db_url, "0004")  # checked before 0007/0006 go back
    assert line.startswith("Error: cannot revert 0005_test_runs: devices keys 'XXXX")
    assert f"{'X' * 40!r}... (50 long) and {'x' * 40!r}... (50 long)" in line
    assert mig.get_current_revision(manager) == mig.get_head_revision()
    manager.database.execute_sql("DELETE FROM devices WHERE id = %s", ("x" * 50,))
    assert mig.downgrade(steps=3, manager=manager)[-1] == "0005_test_runs"


def test_check_survives_a_store_whose_header_columns_are_gone(manager, db_url):
    # --as applied after a kill mid-DDL, without finishing it by hand, leaves them missing.
    db = manager.database
    db.execute_sql("DROP INDEX idx_log_ins" + (" ON comm_logs" if manager.backend == "mysql"
                                               else ""))
    db.execute_sql("ALTER TABLE comm_logs DROP COLUMN ins")
    manager.close()
    result = CliRunner().invoke(cli, ["--database", db_url, "check"])
    assert result.exit_code == 1
    assert result.stdout.startswith("PROBLEM: index idx_log_ins on logs is missing")
    assert "Unknown column" not in result.output and "no such column" not in result.output
