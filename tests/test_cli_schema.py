"""``cardlink-db init / migrate / status`` and the CLI's error handling."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from cardlink_lite import migrations as mig
from cardlink_lite.cli import cli
from tests.test_migrations import schema_dump


def run(*args, input=None):
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def test_init_creates_schema_and_prints_next_steps(db_url):
    result = run("--database", db_url, "init")
    assert result.exit_code == 0, result.output
    assert "9 tables" in result.output and "Next steps" in result.output
    status = run("--database", db_url, "status", "--json")
    info = json.loads(status.output)
    assert info["current_revision"] == mig.get_head_revision()
    assert info["pending_migrations"] == []


def test_init_force_is_the_explicit_request_and_asks_nothing(manager, db_url):
    from cardlink_lite import Device

    Device.create(id="old", device_type="phone")
    result = run("--database", db_url, "init", "--force")  # scripted: no terminal, no --yes
    assert result.exit_code == 0, result.output
    assert "Aborted" not in result.output
    manager.bind()
    assert Device.select().count() == 0
    assert run("--database", db_url, "init", "--force", "--yes").exit_code == 0  # still taken


def test_init_without_force_keeps_data_and_asks_nothing(manager, db_url):
    from cardlink_lite import Device

    Device.create(id="kept", device_type="phone")
    result = run("--database", db_url, "init")
    assert result.exit_code == 0, result.output
    manager.bind()
    assert [d.id for d in Device.select()] == ["kept"]


def test_migrate_shows_status_before_and_after(db_url):
    result = run("--database", db_url, "migrate")
    assert result.exit_code == 0, result.output
    assert "Before: revision (none)" in result.output
    assert f"After: revision {mig.get_head_revision()}, 0 pending" in result.output
    again = run("--database", db_url, "migrate")
    assert "Nothing to do" in again.output


def test_migrate_dry_run_prints_sql_and_changes_nothing(empty_manager, db_url):
    before = schema_dump(empty_manager)
    result = run("--database", db_url, "migrate", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "CREATE TABLE" in result.output and "nothing was changed" in result.output
    assert schema_dump(empty_manager) == before


def test_migrate_to_unknown_revision_is_a_usage_error_before_anything_is_printed(db_url):
    result = run("--database", db_url, "migrate", "--revision", "ae1234")
    assert result.exit_code == 2
    assert "Before:" not in result.output
    assert result.output.strip().splitlines()[-1].startswith(
        "Error: Invalid value for '--revision' / '-r': Target revision not found: 'ae1234'")


def test_migrate_as_without_resolve_is_refused_and_migrates_nothing(empty_manager, db_url):
    result = run("--database", db_url, "migrate", "--as", "applied")
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "Error: --as needs --resolve REV: the half-applied migration to record")
    assert mig.get_current_revision(manager=empty_manager) is None


def test_status_verbose_shows_row_counts(db_url):
    run("--database", db_url, "init")
    result = run("--database", db_url, "status", "--verbose")
    assert result.exit_code == 0, result.output
    assert "Pending Migrations: 0" in result.output
    assert "devices: 0 rows" in result.output and "logs: 0 rows" in result.output


def test_status_reports_newer_database(manager, db_url):
    mig._runner(manager).History.create(name="9999_newer")
    result = run("--database", db_url, "status")
    assert result.exit_code == 1
    assert "9999_newer" in result.output and "Error:" in result.output


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("oracle://u:topsecret@h/db", "Error: unsupported database URL scheme 'oracle'"),
        ("postgresql://u:topsecret@127.0.0.1:1/db",
         "Error: unable to connect to database postgresql://u:***@127.0.0.1:1/db"),
        ("mysql://u:topsecret@127.0.0.1:1/db",
         "Error: unable to connect to database mysql://u:***@127.0.0.1:1/db"),
    ],
)
def test_bad_urls_give_one_line_errors_without_password(url, expected):
    result = CliRunner().invoke(cli, ["--database", url, "status"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected)
    assert "topsecret" not in result.output and "Traceback" not in result.output


def test_missing_driver_error_names_extra():
    code = ("import sys; sys.modules['pymysql'] = None; sys.modules['MySQLdb'] = None;"
            "from cardlink_lite.cli import main; main(['--database', 'mysql://u@h/db', 'status'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "pip install 'cardlink-lite[mysql]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_real_process_init_and_status(tmp_path):
    url = f"sqlite:///{tmp_path}/real.db"
    exe = [sys.executable, "-m", "cardlink_lite", "--database", url]
    init = subprocess.run([*exe, "init"], capture_output=True, text=True)
    assert init.returncode == 0, init.stderr
    status = subprocess.run([*exe, "status"], capture_output=True, text=True)
    assert status.returncode == 0
    assert "Backend: SQLite" in status.stdout


def test_version_and_help():
    assert run("--version").output.startswith("cardlink-db, version")
    assert "init" in run("--help").output


def test_every_command_has_help_with_an_example():
    from cardlink_lite.cli import cli as group

    def walk(command, path):
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                yield from walk(sub, [*path, name])
        else:
            yield path, command

    for path, command in walk(group, []):
        assert command.help, f"{' '.join(path)} has no help"
        assert "Example" in command.help, f"{' '.join(path)} help has no Example"


def test_migrate_back_to_an_earlier_revision_asks_first(db_url):
    run("--database", db_url, "init")
    refused = CliRunner().invoke(cli, ["--database", db_url, "migrate", "--revision", "0001"])
    assert refused.exit_code == 1
    assert refused.stderr.splitlines()[-1].startswith(
        f"Error: migrate --revision 0001 would revert {mig.get_head_revision()}, ")
    assert refused.stderr.splitlines()[-1].endswith(
        ", 0002_comm_log_session_time and there is no terminal to confirm it; rerun with --yes "
        "(or --dry-run to look first)")
    reverted = run("--database", db_url, "migrate", "--revision", "0001", "--yes")
    assert reverted.exit_code == 0, reverted.output
    later = len(sorted(mig.MIGRATIONS_DIR.glob("0*.py"))) - 1
    assert f"After: revision 0001_initial, {later} pending" in reverted.output
    again = run("--database", db_url, "migrate", "--revision", "0001")
    assert "Nothing to do: already at 0001." in again.output
    forward = run("--database", db_url, "migrate")
    assert f"After: revision {mig.get_head_revision()}, 0 pending" in forward.output


def test_a_downgrade_dry_run_prints_its_sql_like_an_upgrade_and_changes_nothing(manager,
                                                                                db_url):
    before = schema_dump(manager)
    result = run("--database", db_url, "migrate", "--revision", "0001", "--dry-run")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    statements = [line for line in lines[1:-1] if not line.startswith("--")]
    assert any("DROP INDEX" in s and "idx_test_run_outcome" in s for s in statements)
    assert any("trace_sources" in s and s.startswith("DROP TABLE") for s in statements)
    assert all(s.endswith(";") or "-- params:" in s for s in statements)
    reverted = ", ".join(reversed(mig.get_applied_revisions(manager)[1:]))
    assert lines[-1] == (f"-- dry run: would revert {reverted}; {len(statements)} statements, "
                         "nothing was changed")
    assert schema_dump(manager) == before
